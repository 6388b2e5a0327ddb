package hooks_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/poolgate/poolgate/pushlog"
)

// The benchmark repo: 1,000 locks in four pools (two of them nested) and a
// history of claim/release commits written by pool-resource, made with git
// fast-import so even 100,000 commits take seconds.
var benchPools = []string{"team-a/staging", "team-a/prod", "team-b/ci", "shared"}

const (
	benchLocksPerPool = 250
	// benchGenVersion keys the cache: bump it when the generator changes.
	benchGenVersion = 1
	benchConfig     = `
repos:
  - name: locks
    branch: master
    pools:
      - name: team-a/staging
        max_claimed: 10
      - name: team-a/prod
        max_claimed: 10
      - name: team-b/ci
      - name: shared
        max_claimed: 100
`
)

func benchLock(i int) (poolPath, name string) {
	return benchPools[i%len(benchPools)], fmt.Sprintf("env-%04d", i)
}

// benchStep is which lock commit i (1-based; commit 0 creates the pools)
// moves: odd commits claim a lock, the next even commit releases it, so the
// history is what pool-resource writes and every commit passes the rules.
func benchStep(i int) (lock int, claim bool) {
	return ((i - 1) / 2 * 7919) % (len(benchPools) * benchLocksPerPool), i%2 == 1
}

// generatePoolRepo writes a bare repo with the given number of commits on
// master into dir.
func generatePoolRepo(dir string, commits int) error {
	if out, err := exec.Command("git", "init", "-q", "--bare", "-b", "master", dir).CombinedOutput(); err != nil {
		return fmt.Errorf("git init: %v\n%s", err, out)
	}
	cmd := exec.Command("git", "fast-import", "--quiet", "--done")
	cmd.Dir = dir
	cmd.Env = gitEnv(os.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	w := bufio.NewWriterSize(in, 1<<20)
	nLocks := len(benchPools) * benchLocksPerPool
	// Blobs: one lock file per lock (marks 1..nLocks), and an empty one.
	for i := 0; i < nLocks; i++ {
		p, n := benchLock(i)
		body := fmt.Sprintf("{\"pool\":%q,\"lock\":%q,\"host\":\"10.0.%d.%d\"}\n", p, n, i/256, i%256)
		fmt.Fprintf(w, "blob\nmark :%d\ndata %d\n%s\n", i+1, len(body), body)
	}
	empty := nLocks + 1
	fmt.Fprintf(w, "blob\nmark :%d\ndata 0\n\n", empty)

	const t0 = 1764000000
	commit := func(i int, msg string) {
		fmt.Fprintf(w, "commit refs/heads/master\ncommitter git <git@localhost> %d +0000\ndata %d\n%s\n", t0+60*i, len(msg), msg)
	}
	commit(0, "create pools\n")
	fmt.Fprintf(w, "M 100644 :%d README.md\n", empty)
	for _, p := range benchPools {
		fmt.Fprintf(w, "M 100644 :%d %s/claimed/.gitkeep\nM 100644 :%d %s/unclaimed/.gitkeep\n", empty, p, empty, p)
	}
	for i := 0; i < nLocks; i++ {
		p, n := benchLock(i)
		fmt.Fprintf(w, "M 100755 :%d %s/unclaimed/%s\n", i+1, p, n)
	}
	w.WriteString("\n")
	for i := 1; i < commits; i++ {
		l, claim := benchStep(i)
		p, n := benchLock(l)
		from, to, verb := "unclaimed", "claimed", "claiming"
		if !claim {
			from, to, verb = "claimed", "unclaimed", "unclaiming"
		}
		commit(i, fmt.Sprintf("%s: %s\nBuild URL: https://ci.example.com/teams/main/pipelines/p/jobs/deploy/builds/%d\n", verb, n, i))
		fmt.Fprintf(w, "D %s/%s/%s\nM 100755 :%d %s/%s/%s\n\n", p, from, n, l+1, p, to, n)
	}
	w.WriteString("done\n")
	if err := w.Flush(); err != nil {
		return fmt.Errorf("git fast-import: %v\n%s", err, stderr.String())
	}
	in.Close()
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("git fast-import: %v\n%s", err, stderr.String())
	}
	return nil
}

// cachedPoolRepo returns a generated repo kept under os.TempDir so reruns of
// the benchmark skip generation. It is built beside the cache entry and
// renamed into place, so an interrupted run never leaves half a repo.
func cachedPoolRepo(tb testing.TB, commits int) string {
	tb.Helper()
	base := filepath.Join(os.TempDir(), "poolgate-bench")
	dir := filepath.Join(base, fmt.Sprintf("v%d-locks%d-commits%d", benchGenVersion, len(benchPools)*benchLocksPerPool, commits), "locks.git")
	if _, err := os.Stat(filepath.Join(dir, "HEAD")); err == nil {
		return dir
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		tb.Fatal(err)
	}
	tmp, err := os.MkdirTemp(base, "gen-")
	if err != nil {
		tb.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	if err := generatePoolRepo(filepath.Join(tmp, "locks.git"), commits); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(filepath.Join(tmp, "locks.git"), dir); err != nil {
		if _, serr := os.Stat(filepath.Join(dir, "HEAD")); serr != nil {
			tb.Fatal(err) // not a concurrent run that won the race
		}
	}
	return dir
}

// hookRun is one pre-receive judgement as git runs it: the poolgate binary
// as a new process in the repo directory, "OLD NEW REF" on stdin.
type hookRun struct {
	repo, line string
	env        []string
}

func (h hookRun) run() (string, error) {
	cmd := exec.Command(binary, "hook", "pre-receive")
	cmd.Dir = h.repo
	cmd.Env = h.env
	cmd.Stdin = strings.NewReader(h.line)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	return stderr.String(), err
}

// pushCommit makes a one-commit push on top of the branch with git
// plumbing, without moving the branch: lock `name` goes from fromPath to
// toPath (fromPath "" adds it). It returns the new commit.
func pushCommit(tb testing.TB, repo, fromPath, toPath, blob, msg string) (tip, commit string) {
	tb.Helper()
	env := append(gitEnv(tb.TempDir()), "GIT_INDEX_FILE="+filepath.Join(tb.TempDir(), "index"))
	git := func(stdin string, args ...string) string {
		tb.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = repo
		cmd.Env = env
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			tb.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, stderr)
		}
		return strings.TrimSpace(string(out))
	}
	tip = git("", "rev-parse", "refs/heads/master")
	git("", "read-tree", tip)
	info := ""
	if fromPath != "" {
		info += "0 " + strings.Repeat("0", 40) + "\t" + fromPath + "\n"
	}
	info += "100755 " + blob + "\t" + toPath + "\n"
	git(info, "update-index", "--index-info")
	tree := git("", "write-tree")
	commit = git(msg, "commit-tree", tree, "-p", tip)
	return tip, commit
}

