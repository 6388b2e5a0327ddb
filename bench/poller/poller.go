// Package poller simulates builds waiting on a pool as cheaply as a
// client can: the engine of the bench/poll command and of the harness's
// waiting-builds scale curve (see bench/README.md).
package poller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
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

// Options of one run; see the command's flags (bench/poll).
type Options struct {
	Addr, User, KeyFile, Repo, Branch string
	N                                 int
	Interval, Warmup, Window, Timeout time.Duration
	ServerPID                         int
	ServerCgroup                      string
	GitURL, GitSSH, Pool              string
	Cycles                            int
	// OnWindow, if set, is called as the measured window (of length d)
	// starts, e.g. to take a CPU profile of the server meanwhile.
	OnWindow func(d time.Duration)
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
	CycleError    string    `json:"acquire_release_error,omitempty"`
	Load          string    `json:"load"`
	FirstFailures []string  `json:"first_failures,omitempty"`
}

// CheckLoopback refuses any address but a loopback one.
func CheckLoopback(addr string) error {
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

// String is the result as one line (two with cycles, more with failures).
func (r Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "n=%d polls/s=%.0f server CPU=%.1f%% of a core (%.2f ms/poll, %s) p50=%.1fms p99=%.1fms max=%.0fms refused=%d failed=%d late=%d client=%.2f ms/poll load=%s",
		r.N, r.PollsPerS, r.ServerCPUPct, r.ServerMsPoll, r.CPUSource, r.P50Ms, r.P99Ms, r.MaxMs, r.Refused, r.Failed, r.Late, r.ClientMsPoll, r.Load)
	if len(r.IdleCycles) > 0 {
		fmt.Fprintf(&b, "\nacquire+release p50: idle %.3fs, while waiting %.3fs (%d cycles each)", r.IdleCycleS, r.LoadedCycleS, len(r.IdleCycles))
	}
	if r.CycleError != "" {
		b.WriteString("\nacquire+release while waiting FAILED: " + r.CycleError)
	}
	for _, f := range r.FirstFailures {
		b.WriteString("\n  failure: " + f)
	}
	return b.String()
}

type poller struct {
	o      Options
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

// Run polls for one warm-up and one measured window and reports.
func Run(ctx context.Context, o Options) (Result, error) {
	if o.Warmup == 0 {
		o.Warmup = o.Interval
	}
	// Each poll's connection is garbage at once; collecting less often
	// takes about a quarter off the client's CPU per poll (1.1 → 0.85 ms),
	// CPU the server would otherwise compete with on a shared machine.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	res := Result{N: o.N, IntervalS: o.Interval.Seconds(), WindowS: o.Window.Seconds()}
	keyPEM, err := os.ReadFile(o.KeyFile)
	if err != nil {
		return res, err
	}
	signer, err := gossh.ParsePrivateKey(keyPEM)
	if err != nil {
		return res, err
	}
	p := &poller{o: o, cfg: &gossh.ClientConfig{
		User:            o.User,
		Auth:            []gossh.AuthMethod{gossh.PublicKeys(signer)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(), // loopback benchmark
		Config:          gossh.Config{KeyExchanges: []string{"curve25519-sha256"}},
		Timeout:         o.Timeout,
	}}
	p.lsRefs = lsRefsRequest(o.Branch)

	// The stock client on the idle server first.
	if o.GitURL != "" {
		if res.IdleCycles, err = cycles(ctx, o); err != nil {
			return res, fmt.Errorf("idle acquire+release: %w", err)
		}
		res.IdleCycleS = median(res.IdleCycles)
	}

	pctx, stopPolling := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); p.schedule(pctx) }()

	sleep(ctx, o.Warmup)
	cpu0, src, err := serverCPU(o)
	if err != nil {
		stopPolling()
		wg.Wait()
		return res, err
	}
	client0 := selfCPU()
	start := time.Now()
	if o.OnWindow != nil {
		o.OnWindow(o.Window)
	}
	p.measuring.Store(true)
	var loaded []float64
	var cycleErr error
	if o.GitURL != "" {
		loaded, cycleErr = cycles(ctx, o)
	}
	sleep(ctx, o.Window-time.Since(start))
	elapsed := time.Since(start)
	p.measuring.Store(false)
	cpu1, _, _ := serverCPU(o)
	client1 := selfCPU()
	stopPolling()
	wg.Wait()
	if cycleErr != nil {
		// A build that fails while the others wait is a result, not the
		// end of the measurement.
		res.CycleError = cycleErr.Error()
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
	res.Load = Loadavg()
	return res, nil
}

// schedule starts each build's polls at its own phase, N per interval in
// all, until ctx ends; polls still running then finish (bounded by
// -timeout).
func (p *poller) schedule(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	step := p.o.Interval / time.Duration(p.o.N)
	next := time.Now()
	// A poll that has not answered within the interval is late: that build
	// would be polling again already. Bounded so a stalled server cannot
	// make the client pile up goroutines without end.
	maxInflight := int64(p.o.N)
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
	c, err := net.DialTimeout("tcp", p.o.Addr, p.o.Timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(p.o.Timeout))
	conn, chans, reqs, err := gossh.NewClientConn(c, p.o.Addr, p.cfg)
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
	if err := sess.Start("git-upload-pack '" + p.o.Repo + "'"); err != nil {
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
	if !strings.Contains(refs, " refs/heads/"+p.o.Branch+"\n") {
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
func cycles(ctx context.Context, o Options) ([]float64, error) {
	sshCmd := o.GitSSH
	if sshCmd == "" {
		sshCmd = "ssh -F /dev/null -i " + o.KeyFile + " -o IdentitiesOnly=yes -o StrictHostKeyChecking=no" +
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
	for i := 0; i < o.Cycles; i++ {
		start := time.Now()
		var name string
		for step := 0; step < 2; step++ {
			c := &poolclient.Client{
				URL: o.GitURL, Branch: "master", Pool: o.Pool,
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

func serverCPU(o Options) (ms float64, source string, err error) {
	if o.ServerCgroup != "" {
		b, err := os.ReadFile(filepath.Join(o.ServerCgroup, "cpuacct.usage"))
		if err != nil {
			return 0, "", err
		}
		ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		return float64(ns) / 1e6, "cgroup", err
	}
	if o.ServerPID != 0 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", o.ServerPID))
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

// Percentile is the nearest-rank p-th percentile of xs (unsorted).
func Percentile(xs []float64, p float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return pct(s, p)
}

func pct(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p/100*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func median(xs []float64) float64 { return Percentile(xs, 50) }

// Loadavg is /proc/loadavg's three load averages.
func Loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
