// Command poll simulates builds waiting on a pool as cheaply as a client
// can, to measure how many a git server holds (BENCHMARKING.md: real
// `git fetch` clients fill the machine long before the server does). Each
// simulated build polls once per -interval, as the stock pool-resource's
// check does: a fresh SSH connection (curve25519-sha256, an ed25519 key),
// `git-upload-pack` with protocol v2, the capability advertisement,
// `ls-refs` for the branch, hang-up. That is the server's whole work for a
// no-op fetch, for about a millisecond of client CPU.
//
// It reports the server's CPU share (from its cpuacct cgroup, or from
// /proc/PID/stat fields 14-17), p50/p99 of a poll, polls refused and
// failed, and, with -git-url, stock acquire+release cycles (the real git
// client of internal/poolclient) timed on the idle server first and then
// while the builds wait. Loopback only; bounded by -duration and -timeout.
//
//	go run ./bench/poll -addr 127.0.0.1:2222 -user git -key KEY -repo /locks.git \
//	    -n 1000 -server-pid PID -git-url ssh://git@127.0.0.1:2222/locks.git -pool bench
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/poolgate/poolgate/internal/poolclient"
	gossh "golang.org/x/crypto/ssh"
)

type options struct {
	addr, user, keyFile, repo, branch string
	n                                 int
	interval, warmup, window, timeout time.Duration
	serverPID                         int
	serverCgroup                      string
	gitURL, gitSSH, pool              string
	cycles                            int
	jsonOut                           string
}

// Result is what one run reports (also as JSON with -json).
type Result struct {
	N             int       `json:"n"`
	IntervalS     float64   `json:"interval_s"`
	WindowS       float64   `json:"window_s"`
	Polls         int64     `json:"polls"`
	PollsPerS     float64   `json:"polls_per_s"`
	Refused       int64     `json:"refused"`
	Failed        int64     `json:"failed"`
	Late          int64     `json:"late"`
	P50Ms         float64   `json:"p50_ms"`
	P99Ms         float64   `json:"p99_ms"`
	MaxMs         float64   `json:"max_ms"`
	ServerCPUPct  float64   `json:"server_cpu_pct"` // of one core
	ServerMsPoll  float64   `json:"server_ms_per_poll"`
	ClientMsPoll  float64   `json:"client_ms_per_poll"`
	CPUSource     string    `json:"cpu_source"`
	IdleCycleS    float64   `json:"idle_acquire_release_p50_s,omitempty"`
	LoadedCycleS  float64   `json:"loaded_acquire_release_p50_s,omitempty"`
	IdleCycles    []float64 `json:"idle_cycles_s,omitempty"`
	LoadedCycles  []float64 `json:"loaded_cycles_s,omitempty"`
	Load          string    `json:"load"`
	FirstFailures []string  `json:"first_failures,omitempty"`
}

