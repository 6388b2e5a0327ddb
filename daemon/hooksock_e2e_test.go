package daemon_test

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/hooks"
	"github.com/poolgate/poolgate/pushlog"
)

// The daemon judges pushes itself when its hook asks over the hook socket
// (daemon/hooksock.go); these pushes go over real SSH to a daemon running
// in the test process (race detector on), with the real poolgate-hook.

// hookSocket is the running daemon's hook socket, waiting (bounded) for
// an in-process daemon's Serve to open it.
func (f *fixture) hookSocket(t *testing.T) string {
	t.Helper()
	var socks []string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if socks, _ = filepath.Glob(filepath.Join(f.data, "run", "hook-*.sock")); len(socks) > 0 {
			break
		}
	}
	if len(socks) != 1 {
		t.Fatalf("want one hook socket in %s/run, found %v", f.data, socks)
	}
	return socks[0]
}

type gitClient interface {
	Git(context.Context, ...string) (string, error)
}

// commitStep commits a pool-resource step (a move and its message) in c.
func commitStep(ctx context.Context, t *testing.T, c gitClient, from, to, msg string) {
	t.Helper()
	if _, err := c.Git(ctx, "mv", from, to); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Git(ctx, "commit", "-m", msg); err != nil {
		t.Fatal(err)
	}
}

// pushStep commits a step and pushes it, returning git's output.
func pushStep(ctx context.Context, t *testing.T, c gitClient, from, to, msg string) string {
	t.Helper()
	commitStep(ctx, t, c, from, to, msg)
	out, _ := c.Git(ctx, "push", "origin", "HEAD:master")
	return out
}

func TestHookSocketJudgesPushesInTheDaemon(t *testing.T) {
	f := newFixture(t)
	s, _ := f.startInProcess(0)
	ctx := ctxT(t, 90*time.Second)
	link, err := os.Readlink(filepath.Join(f.data, "hooks", "pre-receive"))
	if err != nil || filepath.Base(link) != hooks.HookProgram {
		t.Fatalf("hook is not a link to %s: %q, %v", hooks.HookProgram, link, err)
	}
	if fi, err := os.Stat(f.hookSocket(t)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("hook socket mode %v, %v; want 0600", fi.Mode(), err)
	}
	if fi, err := os.Stat(filepath.Join(f.data, "run")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("run dir mode %v, %v; want 0700", fi.Mode(), err)
	}

	c := s.client("writer", "w")
	if err := c.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	// Accepted: the claim's commit and tree exist only in receive-pack's
	// quarantine while the daemon judges them.
	for _, l := range []string{"lock-a", "lock-b"} {
		out := pushStep(ctx, t, c, "demo/unclaimed/"+l, "demo/claimed/"+l, c.Message("claiming", l))
		if strings.Contains(out, "rejected") || strings.Contains(out, "refused") {
			t.Fatalf("claim of %s refused:\n%s", l, out)
		}
	}
	// Refused, transient: max_claimed is 2.
	out := pushStep(ctx, t, c, "demo/unclaimed/lock-c", "demo/claimed/lock-c", c.Message("claiming", "lock-c"))
	if !strings.Contains(out, "[remote rejected]") || !strings.Contains(out, "over-limit") {
		t.Fatalf("third claim should be a transient rejection:\n%s", out)
	}
	c.Git(ctx, "reset", "--hard", "origin/master")
	// Refused, permanent: a lock that does not exist.
	os.WriteFile(filepath.Join(c.Dir, "demo/claimed/ghost"), nil, 0o755)
	c.Git(ctx, "add", "demo")
	c.Git(ctx, "commit", "-m", c.Message("claiming", "ghost"))
	out, err = c.Git(ctx, "push", "origin", "HEAD:master")
	if err == nil || strings.Contains(out, "rejected") || !strings.Contains(out, "claim-missing") {
		t.Fatalf("claim of a missing lock should be refused permanently (err %v):\n%s", err, out)
	}

	logs := s.logs.String()
	if n := strings.Count(logs, `"message":"judged over the hook socket"`); n != 4 {
		t.Errorf("%d pushes judged over the hook socket, want 4", n)
	}
	for _, v := range []string{`"verdict":"accepted"`, `"verdict":"transient"`, `"verdict":"permanent"`} {
		if !strings.Contains(logs, v) {
			t.Errorf("log has no %s", v)
		}
	}
	recs, err := os.ReadFile(pushlog.At(filepath.Join(f.data, "repos", "locks.git")).Path(pushlog.Pushes))
	if err != nil || strings.Count(string(recs), `"user":"writer"`) != 2 {
		t.Errorf("push records (%v):\n%s", err, recs)
	}
}

