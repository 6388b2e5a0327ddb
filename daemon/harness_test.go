package daemon_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/daemon"
	"github.com/poolgate/poolgate/internal/poolclient"
	"github.com/rs/zerolog"
	gossh "golang.org/x/crypto/ssh"

	"github.com/poolgate/poolgate/internal/testserver"
)

// The suite runs the real binary: built once here, started per test on a
// free loopback port, driven by real git over real ssh.
var (
	binPath string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "poolgate-bin-")
	if err != nil {
		panic(err)
	}
	binPath = filepath.Join(dir, "poolgate")
	// Built without -race: the binary is also the pre-receive hook, and a
	// race-enabled process sleeps a second at exit, which would make every
	// push take a second. The daemon's concurrency runs under the race
	// detector in-process instead (startInProcess). POOLGATE_TEST_RACEBIN=1
	// builds the binary with -race too.
	build := exec.Command("go", "build", "-o", binPath, "../cmd/poolgate")
	if os.Getenv("POOLGATE_TEST_RACEBIN") != "" {
		build = exec.Command("go", "build", "-race", "-o", binPath, "../cmd/poolgate")
	}
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build poolgate:", err)
		os.Exit(1)
	}
	// The small hook program beside it: the daemon installs it as the hook.
	if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "poolgate-hook"), "../cmd/poolgate-hook").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build poolgate-hook: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// key is a test user's SSH key pair.
type key struct {
	path   string // private key file (OpenSSH format, 0600)
	public string // authorized_keys line
	signer gossh.Signer
}

func newKey(t testing.TB, dir, name string) key {
	k := testserver.NewKey(t, dir, name)
	return key{path: k.Path, public: k.Public, signer: k.Signer}
}

// fixture is a data dir, its config and the keys of its users.
type fixture struct {
	t       *testing.T
	dir     string
	data    string
	cfgFile string
	keys    map[string]key // writer, reader, admin, stranger (not configured)
	pools   string         // YAML of the locks repo's pools
	ssh     string         // extra YAML lines under ssh:
	http    string         // http.listen; "" turns HTTP off
	exe     string         // the poolgate binary an in-process daemon installs as its hooks (default binPath)
}

func newFixture(t *testing.T) *fixture {
	dir := t.TempDir()
	f := &fixture{t: t, dir: dir, data: filepath.Join(dir, "data"), cfgFile: filepath.Join(dir, "poolgate.yaml"), keys: map[string]key{}}
	for _, n := range []string{"writer", "reader", "admin", "stranger"} {
		f.keys[n] = newKey(t, dir, n)
	}
	f.ssh = "  push_timeout: 60s\n"
	f.pools = `
      - name: demo
        max_claimed: 2
        locks: [lock-a, lock-b, lock-c]`
	f.writeConfig()
	return f
}

func (f *fixture) writeConfig() {
	cfg := fmt.Sprintf(`data_dir: %s
ssh:
  listen: "127.0.0.1:0"
%shttp:
  listen: %q
log:
  format: json
  level: debug
users:
  - name: writer
    role: write
    keys: [%q]
  - name: reader
    role: read
    keys: [%q]
  - name: admin
    role: admin
    keys: [%q]
repos:
  - name: locks
    branch: master
    pools:%s
`, f.data, f.ssh, f.http, f.keys["writer"].public, f.keys["reader"].public, f.keys["admin"].public, f.pools)
	if err := os.WriteFile(f.cfgFile, []byte(cfg), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// server is a running `poolgate serve`.
type server struct {
	t    *testing.T
	f    *fixture
	cmd  *exec.Cmd
	addr string // host:port of SSH
	http string // host:port of HTTP, if on
	port string
	logs *syncBuffer
	done chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start runs the daemon and waits for its "listening" log line.
func (f *fixture) start() *server {
	t := f.t
	t.Helper()
	cmd := exec.Command(binPath, "serve", "--config", f.cfgFile)
	cmd.Env = append(os.Environ(), "HOME="+f.dir)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, f: f, cmd: cmd, logs: &syncBuffer{}, done: make(chan error, 1)}
	addrc := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			s.logs.Write([]byte(line + "\n"))
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["message"] == "listening" {
				h, _ := m["http"].(string)
				addrc <- [2]string{m["ssh"].(string), h}
			}
		}
		close(addrc)
	}()
	go func() { s.done <- cmd.Wait() }()
	select {
	case a, ok := <-addrc:
		if !ok {
			<-s.done
			t.Fatalf("poolgate serve exited before listening:\n%s", s.logs.String())
		}
		s.addr, s.http = a[0], a[1]
		s.port = s.addr[strings.LastIndexByte(s.addr, ':')+1:]
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("poolgate serve did not start:\n%s", s.logs.String())
	}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() || os.Getenv("POOLGATE_TEST_LOGS") != "" {
			t.Logf("server log:\n%s", s.logs.String())
		}
	})
	return s
}

