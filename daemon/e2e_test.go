package daemon_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/poolgate/poolgate/internal/poolclient"
	gossh "golang.org/x/crypto/ssh"
)

func TestPoolResourceOperationsOverSSH(t *testing.T) {
	f := newFixture(t)
	s := f.start()
	ctx := ctxT(t, 90*time.Second)
	c := s.client("writer", "ops")
	if err := c.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	name, err := c.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Release(ctx, name); err != nil {
		t.Fatal(err)
	}
	if err := c.Claim(ctx, "lock-b"); err != nil {
		t.Fatal(err)
	}
	if err := c.Release(ctx, "lock-b"); err != nil {
		t.Fatal(err)
	}
	if err := c.Add(ctx, "lock-d", []byte("host: d\n"), false); err != nil {
		t.Fatal(err)
	}
	if err := c.Update(ctx, "lock-d", []byte("host: d2\n")); err != nil {
		t.Fatal(err)
	}
	if err := c.Add(ctx, "lock-e", nil, true); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove(ctx, "lock-e"); err != nil {
		t.Fatal(err)
	}
	if err := c.Release(ctx, "lock-e"); !errors.Is(err, poolclient.ErrNotClaimed) {
		t.Fatalf("releasing a removed lock: %v, want ErrNotClaimed", err)
	}
	old := &poolclient.Client{URL: c.URL, Branch: c.Branch, Pool: c.Pool, Dir: filepath.Join(t.TempDir(), "old"),
		Env: c.Env, RetryDelay: c.RetryDelay, OldPrefix: "main/p/deploy build 7"}
	if err := old.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	if err := old.Claim(ctx, "lock-a"); err != nil {
		t.Fatal(err)
	}

	tree := f.bareGit("ls-tree", "-r", "--name-only", "master", "demo")
	want := "demo/claimed/.gitkeep\ndemo/claimed/lock-a\ndemo/unclaimed/.gitkeep\ndemo/unclaimed/lock-b\ndemo/unclaimed/lock-c\ndemo/unclaimed/lock-d"
	if tree != want {
		t.Fatalf("tree after the operations:\n%s\nwant:\n%s", tree, want)
	}
	if got := f.bareGit("show", "master:demo/unclaimed/lock-d"); got != "host: d2" {
		t.Fatalf("lock-d holds %q", got)
	}
	if !strings.Contains(s.logs.String(), `"verdict":"accepted"`) {
		t.Fatalf("no accepted push in the log")
	}
	// An implicit get after the put: a fresh clone over protocol v2.
	get := s.client("reader", "get")
	if err := get.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(s.logs.String(), `"protocol":"version=2"`) {
		t.Errorf("GIT_PROTOCOL was not passed to git")
	}
}

// Past max_sessions a connection waits its turn (issue 12: a reset fails
// the stock client's build), and is closed only past ssh.queue_timeout.
func TestConnectionOverMaxSessionsWaitsItsTurn(t *testing.T) {
	f := newFixture(t)
	f.ssh += "  max_sessions: 1\n  queue_timeout: 3s\n"
	f.writeConfig()
	s := f.start()
	dial := func(user string) (*gossh.Client, error) {
		return gossh.Dial("tcp", s.addr, &gossh.ClientConfig{User: "git",
			Auth:            []gossh.AuthMethod{gossh.PublicKeys(f.keys[user].signer)},
			HostKeyCallback: gossh.InsecureIgnoreHostKey(), Timeout: 30 * time.Second})
	}
	first := s.dial(t, gossh.PublicKeys(f.keys["reader"].signer))
	// Over the queue's bound: closed, with a log line.
	if c, err := dial("writer"); err == nil {
		c.Close()
		t.Fatal("a second connection was admitted over max_sessions: 1")
	}
	if !s.logged("no slot free in ssh.queue_timeout") {
		t.Error("no log line for the connection that waited too long")
	}
	// Within it: admitted as soon as the first connection closes.
	type result struct {
		c   *gossh.Client
		err error
	}
	second := make(chan result, 1)
	go func() {
		c, err := dial("writer")
		second <- result{c, err}
	}()
	select {
	case r := <-second:
		if r.err == nil {
			r.c.Close()
		}
		t.Fatalf("second connection ended (%v) while the first held the only slot", r.err)
	case <-time.After(time.Second):
	}
	first.Close()
	r := <-second
	if r.err != nil {
		t.Fatalf("the waiting connection was not admitted when the slot came back: %v", r.err)
	}
	r.c.Close()
}

