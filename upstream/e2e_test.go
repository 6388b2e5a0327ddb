package upstream_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/internal/fixture"
)

const hookSecret = "upstream-e2e-secret"

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=alice", "GIT_AUTHOR_EMAIL=alice@x", "GIT_COMMITTER_NAME=alice",
		"GIT_COMMITTER_EMAIL=alice@x", "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func commitPush(t *testing.T, work, msg string) {
	t.Helper()
	git(t, work, "add", "-A")
	git(t, work, "commit", "-q", "-m", msg)
	git(t, work, "push", "-q", "origin", "HEAD:master")
}

func signedPush(t *testing.T, url, pusher string) int {
	t.Helper()
	body := fixture.PushPayload(t, "github", pusher)
	req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
	req.Header.Set("X-GitHub-Event", "push")
	m := hmac.New(sha256.New, []byte(hookSecret))
	m.Write(body)
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(m.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

type apiEvent struct {
	Type, Pool, Lock, User, Rule, Reason string
	Data                                 map[string]any // the event as webhooks send it
}

func events(t *testing.T, base string) []apiEvent {
	t.Helper()
	resp, err := http.Get(base + "/api/v1/repos/gh/events?limit=1000")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var doc struct{ Events []apiEvent }
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return doc.Events
}

func waitEvent(t *testing.T, base string, match func(apiEvent) bool) apiEvent {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, e := range events(t, base) {
			if match(e) {
				return e
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no matching event; have %+v", events(t, base))
	return apiEvent{}
}

func TestWatchedRepoTurnsUpstreamPushesIntoEventsAndViolations(t *testing.T) {
	work, s, base := watched(t, "{name: staging, max_claimed: 1}")

	git(t, work, "mv", "staging/unclaimed/env-a", "staging/claimed/env-a")
	commitPush(t, work, "claiming: env-a\nBuild URL: https://ci.example.com/teams/main/pipelines/p/jobs/deploy/builds/7")
	if code := signedPush(t, base+"/hooks/github/gh", "alice"); code != http.StatusAccepted {
		t.Fatalf("webhook answered %d", code)
	}
	e := waitEvent(t, base, func(e apiEvent) bool { return e.Type == "claimed" && e.Lock == "env-a" })
	if e.User != "github:alice" || e.Pool != "staging" {
		t.Fatalf("claim event %+v", e)
	}

	// A duplicate name can land upstream; it is announced as a violation.
	os.WriteFile(filepath.Join(work, "staging/claimed/env-b"), nil, 0o644)
	commitPush(t, work, "adding claimed: env-b")
	signedPush(t, base+"/hooks/github/gh", "bob")
	// It also takes the pool over max_claimed 1: both are reported.
	waitEvent(t, base, func(e apiEvent) bool { return e.Type == "violation" && e.Rule == "over-limit" })
	v := waitEvent(t, base, func(e apiEvent) bool { return e.Type == "violation" && e.Rule == "duplicate-name" })
	if v.Lock != "env-b" || v.Pool != "staging" || v.User != "github:bob" {
		t.Fatalf("violation event %+v", v)
	}

	// The mirror is read-only over SSH: pushes belong upstream.
	clone := filepath.Join(t.TempDir(), "mirror-clone")
	cmd := exec.Command("git", "clone", "-q", "ssh://git@127.0.0.1:"+s.SSHPort+"/gh.git", clone)
	cmd.Env = append(os.Environ(), "GIT_SSH_COMMAND="+s.SSHCommand())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("clone of the mirror: %v\n%s", err, out)
	}
	cmd = exec.Command("git", "push", "origin", "HEAD:refs/heads/other")
	cmd.Dir = clone
	cmd.Env = append(os.Environ(), "GIT_SSH_COMMAND="+s.SSHCommand())
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "read-only mirror") {
		t.Fatalf("push to the mirror not refused: %v\n%s", err, out)
	}
}
