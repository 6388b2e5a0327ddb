package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// target is one server as seen by a client: where the repos are and how the
// client's ssh is set up.
type target struct {
	name   string // poolgate, openssh, openssh-c25519
	srv    *server
	sshCmd string // GIT_SSH_COMMAND
}

func (t *target) url(repo string) string { return t.srv.url(repo) }

// env is what every client git command of this target gets.
func (t *target) env(home string) []string {
	return []string{
		"GIT_SSH_COMMAND=" + t.sshCmd,
		"SSH_AUTH_SOCK=",
		"HOME=" + home,
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_TERMINAL_PROMPT=0",
		"LC_ALL=C",
	}
}

// server is a running poolgate or sshd, started by the harness.
type server struct {
	kind  string // "poolgate" or "openssh"
	cmd   *exec.Cmd
	port  int
	log   string
	url   func(repo string) string
	repos string // directory holding <name>.git
	done  chan struct{}
	cg    *cgroup // nil: CPU from /proc/PID/stat
}

func (s *server) pid() int { return s.cmd.Process.Pid }

func (s *server) stop() {
	if s == nil || s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(40 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
	quiesce(s.pid())
	s.cg.remove()
}

// account puts a just-started server into its own cpuacct cgroup.
func (s *server) account(name string) {
	cg, err := newCgroup(fmt.Sprintf("%s-%d", name, s.pid()))
	if err != nil {
		fmt.Printf("harness: no cgroup for %s (%v): CPU from /proc/PID/stat, which misses what a level does not reap\n", name, err)
		return
	}
	if err := cg.add(s.pid()); err != nil {
		cg.remove()
		fmt.Printf("harness: no cgroup for %s (%v)\n", name, err)
		return
	}
	s.cg = cg
}

// sshBase is the client's ssh as the stock pool-resource runs it, minus its
// agent: a fresh connection per git command, no host key checks.
func sshBase(key string) string {
	return "ssh -F /dev/null -i " + key + " -o IdentitiesOnly=yes -o StrictHostKeyChecking=no" +
		" -o UserKnownHostsFile=/dev/null -o ControlMaster=no -o LogLevel=ERROR -o BatchMode=yes"
}

const forceKex = " -o KexAlgorithms=curve25519-sha256"

// startPoolgate runs `poolgate serve` on a free loopback port and waits for
// its "listening" line.
func startPoolgate(ctx context.Context, bin, cfgFile, logFile string, env []string) (*server, error) {
	lf, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "serve", "--config", cfgFile)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, err
	}
	s := &server{kind: "poolgate", cmd: cmd, log: logFile, done: make(chan struct{})}
	s.account("poolgate")
	go func() { cmd.Wait(); lf.Close(); close(s.done) }()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if addr, ok := findLogLine(logFile, "listening", "ssh"); ok {
			p, err := strconv.Atoi(addr[strings.LastIndexByte(addr, ':')+1:])
			if err != nil {
				s.stop()
				return nil, err
			}
			s.port = p
			s.url = func(repo string) string { return fmt.Sprintf("ssh://git@127.0.0.1:%d/%s.git", p, repo) }
			return s, nil
		}
		select {
		case <-s.done:
			b, _ := os.ReadFile(logFile)
			return nil, fmt.Errorf("poolgate exited before listening:\n%s", b)
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	s.stop()
	return nil, errors.New("poolgate did not start within 60s")
}

// findLogLine looks for a JSON log line with the message and returns the
// field's value.
func findLogLine(file, msg, field string) (string, bool) {
	f, err := os.Open(file)
	if err != nil {
		return "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["message"] == msg {
			v, _ := m[field].(string)
			return v, true
		}
	}
	return "", false
}

// countLogLines counts JSON log lines with the message and, if key is set,
// key=val.
func countLogLines(file, msg, key, val string) int {
	f, err := os.Open(file)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["message"] == msg && (key == "" || m[key] == val) {
			n++
		}
	}
	return n
}

const benchUser = "poolbench"

