package events

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/gitstore"
	"github.com/poolgate/poolgate/pool"
	"github.com/poolgate/poolgate/poolrepo"
	"github.com/poolgate/poolgate/pushlog"
)

const (
	// CoalesceWindow is how long a transient rejection stays announced
	// for one (user, rule, pool).
	CoalesceWindow  = 10 * time.Minute
	commitsPerTx    = 500 // about 0.2s of derivation
	cursorCommit    = "commit"
	cursorPushes    = "pushes"
	cursorPending   = "pending"
	cursorRejection = "rejections"
	cursorCreated   = "created" // repo "": the store's creation time
)

// Deriver turns one repo's history and push records into stored events.
// Safe for concurrent use; concurrent Deriver instances on one store (the
// daemon and a CLI catching up) are serialized by the store's write lock
// and reach the same result.
type Deriver struct {
	// created is when the store began (read at each sync).
	created time.Time
	store   *Store
	cfg     *config.Repo
	dir     string
	Now     func() time.Time
	mu      sync.Mutex
	repo    *poolrepo.Repo
	branch  string
}

// RepoDir is where the daemon keeps a repo (daemon/repos.go agrees).
func RepoDir(cfg *config.Config, name string) string {
	return filepath.Join(cfg.DataDir, "repos", name+".git")
}

// NewDeriver prepares derivation for one configured repo at dir.
func NewDeriver(store *Store, repo *config.Repo, dir string) *Deriver {
	return &Deriver{store: store, cfg: repo, dir: dir, Now: time.Now, branch: repo.Branch}
}

// Close releases the deriver (nothing is held between syncs today; kept
// so callers need not change if that does).
func (d *Deriver) Close() error { return nil }

