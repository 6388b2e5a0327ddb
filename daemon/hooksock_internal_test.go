package daemon

import (
	"strings"
	"testing"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/hooks"
	"github.com/poolgate/poolgate/hooksock"
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
	if _, err := runJudge(h.Run); err == nil || !strings.Contains(err.Error(), "judge bug") {
		t.Fatalf("runJudge: %v, want the panic as an error", err)
	}
}

// issued is the token of a ticket issued for a writer's push, withdrawn
// when the test ends.
func issued(t *testing.T, tk *hookTickets) string {
	t.Helper()
	env, withdraw, err := tk.issue("/sock", &hookTicket{user: "writer"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(withdraw)
	for _, kv := range env {
		if token, ok := strings.CutPrefix(kv, hooksock.EnvToken+"="); ok {
			return token
		}
	}
	t.Fatalf("no %s in the ticket's environment %q", hooksock.EnvToken, env)
	return ""
}

func TestTicketIsSpentOnceAndAWrongSecretLeavesIt(t *testing.T) {
	var tk hookTickets
	token := issued(t, &tk)
	id, _, _ := strings.Cut(token, ".")
	if tk.redeem(id+".wrong", "") != nil || tk.redeem(token+"x", "") != nil || tk.redeem(id, "") != nil {
		t.Fatal("a wrong secret redeemed the ticket")
	}
	if got := tk.redeem(token, ""); got == nil || got.user != "writer" {
		t.Fatalf("the right token: %+v", got)
	}
	if tk.redeem(token, "") != nil {
		t.Fatal("a ticket was redeemed twice")
	}
}

// TestPostReceiveTicketOnlyAfterAnAcceptedJudgement: the post-receive half
// of a ticket records nothing for a push its judgement did not let
// through, and records once; the judgement itself is still spent once.
func TestPostReceiveTicketOnlyAfterAnAcceptedJudgement(t *testing.T) {
	var tk hookTickets
	token := issued(t, &tk)
	if tk.redeem(token, hooksock.PostReceive) != nil {
		t.Fatal("post-receive redeemed a ticket before any judgement")
	}
	judged := tk.redeem(token, "")
	if judged == nil {
		t.Fatal("the judgement's redeem failed")
	}
	if tk.redeem(token, hooksock.PostReceive) != nil {
		t.Fatal("post-receive redeemed a ticket whose push was refused")
	}
	tk.accept(judged)
	if tk.redeem(token, "") != nil {
		t.Fatal("a ticket was judged twice")
	}
	if tk.redeem(token, "bogus") != nil {
		t.Fatal("a ticket redeemed for an unknown hook")
	}
	if got := tk.redeem(token, hooksock.PostReceive); got != judged {
		t.Fatalf("post-receive after acceptance: %+v", got)
	}
	if tk.redeem(token, hooksock.PostReceive) != nil {
		t.Fatal("a push was recorded twice on one ticket")
	}
}

// TestRefTransactionTicketOnlyBetweenAcceptanceAndRecord: the cluster's
// decision is asked for only for a push its judgement let through, before
// it is recorded, and moves the branch at most once per ticket; a refused
// decision (a lost compare-and-set) leaves it for the push's next
// transaction.
func TestRefTransactionTicketOnlyBetweenAcceptanceAndRecord(t *testing.T) {
	var tk hookTickets
	token := issued(t, &tk)
	if tk.redeem(token, hooksock.RefTransaction) != nil {
		t.Fatal("a decision was asked for before any judgement")
	}
	judged := tk.redeem(token, "")
	if tk.redeem(token, hooksock.RefTransaction) != nil {
		t.Fatal("a decision was asked for a push its judgement refused")
	}
	tk.accept(judged)
	if tk.redeem(token, hooksock.RefTransaction) != judged || tk.redeem(token, hooksock.RefTransaction) != judged {
		t.Fatal("an undecided accepted push could not ask for its decision")
	}
	tk.decide(judged)
	if tk.redeem(token, hooksock.RefTransaction) != nil {
		t.Fatal("one ticket moved the branch twice")
	}
	if tk.redeem(token, hooksock.PostReceive) != judged {
		t.Fatal("post-receive after the decision")
	}
}
