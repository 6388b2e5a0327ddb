// Command harness benchmarks poolgate against plain git over OpenSSH
// (git-shell, no hook) on loopback, with the stock pool-resource's git
// sequence as the client. bench/run.sh builds and runs it; see
// bench/RESULTS.md for what it measures and why.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/poolgate/poolgate/bench/poller"
)

type options struct {
	poolgate   string
	workloads  map[int]bool
	n          int           // W1 cycles per target
	contend    time.Duration // W2 window per target and round
	clients    int           // W2 clients
	retry      time.Duration // W2 retry_delay
	poll       time.Duration // W6 window per target and round
	pollers    int           // W6 clients
	rounds     int           // W2/W6 alternating rounds
	commits    int           // W3/W4 big repo size
	clones     int           // W3 clones per target and state
	concur     int           // W5 concurrent clones
	hookRuns   int           // W4 runs per size
	keep       bool
	out        string
	pprofDir   string
	variants   multiFlag
	profileFor time.Duration

	// W7 (scale.go)
	scaleN        intList
	scaleNOpenSSH intList
	scaleInterval time.Duration
	scaleWindow   time.Duration
	scaleCycles   int
}

func main() {
	var o options
	var wl string
	var quick bool
	var timeout time.Duration
	flag.StringVar(&o.poolgate, "poolgate", "", "poolgate binary (bench/run.sh builds it)")
	flag.StringVar(&wl, "workloads", "1,2,3,4,5,6", "workloads to run: 1 acquire+release, 2 contention, 3 big clone, 4 hook, 5 memory, 6 polling, 7 waiting-builds scale curve, 8 acquire+release against the file:// floor")
	flag.IntVar(&o.n, "n", 15, "W1, W8: acquire+release cycles per target")
	flag.DurationVar(&o.contend, "contend", 20*time.Second, "W2: window per target and round")
	flag.IntVar(&o.clients, "clients", 16, "W2: concurrent clients on a 4-lock pool")
	flag.DurationVar(&o.retry, "retry", time.Second, "W2: the clients' retry_delay (jittered up to 2x)")
	flag.DurationVar(&o.poll, "poll", 15*time.Second, "W6: window per target and round")
	flag.IntVar(&o.pollers, "pollers", 8, "W6: parallel fetch loops")
	flag.IntVar(&o.rounds, "rounds", 2, "W2/W6: alternating rounds per target")
	flag.IntVar(&o.commits, "commits", 100000, "W3/W4: commits in the big pool repo")
	flag.IntVar(&o.clones, "clones", 3, "W3: clones per target and repo state")
	flag.IntVar(&o.concur, "concurrent", 100, "W5: concurrent clones")
	flag.IntVar(&o.hookRuns, "hook-runs", 20, "W4: hook runs per repo size")
	flag.BoolVar(&quick, "quick", false, "smoke run: tiny sizes, seconds per workload")
	flag.BoolVar(&o.keep, "keep", false, "keep the temp dir")
	flag.StringVar(&o.out, "out", "", "also write the figures as JSON here")
	flag.StringVar(&o.pprofDir, "pprof", "", "write CPU profiles of the daemon here: during W6's first poolgate round, and a W1-only pass of -profile-for")
	flag.DurationVar(&o.profileFor, "profile-for", 20*time.Second, "with -pprof: length of the extra poolgate-only acquire+release pass")
	flag.DurationVar(&timeout, "timeout", 25*time.Minute, "stop everything after this long")
	flag.Var(&o.variants, "variant", "NAME=ENV...: one more poolgate with these environment settings, as a further target in W1 and W6 (repeatable), e.g. poolgate-v2off=POOLGATE_V2=off; bin=PATH among them runs another build, e.g. base=bin=/tmp/base/poolgate")
	o.scaleN, o.scaleNOpenSSH = intList{1000, 3000, 10000}, intList{300, 1000}
	flag.Var(&o.scaleN, "scale-n", "W7: waiting builds against poolgate, comma-separated")
	flag.Var(&o.scaleNOpenSSH, "scale-n-openssh", "W7: waiting builds against OpenSSH (client forced to curve25519)")
	flag.DurationVar(&o.scaleInterval, "scale-interval", 10*time.Second, "W7: each build polls once per interval")
	flag.DurationVar(&o.scaleWindow, "scale-window", 30*time.Second, "W7: measured window per point (after one interval of warm-up)")
	flag.IntVar(&o.scaleCycles, "scale-cycles", 3, "W7: stock acquire+release cycles, idle and while waiting, per point")
	gen := flag.String("gen", "", "only generate a pool repo of -commits commits here (bare), then exit")
	flag.Parse()
	if *gen != "" {
		if err := genPoolRepo(context.Background(), *gen, "big", o.commits); err != nil {
			fatal(err)
		}
		return
	}
	if o.poolgate == "" {
		fmt.Fprintln(os.Stderr, "harness: -poolgate BIN is required (use bench/run.sh)")
		os.Exit(2)
	}
	if quick {
		// Small sizes for whatever was not given explicitly.
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for name, value := range map[string]string{"n": "2", "contend": "4s", "poll": "3s", "rounds": "1", "commits": "2000",
			"clones": "1", "concurrent": "10", "hook-runs": "3", "profile-for": "5s"} {
			if !set[name] {
				flag.Set(name, value)
			}
		}
	}
	o.workloads = map[int]bool{}
	for _, w := range strings.Split(wl, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(w))
		if err != nil || n < 1 || n > 8 {
			fmt.Fprintf(os.Stderr, "harness: bad workload %q\n", w)
			os.Exit(2)
		}
		o.workloads[n] = true
	}
	abs, err := filepath.Abs(o.poolgate)
	if err != nil {
		fatal(err)
	}
	o.poolgate = abs

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	b, err := newBench(ctx, o)
	if err != nil {
		fatal(err)
	}
	err = b.run(ctx)
	b.close()
	if err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "harness:", err)
	os.Exit(1)
}

