package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/poolgate/poolgate/bench/poller"
)

// bench is one run: the temp dir, the client key, both servers and the
// three client set-ups (targets).
type bench struct {
	o       options
	rep     *report
	root    string
	key     string // client private key
	pub     string // its authorized_keys line
	pgCfg   string
	pgData  string
	pg      *server
	sshd    *server
	targets []*target
	// variants are extra poolgate daemons with other environment settings
	// (-variant), run as further targets in W1 and W6 only.
	variants  []*target
	clientCG  *cgroup      // the harness and every client git and ssh it starts
	seq       atomic.Int64 // unique dir names
	pprofAddr string
}

// The pools of the small repo `locks`: `bench` for W1, and one per
// (round, target) for W2 so every contention run starts from 4 free locks.
func contendPool(round, target int) string { return fmt.Sprintf("c%d-%d", round, target) }

func newBench(ctx context.Context, o options) (*bench, error) {
	root, err := os.MkdirTemp("", "poolbench-")
	if err != nil {
		return nil, err
	}
	// The bench user (sshd's side) must reach its repos below root.
	if err := os.Chmod(root, 0o755); err != nil {
		return nil, err
	}
	b := &bench{o: o, root: root, rep: &report{Started: time.Now().UTC().Format(time.RFC3339), Machine: machine(), Kex: map[string]string{}}}
	fmt.Printf("harness: temp dir %s, load %s\n", root, poller.Loadavg())
	b.key = filepath.Join(root, "client", "id_ed25519")
	os.MkdirAll(filepath.Dir(b.key), 0o700)
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f", b.key).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ssh-keygen: %v: %s", err, out)
	}
	pub, err := os.ReadFile(b.key + ".pub")
	if err != nil {
		return nil, err
	}
	b.pub = strings.TrimSpace(string(pub))
	if cg, err := newCgroup("client"); err == nil {
		if cg.add(os.Getpid()) == nil {
			b.clientCG = cg
		} else {
			cg.remove()
		}
	}
	os.MkdirAll(b.home(), 0o755)
	os.MkdirAll(filepath.Join(root, "work"), 0o755)
	return b, nil
}

func (b *bench) home() string { return filepath.Join(b.root, "client", "home") }

func (b *bench) scratch(prefix string) string {
	return filepath.Join(b.root, "work", fmt.Sprintf("%s-%d", prefix, b.seq.Add(1)))
}

