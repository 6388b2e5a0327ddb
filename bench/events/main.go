// Command events measures what the events service costs, for two poolgate
// binaries side by side (a baseline and this tree), alternating per figure:
//
//   - first derivation of a long history: `poolgate history` on a data dir
//     with no daemon derives it (the code a daemon runs at first start);
//     wall time, CPU (user+system, reaped git children included) and peak
//     RSS (wait4's ru_maxrss: the largest process of the tree);
//   - the pools API's latency at 0, 100,000 and 200,000 events: a running
//     `poolgate serve` on a store derived to the tip, sequential GETs;
//   - idle CPU with 1, 10 and 100 repos: `poolgate serve` with nothing
//     happening, CPU from /proc/PID/stat (own and reaped children) over a
//     window, and the git processes it started (a counting `git` on PATH).
//
// bench/events.sh builds both binaries and the long histories, then runs
// this. Everything listens on 127.0.0.1 only; servers are stopped at exit.
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

type bin struct{ name, path string }

var (
	bins    []bin
	work    string
	histDir string
)

func main() {
	base := flag.String("base", "", "baseline poolgate binary")
	cur := flag.String("new", "", "this tree's poolgate binary")
	flag.StringVar(&histDir, "histories", "", "dir holding h<N>.git pool repos (bench/harness -gen)")
	sizes := flag.String("sizes", "100000,200000", "history sizes (commits)")
	what := flag.String("run", "derive,api,idle", "parts to run")
	idleRepos := flag.String("idle-repos", "1,10,100", "repo counts for the idle figure")
	idleFor := flag.Duration("idle-for", 20*time.Second, "idle measuring window")
	requests := flag.Int("requests", 200, "API requests per figure")
	flag.Parse()
	bins = []bin{{"baseline", *base}, {"new", *cur}}
	var err error
	if work, err = os.MkdirTemp("", "poolgate-bench-events-"); err != nil {
		fatal(err)
	}
	defer os.RemoveAll(work)
	fmt.Printf("machine: %d CPUs; %s\n", numCPU(), loadavg())
	var ns []int
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			fatal(err)
		}
		ns = append(ns, n)
	}
	if strings.Contains(*what, "derive") {
		fmt.Println("\n| first derivation | binary | wall | CPU (user+sys) | peak RSS | load (1/5/15 min) |\n| --- | --- | --- | --- | --- | --- |")
		for _, n := range ns {
			for _, b := range order(n) {
				r, err := derive(b, n)
				if err != nil {
					fatal(err)
				}
				fmt.Printf("| %d commits | %s | %.1f s | %.1f s | %.0f MiB | %s |\n", n, b.name, r.wall.Seconds(), r.cpu.Seconds(), float64(r.maxRSS)/1024, loadavg())
			}
		}
	}
	if strings.Contains(*what, "api") {
		fmt.Println("\n| pools API | binary | p50 | p99 | load (1/5/15 min) |\n| --- | --- | --- | --- | --- |")
		for _, n := range append([]int{0}, ns...) {
			for _, b := range order(n) {
				p50, p99, err := apiLatency(b, n, *requests)
				if err != nil {
					fatal(err)
				}
				fmt.Printf("| %d events | %s | %.2f ms | %.2f ms | %s |\n", n, b.name, ms(p50), ms(p99), loadavg())
			}
		}
	}
	if strings.Contains(*what, "idle") {
		fmt.Printf("\n| idle, %v window | binary | CPU | git processes started | load (1/5/15 min) |\n| --- | --- | --- | --- | --- |\n", *idleFor)
		for _, s := range strings.Split(*idleRepos, ",") {
			k, _ := strconv.Atoi(strings.TrimSpace(s))
			for _, b := range order(k) {
				cpu, procs, err := idle(b, k, *idleFor)
				if err != nil {
					fatal(err)
				}
				fmt.Printf("| %d repos | %s | %.2f ms/s | %d | %s |\n", k, b.name, cpu, procs, loadavg())
			}
		}
	}
}

var turn int