// report collects figures as they come and prints them.
type report struct {
	Started  string            `json:"started"`
	Machine  map[string]string `json:"machine"`
	Kex      map[string]string `json:"kex"`
	Figures  []figure          `json:"figures"`
	Notes    []string          `json:"notes"`
	Finished string            `json:"finished"`
}

type figure struct {
	Workload string             `json:"workload"`
	Name     string             `json:"name"`
	Unit     string             `json:"unit"`
	Values   map[string]float64 `json:"values"` // by target
	Ratio    *float64           `json:"ratio,omitempty"`
	Load     string             `json:"load"`
}

func (r *report) add(workload, name, unit string, values map[string]float64) {
	f := figure{Workload: workload, Name: name, Unit: unit, Values: values, Load: poller.Loadavg()}
	pg, ok1 := values["poolgate"]
	base, ok2 := values["openssh-c25519"]
	if ok1 && ok2 && base != 0 {
		x := pg / base
		f.Ratio = &x
	}
	r.Figures = append(r.Figures, f)
	fmt.Println(formatFigure(f))
}

func (r *report) note(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	r.Notes = append(r.Notes, s)
	fmt.Println("  note: " + s)
}

var targetOrder = []string{"poolgate", "openssh", "openssh-c25519"}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

type intList []int

func (l *intList) String() string {
	var s []string
	for _, n := range *l {
		s = append(s, strconv.Itoa(n))
	}
	return strings.Join(s, ",")
}

func (l *intList) Set(v string) error {
	*l = nil
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return fmt.Errorf("bad count %q", f)
		}
		*l = append(*l, n)
	}
	return nil
}

func formatFigure(f figure) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[W%s] %-44s", f.Workload, f.Name)
	keys := []string{}
	for k := range f.Values {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return order(keys[i]) < order(keys[j]) })
	for _, k := range keys {
		fmt.Fprintf(&b, "  %s=%s", k, fmtVal(f.Values[k]))
	}
	b.WriteString(" " + f.Unit)
	if f.Ratio != nil {
		fmt.Fprintf(&b, "  ratio poolgate/openssh-c25519=%.2f", *f.Ratio)
	}
	fmt.Fprintf(&b, "  (load %s)", f.Load)
	return b.String()
}

func order(k string) int {
	for i, t := range targetOrder {
		if t == k {
			return i
		}
	}
	return len(targetOrder)
}

func fmtVal(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

func machine() map[string]string {
	m := map[string]string{"cores": strconv.Itoa(runtime.NumCPU()), "load_at_start": poller.Loadavg()}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if mm := regexp.MustCompile(`MemTotal:\s+(\d+) kB`).FindSubmatch(b); mm != nil {
			kb, _ := strconv.Atoi(string(mm[1]))
			m["memory"] = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
		}
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		if mm := regexp.MustCompile(`model name\s*:\s*(.*)`).FindSubmatch(b); mm != nil {
			m["cpu"] = string(mm[1])
		}
	}
	for k, args := range map[string][]string{"git": {"git", "--version"}, "ssh": {"ssh", "-V"}, "kernel": {"uname", "-r"},
		"openssh-server": {"dpkg-query", "-W", "-f", "${Version}", "openssh-server"}} {
		out, _ := exec.Command(args[0], args[1:]...).CombinedOutput()
		m[k] = strings.TrimSpace(string(out))
	}
	m["go"] = runtime.Version()
	return m
}

func (r *report) write(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// markdown renders the figures as a table for bench/RESULTS.md.
func (r *report) markdown() string {
	var b strings.Builder
	b.WriteString("| W | figure | poolgate | OpenSSH, default client | OpenSSH, client forced to curve25519 | poolgate / like-for-like | load (1/5/15 min) |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --- | --- |\n")
	for _, f := range r.Figures {
		cells := []string{}
		if _, ok := f.Values["poolgate"]; ok {
			for _, k := range targetOrder {
				if v, ok := f.Values[k]; ok {
					cells = append(cells, fmtVal(v)+" "+f.Unit)
				} else {
					cells = append(cells, "—")
				}
			}
			// Variants (-variant) go beside poolgate's own figure.
			for k, v := range f.Values {
				if order(k) == len(targetOrder) {
					cells[0] += fmt.Sprintf(" (%s: %s)", k, fmtVal(v))
				}
			}
		} else {
			// W4: values by repo size, not by target.
			var parts []string
			for k, v := range f.Values {
				parts = append(parts, k+": "+fmtVal(v)+" "+f.Unit)
			}
			sort.Strings(parts)
			cells = []string{strings.Join(parts, "; "), "—", "—"}
		}
		ratio := "—"
		if f.Ratio != nil {
			ratio = fmt.Sprintf("%.2f", *f.Ratio)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", f.Workload, f.Name, strings.Join(cells, " | "), ratio, f.Load)
	}
	return b.String()
}
