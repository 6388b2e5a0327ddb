package operator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/internal/poolclient"
	"github.com/poolgate/poolgate/internal/testserver"
)

const (
	token   = "t0ken-for-operator-tests"
	urlA    = "https://ci.example.com/teams/main/pipelines/p1/jobs/deploy/builds/41"
	urlB    = "https://ci.example.com/teams/main/pipelines/p2/jobs/test/builds/7"
	twoLock = "[{name: staging, locks: [env-a, env-b]}]"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// cli runs the poolgate binary and returns stdout, stderr and exit code.
func cli(t *testing.T, f *testserver.Fixture, args ...string) (string, string, int) {
	t.Helper()
	return cliEnv(t, f, nil, args...)
}

func cliEnv(t *testing.T, f *testserver.Fixture, env []string, args ...string) (string, string, int) {
	t.Helper()
	_, bin := testserver.Build(t)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(append(os.Environ(), "HOME="+f.Dir, "SUDO_USER="), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

type lockDoc struct {
	Name, State, Commit string
}

// apiGet reads a JSON answer of the server's API with the token.
func apiGet(t *testing.T, s *testserver.Server, path string, v any) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+s.HTTPAddr+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func locks(t *testing.T, s *testserver.Server) map[string]lockDoc {
	t.Helper()
	var doc struct {
		Pools []struct{ Locks []lockDoc }
	}
	apiGet(t, s, "/api/v1/repos/locks/pools", &doc)
	out := map[string]lockDoc{}
	for _, p := range doc.Pools {
		for _, l := range p.Locks {
			out[l.Name] = l
		}
	}
	return out
}

// waitState polls the API: events are derived just after a push.
func waitState(t *testing.T, s *testserver.Server, lock, state string, within time.Duration) lockDoc {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		l := locks(t, s)[lock]
		if l.State == state && l.Commit != "" {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never became %s (is %+v)", lock, state, l)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type eventDoc struct {
	Type string
	Lock string
	Data struct {
		Commit   string
		Pusher   *struct{ User string }
		Operator *struct{ Name, Reason string }
	}
}

func history(t *testing.T, s *testserver.Server, typ string) []eventDoc {
	t.Helper()
	var doc struct{ Events []eventDoc }
	apiGet(t, s, "/api/v1/repos/locks/events?type="+typ, &doc)
	return doc.Events
}

// historyOf waits until the newest event of type typ is about lock (events
// are derived just after a push, and the pools API reads states from git
// first), then returns the history of that type.
func historyOf(t *testing.T, s *testserver.Server, typ, lock string) []eventDoc {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		evs := history(t, s, typ)
		if len(evs) > 0 && evs[0].Lock == lock {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s event for %s: %+v", typ, lock, evs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitEvents waits until n events of type typ are derived.
func waitEvents(t *testing.T, s *testserver.Server, typ string, n int) []eventDoc {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		evs := history(t, s, typ)
		if len(evs) >= n {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d %s events, want %d: %+v", len(evs), typ, n, evs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tip(t *testing.T, f *testserver.Fixture) string {
	t.Helper()
	out, err := exec.Command("git", "-C", filepath.Join(f.Data, "repos", "locks.git"), "rev-parse", "refs/heads/master").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// checkClean runs `poolgate check` over the whole served history.
func checkClean(t *testing.T, f *testserver.Fixture) {
	t.Helper()
	out, stderr, code := cli(t, f, "check", "--config", f.Config, "--repo", filepath.Join(f.Data, "repos", "locks.git"), "--name", "locks")
	if code != 0 {
		t.Fatalf("poolgate check: exit %d\n%s%s", code, out, stderr)
	}
}

func TestOperatorReleaseThenOldHoldersLateReleaseFails(t *testing.T) {
	f := testserver.New(t, testserver.Options{Token: token, Pools: twoLock})
	s := f.Start()
	a := s.Client("a", "staging", urlA)
	if err := a.Claim(ctx(t), "env-a"); err != nil {
		t.Fatal(err)
	}
	waitState(t, s, "env-a", "claimed", 30*time.Second)

	// The CLI reaches the running daemon over its operator socket.
	out, stderr, code := cli(t, f, "release", "--config", f.Config, "locks", "staging", "env-a", "--reason", "build 41 was aborted")
	if code != 0 || !strings.HasPrefix(out, "released staging/env-a in commit ") {
		t.Fatalf("release: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	if !strings.Contains(s.Log(), `"message":"operator action"`) {
		t.Fatalf("the daemon did not perform the action (no operator action in its log)")
	}
	waitState(t, s, "env-a", "unclaimed", 30*time.Second)
	me, _ := user.Current()
	rel := historyOf(t, s, "released", "env-a")
	if len(rel) != 1 || rel[0].Data.Operator == nil || rel[0].Data.Operator.Name != me.Username ||
		rel[0].Data.Operator.Reason != "build 41 was aborted" || rel[0].Data.Pusher == nil || rel[0].Data.Pusher.User != me.Username {
		t.Fatalf("released event does not name the operator %s and the reason: %+v", me.Username, rel)
	}

	if out, _, _ := cli(t, f, "history", "--config", f.Config, "locks", "--lock", "env-a"); !strings.Contains(out, "by operator "+me.Username+": build 41 was aborted") {
		t.Fatalf("history does not show the operator's release:\n%s", out)
	}

	// Releasing it again is refused with one line, nothing changed.
	before := tip(t, f)
	_, stderr, code = cli(t, f, "release", "--config", f.Config, "locks", "staging", "env-a", "--reason", "again")
	if code != 1 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, "it is unclaimed, not claimed") {
		t.Fatalf("second release: exit %d, stderr %q", code, stderr)
	}
	if tip(t, f) != before {
		t.Fatal("a refused action moved the branch")
	}

	b := s.Client("b", "staging", urlB)
	if err := b.Claim(ctx(t), "env-a"); err != nil {
		t.Fatal(err)
	}
	waitState(t, s, "env-a", "claimed", 30*time.Second)
	before = tip(t, f)

	// Build 41's ensure step finally runs its release.
	err := a.Release(ctx(t), "env-a")
	var failed *poolclient.FailedError
	if !errors.As(err, &failed) {
		t.Fatalf("the old holder's release: got %v, want the step to fail with the server's error", err)
	}
	last := failed.Outputs[len(failed.Outputs)-1]
	for _, want := range []string{"[stale-release]", "p1/deploy #41", "p2/test #7", "build 41 was aborted"} {
		if !strings.Contains(last, want) {
			t.Errorf("the build log lacks %q:\n%s", want, last)
		}
	}
	for _, o := range failed.Outputs {
		if strings.Contains(o, "[rejected]") || strings.Contains(o, "[remote rejected]") {
			t.Fatalf("refused as an ordinary rejection (the stock client would retry silently):\n%s", o)
		}
	}
	if got := tip(t, f); got != before {
		t.Fatalf("something landed: tip %s, was %s", got, before)
	}
	if l := locks(t, s)["env-a"]; l.State != "claimed" {
		t.Fatalf("env-a is %s, want still claimed by build 7", l.State)
	}
	// The rightful holder releases it normally.
	if err := b.Release(ctx(t), "env-a"); err != nil {
		t.Fatal(err)
	}
	checkClean(t, f)
}

func post(t *testing.T, url, tok string, body any) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", url, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	json.Unmarshal(raw, &m)
	return resp.StatusCode, m
}

func TestAPIReleaseAndClaimWithTokenStaleCommitAndWrongState(t *testing.T) {
	f := testserver.New(t, testserver.Options{Token: token, Pools: twoLock})
	s := f.Start()
	a := s.Client("a", "staging", urlA)
	if err := a.Claim(ctx(t), "env-a"); err != nil {
		t.Fatal(err)
	}
	seen := waitState(t, s, "env-a", "claimed", 30*time.Second)
	base := "http://" + s.HTTPAddr + "/api/v1/repos/locks/pools/staging/locks/"

	if code, _ := post(t, base+"env-a/release", "", map[string]string{"reason": "x", "commit": seen.Commit}); code != http.StatusUnauthorized {
		t.Fatalf("without the token: %d, want 401", code)
	}
	if code, m := post(t, base+"env-a/release", "wrong", map[string]string{"reason": "x"}); code != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d %v, want 401", code, m)
	}
	if code, m := post(t, base+"env-b/release", token, map[string]string{"reason": "x"}); code != http.StatusConflict ||
		!strings.Contains(m["error"].(string), "not claimed") {
		t.Fatalf("release of a free lock: %d %v, want 409", code, m)
	}
	if code, m := post(t, base+"env-a/release", token, map[string]string{}); code != http.StatusBadRequest {
		t.Fatalf("no reason: %d %v, want 400", code, m)
	}
	before := tip(t, f)
	// The page showed env-a claimed by build 41; meanwhile build 41
	// released it and build 7 claimed it: the operator's release is refused.
	if err := a.Release(ctx(t), "env-a"); err != nil {
		t.Fatal(err)
	}
	b := s.Client("b", "staging", urlB)
	if err := b.Claim(ctx(t), "env-a"); err != nil {
		t.Fatal(err)
	}
	before = tip(t, f)
	if code, m := post(t, base+"env-a/release", token, map[string]string{"reason": "stuck", "commit": seen.Commit}); code != http.StatusConflict ||
		!strings.Contains(m["error"].(string), "changed after commit") {
		t.Fatalf("stale commit: %d %v, want 409", code, m)
	}
	if tip(t, f) != before {
		t.Fatal("a refused action moved the branch")
	}
	// With the commit of what is there now, it is done.
	// The page's view catches up with build 7's claim (the tip by now).
	now := waitState(t, s, "env-a", "claimed", 30*time.Second)
	for deadline := time.Now().Add(30 * time.Second); now.Commit != before; {
		if time.Now().After(deadline) {
			t.Fatalf("env-a's commit stays %s, want build 7's claim %s", now.Commit, before)
		}
		time.Sleep(100 * time.Millisecond)
		now = waitState(t, s, "env-a", "claimed", 30*time.Second)
	}
	code, m := post(t, base+"env-a/release", token, map[string]string{"reason": "env broken", "commit": now.Commit, "operator": "alice"})
	if code != http.StatusOK || m["commit"] == "" {
		t.Fatalf("release: %d %v", code, m)
	}
	waitState(t, s, "env-a", "unclaimed", 30*time.Second)
	code, m = post(t, base+"env-b/claim", token, map[string]string{"reason": "maintenance of env-b"})
	if code != http.StatusOK {
		t.Fatalf("claim: %d %v", code, m)
	}
	waitState(t, s, "env-b", "claimed", 30*time.Second)
	rel := waitEvents(t, s, "released", 2) // build 41's own, then the operator's
	if len(rel) != 2 || rel[0].Data.Operator == nil || rel[0].Data.Operator.Name != "alice (http)" || rel[0].Data.Operator.Reason != "env broken" {
		t.Fatalf("newest released event: %+v", rel)
	}
	cl := historyOf(t, s, "claimed", "env-b")
	if len(cl) == 0 || cl[0].Lock != "env-b" || cl[0].Data.Operator == nil || cl[0].Data.Operator.Name != "http" {
		t.Fatalf("newest claimed event: %+v", cl)
	}
	checkClean(t, f)
}

func TestReleaseAfterReleasesAClaimHeldLonger(t *testing.T) {
	f := testserver.New(t, testserver.Options{Token: token,
		Pools: "[{name: staging, release_after: 2s, locks: [env-a]}, {name: other, locks: [env-x]}]"})
	s := f.Start()
	a := s.Client("a", "staging", urlA)
	if err := a.Claim(ctx(t), "env-a"); err != nil {
		t.Fatal(err)
	}
	x := s.Client("x", "other", urlB)
	if err := x.Claim(ctx(t), "env-x"); err != nil {
		t.Fatal(err)
	}
	waitState(t, s, "env-a", "claimed", 30*time.Second)
	waitState(t, s, "env-a", "unclaimed", 60*time.Second)
	rel := historyOf(t, s, "released", "env-a")
	if len(rel) != 1 || rel[0].Lock != "env-a" || rel[0].Data.Operator == nil || rel[0].Data.Operator.Name != "poolgate release_after" ||
		!strings.Contains(rel[0].Data.Operator.Reason, "over the pool's release_after 2s") {
		t.Fatalf("released events: %+v", rel)
	}
	// A pool without release_after is never touched.
	if l := locks(t, s)["env-x"]; l.State != "claimed" {
		t.Fatalf("env-x in a pool without release_after is %s", l.State)
	}
	// The holder's own release now fails at once, as the stock client
	// fails on a lock that is not claimed.
	if err := a.Release(ctx(t), "env-a"); !errors.Is(err, poolclient.ErrNotClaimed) {
		t.Fatalf("late release after release_after: %v", err)
	}
	checkClean(t, f)
}

func TestCLIWithoutADaemonActsThroughTheRepositorysHook(t *testing.T) {
	f := testserver.New(t, testserver.Options{Token: token, Pools: "[{name: staging, max_claimed: 1, locks: [env-a, env-b]}]"})
	s := f.Start()
	a := s.Client("a", "staging", urlA)
	if err := a.Claim(ctx(t), "env-a"); err != nil {
		t.Fatal(err)
	}
	s.Stop(15) // SIGTERM: a hook-only set-up from here on
	before := tip(t, f)
	// The validator still judges: claiming env-b would exceed max_claimed.
	_, stderr, code := cli(t, f, "claim", "--config", f.Config, "locks", "staging", "env-b", "--reason", "test")
	if code != 1 || !strings.Contains(stderr, "over-limit") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Fatalf("claim over max_claimed: exit %d, stderr %q", code, stderr)
	}
	if tip(t, f) != before {
		t.Fatal("a refused action moved the branch")
	}
	out, stderr, code := cli(t, f, "release", "--config", f.Config, "locks", "staging", "env-a", "--reason", "daemon down, freeing by hand")
	if code != 0 || !strings.Contains(out, "released staging/env-a") {
		t.Fatalf("release: exit %d %q %q", code, out, stderr)
	}
	msg, err := exec.Command("git", "-C", filepath.Join(f.Data, "repos", "locks.git"), "log", "-1", "--format=%B").Output()
	if err != nil {
		t.Fatal(err)
	}
	me, _ := user.Current()
	if !strings.HasPrefix(string(msg), "unclaiming: env-a\n") || !strings.Contains(string(msg), "Poolgate-Operator: "+me.Username) {
		t.Fatalf("commit message:\n%s", msg)
	}
	rec, err := os.ReadFile(filepath.Join(f.Data, "repos", "locks.git", "poolgate", "pushes.jsonl"))
	if err != nil || !strings.Contains(string(rec), `"user":"`+me.Username+`"`) {
		t.Fatalf("the hook did not record the operator's push: %v\n%s", err, rec)
	}
	// Usage errors: exit 2, one line.
	_, stderr, code = cli(t, f, "release", "--config", f.Config, "locks", "staging", "env-a")
	if code != 2 || !strings.Contains(stderr, "reason is empty") {
		t.Fatalf("no reason: exit %d %q", code, stderr)
	}
	checkClean(t, f)
}

func TestForgedOperatorTrailerIsRefusedAsAnError(t *testing.T) {
	f := testserver.New(t, testserver.Options{Token: token, Pools: twoLock})
	s := f.Start()
	a := s.Client("a", "staging", urlA)
	if err := a.Claim(ctx(t), "env-a"); err != nil {
		t.Fatal(err)
	}
	c := ctx(t)
	before := tip(t, f)
	if _, err := a.Git(c, "mv", "staging/claimed/env-a", "staging/unclaimed/env-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Git(c, "commit", "-m", "unclaiming: env-a\n\nPoolgate-Operator: alice\nPoolgate-Reason: trust me"); err != nil {
		t.Fatal(err)
	}
	out, err := a.Git(c, "push", "origin", "HEAD:master")
	if err == nil || !strings.Contains(out, "[operator-trailer]") || strings.Contains(out, "[remote rejected]") {
		t.Fatalf("forged operator release: err %v\n%s", err, out)
	}
	if tip(t, f) != before {
		t.Fatal("the forged commit landed")
	}
}

func TestCLIAddAndRemoveThroughTheDaemon(t *testing.T) {
	f := testserver.New(t, testserver.Options{Token: token, Pools: twoLock})
	s := f.Start()
	run := func(verb, lock string) (string, string, int) {
		return cli(t, f, verb, "--config", f.Config, "locks", "staging", lock, "--reason", "rota change")
	}
	// Root may say whom it acts for (sudo); anyone else is named by the
	// kernel, whatever it says.
	out, stderr, code := cliEnv(t, f, []string{"SUDO_USER=alice"}, "add", "--config", f.Config, "locks", "staging", "env-c", "--reason", "rota change")
	if code != 0 || !strings.Contains(out, "added staging/env-c") {
		t.Fatalf("add: %d %q %q", code, out, stderr)
	}
	waitState(t, s, "env-c", "unclaimed", 30*time.Second)
	me, _ := user.Current()
	want := me.Username
	if os.Getuid() == 0 {
		want = "alice (sudo)"
	}
	if added := historyOf(t, s, "added", "env-c"); len(added) == 0 || added[0].Lock != "env-c" || added[0].Data.Operator == nil || added[0].Data.Operator.Name != want {
		t.Fatalf("added event: %+v, want operator %q", added, want)
	}
	if _, stderr, code := run("add", "env-c"); code != 1 || !strings.Contains(stderr, "it is unclaimed, not absent") {
		t.Fatalf("second add: %d %q", code, stderr)
	}
	a := s.Client("a", "staging", urlA)
	if err := a.Claim(ctx(t), "env-a"); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := run("remove", "env-a"); code != 1 || !strings.Contains(stderr, "it is claimed, not unclaimed") {
		t.Fatalf("remove of a held lock: %d %q", code, stderr)
	}
	if out, stderr, code := run("remove", "env-c"); code != 0 || !strings.Contains(out, "removed staging/env-c") {
		t.Fatalf("remove: %d %q %q", code, out, stderr)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, ok := locks(t, s)["env-c"]; !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("env-c is still listed after its removal")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, stderr, code := cli(t, f, "release", "--config", f.Config, "locks", "nope", "env-a", "--reason", "x"); code != 1 || !strings.Contains(stderr, `no pool "nope"`) {
		t.Fatalf("unknown pool: %d %q", code, stderr)
	}
	if out, _, code := cli(t, f, "release", "--help"); code != 0 || !strings.Contains(out, "release [--config FILE] REPO POOL LOCK --reason TEXT") {
		t.Fatalf("--help: %d %q", code, out)
	}
	checkClean(t, f)
}

// A plain bare repository with poolgate's hook and no daemon at all (git
// over OpenSSH, gitolite): the repository's path is REPO.
func TestCLIOnAPlainRepositoryWithTheHookInstalled(t *testing.T) {
	_, hookBin := testserver.Build(t)
	dir := t.TempDir()
	bare := filepath.Join(dir, "locks.git")
	work := filepath.Join(dir, "work")
	git := func(d string, args ...string) {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = d
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t", "HOME="+dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	git(dir, "init", "-q", "--bare", "--initial-branch=master", bare)
	git(dir, "init", "-q", "--initial-branch=master", work)
	for _, p := range []string{"staging/claimed/env-a", "staging/unclaimed/env-b", "staging/unclaimed/.gitkeep"} {
		os.MkdirAll(filepath.Join(work, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(work, p), nil, 0o644)
	}
	git(work, "add", ".")
	git(work, "commit", "-qm", "seed")
	git(work, "push", "-q", bare, "master")
	// The admin installs the hooks after seeding the pool, as the README
	// says: pre-receive judges, post-receive records what landed.
	for _, h := range []string{"pre-receive", "post-receive"} {
		if err := os.WriteFile(filepath.Join(bare, "hooks", h), []byte("#!/bin/sh\nexec "+hookBin+" hook "+h+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f := &testserver.Fixture{T: t, Dir: dir}
	out, stderr, code := cli(t, f, "release", bare, "staging", "env-a", "--reason", "freed by hand")
	if code != 0 || !strings.Contains(out, "released staging/env-a") {
		t.Fatalf("release: %d %q %q", code, out, stderr)
	}
	// Both went through the repository's own hook, which recorded them.
	if _, stderr, code := cli(t, f, "claim", bare, "staging", "env-a", "--reason", "x"); code != 0 {
		t.Fatalf("claim: %d %q", code, stderr)
	}
	rec, err := os.ReadFile(filepath.Join(bare, "poolgate", "pushes.jsonl"))
	if err != nil || strings.Count(string(rec), "\n") != 2 {
		t.Fatalf("the repository's hook recorded %q, %v; want the two operator pushes", rec, err)
	}
	os.Remove(filepath.Join(bare, "hooks", "pre-receive"))
	if _, stderr, code := cli(t, f, "release", bare, "staging", "env-a", "--reason", "x"); code != 1 || !strings.Contains(stderr, "no pre-receive hook") {
		t.Fatalf("without a hook: %d %q, want a refusal", code, stderr)
	}
}
