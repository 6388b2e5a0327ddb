package events

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/gitread"
	"github.com/poolgate/poolgate/gitstore"
	"github.com/poolgate/poolgate/pool"
	"github.com/poolgate/poolgate/pushlog"
)

const (
	// CoalesceWindow is how long a transient rejection stays announced
	// for one (user, rule, pool).
	CoalesceWindow  = 10 * time.Minute
	commitsPerTx    = 500 // about 25ms of derivation
	cursorCommit    = "commit"
	cursorPushes    = "pushes"
	cursorPending   = "pending"
	cursorRejection = "rejections"
	cursorCreated   = "created" // repo "": the store's creation time
)

// errStoreMoved stops a sync whose store was derived further by someone
// else meanwhile (only possible when two processes derive at once, which
// the derivation lock prevents); the next sync starts from there.
var errStoreMoved = errors.New("the event store was derived further meanwhile; deriving again from there")

// Deriver turns one repo's history and push records into stored events.
// Safe for concurrent use. One process at a time derives into a store
// (LockDerivation): the daemon while it runs, else a CLI command.
type Deriver struct {
	// created is when the store began (read at each sync).
	created time.Time
	store   *Store
	// cfg is the repo as configured at start: its name and branch, which
	// no reload changes.
	cfg *config.Repo
	// settings, if set, is the repo's current config (Service: the
	// running config), read for the pools' max_claimed and stale_after.
	settings func() *config.Repo
	dir      string
	Now      func() time.Time
	mu       sync.Mutex
	// repo is kept across syncs: its pack indexes are read once, not at
	// every push. It starts no process.
	repo   *gitread.Repo
	branch string
	// nextDue is when the next claim goes stale (zero: none pending).
	nextDue time.Time
	// synced is the stamp taken as the last sync began.
	synced atomic.Value
	// syncs counts syncs (tests: an idle service runs none).
	syncs atomic.Int64
	// contents remembers lock file texts by blob (Deriver.content).
	contents map[string]lockText
}

// NewDeriver prepares derivation for one configured repo at dir (a bare
// repo, or a work tree whose .git is read).
func NewDeriver(store *Store, repo *config.Repo, dir string) *Deriver {
	return &Deriver{store: store, cfg: repo, dir: gitDir(dir), Now: time.Now, branch: repo.Branch, contents: map[string]lockText{}}
}

// gitDir is dir's .git when dir is a work tree, else dir.
func gitDir(dir string) string {
	if fi, err := os.Stat(filepath.Join(dir, ".git")); err == nil && fi.IsDir() {
		return filepath.Join(dir, ".git")
	}
	return dir
}

// Close releases the repo's open pack files.
func (d *Deriver) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.repo == nil {
		return nil
	}
	err := d.repo.Close()
	d.repo = nil
	return err
}

// Sync derives everything new: commits on the branch since the last sync,
// new rejections, claims that went stale. It returns the new events in
// store order.
func (d *Deriver) Sync(ctx context.Context) ([]Event, error) {
	var out []Event
	err := d.SyncFunc(ctx, func(evs []Event) { out = append(out, evs...) })
	return out, err
}

// SyncFunc is Sync handing each transaction's new events to f (may be nil)
// instead of gathering them: a first start on a long history then holds
// one transaction's events, not the whole history's.
func (d *Deriver) SyncFunc(ctx context.Context, f func([]Event)) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.repo == nil {
		d.repo = gitread.Open(d.dir)
	}
	d.repo.Refresh()
	d.synced.Store(d.stamp())
	d.syncs.Add(1)
	// The tip first, the push records second: the pre-receive hook writes
	// who pushed (the pending record) before git moves the ref, so every
	// commit reachable from this tip has its pusher on disk by now.
	tip, err := d.repo.Tip(d.branch)
	if err != nil {
		return fmt.Errorf("repo %s: %w", d.cfg.Name, err)
	}
	stored, err := getCursor(d.store.db, d.cfg.Name, cursorCommit)
	if err != nil {
		return err
	}
	from := stored
	var w *walk
	if tip != "" && tip != from {
		if from != "" {
			if _, err := d.repo.Commit(from); errors.Is(err, gitread.ErrMissing) {
				from = "" // history rewritten and collected: start over, ids dedupe
			}
		}
		if w, err = newWalk(d.repo, tip, from, commitsPerTx); err != nil {
			return fmt.Errorf("repo %s: %w", d.cfg.Name, err)
		}
	}
	// An empty walk to a tip that is not the cursor: the branch was moved
	// back to an ancestor (an admin's forced push).
	st := &syncState{tip: tip, cursor: stored, walk: w, rewound: w != nil && w.total == 0}
	for {
		var seg []*gitstore.Commit
		if w != nil {
			if seg, err = w.Next(); err != nil {
				return fmt.Errorf("repo %s: %w", d.cfg.Name, err)
			}
		}
		last := w == nil || w.Last()
		var evs []Event
		err = d.store.update(ctx, func(tx *sql.Tx) error {
			var err error
			evs, err = d.syncStep(tx, st, seg, last)
			return err
		})
		if err != nil {
			return err
		}
		if f != nil && len(evs) > 0 {
			f(evs)
		}
		if last {
			return nil
		}
	}
}

