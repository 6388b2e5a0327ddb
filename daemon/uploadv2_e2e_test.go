package daemon_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// gitAs runs git as a configured user over the daemon's ssh, in dir.
func (s *server) gitAs(user, dir string, args ...string) string {
	s.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), s.gitEnv(user)...)
	cmd.Env = append(cmd.Env, "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@localhost", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@localhost")
	out, err := cmd.CombinedOutput()
	if err != nil {
		s.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// uploadLogs are the daemon's log lines of finished upload-pack sessions.
func (s *server) uploadLogs() []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(s.logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["message"] == "git" && m["service"] == "git-upload-pack" {
			out = append(out, m)
		}
	}
	return out
}

// nextUploadLog waits for the log line of upload-pack session number n
// (counting from 1).
func (s *server) nextUploadLog(n int) map[string]any {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if logs := s.uploadLogs(); len(logs) >= n {
			return logs[n-1]
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("no log line for upload-pack session %d:\n%s", n, s.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func num(m map[string]any, k string) int {
	f, _ := m[k].(float64)
	return int(f)
}

// Protocol v2 over ssh: the daemon answers the capability advertisement and
// ls-refs itself and runs git only for requests that need objects. Clones,
// fetches (no-op, after a push, with local commits to negotiate, shallow)
// and ls-remote must come out exactly as git would serve them, and v0
// clients still get plain git upload-pack.
func TestProtocolV2RefsFromTheDaemon(t *testing.T) {
	f := newFixture(t)
	s := f.start()
	ctx := ctxT(t, 120*time.Second)
	sessions := 0
	expect := func(what string, lsRefs, gitRuns int) {
		t.Helper()
		sessions++
		m := s.nextUploadLog(sessions)
		if m["protocol"] != "version=2" || num(m, "exit") != 0 || num(m, "ls_refs") != lsRefs || num(m, "git_runs") != gitRuns {
			t.Fatalf("%s: log %v, want protocol v2, exit 0, ls_refs %d, git_runs %d", what, m, lsRefs, gitRuns)
		}
	}

	reader := s.client("reader", "reader")
	if err := reader.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	expect("clone", 1, 1)
	s.gitAs("reader", reader.Dir, "fetch", "origin", "master")
	expect("no-op fetch", 1, 0)

	// A push moves the branch; the next fetch must see it at once.
	writer := s.client("writer", "writer")
	if err := writer.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	expect("writer's clone", 1, 1)
	if _, err := writer.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	expect("writer's fetch before its push", 1, 0)
	tip := f.bareGit("rev-parse", "master")
	s.gitAs("reader", reader.Dir, "fetch", "origin", "master")
	expect("fetch after a push", 1, 1)
	if got := s.gitAs("reader", reader.Dir, "rev-parse", "origin/master"); got != tip {
		t.Fatalf("fetch after a push got %s, server has %s", got, tip)
	}

	// Local commits the server lacks: the client negotiates with haves.
	for i := 0; i < 3; i++ {
		s.gitAs("reader", reader.Dir, "commit", "--allow-empty", "-q", "-m", "local")
	}
	name, err := writer.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	expect("writer's fetch", 1, 0)
	if err := writer.Release(ctx, name); err != nil {
		t.Fatal(err)
	}
	expect("writer's fetch", 1, 0)
	s.gitAs("reader", reader.Dir, "fetch", "origin")
	sessions++
	if m := s.nextUploadLog(sessions); num(m, "git_runs") < 1 || num(m, "exit") != 0 {
		t.Fatalf("negotiating fetch: %v", m)
	}
	if got, want := s.gitAs("reader", reader.Dir, "rev-parse", "origin/master"), f.bareGit("rev-parse", "master"); got != want {
		t.Fatalf("negotiating fetch got %s, server has %s", got, want)
	}

	// A shallow clone, as pool-resource's `in` with depth does.
	shallow := filepath.Join(t.TempDir(), "shallow")
	s.gitAs("reader", "", "clone", "-q", "--depth", "1", s.url(), shallow)
	expect("shallow clone", 1, 1)
	if got := s.gitAs("reader", shallow, "rev-list", "--count", "HEAD"); got != "1" {
		t.Fatalf("shallow clone has %s commits", got)
	}

	// ls-remote over ssh equals ls-remote of the repo on disk, with and
	// without a tag (tags are left to git: they need peeling).
	compare := func(what string) {
		t.Helper()
		remote := s.gitAs("reader", "", "ls-remote", "--symref", s.url())
		local := f.bareGit("ls-remote", "--symref", ".")
		if remote != local {
			t.Fatalf("%s: ls-remote over ssh:\n%s\non disk:\n%s", what, remote, local)
		}
	}
	compare("branch only")
	expect("ls-remote", 1, 0)
	admin := s.client("admin", "admin")
	if err := admin.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	expect("admin's clone", 1, 1)
	s.gitAs("admin", admin.Dir, "tag", "-a", "-m", "release", "v1")
	s.gitAs("admin", admin.Dir, "push", "-q", "origin", "v1")
	compare("with an annotated tag")
	expect("ls-remote with a tag", 0, 1)
	s.gitAs("reader", reader.Dir, "fetch", "origin", "--tags")
	sessions++
	if got := s.gitAs("reader", reader.Dir, "rev-parse", "v1^{commit}"); got != f.bareGit("rev-parse", "v1^{commit}") {
		t.Fatalf("tag fetched over v2 points at %s", got)
	}

	// Protocol v0: plain git upload-pack, as before.
	v0 := filepath.Join(t.TempDir(), "v0")
	s.gitAs("reader", "", "-c", "protocol.version=0", "clone", "-q", "--single-branch", "--branch", "master", s.url(), v0)
	s.gitAs("reader", v0, "-c", "protocol.version=0", "fetch", "origin")
	sessions += 2
	logs := s.uploadLogs()
	for _, m := range logs[len(logs)-2:] {
		if m["protocol"] != nil || m["git_runs"] != nil || num(m, "exit") != 0 {
			t.Fatalf("protocol v0 session logged %v", m)
		}
	}
	if got, want := s.gitAs("reader", v0, "rev-parse", "origin/master"), f.bareGit("rev-parse", "master"); got != want {
		t.Fatalf("v0 clone at %s, server at %s", got, want)
	}
}

// A raw protocol v2 session: the daemon's own advertisement and ls-refs
// answer, several requests on one connection. Hostile requests (garbage,
// a fetch cut short) are testdata/scripts/pkt-hostile-protocol-v2-requests.
func TestProtocolV2RawSession(t *testing.T) {
	f := newFixture(t)
	s := f.start()
	tip := f.bareGit("rev-parse", "master")
	run := func(stdin string) (string, string, int) {
		t.Helper()
		c := s.dial(t, gossh.PublicKeys(f.keys["reader"].signer))
		sess, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		defer sess.Close()
		if err := sess.Setenv("GIT_PROTOCOL", "version=2"); err != nil {
			t.Fatal(err)
		}
		var stdout, stderr strings.Builder
		sess.Stdout, sess.Stderr = &stdout, &stderr
		sess.Stdin = strings.NewReader(stdin)
		err = sess.Run("git-upload-pack '/locks.git'")
		var ee *gossh.ExitError
		if errors.As(err, &ee) {
			return stdout.String(), stderr.String(), ee.ExitStatus()
		}
		if err != nil {
			t.Fatal(err)
		}
		return stdout.String(), stderr.String(), 0
	}
	lsRefs := "0014command=ls-refs\n0001000csymrefs\n0000"
	answer := fmt.Sprintf("%04x%s HEAD symref-target:refs/heads/master\n%04x%s refs/heads/master\n0000",
		4+len(tip)+len(" HEAD symref-target:refs/heads/master\n"), tip, 4+len(tip)+len(" refs/heads/master\n"), tip)
	out, errOut, code := run(lsRefs + lsRefs + "0000")
	if code != 0 || !strings.HasPrefix(out, "000eversion 2\n") || !strings.HasSuffix(out, answer+answer) {
		t.Fatalf("two ls-refs: exit %d, stderr %q, stdout %q", code, errOut, out)
	}
	// The client hangs up without a final flush: a normal end.
	if _, errOut, code := run(lsRefs); code != 0 {
		t.Fatalf("hang-up after a request: exit %d, %q", code, errOut)
	}
}