func main() {
	var o options
	flag.StringVar(&o.addr, "addr", "127.0.0.1:2222", "server host:port (loopback only)")
	flag.StringVar(&o.user, "user", "git", "SSH user")
	flag.StringVar(&o.keyFile, "key", "", "ed25519 private key (OpenSSH format)")
	flag.StringVar(&o.repo, "repo", "/locks.git", "repo path as the client sends it")
	flag.StringVar(&o.branch, "branch", "master", "branch the builds wait on")
	flag.IntVar(&o.n, "n", 1000, "waiting builds")
	flag.DurationVar(&o.interval, "interval", 10*time.Second, "each build polls once per interval")
	flag.DurationVar(&o.warmup, "warmup", 0, "polling before the measured window (default: one interval)")
	flag.DurationVar(&o.window, "duration", 30*time.Second, "measured window")
	flag.DurationVar(&o.timeout, "timeout", 30*time.Second, "one poll's bound")
	flag.IntVar(&o.serverPID, "server-pid", 0, "server process: CPU from /proc/PID/stat (own + reaped children)")
	flag.StringVar(&o.serverCgroup, "server-cgroup", "", "server's cgroup-v1 cpuacct dir: CPU of everything in it (preferred)")
	flag.StringVar(&o.gitURL, "git-url", "", "if set, also time stock acquire+release cycles against this URL")
	flag.StringVar(&o.gitSSH, "git-ssh", "", "GIT_SSH_COMMAND for those cycles (default: ssh with -key, the stock client's options)")
	flag.StringVar(&o.pool, "pool", "bench", "pool of those cycles")
	flag.IntVar(&o.cycles, "cycles", 3, "acquire+release cycles idle, and again while the builds wait")
	flag.StringVar(&o.jsonOut, "json", "", "also write the result as JSON here")
	flag.Parse()
	if o.warmup == 0 {
		o.warmup = o.interval
	}
	if err := checkLoopback(o.addr); err != nil {
		fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.warmup+o.window+o.interval+5*time.Minute)
	defer cancel()
	res, err := run(ctx, o)
	if err != nil {
		fatal(err)
	}
	b, _ := json.MarshalIndent(res, "", "  ")
	if o.jsonOut != "" {
		if err := os.WriteFile(o.jsonOut, b, 0o644); err != nil {
			fatal(err)
		}
	}
	fmt.Printf("n=%d polls/s=%.0f server CPU=%.1f%% of a core (%.2f ms/poll, %s) p50=%.1fms p99=%.1fms max=%.0fms refused=%d failed=%d late=%d client=%.2f ms/poll load=%s\n",
		res.N, res.PollsPerS, res.ServerCPUPct, res.ServerMsPoll, res.CPUSource, res.P50Ms, res.P99Ms, res.MaxMs, res.Refused, res.Failed, res.Late, res.ClientMsPoll, res.Load)
	if o.gitURL != "" {
		fmt.Printf("acquire+release p50: idle %.3fs, while waiting %.3fs (%d cycles each)\n", res.IdleCycleS, res.LoadedCycleS, o.cycles)
	}
	for _, f := range res.FirstFailures {
		fmt.Println("  failure:", f)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "poll:", err)
	os.Exit(1)
}

func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	ip := net.ParseIP(host)
	if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("%s is not a loopback address", addr)
	}
	return nil
}

type poller struct {
	o      options
	cfg    *gossh.ClientConfig
	lsRefs []byte

	measuring atomic.Bool
	mu        sync.Mutex
	lat       []float64
	failures  []string
	polls     atomic.Int64
	refused   atomic.Int64
	failed    atomic.Int64
	late      atomic.Int64
	inflight  atomic.Int64
}

func run(ctx context.Context, o options) (Result, error) {
	res := Result{N: o.n, IntervalS: o.interval.Seconds(), WindowS: o.window.Seconds()}
	keyPEM, err := os.ReadFile(o.keyFile)
	if err != nil {
		return res, err
	}
	signer, err := gossh.ParsePrivateKey(keyPEM)
	if err != nil {
		return res, err
	}
	p := &poller{o: o, cfg: &gossh.ClientConfig{
		User:            o.user,
		Auth:            []gossh.AuthMethod{gossh.PublicKeys(signer)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(), // loopback benchmark
		Config:          gossh.Config{KeyExchanges: []string{"curve25519-sha256"}},
		Timeout:         o.timeout,
	}}
	p.lsRefs = lsRefsRequest(o.branch)

	// The stock client on the idle server first.
	if o.gitURL != "" {
		if res.IdleCycles, err = cycles(ctx, o); err != nil {
			return res, fmt.Errorf("idle acquire+release: %w", err)
		}
		res.IdleCycleS = median(res.IdleCycles)
	}

	pctx, stopPolling := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); p.schedule(pctx) }()

	sleep(ctx, o.warmup)
	cpu0, src, err := serverCPU(o)
	if err != nil {
		stopPolling()
		wg.Wait()
		return res, err
	}
	client0 := selfCPU()
	start := time.Now()
	p.measuring.Store(true)
	var loaded []float64
	var cycleErr error
	if o.gitURL != "" {
		loaded, cycleErr = cycles(ctx, o)
	}
	sleep(ctx, o.window-time.Since(start))
	elapsed := time.Since(start)
	p.measuring.Store(false)
	cpu1, _, _ := serverCPU(o)
	client1 := selfCPU()
	stopPolling()
	wg.Wait()
	if cycleErr != nil {
		return res, fmt.Errorf("acquire+release while waiting: %w", cycleErr)
	}

	res.CPUSource = src
	res.Polls = p.polls.Load()
	res.PollsPerS = float64(res.Polls) / elapsed.Seconds()
	res.Refused, res.Failed, res.Late = p.refused.Load(), p.failed.Load(), p.late.Load()
	res.ServerCPUPct = (cpu1 - cpu0) / elapsed.Seconds() / 10 // ms per s → % of one core
	if res.Polls > 0 {
		// The acquire+release cycles ran in the window too; their share is
		// small next to thousands of polls but is in this figure.
		res.ServerMsPoll = (cpu1 - cpu0) / float64(res.Polls)
		res.ClientMsPoll = (client1 - client0) / float64(res.Polls)
	}
	p.mu.Lock()
	sort.Float64s(p.lat)
	res.P50Ms, res.P99Ms = pct(p.lat, 50), pct(p.lat, 99)
	if len(p.lat) > 0 {
		res.MaxMs = p.lat[len(p.lat)-1]
	}
	res.FirstFailures = p.failures
	p.mu.Unlock()
	res.LoadedCycles = loaded
	res.LoadedCycleS = median(loaded)
	res.Load = loadavg()
	return res, nil
}

