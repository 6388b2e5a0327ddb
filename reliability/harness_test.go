package reliability

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/poolgate/poolgate/internal/poolclient"
	gossh "golang.org/x/crypto/ssh"

	"github.com/poolgate/poolgate/internal/testserver"
)

var binPath string

// long scales the suite: POOLGATE_RELIABILITY_LONG=1 runs longer and with
// more clients (see doc.go).
var long = os.Getenv("POOLGATE_RELIABILITY_LONG") != ""

func scale(short, longer time.Duration) time.Duration {
	if long {
		return longer
	}
	return short
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "poolgate-rel-")
	if err != nil {
		panic(err)
	}
	binPath = filepath.Join(dir, "poolgate")
	// Without -race: the binary is also the pre-receive hook, run on every
	// push (the daemon package runs its concurrency under -race in-process).
	build := exec.Command("go", "build", "-o", binPath, "../cmd/poolgate")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build poolgate:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type key struct {
	path   string
	public string
	signer gossh.Signer
}

func newKey(t testing.TB, dir, name string) key {
	k := testserver.NewKey(t, dir, name)
	return key{path: k.Path, public: k.Public, signer: k.Signer}
}

// env is one daemon's world: data dir, config, keys, the SSH socket (held by
// the test and passed to each `poolgate serve` as an inherited fd, as
// systemd socket activation does) and the daemon's log.
type env struct {
	t       *testing.T
	dir     string
	data    string
	cfgFile string
	keys    map[string]key
	addr    string
	port    string
	lnFile  *os.File // the listening socket, held across restarts

	Pools   string // YAML under the locks repo's pools:
	SSH     string // extra lines under ssh:
	Limits  string // lines under limits:
	Webhook string // a json webhook URL, if any
	HTTP    string // http.listen; "" is off

	logW *os.File
	logs *logBuffer
	pids chan int // the pid of each process that logged "listening"

	mu    sync.Mutex
	procs map[int]*exec.Cmd // processes this test started (others were handed over to)
}

type logBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (l *logBuffer) add(s string) {
	l.mu.Lock()
	l.lines = append(l.lines, s)
	l.mu.Unlock()
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// count returns how many log lines have message msg.
func (l *logBuffer) find(msg string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range l.lines {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["message"] == msg {
			out = append(out, m)
		}
	}
	return out
}

func newEnv(t *testing.T) *env {
	dir := t.TempDir()
	e := &env{t: t, dir: dir, data: filepath.Join(dir, "data"), cfgFile: filepath.Join(dir, "poolgate.yaml"),
		keys: map[string]key{}, logs: &logBuffer{}, pids: make(chan int, 16), procs: map[int]*exec.Cmd{}}
	if err := os.MkdirAll(filepath.Join(dir, "clients"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"writer", "reader", "admin", "flood"} {
		e.keys[n] = newKey(t, dir, n)
	}
	e.Pools = `
      - name: demo
        max_claimed: 3
        locks: [lock-a, lock-b, lock-c, lock-d]`
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	e.port = strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	if e.lnFile, err = ln.(*net.TCPListener).File(); err != nil {
		t.Fatal(err)
	}
	ln.Close() // the dup in lnFile keeps the socket listening

	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	e.logW = pw
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			e.logs.add(line)
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["message"] == "listening" {
				if pid, ok := m["pid"].(float64); ok {
					e.pids <- int(pid)
				}
			}
		}
	}()
	t.Cleanup(func() {
		e.killAll()
		pw.Close()
		e.lnFile.Close()
		if t.Failed() || os.Getenv("POOLGATE_TEST_LOGS") != "" {
			// The whole log, kept past the test's temp dir.
			keep := filepath.Join(os.TempDir(), "poolgate-reliability-"+strings.ReplaceAll(t.Name(), "/", "_")+".log")
			os.WriteFile(keep, []byte(e.logs.String()+"\n"), 0o644)
			t.Logf("daemon log (last lines; all of it in %s):\n%s", keep, tail(e.logs.String(), 60))
		}
	})
	return e
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (e *env) writeConfig() {
	webhooks := ""
	if e.Webhook != "" {
		webhooks = fmt.Sprintf("webhooks:\n  - name: rel\n    url: %q\n    format: json\n    secret: ${REL_WEBHOOK_SECRET}\n", e.Webhook)
	}
	limits := ""
	if e.Limits != "" {
		limits = "limits:\n" + e.Limits
	}
	cfg := fmt.Sprintf(`data_dir: %s
ssh:
  listen: %q
  push_timeout: 60s
%shttp:
  listen: %q
log:
  format: json
  level: info
%susers:
  - name: writer
    role: write
    keys: [%q]
  - name: reader
    role: read
    keys: [%q]
  - name: admin
    role: admin
    keys: [%q]
  - name: flood
    role: read
    keys: [%q]
repos:
  - name: locks
    branch: master
    pools:%s
%s`, e.data, e.addr, e.SSH, e.HTTP, limits, e.keys["writer"].public, e.keys["reader"].public, e.keys["admin"].public, e.keys["flood"].public, e.Pools, webhooks)
	if err := os.WriteFile(e.cfgFile, []byte(cfg), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// webhookSecret is passed as ${REL_WEBHOOK_SECRET}: the config names it,
// the environment holds it, and the test checks the log never shows it.
const webhookSecret = "whsec_cmVsaWFiaWxpdHktc3VpdGUtc2VjcmV0LWtleS0xMjM0"

// start runs `poolgate serve` with the held socket as LISTEN_FDS=1 (the
// shell sets LISTEN_PID to its own pid and execs, as systemd does after
// fork) and waits for its "listening" line; it returns the pid.
func (e *env) start() int {
	e.t.Helper()
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, binPath, "serve", "--config", e.cfgFile)
	// Maintenance off: every env ends by SIGKILLing its daemons, which
	// would orphan a start-up repack racing the temp dir's removal.
	// Maintenance under load has its own tests in daemon/.
	cmd.Env = append(os.Environ(), "HOME="+e.dir, "LISTEN_FDS=1", "LISTEN_FDNAMES=ssh", "REL_WEBHOOK_SECRET="+webhookSecret,
		"POOLGATE_MAINTENANCE=off")
	cmd.ExtraFiles = []*os.File{e.lnFile}
	cmd.Stdout, cmd.Stderr = e.logW, e.logW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.mu.Lock()
	e.procs[cmd.Process.Pid] = cmd
	e.mu.Unlock()
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	select {
	case pid := <-e.pids:
		if pid != cmd.Process.Pid {
			e.t.Fatalf("listening pid %d, started %d", pid, cmd.Process.Pid)
		}
		return pid
	case <-exited:
		e.t.Fatalf("poolgate serve exited before listening:\n%s", tail(e.logs.String(), 30))
	case <-time.After(90 * time.Second):
		e.t.Fatalf("poolgate serve did not start:\n%s", tail(e.logs.String(), 30))
	}
	return 0
}

// handover sends SIGUSR2 to pid and returns the new process's pid once it
// listens.
func (e *env) handover(pid int) int {
	e.t.Helper()
	syscall.Kill(pid, syscall.SIGUSR2)
	select {
	case n := <-e.pids:
		return n
	case <-time.After(90 * time.Second):
		e.t.Fatalf("no new process after SIGUSR2:\n%s", tail(e.logs.String(), 30))
	}
	return 0
}

// alive: the process exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}

// waitExit waits until pid is gone (it may not be this test's child).
func (e *env) waitExit(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !alive(pid) {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

func (e *env) killAll() {
	// Every poolgate serve this env's data dir ever had, children of a
	// hand-over included: found by their pids in the log.
	for _, m := range e.logs.find("listening") {
		if pid, ok := m["pid"].(float64); ok && alive(int(pid)) {
			syscall.Kill(int(pid), syscall.SIGKILL)
		}
	}
}

// rssKB is a process's resident set (VmRSS) in KiB.
func rssKB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	return -1
}

func (e *env) url() string { return "ssh://git@127.0.0.1:" + e.port + "/locks.git" }

func (e *env) sshCommand(user string) string {
	return "ssh -F /dev/null -i " + e.keys[user].path + " -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes"
}

func (e *env) gitEnv(user string) []string {
	return []string{
		"GIT_SSH_COMMAND=" + e.sshCommand(user),
		"SSH_AUTH_SOCK=",
		"HOME=" + e.dir,
		"GIT_CONFIG_NOSYSTEM=1",
	}
}

func (e *env) client(user, name string) *poolclient.Client {
	return &poolclient.Client{
		URL:        e.url(),
		Branch:     "master",
		Pool:       "demo",
		Dir:        filepath.Join(e.dir, "clients", name),
		Env:        e.gitEnv(user),
		RetryDelay: 100 * time.Millisecond,
		BuildURL:   "https://ci.example.com/teams/main/pipelines/p/jobs/" + name + "/builds/1",
	}
}

// git runs git with dir as working directory (the served repo by default).
func (e *env) git(dir string, args ...string) (string, error) {
	if dir == "" {
		dir = filepath.Join(e.data, "repos", "locks.git")
	}
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+e.dir, "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func (e *env) mustGit(dir string, args ...string) string {
	e.t.Helper()
	out, err := e.git(dir, args...)
	if err != nil {
		e.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return out
}

func (e *env) tip() string { return e.mustGit("", "rev-parse", "refs/heads/master") }

// dial opens an authenticated SSH connection with the Go client.
func (e *env) dial(user string) (*gossh.Client, error) {
	return gossh.Dial("tcp", e.addr, &gossh.ClientConfig{
		User:            "git",
		Auth:            []gossh.AuthMethod{gossh.PublicKeys(e.keys[user].signer)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(),
		Timeout:         60 * time.Second,
	})
}

// execRaw runs one raw exec request and returns stderr and the exit status.
func (e *env) execRaw(user, command string) (string, int, error) {
	c, err := e.dial(user)
	if err != nil {
		return "", -1, err
	}
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		return "", -1, err
	}
	defer s.Close()
	var stderr strings.Builder
	s.Stderr = &stderr
	s.Stdin = strings.NewReader("0000")
	err = s.Run(command)
	if ee, ok := err.(*gossh.ExitError); ok {
		return stderr.String(), ee.ExitStatus(), nil
	}
	if err != nil {
		return stderr.String(), -1, err
	}
	return stderr.String(), 0, nil
}

// serving checks the daemon answers a normal fetch.
func (e *env) serving() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", "ls-remote", e.url(), "refs/heads/master")
	cmd.Env = append(os.Environ(), e.gitEnv("reader")...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("ls-remote: %v: %s", err, out)
	}
	return nil
}

// receiver is a loopback webhook target that records event ids.
type receiver struct {
	srv *httptest.Server
	mu  sync.Mutex
	ids map[string]int
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{ids: map[string]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		id := req.Header.Get("webhook-id")
		r.mu.Lock()
		r.ids[id]++
		r.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) has(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ids[id] > 0
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ids)
}

// figures prints one line of the suite's figures.
func figures(t *testing.T, name string, kv ...any) {
	var b strings.Builder
	fmt.Fprintf(&b, "FIGURES %s:", name)
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, " %v=%v", kv[i], kv[i+1])
	}
	t.Log(b.String())
	fmt.Println(b.String())
}