// Sync derives everything new: commits on the branch since the last sync,
// new rejections, claims that went stale. It returns the new events in
// store order.
func (d *Deriver) Sync(ctx context.Context) ([]Event, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	// A reader per sync: its caches (commits, trees) then never outgrow
	// one push's worth in a daemon that runs for months, and an idle sync
	// starts no cat-file process at all.
	d.repo = poolrepo.Open(d.dir)
	defer func() {
		d.repo.Close()
		d.repo = nil
	}()
	// The tip first, the push records second: the pre-receive hook writes
	// who pushed (the pending record) before git moves the ref, so every
	// commit reachable from this tip has its pusher on disk by now.
	tip, err := d.repo.Git.ResolveBranch(d.branch)
	if err != nil {
		return nil, fmt.Errorf("repo %s: %w", d.cfg.Name, err)
	}
	var out []Event
	for more := true; more; {
		more = false
		err = d.store.update(ctx, func(tx *sql.Tx) error {
			var evs []Event
			evs, more, err = d.syncStep(tx, tip)
			out = append(out, evs...)
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// syncStep is one transaction of a sync: at most commitsPerTx commits, so
// a first start on a long history never holds the store (and with it the
// status page, the API and the CLI) for more than a moment.
func (d *Deriver) syncStep(tx *sql.Tx, tip string) (out []Event, more bool, err error) {
	err = func() error {
		created, err := cursorInt(tx, "", cursorCreated)
		if err != nil {
			return err
		}
		d.created = time.Unix(0, created)
		if err := d.readPushes(tx, pushlog.Pending, cursorPending); err != nil {
			return err
		}
		if err := d.readPushes(tx, pushlog.Pushes, cursorPushes); err != nil {
			return err
		}
		if tip != "" {
			evs, m, err := d.deriveCommits(tx, tip)
			if err != nil {
				return err
			}
			out, more = append(out, evs...), m
		}
		evs, err := d.readRejections(tx)
		if err != nil {
			return err
		}
		out = append(out, evs...)
		evs, err = d.readWatchRecords(tx)
		if err != nil {
			return err
		}
		out = append(out, evs...)
		if more {
			// Mid-history, a hold may still be released in a later
			// chunk: staleness is judged at the tip only.
			return nil
		}
		evs, err = d.checkStale(tx)
		if err != nil {
			return err
		}
		out = append(out, evs...)
		return nil
	}()
	return out, more, err
}

func (d *Deriver) records() pushlog.Log { return pushlog.At(d.dir) }

func cursorInt(tx *sql.Tx, repo, name string) (int64, error) {
	v, err := getCursor(tx, repo, name)
	if err != nil || v == "" {
		return 0, err
	}
	return strconv.ParseInt(v, 10, 64)
}

// readPushes indexes new push records (pending or accepted) by commit. A
// commit named by several records (a push whose ref update failed, then
// retried) takes the latest; the accepted record, read after the pending
// ones, has the last word.
func (d *Deriver) readPushes(tx *sql.Tx, kind pushlog.Kind, cursor string) error {
	off, err := cursorInt(tx, d.cfg.Name, cursor)
	if err != nil {
		return err
	}
	lines, next, err := d.records().Read(kind, off)
	if err != nil || next == off {
		return err
	}
	for _, l := range lines {
		var p pushlog.Push
		if !pushlog.Decode(l, &p) {
			continue // a damaged line must not stop the audit
		}
		for _, c := range p.Commits {
			if _, err := tx.Exec(`INSERT INTO pushes(repo,commit_hash,user,key,time) VALUES(?,?,?,?,?)
				ON CONFLICT(repo,commit_hash) DO UPDATE SET user=excluded.user, key=excluded.key, time=excluded.time`,
				d.cfg.Name, c, p.User, p.Key, p.Time.UnixNano()); err != nil {
				return err
			}
		}
	}
	return setCursor(tx, d.cfg.Name, cursor, strconv.FormatInt(next, 10))
}

func (d *Deriver) pushOf(tx *sql.Tx, commit string) (*Pusher, time.Time, error) {
	var p Pusher
	var t int64
	err := tx.QueryRow(`SELECT user,key,time FROM pushes WHERE repo=? AND commit_hash=?`, d.cfg.Name, commit).Scan(&p.User, &p.Key, &t)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, time.Time{}, nil
	}
	if err != nil {
		return nil, time.Time{}, err
	}
	return &p, time.Unix(0, t).UTC(), nil
}

func (d *Deriver) poolCfg(path string) (maxClaimed *int, staleAfter time.Duration) {
	if pc := d.cfg.Pool(path); pc != nil {
		if pc.MaxClaimed > 0 {
			m := pc.MaxClaimed
			maxClaimed = &m
		}
		staleAfter = pc.StaleAfter.D()
	}
	return
}

// deriveCommits walks the first-parent chain from the last derived commit
// to tip. After a forced push (admin only) the walk covers the commits the
// old cursor does not have, each diffed against its own parent.
func (d *Deriver) deriveCommits(tx *sql.Tx, tip string) ([]Event, bool, error) {
	from, err := getCursor(tx, d.cfg.Name, cursorCommit)
	if err != nil {
		return nil, false, err
	}
	if from == tip {
		return nil, false, nil
	}
	if from != "" {
		if _, err := d.repo.RawCommit(from); err != nil {
			from = "" // history rewritten and collected: start over, ids dedupe
		} else if behind, err := d.repo.Git.IsAncestor(tip, from); err == nil && behind {
			// Another deriver on this store (a CLI catching up beside the
			// daemon) already went further than the tip read here...
			if now, err := d.repo.Git.ResolveBranch(d.branch); err != nil || now != tip {
				return nil, false, nil
			}
			// ...or a forced push moved the branch back to an older
			// commit: no commit to derive, only the state change.
			evs, err := d.reconcileHolds(tx, tip, true)
			if err != nil {
				return nil, false, err
			}
			return evs, false, setCursor(tx, d.cfg.Name, cursorCommit, tip)
		}
	}
	old := from
	if old == "" {
		old = strings.Repeat("0", len(tip))
	}
	chain, _, err := d.repo.NewCommits(old, tip)
	if err != nil {
		return nil, false, err
	}
	more := len(chain) > commitsPerTx
	if more {
		chain = chain[:commitsPerTx]
	}
	var out []Event
	for _, h := range chain {
		evs, err := d.deriveCommit(tx, h)
		if err != nil {
			return nil, false, fmt.Errorf("commit %s: %w", h, err)
		}
		out = append(out, evs...)
	}
	if more {
		return out, true, setCursor(tx, d.cfg.Name, cursorCommit, chain[len(chain)-1])
	}
	evs, err := d.reconcileHolds(tx, tip, false)
	if err != nil {
		return nil, false, err
	}
	return append(out, evs...), false, setCursor(tx, d.cfg.Name, cursorCommit, tip)
}

func (d *Deriver) deriveCommit(tx *sql.Tx, hash string) ([]Event, error) {
	c, err := d.repo.RawCommit(hash)
	if err != nil {
		return nil, err
	}
	var before *pool.Snapshot
	if len(c.Parents) > 0 {
		if before, err = d.repo.SnapshotAt(c.Parents[0]); err != nil {
			return nil, err
		}
	}
	after, err := d.repo.Snapshot(c.Tree)
	if err != nil {
		return nil, err
	}
	changes := pool.Diff(before, after)
	if len(changes) == 0 {
		return nil, nil
	}
	pusher, pushed, err := d.pushOf(tx, hash)
	if err != nil {
		return nil, err
	}
	when := c.Committer.When.UTC()
	if !pushed.IsZero() {
		when = pushed
	}
	intent := pool.ParseMessage(c.Message)
	var out []Event
	for _, ch := range changes {
		typ := TypeOf(ch.Op)
		if typ == "" {
			continue
		}
		maxClaimed, _ := d.poolCfg(ch.Pool)
		e := Event{
			ID:   ID(d.cfg.Name, hash, ch.Pool, ch.Name, typ),
			Type: typ, Time: when, Announce: d.announce(when),
			Repo: d.cfg.Name, Branch: d.branch, Pool: ch.Pool, Lock: ch.Name,
			Action: typ, State: stateName(ch.After), Commit: hash, Message: pool.Subject(c.Message),
			BuildURL: intent.BuildURL, Team: intent.Team, Pipeline: intent.Pipeline, Job: intent.Job,
			Build: intent.Build, BuildID: intent.BuildID,
			Pusher:     pusher,
			Author:     authorOf(c),
			Operator:   pool.ParseOperator(c.Message),
			Claimed:    after.Pool(ch.Pool).ClaimedCount(),
			MaxClaimed: maxClaimed,
		}
		wasClaimed := ch.Before == pool.StateClaimed || ch.Before == pool.StateBoth
		isClaimed := ch.After == pool.StateClaimed || ch.After == pool.StateBoth
		if wasClaimed && !isClaimed {
			claimCommit, since, ok, err := d.hold(tx, ch.Pool, ch.Name)
			if err != nil {
				return nil, err
			}
			if ok {
				held := int64(when.Sub(since).Seconds())
				if held < 0 {
					held = 0
				}
				e.HeldSeconds, e.ClaimCommit = &held, claimCommit
			}
		}
		if _, err := insertEvent(tx, &e); err != nil {
			return nil, err
		}
		switch {
		case isClaimed && !wasClaimed:
			if _, err := tx.Exec(`INSERT INTO holds(repo,pool,lock,event,time,stale_sent) VALUES(?,?,?,?,?,0)
				ON CONFLICT(repo,pool,lock) DO UPDATE SET event=excluded.event, time=excluded.time, stale_sent=0`,
				d.cfg.Name, ch.Pool, ch.Name, e.ID, when.UnixNano()); err != nil {
				return nil, err
			}
			if err := d.waiterGotIn(tx, &e); err != nil {
				return nil, err
			}
		case wasClaimed && !isClaimed:
			if _, err := tx.Exec(`DELETE FROM holds WHERE repo=? AND pool=? AND lock=?`, d.cfg.Name, ch.Pool, ch.Name); err != nil {
				return nil, err
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// announce says whether an event is news: anything that happened before
// the store began (a first start on a repo with years of history, or a
// store deleted by an operator) is recorded as history but sent to no
// webhook. The store's creation is rounded down to the second, as commit
// times are.
func (d *Deriver) announce(when time.Time) bool {
	return !when.Before(d.created.Truncate(time.Second))
}

func authorOf(c *gitstore.Commit) *Person {
	return &Person{Name: c.Author.Name, Email: c.Author.Email}
}

// hold returns the claim commit and time of a held lock.
func (d *Deriver) hold(tx *sql.Tx, poolPath, lock string) (commit string, since time.Time, ok bool, err error) {
	var t int64
	var data string
	err = tx.QueryRow(`SELECT h.time, e.data FROM holds h JOIN events e ON e.id = h.event WHERE h.repo=? AND h.pool=? AND h.lock=?`,
		d.cfg.Name, poolPath, lock).Scan(&t, &data)
	if errors.Is(err, sql.ErrNoRows) {
		return "", time.Time{}, false, nil
	}
	if err != nil {
		return "", time.Time{}, false, err
	}
	var claim Event
	json.Unmarshal([]byte(data), &claim)
	return claim.Commit, time.Unix(0, t).UTC(), true, nil
}

// readRejections turns new rejection records into `rejected` events. Every
// record is stored; a transient one (over-limit) is announced once per
// (user, rule, pool) per CoalesceWindow, because each waiting build repeats
// it every retry_delay. Timing uses the records' own times, so a re-derive
// decides the same way.
func (d *Deriver) readRejections(tx *sql.Tx) ([]Event, error) {
	off, err := cursorInt(tx, d.cfg.Name, cursorRejection)
	if err != nil {
		return nil, err
	}
	lines, next, err := d.records().Read(pushlog.Rejections, off)
	if err != nil || next == off {
		return nil, err
	}
	var out []Event
	for _, l := range lines {
		var r pushlog.Rejection
		if !pushlog.Decode(l, &r) {
			continue
		}
		e := Event{
			ID:   ID(d.cfg.Name, Rejected, string(l)),
			Type: Rejected, Time: r.Time.UTC(), Announce: d.announce(r.Time),
			Repo: d.cfg.Name, Branch: d.branch, Action: Rejected,
			Commit: r.New, Ref: r.Ref, Kind: r.Verdict, Violations: r.Violations,
			Pusher: &Pusher{User: r.User, Key: r.Key},
		}
		if len(r.Violations) > 0 {
			v := r.Violations[0]
			e.Rule, e.Reason, e.Pool, e.Lock, e.Message = v.Rule, v.Reason, v.Pool, v.Lock, v.Subject
			if v.Commit != "" {
				e.Commit = v.Commit
			}
			if v.BuildURL == "" && v.Team == "" && v.BuildID == "" {
				// A record from before the hook kept the build: the subject
				// holds it in pool-resource's old message format.
				v.SetBuild(pool.ParseMessage(v.Subject))
			}
			e.BuildURL, e.Team, e.Pipeline, e.Job, e.Build, e.BuildID = v.BuildURL, v.Team, v.Pipeline, v.Job, v.Build, v.BuildID
			switch {
			case v.Claimed != nil: // the counts when the push was refused
				e.Claimed, e.MaxClaimed = *v.Claimed, v.MaxClaimed
			case e.Pool != "":
				e.MaxClaimed, _ = d.poolCfg(e.Pool)
			}
		}
		if r.Verdict != pushlog.VerdictPermanent && e.Announce {
			var last int64
			err := tx.QueryRow(`SELECT time FROM announced WHERE repo=? AND user=? AND rule=? AND pool=?`,
				d.cfg.Name, r.User, e.Rule, e.Pool).Scan(&last)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return nil, err
			}
			if err == nil && e.Time.Sub(time.Unix(0, last)) < CoalesceWindow && !e.Time.Before(time.Unix(0, last)) {
				e.Announce = false
			} else if _, err := tx.Exec(`INSERT INTO announced(repo,user,rule,pool,time) VALUES(?,?,?,?,?)
				ON CONFLICT(repo,user,rule,pool) DO UPDATE SET time=excluded.time`,
				d.cfg.Name, r.User, e.Rule, e.Pool, e.Time.UnixNano()); err != nil {
				return nil, err
			}
		}
		isNew, err := insertEvent(tx, &e)
		if err != nil {
			return nil, err
		}
		if isNew {
			if err := d.noteWaiter(tx, &e); err != nil {
				return nil, err
			}
			out = append(out, e)
		}
	}
	return out, setCursor(tx, d.cfg.Name, cursorRejection, strconv.FormatInt(next, 10))
}

// checkStale raises one `stale` event per claim older than its pool's
// stale_after. The hold row remembers it was sent, and the event id comes
// from the claim, so neither a restart nor a re-derive repeats it.
func (d *Deriver) checkStale(tx *sql.Tx) ([]Event, error) {
	now := d.Now().UTC()
	rows, err := tx.Query(`SELECT h.pool, h.lock, h.time, e.data FROM holds h JOIN events e ON e.id = h.event
		WHERE h.repo=? AND h.stale_sent=0`, d.cfg.Name)
	if err != nil {
		return nil, err
	}
	type due struct {
		claim Event
		since time.Time
		after time.Duration
	}
	var dues []due
	for rows.Next() {
		var p, l, data string
		var t int64
		if err := rows.Scan(&p, &l, &t, &data); err != nil {
			rows.Close()
			return nil, err
		}
		_, staleAfter := d.poolCfg(p)
		since := time.Unix(0, t).UTC()
		if staleAfter <= 0 || now.Sub(since) < staleAfter {
			continue
		}
		var claim Event
		json.Unmarshal([]byte(data), &claim)
		dues = append(dues, due{claim, since, staleAfter})
	}
	rows.Close()
	var out []Event
	for _, x := range dues {
		e := x.claim
		held := int64(now.Sub(x.since).Seconds())
		e.ID = ID(d.cfg.Name, e.Commit, e.Pool, e.Lock, Stale)
		e.Type, e.Action, e.Time = Stale, Stale, x.since.Add(x.after)
		e.Announce = d.announce(e.Time)
		e.HeldSeconds, e.ClaimCommit, e.State = &held, e.Commit, "claimed"
		var n int
		if err := tx.QueryRow(`SELECT COUNT(*) FROM holds WHERE repo=? AND pool=?`, d.cfg.Name, e.Pool).Scan(&n); err == nil {
			e.Claimed = n
		}
		isNew, err := insertEvent(tx, &e)
		if err != nil {
			return nil, err
		}
		if _, err := tx.Exec(`UPDATE holds SET stale_sent=1 WHERE repo=? AND pool=? AND lock=?`, d.cfg.Name, e.Pool, e.Lock); err != nil {
			return nil, err
		}
		if isNew {
			out = append(out, e)
		}
	}
	return out, nil
}
