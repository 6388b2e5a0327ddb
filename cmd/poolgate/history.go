package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
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
	register("history", "the audit trail of a repo, newest first", runHistory)
}

func runHistory(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("history", "history [--config FILE | --repo DIR [--name NAME]] [REPO] [--pool P] [--lock L] [--type T[,T]] [--since T] [--limit N] [--json]", stdout, stderr)
	cfgFile := fs.String("config", os.Getenv(pushlog.EnvConfig), "config `FILE` (default $POOLGATE_CONFIG, else the demo data dir ./"+daemon.DemoDataDir+", else the git repo in .)")
	repoDir := fs.String("repo", "", "read the repo at `DIR` in place (hook-only set-ups: gitolite, plain git), no daemon needed")
	name := fs.String("name", "", "with --repo: the repo's `NAME` in the config (default: the directory's name without .git)")
	poolName := fs.String("pool", "", "only this `POOL`")
	lock := fs.String("lock", "", "only this `LOCK`")
	types := fs.String("type", "", "only these event `TYPES`, comma-separated: "+strings.Join(config.EventTypes, ", "))
	since := fs.String("since", "", "only events since `T`: a time in RFC 3339 (2026-11-27T10:00:00Z), a date (2026-11-27), or an age (90m, 2h)")
	limit := fs.Int("limit", 0, "at most `N` events (0: all)")
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	pos, code := parseFlags(fs, args, stderr)
	if code >= 0 {
		return code
	}
	if len(pos) > 1 {
		fmt.Fprintf(stderr, "poolgate history: unexpected argument %q (one REPO at most)\n", pos[1])
		return exitUsage
	}
	q, err := historyQuery(*poolName, *lock, *types, *since, *limit)
	if err != nil {
		fmt.Fprintf(stderr, "poolgate history: %v\n", err)
		return exitUsage
	}
	src := readSource{cfgFile: *cfgFile, repoDir: *repoDir, name: *name, cmd: "history", stderr: stderr}
	if len(pos) == 1 && src.repoDir != "" && src.name == "" {
		src.name = pos[0]
	}
	var want []string
	if len(pos) == 1 && src.repoDir == "" {
		want = pos
	}
	if want == nil && src.repoDir == "" && src.cfgFile != "" {
		// Which repo, when the command line does not say: the only one.
		cfg, err := loadDataConfig(src.cfgFile)
		if err != nil {
			fmt.Fprintf(stderr, "poolgate history: %v\n", oneLine(err))
			return exitUsage
		}
		if len(cfg.Repos) != 1 {
			fmt.Fprintf(stderr, "poolgate history: the config has %d repos; name one (see --help)\n", len(cfg.Repos))
			return exitUsage
		}
		want = []string{cfg.Repos[0].Name}
	}
	ctx := context.Background()
	cfg, st, closeAll, err := src.open(ctx, want)
	if err != nil {
		fmt.Fprintf(stderr, "poolgate history: %v\n", oneLine(err))
		return exitFor(err)
	}
	defer closeAll()
	switch {
	case want != nil:
		q.Repo = want[0]
	case len(cfg.Repos) == 1:
		q.Repo = cfg.Repos[0].Name
	default:
		fmt.Fprintf(stderr, "poolgate history: %d repos; name one (see --help)\n", len(cfg.Repos))
		return exitUsage
	}
	evs, err := st.Events(ctx, q)
	if err != nil {
		fmt.Fprintf(stderr, "poolgate history: %v\n", oneLine(err))
		return exitFailed
	}
	printHistory(stdout, evs, *asJSON)
	return exitOK
}

// historyQuery turns the filter flags into a query; an error is a usage error.
func historyQuery(pool, lock, types, since string, limit int) (events.Query, error) {
	q := events.Query{Pool: pool, Lock: lock, Limit: limit}
	if types != "" {
		for _, t := range strings.Split(types, ",") {
			t = strings.TrimSpace(t)
			if !slices.Contains(config.EventTypes, t) {
				return q, fmt.Errorf("unknown event type %q (want %s)", t, strings.Join(config.EventTypes, ", "))
			}
			q.Types = append(q.Types, t)
		}
	}
	if since != "" {
		t, err := parseSince(since, time.Now())
		if err != nil {
			return q, fmt.Errorf("--since: %v", err)
		}
		q.Since = t
	}
	return q, nil
}

// printHistory prints events newest first, as a table or as JSON.
func printHistory(stdout io.Writer, evs []events.Event, asJSON bool) {
	if asJSON {
		type row struct {
			Type string    `json:"type"`
			Time time.Time `json:"time"`
			*events.Event
		}
		out := make([]row, len(evs))
		for i := range evs {
			out[i] = row{evs[i].Type, evs[i].Time, &evs[i]}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(out)
		return
	}
	if len(evs) == 0 {
		fmt.Fprintln(stdout, "no events")
		return
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tEVENT\tPOOL\tLOCK\tPUSHER\tBUILD\tDETAIL\tCOMMIT")
	for _, e := range evs {
		pusher := "-"
		if e.Pusher != nil && e.Pusher.User != "" {
			pusher = e.Pusher.User
		}
		commit := pool.Short(e.Commit)
		fmt.Fprintln(tw, strings.Join([]string{fmtTime(e.Time), e.Type, dash(e.Pool), dash(e.Lock), pusher,
			buildOf(e.Pipeline, e.Job, e.Build, e.BuildID), detail(&e), dash(commit)}, "\t"))
	}
	tw.Flush()
}

// detail is the one thing worth knowing beyond the columns.
func detail(e *events.Event) string {
	if o := e.Operator; o != nil {
		s := "by operator " + o.Name + ": " + o.Reason
		if e.HeldSeconds != nil {
			s = "held " + webhook.Human(time.Duration(*e.HeldSeconds)*time.Second) + ", " + s
		}
		return strings.ReplaceAll(s, "\t", " ")
	}
	switch e.Type {
	case events.Released, events.Removed, events.Stale:
		if e.HeldSeconds != nil {
			return "held " + webhook.Human(time.Duration(*e.HeldSeconds)*time.Second)
		}
	case events.Added:
		if e.State == "claimed" {
			return "added claimed"
		}
	case events.Rejected:
		s := e.Rule + " (" + e.Kind + "): " + e.Reason
		if !e.Announce {
			s += " [repeat, not announced]"
		}
		return strings.ReplaceAll(s, "\t", " ")
	}
	return "-"
}

// parseSince reads an absolute time, a date, or an age.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time (RFC 3339, YYYY-MM-DD) or an age (90m, 2h)", s)
}
