package hooksock

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// serve answers one request on a fresh socket with answer and returns the
// socket's path and what the hook sent.
func serve(t *testing.T, answer string) (string, chan string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		got <- string(b)
		io.WriteString(c, answer)
	}()
	return path, got
}

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestRunSendsTicketQuarantineAndInputAndRelaysTheAnswer(t *testing.T) {
	sock, got := serve(t, `{"exit":1,"stderr":"poolgate: no\n"}`)
	var stderr strings.Builder
	code := Run(PreReceive, env(map[string]string{EnvSocket: sock, EnvToken: "id.secret", "GIT_QUARANTINE_PATH": "/q"}),
		strings.NewReader("a b refs/heads/master\n"), &stderr)
	if code != 1 || stderr.String() != "poolgate: no\n" {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	var req Request
	if err := Decode([]byte(<-got), &req); err != nil || req.Token != "id.secret" || req.Quarantine != "/q" || req.Input != "a b refs/heads/master\n" {
		t.Fatalf("request %+v, %v", req, err)
	}
}

func TestRunFailsClosedOnAnythingButAWellFormedAnswer(t *testing.T) {
	for _, answer := range []string{"", "garbage", `{"exit":0`, `{"stderr":""}`, `{"exit":2,"stderr":""}`,
		`{"exit":0,"stderr":"","more":1}`, `{"exit":0,"stderr":""}{"exit":0,"stderr":""}`, `{"exit":null,"stderr":""}`} {
		sock, _ := serve(t, answer)
		var stderr strings.Builder
		if code := Run(PreReceive, env(map[string]string{EnvSocket: sock, EnvToken: "x"}), strings.NewReader(""), &stderr); code != 1 ||
			!strings.Contains(stderr.String(), "could not validate") {
			t.Errorf("answer %q: exit %d, stderr %q", answer, code, stderr.String())
		}
	}
	var stderr strings.Builder
	if code := Run(PreReceive, env(map[string]string{EnvSocket: filepath.Join(t.TempDir(), "none"), EnvToken: "x"}), strings.NewReader(""), &stderr); code != 1 {
		t.Errorf("no socket: exit %d", code)
	}
}

func TestEnabledNeedsSocketAndTicket(t *testing.T) {
	if Enabled(env(map[string]string{EnvSocket: "/s"})) || Enabled(env(map[string]string{EnvToken: "t"})) || !Enabled(env(map[string]string{EnvSocket: "/s", EnvToken: "t"})) {
		t.Fatal("Enabled wants both")
	}
}

// TestRefTransactionFailsClosedWithoutTheDaemon: the cluster's decision
// not reached, the ref update is refused, and the push ends as an error
// (the permanent verdict), not a rejection the client retries silently.
func TestRefTransactionFailsClosedWithoutTheDaemon(t *testing.T) {
	verdict := filepath.Join(t.TempDir(), "verdict")
	var stderr strings.Builder
	code := Run(RefTransaction, env(map[string]string{EnvSocket: filepath.Join(t.TempDir(), "gone"), EnvToken: "x", envVerdictFile: verdict}),
		strings.NewReader("a b refs/heads/master\n"), &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "pushes are unavailable") || !strings.Contains(stderr.String(), "not reachable") {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	if b, err := os.ReadFile(verdict); err != nil || !strings.HasPrefix(string(b), "permanent\n") {
		t.Fatalf("verdict %q, %v", b, err)
	}
}

func TestRefTransactionDecidesOnlyAClientPushesPreparedPhase(t *testing.T) {
	push := env(map[string]string{envVerdictFile: "/v"})
	if !RefTransactionDecides([]string{"prepared"}, push) || RefTransactionDecides([]string{"committed"}, push) ||
		RefTransactionDecides([]string{"aborted"}, push) || RefTransactionDecides(nil, push) ||
		RefTransactionDecides([]string{"prepared"}, env(nil)) {
		t.Fatal("only the prepared phase of a push through the daemon is decided")
	}
}