// startSSHD runs Debian's sshd in the foreground with its own host key and
// config; the bench user's login shell is git-shell.
func startSSHD(ctx context.Context, dir, reposDir, clientPub string) (*server, error) {
	u, err := user.Lookup(benchUser)
	if err != nil {
		return nil, fmt.Errorf("user %s: %w (bench/run.sh creates it)", benchUser, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	sshDir := filepath.Join(u.HomeDir, ".ssh")
	if err := os.MkdirAll(sshDir, 0o700); err != nil {
		return nil, err
	}
	ak := filepath.Join(sshDir, "authorized_keys")
	if err := os.WriteFile(ak, []byte(clientPub+"\n"), 0o600); err != nil {
		return nil, err
	}
	for _, p := range []string{sshDir, ak} {
		if err := os.Chown(p, uid, gid); err != nil {
			return nil, err
		}
	}
	if err := chownR(reposDir, uid, gid); err != nil {
		return nil, err
	}
	hostKey := filepath.Join(dir, "ssh_host_ed25519_key")
	if _, err := os.Stat(hostKey); err != nil {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKey).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ssh-keygen: %v: %s", err, out)
		}
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "sshd_config")
	// A plain sshd for git: Debian's defaults except what a benchmark needs
	// (its own port and key, no PAM) and two fairness settings: it accepts
	// GIT_PROTOCOL (so it speaks protocol v2 like poolgate; Debian's stock
	// config does not), and MaxStartups is raised so that concurrent
	// clients are not dropped at random.
	conf := fmt.Sprintf(`ListenAddress 127.0.0.1
HostKey %s
PidFile %s
AuthorizedKeysFile .ssh/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
AllowUsers %s
AcceptEnv GIT_PROTOCOL
MaxStartups 300
X11Forwarding no
PrintMotd no
LogLevel INFO
`, hostKey, filepath.Join(dir, "sshd.pid"), benchUser)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	sshd := "/usr/sbin/sshd"
	logFile := filepath.Join(dir, "sshd.log")
	lf, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(sshd, "-D", "-e", "-f", cfg, "-p", strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, err
	}
	s := &server{kind: "openssh", cmd: cmd, port: port, log: logFile, repos: reposDir, done: make(chan struct{})}
	s.account("openssh")
	s.url = func(repo string) string {
		return fmt.Sprintf("ssh://%s@127.0.0.1:%d%s/%s.git", benchUser, port, reposDir, repo)
	}
	go func() { cmd.Wait(); lf.Close(); close(s.done) }()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(logFile)
		if strings.Contains(string(b), "Server listening") {
			return s, nil
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("sshd exited:\n%s", b)
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	s.stop()
	return nil, errors.New("sshd did not start within 20s")
}

func chownR(dir string, uid, gid int) error {
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// cpuTicks is a process's user+system time plus that of its reaped
// children (/proc/PID/stat fields 14-17), in clock ticks.
func cpuTicks(pid int) (int64, error) {
	own, kids, err := cpuSplit(pid)
	return own + kids, err
}

// cpuSplit is a process's own user+system time and its reaped children's,
// in clock ticks.
func cpuSplit(pid int) (own, kids int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	s := string(b)
	// Field 2 (comm) may hold spaces; everything after its ')' splits.
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// f[0] is field 3; fields 14..17 are f[11..14].
	for i, x := range f[11:15] {
		n, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			return 0, 0, err
		}
		if i < 2 {
			own += n
		} else {
			kids += n
		}
	}
	return own, kids, nil
}

const tickMs = 10.0 // CLK_TCK is 100 on Linux

// children lists the direct children of pid (over all its threads).
func children(pid int) []int {
	var out []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		b, _ := os.ReadFile(t)
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// descendants lists every process below pid.
func descendants(pid int) []int {
	var out []int
	queue := children(pid)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		out = append(out, p)
		queue = append(queue, children(p)...)
	}
	return out
}

// quiesce waits until the server has reaped every child, so that their CPU
// time is in its cutime/cstime. sshd reaps a connection's process a moment
// after the client has seen the end of the session.
func quiesce(pid int) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if len(children(pid)) == 0 {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// rssKiB is VmRSS of a process.
func rssKiB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

func benchIDs() (int, int) {
	u, err := user.Lookup(benchUser)
	if err != nil {
		return 0, 0
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid
}

func mustUID() int { u, _ := benchIDs(); return u }
func mustGID() int { _, g := benchIDs(); return g }

// safeEnv lets the harness (root) run git in the bench user's repos.
var safeEnv = []string{"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=safe.directory", "GIT_CONFIG_VALUE_0=*"}

// cgroup is a cgroup-v1 cpuacct group holding one server and, by
// inheritance, every process it starts. It counts CPU exactly and whether
// or not each level reaps its children: OpenSSH 9.2's privilege-separation
// monitor exits without reaping the post-auth child that ran git, so the
// listener's cutime misses a session's git entirely (see RESULTS.md).
type cgroup struct{ dir string }

const cpuacctRoot = "/sys/fs/cgroup/cpuacct"

func newCgroup(name string) (*cgroup, error) {
	dir := filepath.Join(cpuacctRoot, fmt.Sprintf("poolbench-%d-%s", os.Getpid(), name))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	return &cgroup{dir: dir}, nil
}

func (c *cgroup) add(pid int) error {
	return os.WriteFile(filepath.Join(c.dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644)
}

// ns is the CPU time used so far by everything in the group.
func (c *cgroup) ns() int64 {
	b, err := os.ReadFile(filepath.Join(c.dir, "cpuacct.usage"))
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n
}

func (c *cgroup) remove() {
	if c != nil {
		os.Remove(c.dir)
	}
}

// cpuMs is a server's CPU time so far, its own and all its descendants':
// from its cgroup when there is one, else from /proc/PID/stat fields 14-17.
func (s *server) cpuMs() float64 {
	if s.cg != nil {
		return float64(s.cg.ns()) / 1e6
	}
	t, _ := cpuTicks(s.pid())
	return float64(t) * tickMs
}

// statMs is the /proc/PID/stat view (own + reaped children), for contrast.
func (s *server) statMs() float64 {
	t, _ := cpuTicks(s.pid())
	return float64(t) * tickMs
}