// schedule starts each build's polls at its own phase, N per interval in
// all, until ctx ends; polls still running then finish (bounded by
// -timeout).
func (p *poller) schedule(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	step := p.o.interval / time.Duration(p.o.n)
	next := time.Now()
	// A poll that has not answered within the interval is late: that build
	// would be polling again already. Bounded so a stalled server cannot
	// make the client pile up goroutines without end.
	maxInflight := int64(p.o.n)
	for ctx.Err() == nil {
		if d := time.Until(next); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		next = next.Add(step)
		if p.inflight.Load() >= maxInflight {
			if p.measuring.Load() {
				p.late.Add(1)
			}
			continue
		}
		p.inflight.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer p.inflight.Add(-1)
			p.pollOnce()
		}()
	}
}

func (p *poller) pollOnce() {
	start := time.Now()
	err := p.poll()
	ms := float64(time.Since(start).Microseconds()) / 1000
	if !p.measuring.Load() {
		return
	}
	p.polls.Add(1)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, io.EOF) {
			p.refused.Add(1)
		} else {
			p.failed.Add(1)
		}
		p.mu.Lock()
		if len(p.failures) < 5 {
			p.failures = append(p.failures, err.Error())
		}
		p.mu.Unlock()
		return
	}
	p.mu.Lock()
	p.lat = append(p.lat, ms)
	p.mu.Unlock()
}

// poll is one waiting build's check: connect, advertise, ls-refs, hang up.
func (p *poller) poll() error {
	c, err := net.DialTimeout("tcp", p.o.addr, p.o.timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(p.o.timeout))
	conn, chans, reqs, err := gossh.NewClientConn(c, p.o.addr, p.cfg)
	if err != nil {
		return err
	}
	client := gossh.NewClient(conn, chans, reqs)
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		return err
	}
	defer sess.Close()
	// As git sends it: the server must accept GIT_PROTOCOL (OpenSSH needs
	// AcceptEnv GIT_PROTOCOL) or it answers in protocol v0.
	sess.Setenv("GIT_PROTOCOL", "version=2")
	stdin, err := sess.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := sess.StdoutPipe()
	if err != nil {
		return err
	}
	if err := sess.Start("git-upload-pack '" + p.o.repo + "'"); err != nil {
		return err
	}
	r := &pktReader{r: stdout}
	caps, err := r.untilFlush()
	if err != nil {
		return fmt.Errorf("capability advertisement: %w", err)
	}
	if !strings.HasPrefix(caps, "version 2\n") || !strings.Contains(caps, "ls-refs") {
		return fmt.Errorf("not a protocol v2 advertisement: %.80q", caps)
	}
	if _, err := stdin.Write(p.lsRefs); err != nil {
		return err
	}
	refs, err := r.untilFlush()
	if err != nil {
		return fmt.Errorf("ls-refs: %w", err)
	}
	if !strings.Contains(refs, " refs/heads/"+p.o.branch+"\n") {
		return fmt.Errorf("ls-refs without the branch: %.120q", refs)
	}
	// Nothing new: hang up, as git fetch does.
	stdin.Close()
	return nil
}