// syncState is what one sync carries from one transaction to the next.
type syncState struct {
	tip string
	// cursor is the last derived commit as this sync left it.
	cursor  string
	rewound bool
	walk    *walk
	// prev is the last derived commit's snapshot: the next commit's
	// "before" when it is that commit's child, as it nearly always is.
	prev     *pool.Snapshot
	prevHash string
}

// syncStep is one transaction of a sync: at most commitsPerTx commits, so
// a first start on a long history never holds the store (and with it the
// status page, the API and the CLI) for more than a moment.
func (d *Deriver) syncStep(tx *sql.Tx, st *syncState, seg []*gitstore.Commit, last bool) (out []Event, err error) {
	created, err := cursorInt(tx, "", cursorCreated)
	if err != nil {
		return nil, err
	}
	d.created = time.Unix(0, created)
	if err := d.readPushes(tx, pushlog.Pending, cursorPending); err != nil {
		return nil, err
	}
	if err := d.readPushes(tx, pushlog.Pushes, cursorPushes); err != nil {
		return nil, err
	}
	if cur, err := getCursor(tx, d.cfg.Name, cursorCommit); err != nil {
		return nil, err
	} else if cur != st.cursor {
		return nil, errStoreMoved
	}
	if len(seg) > 0 {
		evs, err := d.deriveCommits(prepared(tx), st, seg)
		if err != nil {
			return nil, err
		}
		out = append(out, evs...)
	}
	if last {
		evs, err := d.settleState(tx, st)
		if err != nil {
			return nil, err
		}
		out = append(out, evs...)
	}
	evs, err := d.readRejections(tx)
	if err != nil {
		return nil, err
	}
	out = append(out, evs...)
	evs, err = d.readWatchRecords(tx)
	if err != nil {
		return nil, err
	}
	out = append(out, evs...)
	if !last {
		// Mid-history, a hold may still be released in a later
		// chunk: staleness is judged at the tip only.
		return out, nil
	}
	evs, err = d.checkStale(tx)
	if err != nil {
		return nil, err
	}
	return append(out, evs...), nil
}

// settleState ends a sync at the tip. After new commits, or when the branch
// was moved back to an older commit (rewound: nothing to derive, only the
// state change), the current state and the holds are brought in line with
// the tip's snapshot (exact along one history, so only a rewritten one
// changes anything); a store from before the state was kept is filled once.
func (d *Deriver) settleState(tx *sql.Tx, st *syncState) ([]Event, error) {
	done, err := getCursor(tx, d.cfg.Name, cursorState)
	if err != nil {
		return nil, err
	}
	if done != "" && st.prev == nil && !st.rewound {
		return nil, nil // nothing new
	}
	var evs []Event
	if st.tip != "" {
		snap := st.prev
		if snap == nil {
			if snap, err = d.snapshotAt(pool.NewLoader(d.repo), st.tip); err != nil {
				return nil, err
			}
		}
		if done == "" {
			evs, err = d.backfillState(tx, st.tip, snap)
		} else {
			evs, err = d.reconcile(tx, st.tip, snap, st.rewound)
		}
		if err != nil {
			return nil, err
		}
	}
	if st.rewound {
		st.cursor = st.tip
		if err := setCursor(tx, d.cfg.Name, cursorCommit, st.tip); err != nil {
			return nil, err
		}
	}
	return evs, setCursor(tx, d.cfg.Name, cursorState, "1")
}