func (b *bench) close() {
	b.pg.stop()
	b.sshd.stop()
	for _, v := range b.variants {
		v.srv.stop()
	}
	if b.clientCG != nil {
		// Back to the root group, so the client group can go.
		os.WriteFile(filepath.Join(cpuacctRoot, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644)
		b.clientCG.remove()
	}
	if len(b.rep.Figures) > 0 {
		fmt.Printf("\nload at the end: %s\n\n%s", poller.Loadavg(), b.rep.markdown())
		for _, n := range b.rep.Notes {
			fmt.Println("- " + n)
		}
	}
	if b.o.out != "" {
		b.rep.Finished = time.Now().UTC().Format(time.RFC3339)
		if err := b.rep.write(b.o.out); err != nil {
			fmt.Fprintln(os.Stderr, "harness: writing results:", err)
		}
	}
	if b.o.keep {
		fmt.Println("harness: kept", b.root)
		return
	}
	os.RemoveAll(b.root)
}

func (b *bench) writeConfig() error {
	b.pgData = filepath.Join(b.root, "poolgate", "data")
	b.pgCfg = filepath.Join(b.root, "poolgate", "poolgate.yaml")
	var pools strings.Builder
	pools.WriteString("      - name: bench\n        locks: [lock-0, lock-1, lock-2, lock-3]\n")
	for r := 0; r < b.o.rounds; r++ {
		for t := 0; t < 3; t++ {
			fmt.Fprintf(&pools, "      - name: %s\n        locks: [lock-0, lock-1, lock-2, lock-3]\n", contendPool(r, t))
		}
	}
	cfg := fmt.Sprintf(`data_dir: %s
ssh:
  listen: "127.0.0.1:0"
http:
  listen: ""
log:
  format: json
users:
  - name: bench
    role: write
    keys: [%q]
repos:
  - name: locks
    branch: master
    pools:
%s  - name: big
    branch: master
    pools:
      - name: big
        locks: [lock-0, lock-1, lock-2, lock-3]
`, b.pgData, b.pub, pools.String())
	os.MkdirAll(filepath.Dir(b.pgCfg), 0o755)
	return os.WriteFile(b.pgCfg, []byte(cfg), 0o644)
}

func (b *bench) startPoolgate(ctx context.Context, maintenance bool) error {
	b.pg.stop()
	env := []string{}
	if !maintenance {
		env = append(env, "POOLGATE_MAINTENANCE=off")
	}
	if b.o.pprofDir != "" {
		port, err := freePort()
		if err != nil {
			return err
		}
		b.pprofAddr = fmt.Sprintf("127.0.0.1:%d", port)
		env = append(env, "POOLGATE_PPROF="+b.pprofAddr)
	}
	logf := filepath.Join(b.root, "poolgate", fmt.Sprintf("serve-%d.log", time.Now().UnixNano()))
	s, err := startPoolgate(ctx, b.o.poolgate, b.pgCfg, logf, env)
	if err != nil {
		return err
	}
	s.repos = filepath.Join(b.pgData, "repos")
	b.pg = s
	if len(b.targets) > 0 {
		b.targets[0].srv = s
	}
	return nil
}

func (b *bench) run(ctx context.Context) error {
	o := b.o
	if err := b.writeConfig(); err != nil {
		return err
	}
	gen := filepath.Join(b.root, "gen")
	big := filepath.Join(gen, "big.git")
	if o.workloads[3] || o.workloads[4] {
		start := time.Now()
		if err := genPoolRepo(ctx, big, "big", o.commits); err != nil {
			return err
		}
		fmt.Printf("harness: generated %d commits in %s (%s)\n", o.commits, time.Since(start).Round(time.Millisecond), duSize(big))
	} else {
		// The config names repo big; give it a small history.
		if err := genPoolRepo(ctx, big, "big", 10); err != nil {
			return err
		}
	}
	os.MkdirAll(filepath.Join(b.pgData, "repos"), 0o755)
	if err := copyDir(big, filepath.Join(b.pgData, "repos", "big.git")); err != nil {
		return err
	}
	// W3 measures poolgate's repo before its maintenance first, so the
	// daemon starts with maintenance off.
	if err := b.startPoolgate(ctx, !o.workloads[3]); err != nil {
		return err
	}

	// The baseline: the same repos, plain, no hook, owned by the bench user.
	base := filepath.Join(b.root, "openssh", "repos")
	os.MkdirAll(base, 0o755)
	baseLocks := filepath.Join(base, "locks.git")
	if err := gitRun(ctx, "", "init", "-q", "--bare", "--initial-branch=master", baseLocks); err != nil {
		return err
	}
	if err := gitRun(ctx, baseLocks, "fetch", "-q", filepath.Join(b.pgData, "repos", "locks.git"), "+refs/heads/*:refs/heads/*"); err != nil {
		return err
	}
	if err := copyDir(big, filepath.Join(base, "big.git")); err != nil {
		return err
	}
	sshdDir := filepath.Join(b.root, "openssh")
	s, err := startSSHD(ctx, sshdDir, base, b.pub)
	if err != nil {
		return err
	}
	b.sshd = s
	b.targets = []*target{
		{name: "poolgate", srv: b.pg, sshCmd: sshBase(b.key)},
		{name: "openssh", srv: b.sshd, sshCmd: sshBase(b.key)},
		{name: "openssh-c25519", srv: b.sshd, sshCmd: sshBase(b.key) + forceKex},
	}
	for i, v := range o.variants {
		name, env, _ := strings.Cut(v, "=")
		srv, err := b.startVariant(ctx, i, name, env)
		if err != nil {
			return err
		}
		b.variants = append(b.variants, &target{name: name, srv: srv, sshCmd: sshBase(b.key)})
		b.rep.Machine["variant_"+name] = "poolgate with " + env
	}
	for _, srv := range []*server{b.pg, b.sshd} {
		src := "cgroup-v1 cpuacct (the server and every descendant, exact)"
		if srv.cg == nil {
			src = "/proc/PID/stat fields 14-17 (own + reaped children only)"
		}
		b.rep.Machine["cpu_source_"+srv.kind] = src
	}
	for _, t := range b.targets {
		b.rep.Kex[t.name] = b.probeKex(ctx, t)
		fmt.Printf("harness: %s at %s, kex %s\n", t.name, t.url("locks"), b.rep.Kex[t.name])
	}

	b.settle(ctx)
	steps := []struct {
		w  int
		fn func(context.Context) error
	}{
		{3, b.w3Clone},
		{1, b.w1AcquireRelease},
		{2, b.w2Contention},
		{6, b.w6Polling},
		{5, b.w5Memory},
		{4, b.w4Hook},
		{1, b.w1Profile},
		{7, b.w7Scale},
		{8, b.w8Floor},
	}
	for _, st := range steps {
		if !o.workloads[st.w] {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		fmt.Printf("harness: workload %d (load %s)\n", st.w, poller.Loadavg())
		if err := st.fn(ctx); err != nil {
			return fmt.Errorf("workload %d: %w", st.w, err)
		}
	}
	return nil
}

// settle waits (at most two minutes) until every poolgate is idle: at
// start the events service derives the whole history of each repo, seconds
// of CPU for 100,000 commits, which must not land in the first figures.
func (b *bench) settle(ctx context.Context) {
	servers := []*server{b.pg}
	for _, v := range b.variants {
		servers = append(servers, v.srv)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for _, s := range servers {
		for time.Now().Before(deadline) && ctx.Err() == nil {
			c0 := s.cpuMs()
			time.Sleep(time.Second)
			if s.cpuMs()-c0 < 50 {
				break
			}
		}
	}
	fmt.Printf("harness: servers idle (load %s)\n", poller.Loadavg())
}

// clientMs is the CPU used so far by the harness and its clients (0
// without a cgroup).
func (b *bench) clientMs() float64 {
	if b.clientCG == nil {
		return 0
	}
	return float64(b.clientCG.ns()) / 1e6
}

func (b *bench) withVariants() []*target {
	return append(append([]*target(nil), b.targets...), b.variants...)
}

// startVariant runs one more poolgate, with its own data dir (the same
// config otherwise, so its repo holds the same pools) and env added.
func (b *bench) startVariant(ctx context.Context, i int, name, env string) (*server, error) {
	cfg, err := os.ReadFile(b.pgCfg)
	if err != nil {
		return nil, err
	}
	data := filepath.Join(b.root, "variant-"+strconv.Itoa(i), "data")
	file := filepath.Join(filepath.Dir(data), "poolgate.yaml")
	os.MkdirAll(filepath.Join(data, "repos"), 0o755)
	// W1 and W6 use only the small repo; the config also names big, which
	// gets a short history here so the variant has nothing heavy to do.
	if err := genPoolRepo(ctx, filepath.Join(data, "repos", "big.git"), "big", 10); err != nil {
		return nil, err
	}
	if err := os.WriteFile(file, []byte(strings.Replace(string(cfg), "data_dir: "+b.pgData, "data_dir: "+data, 1)), 0o644); err != nil {
		return nil, err
	}
	// bin=PATH among the settings runs another build (say, the commit
	// before a change, with its poolgate-hook beside it): before/after in
	// one run.
	bin, vars := b.o.poolgate, []string(nil)
	for _, f := range strings.Fields(env) {
		if p, ok := strings.CutPrefix(f, "bin="); ok {
			bin = p
			continue
		}
		vars = append(vars, f)
	}
	s, err := startPoolgate(ctx, bin, file, filepath.Join(filepath.Dir(data), "serve.log"), vars)
	if err != nil {
		return nil, err
	}
	s.repos = filepath.Join(data, "repos")
	s.kind = "poolgate"
	return s, nil
}

// probeKex asks ssh which key exchange it negotiated with the target.
func (b *bench) probeKex(ctx context.Context, t *target) string {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	args := strings.Fields(t.sshCmd)[1:]
	for i, a := range args {
		if a == "LogLevel=ERROR" {
			args[i] = "LogLevel=DEBUG"
		}
	}
	user := "git"
	if t.srv.kind == "openssh" {
		user = benchUser
	}
	args = append(args, "-p", fmt.Sprint(t.srv.port), user+"@127.0.0.1", "git-upload-pack", "'/nonexistent.git'")
	cmd := exec.CommandContext(ctx, "ssh", args...)
	cmd.Env = append(os.Environ(), t.env(b.home())...)
	out, _ := cmd.CombinedOutput()
	if m := regexp.MustCompile(`kex: algorithm: (\S+)`).FindSubmatch(out); m != nil {
		return string(m[1])
	}
	return "unknown"
}

// gitRun runs a git command of the harness's own (not a measured client's).
func gitRun(ctx context.Context, dir string, args ...string) error {
	_, err := gitOut(ctx, dir, args...)
	return err
}

func gitOut(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1"), safeEnv...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

func copyDir(src, dst string) error {
	os.MkdirAll(filepath.Dir(dst), 0o755)
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		return fmt.Errorf("cp: %v: %s", err, out)
	}
	return nil
}

func duSize(dir string) string {
	out, _ := exec.Command("du", "-sh", dir).Output()
	f := strings.Fields(string(out))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}