// wrapHook makes the installed hook run script first and then the real
// hook program with whatever environment the script left.
func (f *fixture) wrapHook(t *testing.T, script string) {
	t.Helper()
	real := filepath.Join(filepath.Dir(binPath), hooks.HookProgram)
	f.setHook("#!/bin/sh\n" + script + "\nexec '" + real + "'\n")
}

// TestHookCannotClaimAnotherIdentity: a hook whose environment says it is
// an admin (another user, another role) is still judged as the session's
// writer, so the writer's force-push is refused and recorded as the
// writer's; its ticket, replayed after the push, is refused.
func TestHookCannotClaimAnotherIdentity(t *testing.T) {
	f := newFixture(t)
	s, _ := f.startInProcess(0)
	ctx := ctxT(t, 90*time.Second)
	stolen := filepath.Join(f.dir, "stolen-env")
	f.wrapHook(t, "env > '"+stolen+"'\nexport POOLGATE_USER=admin POOLGATE_ROLE=admin")

	c := s.client("writer", "w")
	if err := c.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	out := pushStep(ctx, t, c, "demo/unclaimed/lock-a", "demo/claimed/lock-a", c.Message("claiming", "lock-a"))
	if strings.Contains(out, "rejected") {
		t.Fatalf("claim refused:\n%s", out)
	}
	before := f.bareGit("rev-parse", "master")
	// A rewind is a force-push only an admin may make.
	c.Git(ctx, "reset", "--hard", "HEAD~1")
	out, _ = c.Git(ctx, "push", "--force", "origin", "HEAD:master")
	if !strings.Contains(out, "rejected") && !strings.Contains(out, "refused") {
		t.Fatalf("writer's force-push with an admin's hook environment was not refused:\n%s", out)
	}
	if after := f.bareGit("rev-parse", "master"); after != before {
		t.Fatalf("master moved from %s to %s", before, after)
	}
	recs, _ := os.ReadFile(pushlog.At(filepath.Join(f.data, "repos", "locks.git")).Path(pushlog.Rejections))
	if !strings.Contains(string(recs), `"user":"writer"`) || strings.Contains(string(recs), `"user":"admin"`) {
		t.Errorf("refusal not recorded as the writer's:\n%s", recs)
	}

	// Replaying the ticket the hook saw: spent, refused.
	env, err := os.ReadFile(stolen)
	if err != nil {
		t.Fatal(err)
	}
	var token, sock string
	for _, kv := range strings.Split(string(env), "\n") {
		if v, ok := strings.CutPrefix(kv, "POOLGATE_HOOK_TOKEN="); ok {
			token = v
		}
		if v, ok := strings.CutPrefix(kv, "POOLGATE_HOOK_SOCKET="); ok {
			sock = v
		}
	}
	if token == "" || sock == "" {
		t.Fatalf("hook had no ticket:\n%s", env)
	}
	if code, stderr := runHookProgram(t, f, sock, token, before+" "+before+" refs/heads/master\n"); code != 1 || !strings.Contains(stderr, "push refused") {
		t.Errorf("replayed ticket: exit %d, %q; want a refusal", code, stderr)
	}
}

// runHookProgram runs the real hook program in the served repo with the
// given socket and ticket, as git would, and returns its exit status and
// stderr.
func runHookProgram(t *testing.T, f *fixture, sock, token, input string) (int, string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(filepath.Dir(binPath), hooks.HookProgram))
	cmd.Dir = filepath.Join(f.data, "repos", "locks.git")
	cmd.Env = []string{"POOLGATE_HOOK_SOCKET=" + sock, "POOLGATE_HOOK_TOKEN=" + token,
		"POOLGATE_USER=admin", "POOLGATE_ROLE=admin", "PATH=" + os.Getenv("PATH")}
	cmd.Stdin = strings.NewReader(input)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, stderr.String()
}