func (d *Deriver) snapshotAt(l *pool.Loader, commit string) (*pool.Snapshot, error) {
	c, err := d.repo.Commit(commit)
	if err != nil {
		return nil, err
	}
	return l.Load(c.Tree)
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

func (d *Deriver) pushOf(tx dbtx, commit string) (*Pusher, time.Time, error) {
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
	rc := d.cfg
	if d.settings != nil {
		if cur := d.settings(); cur != nil {
			rc = cur
		}
	}
	if pc := rc.Pool(path); pc != nil {
		if pc.MaxClaimed > 0 {
			m := pc.MaxClaimed
			maxClaimed = &m
		}
		staleAfter = pc.StaleAfter.D()
	}
	return
}

// deriveCommits derives one segment of the walk, oldest first, and moves
// the cursor past it (to the tip after the last segment). After a forced
// push (admin only) the walk starts where the old and new histories meet,
// each commit diffed against its own parent.
func (d *Deriver) deriveCommits(tx dbtx, st *syncState, seg []*gitstore.Commit) ([]Event, error) {
	// A loader per segment: its memo (trees shared between consecutive
	// commits) never outgrows one segment's worth.
	l := pool.NewLoader(d.repo)
	var out []Event
	for _, c := range seg {
		var before *pool.Snapshot
		var err error
		switch {
		case len(c.Parents) == 0:
		case c.Parents[0] == st.prevHash:
			before = st.prev
		default:
			if before, err = d.snapshotAt(l, c.Parents[0]); err != nil {
				return nil, fmt.Errorf("commit %s: %w", c.Hash, err)
			}
		}
		after, err := l.Load(c.Tree)
		if err != nil {
			return nil, fmt.Errorf("commit %s: %w", c.Hash, err)
		}
		evs, err := d.deriveCommit(tx, c, before, after)
		if err != nil {
			return nil, fmt.Errorf("commit %s: %w", c.Hash, err)
		}
		out = append(out, evs...)
		st.prev, st.prevHash = after, c.Hash
	}
	st.cursor = seg[len(seg)-1].Hash
	return out, setCursor(tx, d.cfg.Name, cursorCommit, st.cursor)
}

func (d *Deriver) deriveCommit(tx dbtx, c *gitstore.Commit, before, after *pool.Snapshot) ([]Event, error) {
	hash := c.Hash
	changes := pool.Diff(before, after)
	if len(changes) == 0 {
		return nil, d.applyChanges(tx, before, after, nil, 0, hash)
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
	return out, d.applyChanges(tx, before, after, changes, when.UnixNano(), hash)
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
func (d *Deriver) hold(tx dbtx, poolPath, lock string) (commit string, since time.Time, ok bool, err error) {
	var t int64
	var c sql.NullString
	err = tx.QueryRow(`SELECT h.time, json_extract(e.data, '$.commit') FROM holds h JOIN events e ON e.id = h.event WHERE h.repo=? AND h.pool=? AND h.lock=?`,
		d.cfg.Name, poolPath, lock).Scan(&t, &c)
	if errors.Is(err, sql.ErrNoRows) {
		return "", time.Time{}, false, nil
	}
	if err != nil {
		return "", time.Time{}, false, err
	}
	return c.String, time.Unix(0, t).UTC(), true, nil
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

// NextDue is when the next claim will go stale, as of the last sync (zero:
// none will): the service wakes up then, not every second.
func (d *Deriver) NextDue() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.nextDue
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
	var next time.Time
	for rows.Next() {
		var p, l, data string
		var t int64
		if err := rows.Scan(&p, &l, &t, &data); err != nil {
			rows.Close()
			return nil, err
		}
		maxClaimed, staleAfter := d.poolCfg(p)
		since := time.Unix(0, t).UTC()
		if staleAfter <= 0 {
			continue
		}
		if due := since.Add(staleAfter); now.Before(due) {
			if next.IsZero() || due.Before(next) {
				next = due
			}
			continue
		}
		var claim Event
		json.Unmarshal([]byte(data), &claim)
		// The pool's limit now, as Claimed below is the count now: a
		// reload since the claim shows in the stale event.
		claim.MaxClaimed = maxClaimed
		dues = append(dues, due{claim, since, staleAfter})
	}
	rows.Close()
	d.nextDue = next
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
