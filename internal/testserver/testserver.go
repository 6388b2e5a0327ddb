// Package testserver starts a real `poolgate serve` for end-to-end tests:
// the binary built from this tree, a config with generated keys, SSH and
// HTTP on free loopback ports, and pool-resource-like clients over real ssh.
package testserver

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/poolgate/poolgate/hooks"
	"github.com/poolgate/poolgate/internal/poolclient"
)

var (
	buildOnce        sync.Once
	buildErr         error
	binPath, hookBin string
)

// moduleRoot is this repository's root, found from this file's path.
func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Build compiles poolgate once per test binary: the daemon with -race, the
// hook without (a -race binary pays about a second at exit, once per push).
func Build(t testing.TB) (daemon, hook string) {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "poolgate-testserver-")
		if err != nil {
			buildErr = err
			return
		}
		binPath, hookBin = filepath.Join(dir, "poolgate-race"), filepath.Join(dir, "poolgate")
		// poolgate-hook beside the plain build: Install links the hook to it.
		for _, b := range [][]string{{"build", "-race", "-o", binPath, "./cmd/poolgate"}, {"build", "-o", hookBin, "./cmd/poolgate"},
			{"build", "-o", filepath.Join(dir, hooks.HookProgram), "./cmd/poolgate-hook"}} {
			cmd := exec.Command("go", b...)
			cmd.Dir = moduleRoot()
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go %v: %v\n%s", b, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath, hookBin
}

// Fixture is a data dir and config for one server.
type Fixture struct {
	T       testing.TB
	NoRace  bool
	Dir     string
	Data    string
	Config  string
	KeyPath string // the writer's private key
	KeyFP   string
}

// Options shape the config.
type Options struct {
	Pools    string // YAML of the locks repo's pools list, e.g. "[{name: demo, locks: [a, b]}]"
	Webhooks string // YAML of the webhooks list; "" for none
	Token    string // http.token
	// ExtraRepos is YAML appended to the repos list, indented as list
	// items ("  - name: other\n    ...").
	ExtraRepos string
	// ExtraUsers is YAML appended to the users list, indented the same way.
	ExtraUsers string
	// NoRace runs the daemon built without -race, for suites that pin
	// what a client sees rather than the daemon's concurrency (the
	// scripts): it starts and serves several times faster.
	NoRace bool
}

// New writes a config with one user `writer` (role write, a fresh key) and
// one repo `locks` on master.
func New(t testing.TB, o Options) *Fixture {
	t.Helper()
	dir := t.TempDir()
	f := &Fixture{T: t, NoRace: o.NoRace, Dir: dir, Data: filepath.Join(dir, "data"), Config: filepath.Join(dir, "poolgate.yaml")}
	var pub string
	k := NewKey(t, dir, "writer")
	f.KeyPath, f.KeyFP, pub = k.Path, gossh.FingerprintSHA256(k.Signer.PublicKey()), k.Public
	if o.Webhooks == "" {
		o.Webhooks = "[]"
	}
	cfg := fmt.Sprintf(`data_dir: %s
ssh:
  listen: "127.0.0.1:0"
http:
  listen: "127.0.0.1:0"
  token: %q
log:
  format: json
  level: debug
users:
  - name: writer
    role: write
    keys: [%q]
%srepos:
  - name: locks
    branch: master
    pools: %s
%s
webhooks: %s
`, f.Data, o.Token, pub, o.ExtraUsers, o.Pools, o.ExtraRepos, o.Webhooks)
	if err := os.WriteFile(f.Config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// Server is a running poolgate serve.
type Server struct {
	T        testing.TB
	F        *Fixture
	SSHPort  string
	HTTPAddr string

	cmd  *exec.Cmd
	mu   sync.Mutex
	logs strings.Builder
	done chan struct{}
}

// Start runs the server and waits for its "listening" line.
func (f *Fixture) Start() *Server {
	t := f.T
	t.Helper()
	bin, hook := Build(t)
	if f.NoRace {
		bin = hook
	}
	cmd := exec.Command(bin, "serve", "--config", f.Config)
	// No start-up repack: a test that SIGKILLs the server would orphan it
	// to race the temp dir's removal. daemon/ tests maintenance itself.
	cmd.Env = append(os.Environ(), "HOME="+f.Dir, "POOLGATE_MAINTENANCE=off")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &Server{T: t, F: f, cmd: cmd, done: make(chan struct{})}
	type addrs struct{ ssh, http string }
	addrc := make(chan addrs, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			s.mu.Lock()
			s.logs.WriteString(sc.Text() + "\n")
			s.mu.Unlock()
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil && m["message"] == "listening" {
				a := addrs{}
				a.ssh, _ = m["ssh"].(string)
				a.http, _ = m["http"].(string)
				addrc <- a
			}
		}
		close(addrc)
	}()
	go func() { cmd.Wait(); close(s.done) }()
	select {
	case a, ok := <-addrc:
		if !ok {
			<-s.done
			t.Fatalf("poolgate serve exited before listening:\n%s", s.Log())
		}
		s.SSHPort = a.ssh[strings.LastIndexByte(a.ssh, ':')+1:]
		s.HTTPAddr = a.http
		// The daemon installed itself (-race) as the hook; pushes run the
		// plain build instead so each push does not pay the race exit.
		if err := hooks.Install(filepath.Join(f.Data, "hooks"), hook); err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("poolgate serve did not start:\n%s", s.Log())
	}
	t.Cleanup(func() {
		s.Stop(syscall.SIGTERM)
		if t.Failed() {
			t.Logf("server log:\n%s", s.Log())
		}
	})
	return s
}

// Log is everything the server logged so far.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logs.String()
}

