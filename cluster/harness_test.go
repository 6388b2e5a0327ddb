package cluster_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/poolgate/poolgate/cluster"
	"github.com/poolgate/poolgate/hooks"
	"github.com/poolgate/poolgate/internal/poolclient"
	"github.com/poolgate/poolgate/internal/testserver"
)

// The harness runs real processes on loopback: etcd from Debian's
// etcd-server package (/usr/bin/etcd; .ci/run installs it) and `poolgate
// serve` nodes built from this tree.

// freePort reserves a loopback port for a process started later. It is
// picked below the kernel's ephemeral range (32768 and up by default): a
// port taken from that range and released is soon the source port of some
// other test's outgoing connection, and the node's bind then fails.
func freePort(t testing.TB) string {
	t.Helper()
	for i := 0; i < 200; i++ {
		addr := fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12000))
		if ln, err := net.Listen("tcp", addr); err == nil {
			ln.Close()
			return addr
		}
	}
	t.Fatal("no free loopback port below the ephemeral range")
	return ""
}

// proc is a child process with its log kept.
type proc struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	log  strings.Builder
	done chan struct{}
	line chan map[string]any // JSON log lines, for waiting on a message
}

func startProc(t testing.TB, name string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan struct{}), line: make(chan map[string]any, 64)}
	p.cmd = exec.Command(args[0], args[1:]...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A pipe of the test's own rather than StderrPipe: Wait would close
	// that one when the process exits, and a successor started by a
	// hand-over, writing to the same stderr, would die of SIGPIPE.
	out, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = w // Stdout nil: /dev/null, no pipe a successor would hold open
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	go func() {
		defer out.Close()
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.log.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil && m["message"] == "listening" {
				select {
				case p.line <- m:
				default:
				}
			}
		}
	}()
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *proc) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// grep is the log's lines holding any of subs.
func (p *proc) grep(subs ...string) string {
	var b strings.Builder
	for _, l := range strings.Split(p.Log(), "\n") {
		for _, s := range subs {
			if strings.Contains(l, s) {
				b.WriteString(l + "\n")
				break
			}
		}
	}
	return b.String()
}

// kill is kill -9 of the process group (git children included).
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// etcdMember is one member of a test etcd cluster.
type etcdMember struct {
	name, client, peer, dir string
	p                       *proc
}

type etcdCluster struct {
	t       testing.TB
	members []*etcdMember
}

func startEtcd(t testing.TB, n int) *etcdCluster {
	t.Helper()
	if _, err := os.Stat("/usr/bin/etcd"); err != nil {
		t.Fatal("etcd is needed: apt-get install etcd-server (.ci/run does)")
	}
	e := &etcdCluster{t: t}
	var initial []string
	for i := range n {
		m := &etcdMember{name: fmt.Sprintf("e%d", i+1), client: freePort(t), peer: freePort(t), dir: filepath.Join(t.TempDir(), "etcd")}
		e.members = append(e.members, m)
		initial = append(initial, m.name+"=http://"+m.peer)
	}
	for _, m := range e.members {
		m.start(t, strings.Join(initial, ","))
	}
	return e
}

func (m *etcdMember) start(t testing.TB, initial string) {
	m.p = startProc(t, m.name, []string{"ETCD_UNSUPPORTED_ARCH=" + os.Getenv("GOARCH")}, "/usr/bin/etcd",
		"--name", m.name, "--data-dir", m.dir,
		"--listen-client-urls", "http://"+m.client, "--advertise-client-urls", "http://"+m.client,
		"--listen-peer-urls", "http://"+m.peer, "--initial-advertise-peer-urls", "http://"+m.peer,
		"--initial-cluster", initial, "--initial-cluster-state", "new",
		"--heartbeat-interval", "50", "--election-timeout", "500", "--logger", "zap", "--log-level", "error")
}

func (e *etcdCluster) endpoints() []string {
	var out []string
	for _, m := range e.members {
		out = append(out, m.client)
	}
	return out
}

// node is one poolgate serve of the test cluster.
type node struct {
	name, dir, config, advertise, sshAddr, httpAddr string
	p                                               *proc
	clustered                                       bool // has a cluster: block
}

// testCluster is N nodes sharing one host key and one user key.
type testCluster struct {
	t        testing.TB
	nodes    []*node
	writer   testserver.Key
	hookBin  string
	daemon   string
	etcdEnds []string // what each node's config names (proxies in some tests)
}

type clusterOptions struct {
	Nodes int
	Pools string     // YAML list
	Etcd  [][]string // endpoints per node; nil: no cluster block (one plain node)
	// Plain runs the daemon without the race detector (benchmarks).
	Plain    bool
	Webhooks string
}