func TestIdleConnectionIsClosed(t *testing.T) {
	f := newFixture(t)
	f.ssh += "  idle_timeout: 1s\n"
	f.writeConfig()
	s := f.start()
	c := s.dial(t, gossh.PublicKeys(f.keys["reader"].signer))
	closed := make(chan error, 1)
	go func() { closed <- c.Wait() }()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("idle connection still open")
	}
}

// TestRaceSixteenClientsNeverExceedMaxClaimed races 16 stock-client loops
// on a pool of 3 locks limited to 2 claimed. Serialized pushes mean no two
// accepted pushes validated against the same tip, so the history never
// shows a lock claimed twice or (with the validator) more than 2 claimed.
// Each client cycles (acquire, release) until it has done at least one
// cycle and the churn period is over; every cycle started must finish.
func TestRaceSixteenClientsNeverExceedMaxClaimed(t *testing.T) {
	if testing.Short() {
		t.Skip("race of 16 clients")
	}
	f := newFixture(t)
	s, _ := f.startInProcess(0)
	ctx := ctxT(t, 150*time.Second) // a hard bound; unloaded, the test takes about 20s
	const clients = 16
	const churn = 15 * time.Second
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, clients)
	done := make([]int, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := s.client("writer", fmt.Sprintf("job-%02d", i))
			c.RetryDelay = 300 * time.Millisecond
			if errs[i] = c.Clone(ctx); errs[i] != nil {
				return
			}
			for done[i] == 0 || time.Since(start) < churn {
				name, err := c.Acquire(ctx)
				if err != nil {
					errs[i] = fmt.Errorf("acquire: %w", err)
					return
				}
				if err := c.Release(ctx, name); err != nil {
					errs[i] = fmt.Errorf("release %s: %w", name, err)
					return
				}
				done[i]++
			}
		}()
	}
	wg.Wait()
	total := 0
	for i, err := range errs {
		if err != nil || done[i] == 0 {
			t.Errorf("client %d stopped after %d cycles: %v", i, done[i], err)
		}
		total += done[i]
	}
	t.Logf("%d clients finished %d cycles in %s", clients, total, time.Since(start).Round(time.Second))

	limit := 2
	if out, err := exec.Command(binPath, "check", "--config", f.cfgFile, "--repo", filepath.Join(f.data, "repos", "locks.git")).CombinedOutput(); err != nil {
		t.Errorf("poolgate check over the raced history: %v\n%s", err, out)
	}
	commits := strings.Fields(f.bareGit("rev-list", "--first-parent", "--reverse", "master"))
	claims := 0
	for _, c := range commits {
		files := strings.Fields(f.bareGit("ls-tree", "-r", "--name-only", c, "demo"))
		claimed, seen := 0, map[string]bool{}
		for _, p := range files {
			base := filepath.Base(p)
			if strings.HasPrefix(base, ".") {
				continue
			}
			if seen[base] {
				t.Fatalf("commit %s: lock %s is both claimed and unclaimed", c, base)
			}
			seen[base] = true
			if strings.HasPrefix(p, "demo/claimed/") {
				claimed++
			}
		}
		if claimed > limit {
			t.Fatalf("commit %s has %d claimed, over %d", c, claimed, limit)
		}
		if strings.HasPrefix(f.bareGit("log", "-1", "--format=%s", c), "claiming: ") {
			claims++
		}
	}
	if claims != total {
		t.Errorf("history has %d claims, the clients made %d", claims, total)
	}
	if left := f.bareGit("ls-tree", "--name-only", "master", "demo/claimed/"); left != "demo/claimed/.gitkeep" {
		t.Errorf("locks still claimed after every cycle finished: %s", left)
	}
}