// order alternates which binary goes first from one figure to the next.
func order(int) []bin {
	turn++
	if turn%2 == 0 {
		return []bin{bins[1], bins[0]}
	}
	return bins
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench/events:", err)
	os.Exit(1)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// dataDir makes a data dir serving the pool repo hist (a copy: a daemon
// writes its config) as repo "locks", or nothing, and a config for it.
func dataDir(name, hist string, repos int) (dir, cfg string, err error) {
	dir = filepath.Join(work, name)
	if err := os.MkdirAll(filepath.Join(dir, "repos"), 0o755); err != nil {
		return "", "", err
	}
	if hist != "" {
		dst := filepath.Join(dir, "repos", "locks.git")
		os.MkdirAll(dst, 0o755)
		if out, err := exec.Command("cp", "-a", hist+"/.", dst).CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("cp: %v: %s", err, out)
		}
	}
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	spub, _ := gossh.NewPublicKey(pub)
	var b strings.Builder
	fmt.Fprintf(&b, "data_dir: %s\nssh:\n  listen: \"127.0.0.1:0\"\nhttp:\n  listen: \"127.0.0.1:%d\"\nlog:\n  level: warn\n", dir, freePort())
	fmt.Fprintf(&b, "users:\n  - name: w\n    role: write\n    keys: [%q]\nrepos:\n", strings.TrimSpace(string(gossh.MarshalAuthorizedKey(spub))))
	if hist != "" {
		b.WriteString("  - name: locks\n    branch: master\n    pools: [{name: big}]\n")
	}
	for i := 0; i < repos; i++ {
		fmt.Fprintf(&b, "  - name: r%03d\n    branch: master\n    pools: [{name: p, locks: [a, b, c, d]}]\n", i)
	}
	cfg = filepath.Join(dir, "poolgate.yaml")
	return dir, cfg, os.WriteFile(cfg, []byte(b.String()), 0o644)
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type usage struct {
	wall, cpu time.Duration
	maxRSS    int64 // KiB
}

func derive(b bin, n int) (usage, error) {
	_, cfg, err := dataDir(fmt.Sprintf("derive-%s-%d", b.name, n), filepath.Join(histDir, fmt.Sprintf("h%d.git", n)), 0)
	if err != nil {
		return usage{}, err
	}
	cmd := exec.Command(b.path, "history", "--config", cfg, "locks", "--limit", "1")
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	t0 := time.Now()
	if err := cmd.Run(); err != nil {
		return usage{}, fmt.Errorf("%s history: %w", b.name, err)
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return usage{wall: time.Since(t0), cpu: time.Duration(syscall.TimevalToNsec(ru.Utime) + syscall.TimevalToNsec(ru.Stime)),
		maxRSS: ru.Maxrss}, nil
}

type serving struct {
	cmd  *exec.Cmd
	http string
	runs string // the counting git's log
	done chan struct{}
}

// serve starts `poolgate serve` with a counting `git` first on PATH and
// maintenance off (this measures the events service, not repacks).
func serve(b bin, cfg string) (*serving, error) {
	dir := filepath.Dir(cfg)
	real, err := exec.LookPath("git")
	if err != nil {
		return nil, err
	}
	wrap := filepath.Join(dir, "wrap")
	os.MkdirAll(wrap, 0o755)
	runs := filepath.Join(dir, "git-runs")
	os.WriteFile(filepath.Join(wrap, "git"), []byte(fmt.Sprintf("#!/bin/sh\necho x >> %q\nexec %q \"$@\"\n", runs, real)), 0o755)
	cfgText, _ := os.ReadFile(cfg)
	var httpAddr string
	for _, l := range strings.Split(string(cfgText), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "listen: \"127.0.0.1:") && !strings.HasSuffix(l, ":0\"") {
			httpAddr = strings.Trim(strings.TrimPrefix(strings.TrimSpace(l), "listen: "), "\"")
		}
	}
	log, err := os.Create(filepath.Join(dir, "serve.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(b.path, "serve", "--config", cfg)
	cmd.Env = append(os.Environ(), "PATH="+wrap+":"+os.Getenv("PATH"), "POOLGATE_MAINTENANCE=off")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &serving{cmd: cmd, http: httpAddr, runs: runs, done: make(chan struct{})}
	go func() { cmd.Wait(); log.Close(); close(s.done) }()
	// Creating 100 repos at start takes over a minute on a loaded machine.
	deadline := time.Now().Add(5 * time.Minute)
	for {
		if resp, err := http.Get("http://" + httpAddr + "/healthz"); err == nil {
			resp.Body.Close()
			return s, nil
		}
		select {
		case <-s.done:
			out, _ := os.ReadFile(filepath.Join(dir, "serve.log"))
			return nil, fmt.Errorf("%s serve exited:\n%s", b.name, out)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("%s serve did not answer within 5 minutes", b.name)
		}
	}
}

func (s *serving) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}

// cpu is the server's own and its reaped children's CPU so far.
func (s *serving) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	var ticks int64
	for _, i := range []int{11, 12, 13, 14} { // utime stime cutime cstime (fields 14-17)
		v, _ := strconv.ParseInt(f[i], 10, 64)
		ticks += v
	}
	return time.Duration(ticks) * 10 * time.Millisecond // USER_HZ 100
}

func (s *serving) gitRuns() int {
	b, _ := os.ReadFile(s.runs)
	return strings.Count(string(b), "\n")
}

var storeFor = map[int]string{} // events.db derived once per size, by "new"

func apiLatency(b bin, n, requests int) (p50, p99 time.Duration, err error) {
	hist := ""
	if n > 0 {
		hist = filepath.Join(histDir, fmt.Sprintf("h%d.git", n))
	}
	dir, cfg, err := dataDir(fmt.Sprintf("api-%s-%d", b.name, n), hist, 0)
	if err != nil {
		return 0, 0, err
	}
	if n == 0 {
		// A fresh pool of four locks, created by the daemon.
		os.WriteFile(cfg, []byte(strings.Replace(mustRead(cfg), "repos:\n", "repos:\n  - name: locks\n    branch: master\n    pools: [{name: big, locks: [a, b, c, d]}]\n", 1)), 0o644)
	} else {
		// The same derived store for both binaries (the baseline reads
		// the new tables' store as its own): derived once, by the
		// faster binary, then copied.
		if storeFor[n] == "" {
			cmd := exec.Command(bins[1].path, "history", "--config", cfg, "locks", "--limit", "1")
			if out, err := cmd.CombinedOutput(); err != nil {
				return 0, 0, fmt.Errorf("deriving the store: %v: %s", err, out)
			}
			storeFor[n] = dir
		} else {
			files, _ := filepath.Glob(filepath.Join(storeFor[n], "events.db*"))
			if out, err := exec.Command("cp", append(files, dir)...).CombinedOutput(); err != nil {
				return 0, 0, fmt.Errorf("cp: %v: %s", err, out)
			}
		}
	}
	s, err := serve(b, cfg)
	if err != nil {
		return 0, 0, err
	}
	defer s.stop()
	// Both find the store derived to the tip. (The baseline never goes
	// quiet here: it keeps spending ~0.3 core a second beside a store of
	// 100,000 events, so no quiet gate, a fixed settling time.)
	time.Sleep(5 * time.Second)
	url := "http://" + s.http + "/api/v1/repos/locks/pools"
	var lat []time.Duration
	for i := 0; i < requests+5; i++ {
		t0 := time.Now()
		resp, err := http.Get(url)
		if err != nil {
			return 0, 0, err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), `"big"`) {
			return 0, 0, fmt.Errorf("%s: %d %s", url, resp.StatusCode, body)
		}
		if i >= 5 { // warm-up
			lat = append(lat, time.Since(t0))
		}
	}
	slices.Sort(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100], nil
}

func mustRead(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		fatal(err)
	}
	return string(b)
}

func idle(b bin, repos int, window time.Duration) (cpuMsPerS float64, gitRuns int, err error) {
	_, cfg, err := dataDir(fmt.Sprintf("idle-%s-%d", b.name, repos), "", repos)
	if err != nil {
		return 0, 0, err
	}
	s, err := serve(b, cfg)
	if err != nil {
		return 0, 0, err
	}
	defer s.stop()
	// Start-up (creating the repos, first derivation) is over once the
	// CPU settles; the baseline never gets under 20 ms/s with 100 repos,
	// so wait a fixed 10 s at least, then at most 30 s for quiet.
	time.Sleep(10 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for last := s.cpu(); ctx.Err() == nil; {
		time.Sleep(time.Second)
		c := s.cpu()
		if c-last < 20*time.Millisecond {
			break
		}
		last = c
	}
	c0, g0 := s.cpu(), s.gitRuns()
	time.Sleep(window)
	return float64((s.cpu() - c0).Milliseconds()) / window.Seconds(), s.gitRuns() - g0, nil
}
