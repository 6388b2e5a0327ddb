package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/daemon"
	"github.com/poolgate/poolgate/events"
	"github.com/poolgate/poolgate/pool"
	"github.com/poolgate/poolgate/pushlog"
	"github.com/poolgate/poolgate/webhook"
)

func init() {
	register("status", "who holds what now: pool, lock, state, since, held for, by, build", runStatus)
}

// loadDataConfig loads the config for commands that read the daemon's
// data dir. Those deliver and serve nothing, so the config's secrets need
// not be set (config.LoadForReading). Without a file it uses the demo data
// dir, but only if it exists: a read command must not create one.
func loadDataConfig(file string) (*config.Config, error) {
	if file != "" {
		return config.LoadForReading(absPath(file))
	}
	if _, err := os.Stat(daemon.DemoDataDir); err != nil {
		return nil, fmt.Errorf("no --config given and no ./%s here", daemon.DemoDataDir)
	}
	home, _ := os.UserHomeDir()
	cfg, _, err := daemon.DemoConfig(daemon.DemoDataDir, home)
	return cfg, err
}

// openStore opens the event store and, when no daemon runs, brings the
// named repos up to date first, so the answer is current even then. Beside
// a running daemon (it holds the derivation lock) it only reads what the
// daemon has derived: the same history is never derived twice.
func openStore(ctx context.Context, cfg *config.Config, repos []string, cmd string, stderr io.Writer) (*events.Store, error) {
	if !ownDataOf(cfg.DataDir) {
		// Someone else's store (typically `sudo poolgate status` beside a
		// daemon running as its own user): files SQLite would create
		// here as root would lock the daemon out, so only read.
		return events.Open(cfg.DataDir, true)
	}
	st, err := events.Open(cfg.DataDir, false)
	if err != nil {
		ro, rerr := events.Open(cfg.DataDir, true)
		if rerr != nil {
			return nil, err
		}
		return ro, nil
	}
	unlock, err := events.LockDerivation(ctx, cfg.DataDir, false)
	if errors.Is(err, events.ErrDeriving) {
		for _, name := range repos {
			if behind, err := events.Behind(st, cfg, name); err == nil && behind && stderr != nil {
				fmt.Fprintf(stderr, "poolgate %s: note: the running daemon is still deriving %s's history; this is as far as it got\n", cmd, name)
			}
		}
		return st, nil
	}
	if err != nil {
		st.Close()
		return nil, err
	}
	defer unlock()
	for _, name := range repos {
		d := events.NewDeriver(st, cfg.Repo(name), cfg.RepoDir(name))
		err := d.SyncFunc(ctx, nil)
		d.Close()
		if err != nil {
			st.Close()
			return nil, err
		}
	}
	return st, nil
}

func runStatus(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("status", "status [--config FILE | --repo DIR [--name NAME]] [REPO] [--json]", stdout, stderr)
	cfgFile := fs.String("config", os.Getenv(pushlog.EnvConfig), "config `FILE` (default $POOLGATE_CONFIG, else the demo data dir ./"+daemon.DemoDataDir+", else the git repo in .)")
	repoDir := fs.String("repo", "", "read the repo at `DIR` in place (hook-only set-ups: gitolite, plain git), no daemon needed")
	name := fs.String("name", "", "with --repo: the repo's `NAME` in the config (default: the directory's name without .git)")
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	pos, code := parseFlags(fs, args, stderr)
	if code >= 0 {
		return code
	}
	if len(pos) > 1 {
		fmt.Fprintf(stderr, "poolgate status: unexpected argument %q\n", pos[1])
		return exitUsage
	}
	src := readSource{cfgFile: *cfgFile, repoDir: *repoDir, name: *name, cmd: "status", stderr: stderr}
	var want []string
	if len(pos) == 1 {
		if src.repoDir != "" && src.name == "" {
			src.name = pos[0]
		}
		want = pos
	}
	ctx := context.Background()
	cfg, st, closeAll, err := src.open(ctx, want)
	if err != nil {
		fmt.Fprintf(stderr, "poolgate status: %v\n", oneLine(err))
		return exitFor(err)
	}
	defer closeAll()
	var repos []string
	for _, r := range cfg.Repos {
		if want == nil || r.Name == want[0] || src.repoDir != "" {
			repos = append(repos, r.Name)
		}
	}
	now := time.Now()
	all := []events.LockStatus{}
	var waiting []waitingRow
	for _, r := range repos {
		pools, err := events.Pools(ctx, st, cfg, r, now)
		if err != nil {
			fmt.Fprintf(stderr, "poolgate status: %s: %v\n", r, oneLine(err))
			return exitFailed
		}
		for _, p := range pools {
			all = append(all, p.Locks...)
			for _, w := range p.Waiting {
				waiting = append(waiting, waitingRow{r, p.Pool, w})
			}
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(all)
		return exitOK
	}
	if len(all) == 0 {
		fmt.Fprintln(stdout, "no locks")
		printCluster(ctx, stdout, cfg)
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	head := "POOL\tLOCK\tSTATE\tSINCE\tHELD FOR\tBY\tBUILD\tBUILD URL"
	if len(repos) > 1 {
		head = "REPO\t" + head
	}
	fmt.Fprintln(tw, head)
	for _, l := range all {
		row := []string{l.Pool, l.Lock, l.State, fmtTime(l.Since), "-", "-", "-", dash(l.BuildURL)}
		if l.HeldSeconds != nil {
			row[4] = webhook.Human(time.Duration(*l.HeldSeconds) * time.Second)
			if l.Stale {
				row[4] += " (stale)"
			}
		}
		if l.By != nil {
			row[5] = l.By.User
		}
		if l.State != "unclaimed" {
			row[6] = buildOf(l.Pipeline, l.Job, l.Build, "")
		}
		if len(repos) > 1 {
			row = append([]string{l.Repo}, row...)
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	tw.Flush()
	printWaiting(stdout, waiting, len(repos) > 1, now)
	printCluster(ctx, stdout, cfg)
	return exitOK
}

type waitingRow struct {
	repo, pool string
	events.Waiter
}

// printWaiting lists the builds refused over max_claimed that still retry.
func printWaiting(w io.Writer, rows []waitingRow, withRepo bool, now time.Time) {
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(w, "\nWaiting (refused over max_claimed, still retrying):")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := "POOL\tBUILD\tBY\tWAITING SINCE\tFOR\tLAST TRY\tTRIES\tBUILD URL"
	if withRepo {
		head = "REPO\t" + head
	}
	fmt.Fprintln(tw, head)
	for _, r := range rows {
		row := []string{r.pool, buildOf(r.Pipeline, r.Job, r.Build, ""), dash(r.User), fmtTime(r.FirstTry),
			webhook.Human(now.Sub(r.FirstTry)), fmtTime(r.LastTry), fmt.Sprint(r.Tries), dash(r.BuildURL)}
		if withRepo {
			row = append([]string{r.repo}, row...)
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	tw.Flush()
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// buildOf is the build's label, "-" if unknown.
func buildOf(pipeline, job, build, buildID string) string {
	return dash(pool.BuildLabel(pipeline, job, build, buildID))
}

// oneLine keeps an error to the one line DESIGN.md §3 promises.
func oneLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// ownDataOf reports whether this process's user owns the event store (or,
// before the first start, the data dir it would be created in).
func ownDataOf(dataDir string) bool {
	fi, err := os.Stat(filepath.Join(dataDir, events.DBFile))
	if err != nil {
		if fi, err = os.Stat(dataDir); err != nil {
			return false
		}
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return !ok || int(st.Uid) == os.Geteuid()
}