func TestHookSocketRefusesForgedTicket(t *testing.T) {
	f := newFixture(t)
	f.startInProcess(0)
	sock := f.hookSocket(t)
	head := f.bareGit("rev-parse", "master")
	for _, token := range []string{"forged", "0123456789abcdef.00", "0123456789abcdef." + strings.Repeat("0", 48)} {
		if code, stderr := runHookProgram(t, f, sock, token, head+" "+head+" refs/heads/master\n"); code != 1 || !strings.Contains(stderr, "no valid ticket") {
			t.Errorf("token %q: exit %d, %q; want a refusal", token, code, stderr)
		}
	}
	// The wire format has no place for an identity: a request naming one
	// is refused whole.
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	json.NewEncoder(c).Encode(map[string]string{"token": "x.y", "input": "", "role": "admin", "user": "admin"})
	c.(*net.UnixConn).CloseWrite()
	var resp struct {
		Exit   int    `json:"exit"`
		Stderr string `json:"stderr"`
	}
	if err := json.NewDecoder(c).Decode(&resp); err != nil || resp.Exit != 1 || !strings.Contains(resp.Stderr, "malformed request") {
		t.Errorf("request with an identity: %+v, %v; want malformed", resp, err)
	}
	if _, err := os.Stat(pushlog.At(filepath.Join(f.data, "repos", "locks.git")).Path(pushlog.Pushes)); err == nil {
		t.Errorf("a refused ticket left a push record")
	}
}

// fakeSocket serves a hook socket that answers every request with answer
// (nil: reads the request and hangs up without a word).
func fakeSocket(t *testing.T, answer []byte) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pg-fake-sock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ln, err := net.Listen("unix", filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(30 * time.Second))
			buf := make([]byte, 4096)
			for {
				if _, err := c.Read(buf); err != nil {
					break
				}
			}
			c.Write(answer)
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// TestHookSocketGarbageRefusesThePush: whatever the socket says, unless it
// is a well-formed answer, the push is refused and the branch stays.
func TestHookSocketGarbageRefusesThePush(t *testing.T) {
	f := newFixture(t)
	s, _ := f.startInProcess(0)
	ctx := ctxT(t, 120*time.Second)
	c := s.client("writer", "w")
	if err := c.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	commitStep(ctx, t, c, "demo/unclaimed/lock-a", "demo/claimed/lock-a", c.Message("claiming", "lock-a"))
	before := f.bareGit("rev-parse", "master")
	for name, answer := range map[string][]byte{
		"garbage":            []byte("\x00\xffnot json at all"),
		"hangs up":           nil,
		"truncated":          []byte(`{"exit":0,"stder`),
		"no exit status":     []byte(`{"stderr":""}`),
		"odd exit status":    []byte(`{"exit":7,"stderr":""}`),
		"two answers":        []byte(`{"exit":0,"stderr":""}{"exit":0,"stderr":""}`),
		"unknown field":      []byte(`{"exit":0,"stderr":"","accept":true}`),
		"accept then trails": []byte(`{"exit":0,"stderr":""} x`),
	} {
		sock := fakeSocket(t, answer)
		f.wrapHook(t, "export POOLGATE_HOOK_SOCKET='"+sock+"'")
		out, err := c.Git(ctx, "push", "origin", "HEAD:master")
		if err == nil || !strings.Contains(out, "could not validate") {
			t.Errorf("%s: push not refused (err %v):\n%s", name, err, out)
		}
		// An error the stock client shows, not a rejection it would retry
		// silently forever.
		if strings.Contains(out, "rejected]") {
			t.Errorf("%s: refused as an ordinary rejection:\n%s", name, out)
		}
		if after := f.bareGit("rev-parse", "master"); after != before {
			t.Fatalf("%s: master moved from %s to %s", name, before, after)
		}
	}
	// A daemon that is gone: nothing listens.
	f.wrapHook(t, "export POOLGATE_HOOK_SOCKET='"+filepath.Join(f.dir, "nothing.sock")+"'")
	if out, err := c.Git(ctx, "push", "origin", "HEAD:master"); err == nil || !strings.Contains(out, "not reachable") {
		t.Errorf("no socket: push not refused (err %v):\n%s", err, out)
	}
}

// countingWrappers puts a `git` that logs its working directory and
// arguments first on PATH, and returns a poolgate binary (with the hook
// program beside it) that logs each start: what a push starts is counted,
// not timed. It returns the poolgate path and the two logs.
func countingWrappers(t *testing.T) (exe, gitLog, poolgateLog string) {
	t.Helper()
	realGit, err := exec.LookPath("git")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	gitLog, poolgateLog = filepath.Join(dir, "git.log"), filepath.Join(dir, "poolgate.log")
	wrap := filepath.Join(dir, "wrap")
	bin := filepath.Join(dir, "bin")
	for _, d := range []string{wrap, bin} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(path, script string) {
		if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(wrap, "git"), "#!/bin/sh\nprintf '%s\\t%s\\n' \"$(pwd -P)\" \"$*\" >> '"+gitLog+"'\nexec '"+realGit+"' \"$@\"\n")
	exe = filepath.Join(bin, "poolgate")
	write(exe, "#!/bin/sh\necho \"$*\" >> '"+poolgateLog+"'\nexec '"+binPath+"' \"$@\"\n")
	// A copy, not a link: its fallback runs the poolgate beside its own
	// resolved path, which must be the counting one.
	hook, err := os.ReadFile(filepath.Join(filepath.Dir(binPath), hooks.HookProgram))
	if err != nil {
		t.Fatal(err)
	}
	write(filepath.Join(bin, hooks.HookProgram), string(hook))
	t.Setenv("PATH", wrap+string(os.PathListSeparator)+os.Getenv("PATH"))
	return exe, gitLog, poolgateLog
}

