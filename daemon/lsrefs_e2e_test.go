package daemon_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Issue 11: git's gc --auto runs pack-refs after a push, and a pack-refs
// between the daemon's reads of packed-refs and of the loose refs dropped
// the branch from an advertisement: the stock client's fetch failed its
// step. Real clients poll (ls-remote and fetch, protocol v2 over SSH) while
// the branch moves and is packed again and again in the served repo.
func TestBranchAlwaysAdvertisedWhilePackRefsRuns(t *testing.T) {
	f := newFixture(t)
	s := f.start()
	tip := f.bareGit("rev-parse", "master")
	tree := f.bareGit("rev-parse", "master^{tree}")
	next := f.bareGit("-c", "user.name=t", "-c", "user.email=t@localhost", "commit-tree", tree, "-p", tip, "-m", "next")
	clone := filepath.Join(t.TempDir(), "clone")
	s.gitAs("reader", filepath.Dir(clone), "clone", "-q", s.url(), clone)

	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 60; i++ {
			cmd := exec.Command("git", "update-ref", "refs/heads/master", []string{next, tip}[i%2])
			cmd.Dir = filepath.Join(f.data, "repos", "locks.git")
			cmd.Run()
			cmd = exec.Command("git", "pack-refs", "--all", "--prune")
			cmd.Dir = filepath.Join(f.data, "repos", "locks.git")
			cmd.Run()
		}
	}()
	var mu sync.Mutex
	var failures []string
	polls := 0
	var wg sync.WaitGroup
	for _, args := range [][]string{{"ls-remote", s.url(), "master"}, {"-C", clone, "fetch", "-q", "origin", "master"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for running := true; running; {
				select {
				case <-done:
					running = false
				default:
				}
				cmd := exec.Command("git", args...)
				cmd.Env = append(os.Environ(), s.gitEnv("reader")...)
				out, err := cmd.CombinedOutput()
				mu.Lock()
				polls++
				if err != nil || (args[0] == "ls-remote" && !strings.Contains(string(out), "\trefs/heads/master")) {
					failures = append(failures, strings.Join(args[:2], " ")+": "+string(out))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d of %d polls lost the branch, first: %s", len(failures), polls, failures[0])
	}
	answered := 0
	for _, m := range s.uploadLogs() {
		answered += num(m, "ls_refs")
	}
	if answered == 0 {
		t.Fatal("the daemon answered no ls-refs itself: the test proves nothing")
	}
	t.Logf("%d polls, %d ls-refs answered by the daemon, the branch in each", polls, answered)
}