// A fake hook that reports a permanent verdict the way the validator does:
// reasons on stderr, the verdict in POOLGATE_VERDICT_FILE, non-zero exit.
const permanentHook = `#!/bin/sh
cat >/dev/null
echo "poolgate: bad-path: commit abc in pool demo: lock demo/claimed/x/y is in a directory" >&2
printf permanent > "$POOLGATE_VERDICT_FILE"
exit 1
`

const transientHook = `#!/bin/sh
cat >/dev/null
echo "poolgate: over-limit: pool demo has 3 claimed, max 2" >&2
printf transient > "$POOLGATE_VERDICT_FILE"
exit 1
`

func TestPermanentViolationEndsAsErrorNotRejection(t *testing.T) {
	f := newFixture(t)
	s := f.start()
	f.setHook(permanentHook)
	ctx := ctxT(t, 90*time.Second)
	before := f.bareGit("rev-parse", "master")
	c := s.client("writer", "bad")
	if err := c.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	_, err := c.Acquire(ctx)
	var failed *poolclient.FailedError
	if !errors.As(err, &failed) {
		t.Fatalf("acquire ended with %v, want the step to fail", err)
	}
	for _, out := range failed.Outputs {
		if !strings.Contains(out, "bad-path: commit abc in pool demo") || !strings.Contains(out, "push refused") {
			t.Errorf("push output lacks the hook's reason:\n%s", out)
		}
		if strings.Contains(out, "[rejected]") || strings.Contains(out, "[remote rejected]") {
			t.Errorf("push output reads as a rejection, the stock client would retry forever:\n%s", out)
		}
	}
	if st := c.Stats(); st.Conflicts != 0 {
		t.Errorf("%d pushes were taken as conflicts", st.Conflicts)
	}
	if after := f.bareGit("rev-parse", "master"); after != before {
		t.Errorf("master moved from %s to %s", before, after)
	}
	if !strings.Contains(s.logs.String(), `"verdict":"permanent"`) {
		t.Errorf("log has no permanent verdict")
	}
}

func TestTransientViolationIsAnOrdinaryRejection(t *testing.T) {
	f := newFixture(t)
	s := f.start()
	f.setHook(transientHook)
	ctx := ctxT(t, 60*time.Second)
	c := s.client("writer", "wait")
	if err := c.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Git(ctx, "mv", "demo/unclaimed/lock-a", "demo/claimed/lock-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Git(ctx, "commit", "-m", c.Message("claiming", "lock-a")); err != nil {
		t.Fatal(err)
	}
	out, _ := c.Git(ctx, "push", "origin", "HEAD:master")
	if !strings.Contains(out, "[remote rejected]") || !strings.Contains(out, "over-limit") {
		t.Fatalf("transient verdict should be an ordinary rejection:\n%s", out)
	}
}