// TestValidatedPushStartsNoPoolgateAndNoCatFile: under the daemon a push
// is judged and recorded without starting poolgate (both hooks are the
// small program, which asks the daemon) and without git cat-file (the
// daemon reads the quarantined objects in-process); what the judge and
// the record see is still right: the claim lands and is recorded as the
// writer's, the over-limit claim is refused and recorded with its build.
func TestValidatedPushStartsNoPoolgateAndNoCatFile(t *testing.T) {
	f := newFixture(t)
	exe, gitLog, poolgateLog := countingWrappers(t)
	f.exe = exe
	s, _ := f.startInProcess(0)
	ctx := ctxT(t, 120*time.Second)
	for _, name := range []string{"pre-receive", "post-receive"} {
		if link, err := os.Readlink(filepath.Join(f.data, "hooks", name)); err != nil || filepath.Base(link) != hooks.HookProgram {
			t.Fatalf("%s is not a link to %s: %q, %v", name, hooks.HookProgram, link, err)
		}
	}
	c := s.client("writer", "w")
	if err := c.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	data, err := filepath.EvalSymlinks(f.data)
	if err != nil {
		t.Fatal(err)
	}
	serverGit := func() []string {
		b, _ := os.ReadFile(gitLog)
		var out []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, data+string(os.PathSeparator)) {
				out = append(out, l)
			}
		}
		return out
	}
	before := len(serverGit())
	os.Remove(poolgateLog)

	for _, l := range []string{"lock-a", "lock-b"} {
		out := pushStep(ctx, t, c, "demo/unclaimed/"+l, "demo/claimed/"+l, c.Message("claiming", l))
		if strings.Contains(out, "rejected") || strings.Contains(out, "refused") {
			t.Fatalf("claim of %s refused:\n%s", l, out)
		}
	}
	out := pushStep(ctx, t, c, "demo/unclaimed/lock-c", "demo/claimed/lock-c", c.Message("claiming", "lock-c"))
	if !strings.Contains(out, "[remote rejected]") || !strings.Contains(out, "over-limit") {
		t.Fatalf("third claim should be a transient rejection:\n%s", out)
	}

	if b, err := os.ReadFile(poolgateLog); err == nil {
		t.Errorf("poolgate was started during the pushes:\n%s", b)
	}
	started := serverGit()[before:]
	var receivePacks int
	for _, l := range started {
		if strings.Contains(l, "cat-file") {
			t.Errorf("git cat-file started for a push: %s", l)
		}
		if strings.Contains(l, "receive-pack") {
			receivePacks++
		}
	}
	if receivePacks != 3 {
		// The wrapper must see the daemon's own git starts, or the count
		// above proves nothing.
		t.Errorf("wrapper saw %d receive-packs, want 3:\n%s", receivePacks, strings.Join(started, "\n"))
	}

	logs := s.logs.String()
	if n := strings.Count(logs, `"message":"judged over the hook socket"`); n != 3 {
		t.Errorf("%d pushes judged over the hook socket, want 3", n)
	}
	if n := strings.Count(logs, `"message":"recorded over the hook socket"`); n != 2 {
		t.Errorf("%d pushes recorded over the hook socket, want 2", n)
	}
	repo := filepath.Join(f.data, "repos", "locks.git")
	recs, err := os.ReadFile(pushlog.At(repo).Path(pushlog.Pushes))
	tip := f.bareGit("rev-parse", "master")
	if err != nil || strings.Count(string(recs), `"user":"writer"`) != 2 || !strings.Contains(string(recs), `"new":"`+tip+`"`) {
		t.Errorf("push records (%v), want the writer's two claims up to %s:\n%s", err, tip, recs)
	}
	rej, err := os.ReadFile(pushlog.At(repo).Path(pushlog.Rejections))
	if err != nil || !strings.Contains(string(rej), "over-limit") || !strings.Contains(string(rej), `"user":"writer"`) {
		t.Errorf("rejection record (%v):\n%s", err, rej)
	}
}