// startInProcess runs the daemon inside the test process, so the race
// detector watches its goroutines; git and the hook are the real programs.
func (f *fixture) startInProcess(drain time.Duration) (*server, context.CancelFunc) {
	t := f.t
	t.Helper()
	cfg, err := config.Load(f.cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	exe := f.exe
	if exe == "" {
		exe = binPath
	}
	srv, err := daemon.New(cfg, zerolog.New(logs), exe)
	if err != nil {
		t.Fatal(err)
	}
	if drain > 0 {
		srv.DrainTimeout = drain
	}
	ctx, stop := context.WithCancel(context.Background())
	if err := srv.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, f: f, logs: logs, addr: ln.Addr().String(), port: strconv.Itoa(ln.Addr().(*net.TCPAddr).Port), done: make(chan error, 1)}
	go func() { s.done <- srv.Serve(ctx, ln, nil) }()
	t.Cleanup(func() {
		stop()
		if _, ok := s.wait(60 * time.Second); !ok {
			t.Error("in-process daemon did not stop")
		}
		if t.Failed() || os.Getenv("POOLGATE_TEST_LOGS") != "" {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return s, stop
}

// wait returns how the daemon exited, false if it has not within d.
func (s *server) wait(d time.Duration) (error, bool) {
	select {
	case err := <-s.done:
		s.done <- err
		return err, true
	case <-time.After(d):
		return nil, false
	}
}

// stop sends SIGTERM and waits for the daemon to exit.
func (s *server) stop() error {
	if s.cmd.ProcessState != nil {
		return nil
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		s.done <- err
		return err
	case <-time.After(60 * time.Second):
		s.cmd.Process.Kill()
		return fmt.Errorf("daemon did not stop on SIGTERM")
	}
}

// setHook replaces the installed pre-receive hook, atomically so a push
// never runs half a script.
func (f *fixture) setHook(script string) {
	f.t.Helper()
	dir := filepath.Join(f.data, "hooks")
	tmp := filepath.Join(dir, ".test-hook")
	if err := os.WriteFile(tmp, []byte(script), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "pre-receive")); err != nil {
		f.t.Fatal(err)
	}
}

func (s *server) url() string { return "ssh://git@127.0.0.1:" + s.port + "/locks.git" }

// gitEnv makes git use ssh with one key and nothing of the user's own ssh
// or git set-up.
func (s *server) gitEnv(user string) []string {
	k := s.f.keys[user]
	return []string{
		"GIT_SSH_COMMAND=ssh -F /dev/null -i " + k.path + " -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes",
		"SSH_AUTH_SOCK=",
		"HOME=" + s.f.dir,
		"GIT_CONFIG_NOSYSTEM=1",
	}
}

func (s *server) client(user, name string) *poolclient.Client {
	return &poolclient.Client{
		URL:        s.url(),
		Branch:     "master",
		Pool:       "demo",
		Dir:        filepath.Join(s.t.TempDir(), name),
		Env:        s.gitEnv(user),
		RetryDelay: 50 * time.Millisecond,
		BuildURL:   "https://ci.example.com/teams/main/pipelines/p/jobs/" + name + "/builds/1",
	}
}

// bareGit runs git in the served repo directly, bypassing the daemon.
func (f *fixture) bareGit(args ...string) string {
	f.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = filepath.Join(f.data, "repos", "locks.git")
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+f.dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		f.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// dial opens an SSH connection with the Go client and the given auth.
func (s *server) dial(t *testing.T, auth ...gossh.AuthMethod) *gossh.Client {
	t.Helper()
	c, err := gossh.Dial("tcp", s.addr, &gossh.ClientConfig{
		User:            "git",
		Auth:            auth,
		HostKeyCallback: gossh.InsecureIgnoreHostKey(),
		Timeout:         30 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (s *server) hostKey(t *testing.T) gossh.PublicKey {
	t.Helper()
	var got gossh.PublicKey
	c, err := gossh.Dial("tcp", s.addr, &gossh.ClientConfig{
		User: "git",
		Auth: []gossh.AuthMethod{gossh.PublicKeys(s.f.keys["reader"].signer)},
		HostKeyCallback: func(_ string, _ net.Addr, k gossh.PublicKey) error {
			got = k
			return nil
		},
		Timeout: 30 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	return got
}

// execOut runs a command with "0000" (no wants) as input and returns stdout.
func (s *server) execOut(signer gossh.Signer, cmd string) (string, int, error) {
	stdout, _, code, err := s.run(signer, cmd, false)
	return stdout, code, err
}

func (s *server) run(signer gossh.Signer, cmd string, pty bool) (string, string, int, error) {
	s.t.Helper()
	c := s.dial(s.t, gossh.PublicKeys(signer))
	defer c.Close()
	sess, err := c.NewSession()
	if err != nil {
		return "", "", 0, err
	}
	defer sess.Close()
	var stdout, stderr bytes.Buffer
	sess.Stdout, sess.Stderr = &stdout, &stderr
	sess.Stdin = strings.NewReader("0000")
	if pty {
		if err := sess.RequestPty("xterm", 24, 80, gossh.TerminalModes{}); err != nil {
			return "", "", 0, err
		}
	}
	err = sess.Run(cmd)
	var ee *gossh.ExitError
	switch {
	case err == nil:
		return stdout.String(), stderr.String(), 0, nil
	case errors.As(err, &ee):
		return stdout.String(), stderr.String(), ee.ExitStatus(), nil
	}
	return stdout.String(), stderr.String(), -1, err
}

// logged waits (up to 30 s) for a log line containing substr: the log of a
// daemon in its own process arrives through a pipe, after the client has
// seen the effect.
func (s *server) logged(substr string) bool {
	for i := 0; i < 300; i++ {
		if strings.Contains(s.logs.String(), substr) {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}
