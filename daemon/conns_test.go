package daemon_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// sshSessionless starts OpenSSH's `ssh -N` with keepalives every second:
// a connection that authenticates and never opens a session.
func (s *server) sshSessionless(t *testing.T, user string) *exec.Cmd {
	t.Helper()
	k := s.f.keys[user]
	cmd := exec.Command("ssh", "-N", "-F", "/dev/null", "-i", k.path, "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "ServerAliveInterval=1",
		"-o", "ServerAliveCountMax=1000", "-p", s.port, "git@127.0.0.1")
	cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK=")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// Issue 11: a read key opened more sessionless connections than
// max_sessions, kept alive by keepalives, and writers were refused. Now
// its key holds at most max_connections_per_key of them, each closed after
// session_start_timeout; the rest wait without a slot, and a writer's
// stock client pushes meanwhile.
func TestSessionlessConnectionsOfOneKeyAreClosedAndAWriterStillPushes(t *testing.T) {
	f := newFixture(t)
	f.ssh += "  max_sessions: 8\n  session_start_timeout: 4s\n"
	f.writeConfig()
	s := f.start()
	ctx := ctxT(t, 120*time.Second)
	const n = 12 // more than max_sessions
	var running atomic.Int32
	exited := make(chan struct{}, n)
	for i := 0; i < n; i++ {
		cmd := s.sshSessionless(t, "reader")
		running.Add(1)
		go func() {
			cmd.Wait()
			running.Add(-1)
			exited <- struct{}{}
		}()
	}
	c := s.client("writer", "meanwhile")
	if err := c.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Acquire(ctx); err != nil {
		t.Fatalf("writer's acquire while a read key floods: %v", err)
	}
	if running.Load() == 0 {
		t.Fatal("the sessionless connections were gone before the writer pushed: the test proves nothing")
	}
	for i := 0; i < n; i++ {
		select {
		case <-exited:
		case <-ctx.Done():
			t.Fatalf("%d sessionless connections still open, keepalives or not", running.Load())
		}
	}
	if !s.logged("connection closed: no session opened in time") {
		t.Error("no log line for the sessionless connections")
	}
}

// idle_timeout counts channel traffic: keepalive requests do not keep a
// connection whose session has ended.
func TestKeepalivesDoNotResetIdleTimeout(t *testing.T) {
	f := newFixture(t)
	f.ssh += "  idle_timeout: 2s\n  session_start_timeout: 60s\n"
	f.writeConfig()
	s, _ := f.startInProcess(0)
	c := s.dial(t, gossh.PublicKeys(f.keys["reader"].signer))
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	sess.Run("git-upload-pack 'nope.git'") // a session, refused at once
	closed := make(chan struct{})
	go func() { c.Wait(); close(closed) }()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(60 * time.Second)
	for {
		select {
		case <-closed:
			if !strings.Contains(s.logs.String(), "connection closed: idle") {
				t.Error("closed, but not by idle_timeout")
			}
			return
		case <-tick.C:
			c.SendRequest("keepalive@openssh.com", true, nil)
		case <-deadline:
			t.Fatal("keepalives kept an idle connection open past idle_timeout")
		}
	}
}

// Issue 12: 358 of a burst of 1,000 real clients failed their fetch when
// connections past max_sessions were reset. A burst of 100 real git
// clients, one key, over max_sessions 8: every one succeeds.
func TestBurstOverMaxSessionsEveryFetchSucceeds(t *testing.T) {
	f := newFixture(t)
	f.ssh += "  max_sessions: 8\n"
	f.writeConfig()
	s := f.start()
	ctx := ctxT(t, 240*time.Second)
	const n = 100
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dir := filepath.Join(t.TempDir(), fmt.Sprint(i))
			var args [][]string
			if i%2 == 0 {
				args = [][]string{{"ls-remote", s.url(), "master"}}
			} else {
				args = [][]string{{"init", "-q", dir}, {"-C", dir, "fetch", "-q", s.url(), "master"}}
			}
			for _, a := range args {
				cmd := exec.CommandContext(ctx, "git", a...)
				cmd.Env = append(os.Environ(), s.gitEnv("reader")...)
				if out, err := cmd.CombinedOutput(); err != nil {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("git %s: %v: %s", a[0], err, out))
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d of %d clients failed, first: %s", len(failures), n, failures[0])
	}
}
