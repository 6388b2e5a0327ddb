package daemon

import (
	"strings"
	"testing"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/hooks"
	"github.com/poolgate/poolgate/pushlog"
)

type panicReader struct{}

func (panicReader) Read([]byte) (int, error) { panic("judge bug") }

// TestJudgePanicRefusesThePushNotTheDaemon: the judge runs in the daemon,
// so a bug that panics in it must come back as an error (a refusal).
func TestJudgePanicRefusesThePushNotTheDaemon(t *testing.T) {
	cfg, err := config.Parse("test.yaml", []byte("repos:\n  - name: locks\n    branch: master\n"))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{pushlog.EnvRepo: "locks", pushlog.EnvRole: "write"}
	h := &hooks.PreReceive{Config: cfg, Getenv: func(k string) string { return env[k] }, Stdin: panicReader{},
		Stderr: &strings.Builder{}, Dir: t.TempDir()}
	if _, err := runJudge(h); err == nil || !strings.Contains(err.Error(), "judge bug") {
		t.Fatalf("runJudge: %v, want the panic as an error", err)
	}
}

func TestTicketIsSpentOnceAndAWrongSecretLeavesIt(t *testing.T) {
	var tk hookTickets
	env, withdraw, err := tk.issue("/sock", &hookTicket{user: "writer"})
	if err != nil {
		t.Fatal(err)
	}
	defer withdraw()
	token := strings.TrimPrefix(env[1], "POOLGATE_HOOK_TOKEN=")
	id, _, _ := strings.Cut(token, ".")
	if tk.redeem(id+".wrong") != nil || tk.redeem(token+"x") != nil || tk.redeem(id) != nil {
		t.Fatal("a wrong secret redeemed the ticket")
	}
	if got := tk.redeem(token); got == nil || got.user != "writer" {
		t.Fatalf("the right token: %+v", got)
	}
	if tk.redeem(token) != nil {
		t.Fatal("a ticket was redeemed twice")
	}
}