// Signal sends sig to the server (SIGHUP reloads its config).
func (s *Server) Signal(sig syscall.Signal) error { return s.cmd.Process.Signal(sig) }

// Stop signals the server and waits for it to exit (killing it after 60s).
func (s *Server) Stop(sig syscall.Signal) {
	select {
	case <-s.done:
		return
	default:
	}
	s.cmd.Process.Signal(sig)
	select {
	case <-s.done:
	case <-time.After(60 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}

// SSHCommand is the GIT_SSH_COMMAND that logs in as the writer.
func (s *Server) SSHCommand() string { return SSHCommand(s.F.KeyPath) }

// SSHCommand is a GIT_SSH_COMMAND that logs in with the private key at
// keyPath and nothing else of the user's ssh set-up.
func SSHCommand(keyPath string) string {
	return "ssh -F /dev/null -i " + keyPath + " -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes"
}

// Client clones the locks repo as a pool-resource out step on pool.
func (s *Server) Client(name, pool, buildURL string) *poolclient.Client {
	s.T.Helper()
	c := &poolclient.Client{
		URL:    "ssh://git@127.0.0.1:" + s.SSHPort + "/locks.git",
		Branch: "master", Pool: pool,
		Dir:        filepath.Join(s.T.TempDir(), name),
		Env:        []string{"GIT_SSH_COMMAND=" + s.SSHCommand(), "SSH_AUTH_SOCK=", "HOME=" + s.F.Dir, "GIT_CONFIG_NOSYSTEM=1"},
		RetryDelay: 50 * time.Millisecond,
		BuildURL:   buildURL,
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Clone(ctx); err != nil {
		s.T.Fatal(err)
	}
	return c
}

// Run runs a poolgate command (status, history, check, …) beside the
// server and returns its stdout, failing the test on a non-zero exit.
func (f *Fixture) Run(args ...string) string {
	f.T.Helper()
	_, bin := Build(f.T)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "HOME="+f.Dir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		f.T.Fatalf("poolgate %v: %v\n%s", args, err, stderr.String())
	}
	return string(out)
}

// Key is a generated ed25519 client key written where ssh -i can use it.
type Key struct {
	Path   string // the private key, mode 0600
	Public string // authorized_keys form
	Signer gossh.Signer
}

// NewKey generates a key and writes its private half to dir/name.
func NewKey(t testing.TB, dir, name string) Key {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := gossh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return Key{Path: p, Public: strings.TrimSpace(string(gossh.MarshalAuthorizedKey(s.PublicKey()))), Signer: s}
}