// benchHook prepares a repo of the given history length and returns a hook
// run judging a one-commit claim of an unclaimed lock, after checking that
// the hook accepts that claim and refuses a claim of a lock that does not
// exist, so the benchmark measures a real judgement.
func benchHook(tb testing.TB, repo string, commits int) hookRun {
	tb.Helper()
	// Which locks are claimed at the tip.
	claimed := map[int]bool{}
	for i := 1; i < commits; i++ {
		l, claim := benchStep(i)
		claimed[l] = claim
	}
	target := 0
	for claimed[target] {
		target++
	}
	p, n := benchLock(target)
	blobOut, err := exec.Command("git", "-C", repo, "rev-parse", "refs/heads/master:"+p+"/unclaimed/"+n).Output()
	if err != nil {
		tb.Fatalf("lock %s/%s is not unclaimed at the tip: %v", p, n, err)
	}
	blob := strings.TrimSpace(string(blobOut))
	msg := fmt.Sprintf("claiming: %s\nBuild URL: https://ci.example.com/teams/main/pipelines/p/jobs/bench/builds/1\n", n)
	tip, good := pushCommit(tb, repo, p+"/unclaimed/"+n, p+"/claimed/"+n, blob, msg)
	_, bad := pushCommit(tb, repo, "", p+"/claimed/ghost", blob, "claiming: ghost\n")

	cfg := filepath.Join(tb.TempDir(), "poolgate.yaml")
	if err := os.WriteFile(cfg, []byte(benchConfig), 0o644); err != nil {
		tb.Fatal(err)
	}
	// The hook's push record would grow in the cached repo; start afresh.
	os.RemoveAll(filepath.Dir(pushlog.At(repo).Path(pushlog.Pushes)))
	env := append(gitEnv(tb.TempDir()), pushlog.EnvConfig+"="+cfg, pushlog.EnvUser+"=bench", pushlog.EnvRole+"=write")

	refused := hookRun{repo: repo, env: env, line: tip + " " + bad + " refs/heads/master\n"}
	if out, err := refused.run(); err == nil || !strings.Contains(out, "[claim-missing]") {
		tb.Fatalf("hook did not refuse a claim of a missing lock (err %v):\n%s", err, out)
	}
	h := hookRun{repo: repo, env: env, line: tip + " " + good + " refs/heads/master\n"}
	if out, err := h.run(); err != nil {
		tb.Fatalf("hook refused the claim of %s/%s: %v\n%s", p, n, err, out)
	}
	return h
}

// BenchmarkPreReceive times one pre-receive hook run for a one-commit claim,
// process start included, on repos of 100 and 100,000 commits with 1,000
// locks: the time must not grow with history.
func BenchmarkPreReceive(b *testing.B) {
	for _, commits := range []int{100, 100000} {
		b.Run(fmt.Sprintf("commits=%d", commits), func(b *testing.B) {
			if commits > 1000 && testing.Short() {
				b.Skip("100,000-commit repo skipped in -short mode")
			}
			h := benchHook(b, cachedPoolRepo(b, commits), commits)
			for b.Loop() {
				if out, err := h.run(); err != nil {
					b.Fatalf("hook: %v\n%s", err, out)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e6, "ms/op")
		})
	}
}

// TestBenchmarkRepoIsValidPoolHistory checks the benchmark's generator on a
// small repo: `poolgate check` passes every commit of its history, the tree
// holds 1,000 locks, and the hook accepts a claim and refuses a claim of a
// lock that does not exist.
func TestBenchmarkRepoIsValidPoolHistory(t *testing.T) {
	repo := filepath.Join(t.TempDir(), "locks.git")
	if err := generatePoolRepo(repo, 100); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "poolgate.yaml")
	if err := os.WriteFile(cfg, []byte(benchConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(binary, "check", "--config", cfg, "--repo", repo).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "100 commit(s) checked") {
		t.Fatalf("poolgate check: %v\n%s", err, out)
	}
	files, err := exec.Command("git", "-C", repo, "ls-tree", "-r", "--name-only", "master").Output()
	if err != nil {
		t.Fatal(err)
	}
	locks := 0
	for _, f := range strings.Split(strings.TrimSpace(string(files)), "\n") {
		if strings.Contains(f, "/claimed/env-") || strings.Contains(f, "/unclaimed/env-") {
			locks++
		}
	}
	if locks != len(benchPools)*benchLocksPerPool {
		t.Fatalf("tip holds %d locks, want %d", locks, len(benchPools)*benchLocksPerPool)
	}
	benchHook(t, repo, 100)
}