// lsRefsRequest is the request `git fetch origin BRANCH` (git 2.39) sends.
func lsRefsRequest(branch string) []byte {
	var b strings.Builder
	pkt := func(s string) { fmt.Fprintf(&b, "%04x%s", len(s)+4, s) }
	pkt("command=ls-refs\n")
	pkt("agent=git/2.39.5\n")
	pkt("object-format=sha1\n")
	b.WriteString("0001")
	pkt("peel\n")
	pkt("symrefs\n")
	pkt("unborn\n")
	for _, p := range []string{branch, "refs/" + branch, "refs/tags/" + branch, "refs/heads/" + branch, "refs/remotes/" + branch, "refs/remotes/" + branch + "/HEAD"} {
		pkt("ref-prefix " + p + "\n")
	}
	b.WriteString("0000")
	return []byte(b.String())
}

type pktReader struct {
	r   io.Reader
	hdr [4]byte
}

// untilFlush reads pkt-lines up to a flush packet and returns their text.
func (p *pktReader) untilFlush() (string, error) {
	var out strings.Builder
	for {
		if _, err := io.ReadFull(p.r, p.hdr[:]); err != nil {
			return out.String(), err
		}
		n, err := strconv.ParseUint(string(p.hdr[:]), 16, 16)
		if err != nil {
			return out.String(), fmt.Errorf("bad pkt-line header %q", p.hdr[:])
		}
		if n == 0 {
			return out.String(), nil
		}
		if n < 4 {
			continue // delim or response-end
		}
		buf := make([]byte, n-4)
		if _, err := io.ReadFull(p.r, buf); err != nil {
			return out.String(), err
		}
		out.Write(buf)
	}
}

// cycles times stock acquire+release cycles: each step a fresh clone and
// pool-resource's own git sequence (internal/poolclient), as a build's
// put steps run them.
func cycles(ctx context.Context, o options) ([]float64, error) {
	sshCmd := o.gitSSH
	if sshCmd == "" {
		sshCmd = "ssh -F /dev/null -i " + o.keyFile + " -o IdentitiesOnly=yes -o StrictHostKeyChecking=no" +
			" -o UserKnownHostsFile=/dev/null -o ControlMaster=no -o LogLevel=ERROR -o BatchMode=yes"
	}
	tmp, err := os.MkdirTemp("", "poll-cycles-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	home := filepath.Join(tmp, "home")
	os.MkdirAll(home, 0o755)
	var out []float64
	for i := 0; i < o.cycles; i++ {
		start := time.Now()
		var name string
		for step := 0; step < 2; step++ {
			c := &poolclient.Client{
				URL: o.gitURL, Branch: "master", Pool: o.pool,
				Dir:        filepath.Join(tmp, fmt.Sprintf("c%d-%d", i, step)),
				Env:        []string{"GIT_SSH_COMMAND=" + sshCmd, "SSH_AUTH_SOCK=", "HOME=" + home, "GIT_CONFIG_NOSYSTEM=1", "LC_ALL=C"},
				RetryDelay: time.Second,
				BuildURL:   "https://ci.example.com/teams/main/pipelines/poll/jobs/acquire/builds/" + strconv.Itoa(i),
			}
			cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			err := c.Clone(cctx)
			if err == nil && step == 0 {
				name, err = c.Acquire(cctx)
			} else if err == nil {
				err = c.Release(cctx, name)
			}
			cancel()
			if err != nil {
				return out, err
			}
		}
		out = append(out, time.Since(start).Seconds())
	}
	return out, nil
}

func serverCPU(o options) (ms float64, source string, err error) {
	if o.serverCgroup != "" {
		b, err := os.ReadFile(filepath.Join(o.serverCgroup, "cpuacct.usage"))
		if err != nil {
			return 0, "", err
		}
		ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		return float64(ns) / 1e6, "cgroup", err
	}
	if o.serverPID != 0 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", o.serverPID))
		if err != nil {
			return 0, "", err
		}
		// Fields 14-17 (utime stime cutime cstime), counted after the
		// command name, which may hold spaces.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		var ticks float64
		for _, x := range f[11:15] {
			v, _ := strconv.ParseFloat(x, 64)
			ticks += v
		}
		return ticks * 10, "/proc/PID/stat", nil // USER_HZ is 100 on Linux
	}
	return 0, "none", nil
}

func selfCPU() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e6
}

func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func pct(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p/100*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return pct(s, 50)
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