// TestPermanentViolationByTheValidator pushes what the real validator
// refuses permanently (a directory inside claimed/).
func TestPermanentViolationByTheValidator(t *testing.T) {
	f := newFixture(t)
	s := f.start()
	ctx := ctxT(t, 60*time.Second)
	before := f.bareGit("rev-parse", "master")
	c := s.client("writer", "baddir")
	if err := c.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(c.Dir, "demo/claimed/sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(c.Dir, "demo/claimed/sub/x"), nil, 0o644)
	c.Git(ctx, "add", "demo")
	c.Git(ctx, "commit", "-m", "free-form")
	out, err := c.Git(ctx, "push", "origin", "HEAD:master")
	if err == nil || strings.Contains(out, "[rejected]") || strings.Contains(out, "[remote rejected]") || !strings.Contains(out, "bad-path") {
		t.Fatalf("push of a directory in claimed/ (err %v):\n%s", err, out)
	}
	if after := f.bareGit("rev-parse", "master"); after != before {
		t.Errorf("master moved")
	}
}

// TestTwoKeyAttackIsIdentifiedAsTheSigner pins CVE-2024-45337: the client
// first offers the admin's public key, which the server accepts as a query,
// but never proves it (ssh has only the .pub), then authenticates with the
// writer's key. The session must be the writer's, not the admin's.
func TestTwoKeyAttackIsIdentifiedAsTheSigner(t *testing.T) {
	f := newFixture(t)
	s := f.start()
	offered := filepath.Join(f.dir, "admin-public-only")
	if err := os.WriteFile(offered+".pub", []byte(f.keys["admin"].public+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The private half is unusable: ssh offers the .pub, then cannot sign.
	if err := os.WriteFile(offered, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ssh", "-v", "-F", "/dev/null", "-i", offered, "-i", f.keys["writer"].path, "-o", "IdentitiesOnly=yes",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
		"-p", s.port, "git@127.0.0.1", "git-receive-pack 'locks.git'")
	cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK=")
	cmd.Stdin = strings.NewReader("0000")
	out, _ := cmd.CombinedOutput()
	if !strings.Contains(string(out), "Server accepts key: "+offered) {
		t.Fatalf("ssh did not offer the admin key first:\n%s", out)
	}
	// The daemon's log arrives through a pipe, after the client is done.
	if !s.logged(`"user":"writer","key":"` + gossh.FingerprintSHA256(f.keys["writer"].signer.PublicKey()) + `","repo":"locks","service":"git-receive-pack"`) {
		t.Fatalf("the push session is not the writer's")
	}
	if strings.Contains(s.logs.String(), `"user":"admin"`) {
		t.Fatalf("the offered, unproven admin key reached a session")
	}
}

func TestHostKeyPersistsAcrossRestarts(t *testing.T) {
	f := newFixture(t)
	s := f.start()
	first := s.hostKey(t)
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	s2 := f.start()
	if second := s2.hostKey(t); !bytes.Equal(first.Marshal(), second.Marshal()) {
		t.Fatalf("host key changed across restarts")
	}
	if first.Type() != gossh.KeyAlgoED25519 {
		t.Fatalf("host key type %s", first.Type())
	}
	fi, err := os.Stat(filepath.Join(f.data, "ssh_host_ed25519_key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("host key file: %v %v", fi.Mode(), err)
	}
}

// TestSIGTERMDuringPushLandsWholeOrNotAtAll stops the daemon while a push
// sits in its hook: the daemon must let it finish, and the repo must be
// consistent afterwards.
func TestSIGTERMDuringPushLandsWholeOrNotAtAll(t *testing.T) {
	f := newFixture(t)
	s := f.start()
	marker := filepath.Join(f.dir, "hook-started")
	f.setHook(fmt.Sprintf("#!/bin/sh\ncat >/dev/null\ntouch %s\nsleep 2\nexit 0\n", marker))
	ctx := ctxT(t, 60*time.Second)
	c := s.client("writer", "term")
	if err := c.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	c.Git(ctx, "mv", "demo/unclaimed/lock-a", "demo/claimed/lock-a")
	c.Git(ctx, "commit", "-m", c.Message("claiming", "lock-a"))
	want, _ := c.Git(ctx, "rev-parse", "HEAD")
	before := f.bareGit("rev-parse", "master")
	type result struct {
		out string
		err error
	}
	pushed := make(chan result, 1)
	go func() {
		out, err := c.Git(ctx, "push", "origin", "HEAD:master")
		pushed <- result{out, err}
	}()
	for {
		if _, err := os.Stat(marker); err == nil {
			break
		}
		select {
		case r := <-pushed:
			t.Fatalf("push ended before its hook ran: %v\n%s", r.err, r.out)
		case <-time.After(20 * time.Millisecond):
		}
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	r := <-pushed
	if err := <-s.done; err != nil {
		t.Errorf("daemon exit: %v", err)
	}
	after := f.bareGit("rev-parse", "master")
	switch after {
	case strings.TrimSpace(want):
		if r.err != nil {
			t.Errorf("push landed but the client was told it failed: %s", r.out)
		}
	case before:
		if r.err == nil {
			t.Errorf("client was told ok but nothing landed: %s", r.out)
		}
	default:
		t.Fatalf("master is %s: neither before nor the pushed commit", after)
	}
	if after != strings.TrimSpace(want) {
		t.Errorf("the in-flight push was not drained: %s", r.out)
	}
	f.bareGit("fsck", "--strict", "--no-dangling")
}

func TestRestartKeepsStateAndAddsNewPools(t *testing.T) {
	f := newFixture(t)
	s := f.start()
	ctx := ctxT(t, 60*time.Second)
	c := s.client("writer", "keep")
	if err := c.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Claim(ctx, "lock-c"); err != nil {
		t.Fatal(err)
	}
	s.stop()
	f.pools += `
      - name: team-a/staging
        locks: [env-1]`
	f.writeConfig()
	f.start()
	tree := f.bareGit("ls-tree", "-r", "--name-only", "master")
	for _, p := range []string{"demo/claimed/lock-c", "team-a/staging/unclaimed/env-1", "team-a/staging/claimed/.gitkeep"} {
		if !strings.Contains(tree, p) {
			t.Errorf("tree lacks %s:\n%s", p, tree)
		}
	}
	if strings.Contains(tree, "demo/unclaimed/lock-c") {
		t.Errorf("restart reset lock-c")
	}
	if msg := f.bareGit("log", "-1", "--format=%an <%ae> %s", "master"); msg != "poolgate <poolgate@localhost> poolgate: create pool team-a/staging" {
		t.Errorf("pool commit: %s", msg)
	}
	for _, kv := range [][2]string{{"receive.fsckObjects", "true"}, {"core.fsync", "committed,reference"}, {"gc.auto", "0"}} {
		if got := f.bareGit("config", kv[0]); got != kv[1] {
			t.Errorf("%s = %s", kv[0], got)
		}
	}
}

// TestPushOverPushTimeoutIsStoppedAndFreesTheRepo: a push whose hook hangs
// is killed at ssh.push_timeout, lands nothing, and the next push goes on.
func TestPushOverPushTimeoutIsStoppedAndFreesTheRepo(t *testing.T) {
	f := newFixture(t)
	// Long enough that, even on a loaded machine, the pack is across and the
	// (hanging) hook is what the timeout cuts: cut mid-pack, the client may
	// die of the broken pipe before ssh prints the server's reason.
	f.ssh = "  push_timeout: 4s\n"
	f.writeConfig()
	s := f.start()
	real, err := os.ReadFile(filepath.Join(f.data, "hooks", "pre-receive"))
	if err != nil {
		t.Fatal(err)
	}
	f.setHook("#!/bin/sh\ncat >/dev/null\nsleep 60\n")
	ctx := ctxT(t, 60*time.Second)
	c := s.client("writer", "hang")
	if err := c.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	c.Git(ctx, "mv", "demo/unclaimed/lock-a", "demo/claimed/lock-a")
	c.Git(ctx, "commit", "-m", c.Message("claiming", "lock-a"))
	before := f.bareGit("rev-parse", "master")
	out, err := c.Git(ctx, "push", "origin", "HEAD:master")
	if err == nil || !strings.Contains(out, "push took too long") {
		t.Fatalf("hung push: %v\n%s", err, out)
	}
	if after := f.bareGit("rev-parse", "master"); after != before {
		t.Fatalf("master moved")
	}
	f.setHook(string(real))
	if out, err := c.Git(ctx, "push", "origin", "HEAD:master"); err != nil {
		t.Fatalf("push after the timeout: %v\n%s", err, out)
	}
}