func newTestCluster(t testing.TB, o clusterOptions) *testCluster {
	t.Helper()
	daemonBin, hookBin := testserver.Build(t)
	dir := t.TempDir()
	tc := &testCluster{t: t, writer: testserver.NewKey(t, dir, "writer"), hookBin: hookBin, daemon: daemonBin}
	if o.Plain {
		tc.daemon = hookBin
	}
	host := testserver.NewKey(t, dir, "ssh_host_ed25519_key")
	if o.Webhooks == "" {
		o.Webhooks = "[]"
	}
	for i := range o.Nodes {
		n := &node{name: fmt.Sprintf("n%d", i+1), dir: filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
			advertise: freePort(t), sshAddr: freePort(t), httpAddr: freePort(t)}
		n.config = filepath.Join(n.dir, "poolgate.yaml")
		n.clustered = o.Etcd != nil
		tc.nodes = append(tc.nodes, n)
	}
	for i, n := range tc.nodes {
		var peers strings.Builder
		for _, p := range tc.nodes {
			if p != n {
				fmt.Fprintf(&peers, "    - name: %s\n      address: %q\n", p.name, p.advertise)
			}
		}
		var eps []byte
		if o.Etcd != nil {
			eps, _ = json.Marshal(o.Etcd[i])
		}
		// The two pre-session limits at 60 s instead of 15 s and 10 s: the
		// nodes are race-built (key exchange several times slower) and share
		// two cores with 24 clients and etcd; a kill sends a third of the
		// clients to the other nodes at once. These tests are about failover;
		// the limits have their own (daemon/limits_test.go, conns_test.go,
		// reliability/flood_test.go).
		cfg := fmt.Sprintf(`data_dir: %s
ssh:
  listen: %q
  host_key: %s
  handshake_timeout: 60s
  session_start_timeout: 60s
http:
  listen: %q
log:
  format: json
  level: debug
users:
  - name: writer
    role: write
    keys: [%q]
repos:
  - name: locks
    branch: master
    pools: %s
webhooks: %s
cluster:
  node: %s
  advertise: %q
  peers:
%s  etcd:
    endpoints: %s
`, filepath.Join(n.dir, "data"), n.sshAddr, host.Path, n.httpAddr, tc.writer.Public, o.Pools, o.Webhooks, n.name, n.advertise, peers.String(), eps)
		if o.Etcd == nil {
			cfg = cfg[:strings.Index(cfg, "cluster:\n")]
		}
		if err := os.MkdirAll(n.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(n.config, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return tc
}

// start starts the nodes at once (each waits for a quorum of peers to
// settle the first tip) and waits until all listen.
func (tc *testCluster) start(which ...*node) {
	tc.t.Helper()
	if len(which) == 0 {
		which = tc.nodes
	}
	for _, n := range which {
		n.p = startProc(tc.t, n.name, []string{"HOME=" + n.dir, "POOLGATE_MAINTENANCE=off"}, tc.daemon, "serve", "--config", n.config)
	}
	for _, n := range which {
		tc.waitListening(n)
	}
}

func (tc *testCluster) waitListening(n *node) {
	tc.t.Helper()
	deadline := time.After(90 * time.Second)
	for {
		select {
		case m := <-n.p.line:
			if m["message"] == "listening" {
				// The daemon installed its own (-race) build as the hooks;
				// pushes run the plain build so each does not pay the
				// race detector's exit.
				hd := filepath.Join(n.dir, "data", "hooks")
				if err := hooks.Install(hd, tc.hookBin); err != nil {
					tc.t.Fatal(err)
				}
				// Only where the daemon installed one: a plain node (the
				// benchmarks' single) pays no cluster hook.
				if err := cluster.InstallHook(hd, tc.hookBin, n.clustered); err != nil {
					tc.t.Fatal(err)
				}
				return
			}
		case <-n.p.done:
			tc.t.Fatalf("%s exited before listening:\n%s", n.name, n.p.Log())
		case <-deadline:
			tc.t.Fatalf("%s did not start:\n%s", n.name, n.p.Log())
		}
	}
}

// client is a stock-like out step against addr (a node or the proxy).
func (tc *testCluster) client(name, addr, pool string) *poolclient.Client {
	tc.t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	return &poolclient.Client{
		URL:    "ssh://git@127.0.0.1:" + port + "/locks.git",
		Branch: "master", Pool: pool,
		Dir:        filepath.Join(tc.t.TempDir(), name),
		Env:        []string{"GIT_SSH_COMMAND=" + testserver.SSHCommand(tc.writer.Path), "SSH_AUTH_SOCK=", "HOME=" + tc.t.TempDir(), "GIT_CONFIG_NOSYSTEM=1"},
		RetryDelay: 50 * time.Millisecond,
		BuildURL:   "https://ci.example.com/builds/" + name,
	}
}

// git runs git in a node's repo.
func (n *node) git(t testing.TB, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = filepath.Join(n.dir, "data", "repos", "locks.git")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + n.dir, "GIT_CONFIG_NOSYSTEM=1"}
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func (n *node) tip(t testing.TB) string {
	out, err := n.git(t, "rev-parse", "refs/heads/master")
	if err != nil {
		t.Fatalf("%s: %v %s", n.name, err, out)
	}
	return out
}

// converge waits (bounded) until every running node's branch is at one tip,
// and returns it.
func (tc *testCluster) converge(nodes ...*node) string {
	tc.t.Helper()
	if len(nodes) == 0 {
		nodes = tc.nodes
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		tips := map[string]bool{}
		var last string
		for _, n := range nodes {
			last = n.tip(tc.t)
			tips[last] = true
		}
		if len(tips) == 1 {
			return last
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, n := range nodes {
				fmt.Fprintf(&b, "%s at %s\n", n.name, n.tip(tc.t))
			}
			tc.t.Fatalf("nodes did not converge:\n%s", b.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
