package events

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	// Pure Go SQLite: no cgo in the build, and in WAL mode `poolgate
	// status` and `history` read (and catch up) while the daemon writes,
	// which bbolt's exclusive file lock would not allow.
	_ "modernc.org/sqlite"
)

// DBFile is the store's file name inside the data dir.
const DBFile = "events.db"

// DeliveryLogSize is how many delivery attempts are kept per webhook.
const DeliveryLogSize = 200

// Store is the durable event store: events, derivation cursors, current
// holds, webhook cursors and the delivery log, in one SQLite file.
type Store struct {
	db       *sql.DB
	readOnly bool
}

const schema = `
CREATE TABLE IF NOT EXISTS events (
	seq      INTEGER PRIMARY KEY AUTOINCREMENT,
	id       TEXT NOT NULL UNIQUE,
	repo     TEXT NOT NULL,
	type     TEXT NOT NULL,
	pool     TEXT NOT NULL,
	lock     TEXT NOT NULL,
	time     INTEGER NOT NULL,
	announce INTEGER NOT NULL,
	data     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_repo ON events(repo, seq);
CREATE INDEX IF NOT EXISTS events_time ON events(repo, time);
CREATE TABLE IF NOT EXISTS cursors (
	repo  TEXT NOT NULL,
	name  TEXT NOT NULL,
	value TEXT NOT NULL,
	PRIMARY KEY (repo, name)
);
CREATE TABLE IF NOT EXISTS pushes (
	repo   TEXT NOT NULL,
	commit_hash TEXT NOT NULL,
	user   TEXT NOT NULL,
	key    TEXT NOT NULL,
	time   INTEGER NOT NULL,
	PRIMARY KEY (repo, commit_hash)
);
CREATE TABLE IF NOT EXISTS holds (
	repo   TEXT NOT NULL,
	pool   TEXT NOT NULL,
	lock   TEXT NOT NULL,
	event  TEXT NOT NULL,
	time   INTEGER NOT NULL,
	stale_sent INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (repo, pool, lock)
);
CREATE TABLE IF NOT EXISTS lock_state (
	repo  TEXT NOT NULL,
	pool  TEXT NOT NULL,
	lock  TEXT NOT NULL,
	state TEXT NOT NULL,
	time  INTEGER NOT NULL,
	commit_hash TEXT NOT NULL,
	content TEXT NOT NULL DEFAULT '',
	truncated INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (repo, pool, lock)
);
CREATE TABLE IF NOT EXISTS pool_state (
	repo TEXT NOT NULL,
	pool TEXT NOT NULL,
	PRIMARY KEY (repo, pool)
);
CREATE TABLE IF NOT EXISTS announced (
	repo TEXT NOT NULL,
	user TEXT NOT NULL,
	rule TEXT NOT NULL,
	pool TEXT NOT NULL,
	time INTEGER NOT NULL,
	PRIMARY KEY (repo, user, rule, pool)
);
CREATE TABLE IF NOT EXISTS webhooks (
	name     TEXT PRIMARY KEY,
	seq      INTEGER NOT NULL,
	disabled TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS webhook_urls (
	name TEXT PRIMARY KEY,
	hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS failing (
	webhook TEXT PRIMARY KEY,
	seq     INTEGER NOT NULL,
	since   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
	n        INTEGER PRIMARY KEY AUTOINCREMENT,
	webhook  TEXT NOT NULL,
	time     INTEGER NOT NULL,
	events   TEXT NOT NULL,
	attempt  INTEGER NOT NULL,
	status   INTEGER NOT NULL,
	error    TEXT NOT NULL,
	duration INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_webhook ON deliveries(webhook, n);
CREATE TABLE IF NOT EXISTS waiters (
	repo      TEXT NOT NULL,
	pool      TEXT NOT NULL,
	who       TEXT NOT NULL,
	data      TEXT NOT NULL,
	first_try INTEGER NOT NULL,
	last_try  INTEGER NOT NULL,
	tries     INTEGER NOT NULL,
	got_in    INTEGER NOT NULL,
	PRIMARY KEY (repo, pool, who)
);
`

// Open opens (creating if needed) the store in dataDir. readOnly opens an
// existing store without writing, for users who may read the data dir only.
func Open(dataDir string, readOnly bool) (*Store, error) {
	path := filepath.Join(dataDir, DBFile)
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_txlock", "immediate")
	if readOnly {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("no event store at %s (has poolgate serve run?)", path)
		}
		q.Add("mode", "ro")
	} else {
		if err := os.MkdirAll(dataDir, 0o755); err != nil {
			return nil, err
		}
		q.Add("_pragma", "journal_mode(WAL)")
		// NORMAL in WAL mode may lose the last transactions on power
		// loss, never consistency: events are derived again from git and
		// the hook's fsynced records, and a cursor that steps back only
		// redelivers (at-least-once).
		q.Add("_pragma", "synchronous(NORMAL)")
	}
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, err
	}
	// One connection: SQLite has one writer anyway, and this keeps the
	// daemon's goroutines from ever seeing SQLITE_BUSY from each other.
	db.SetMaxOpenConns(1)
	s := &Store{db: db, readOnly: readOnly}
	if !readOnly {
		if _, err := db.Exec(schema); err != nil {
			db.Close()
			return nil, fmt.Errorf("event store %s: %w", path, err)
		}
		// When the store began: what happened before is history to
		// import, not news to announce (see Deriver.announce).
		if _, err := db.Exec(`INSERT OR IGNORE INTO cursors(repo,name,value) VALUES('', ?, ?)`,
			cursorCreated, strconv.FormatInt(time.Now().UnixNano(), 10)); err != nil {
			db.Close()
			return nil, fmt.Errorf("event store %s: %w", path, err)
		}
	} else if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("event store %s: %w", path, err)
	}
	return s, nil
}

// ReadOnly reports whether the store was opened without write access.
func (s *Store) ReadOnly() bool { return s.readOnly }

func (s *Store) Close() error { return s.db.Close() }

// update runs f in one write transaction (BEGIN IMMEDIATE, so concurrent
// writers, e.g. the daemon and a `poolgate status` catching up, serialize
// instead of failing).
func (s *Store) update(ctx context.Context, f func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := f(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// rowQuerier is a *sql.Tx or the *sql.DB.
type rowQuerier interface {
	QueryRow(query string, args ...any) *sql.Row
}

func getCursor(q rowQuerier, repo, name string) (string, error) {
	var v string
	err := q.QueryRow(`SELECT value FROM cursors WHERE repo=? AND name=?`, repo, name).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return v, err
}

func setCursor(tx dbtx, repo, name, value string) error {
	_, err := tx.Exec(`INSERT INTO cursors(repo,name,value) VALUES(?,?,?)
		ON CONFLICT(repo,name) DO UPDATE SET value=excluded.value`, repo, name, value)
	return err
}

// insertEvent stores an event unless one with its id exists; it reports
// whether it was new.
func insertEvent(tx dbtx, e *Event) (bool, error) {
	data, err := json.Marshal(e)
	if err != nil {
		return false, err
	}
	res, err := tx.Exec(`INSERT OR IGNORE INTO events(id,repo,type,pool,lock,time,announce,data) VALUES(?,?,?,?,?,?,?,?)`,
		e.ID, e.Repo, e.Type, e.Pool, e.Lock, e.Time.UnixNano(), e.Announce, string(data))
	if err != nil {
		return false, err
	}
	n, _ := res.RowsAffected()
	if n == 1 {
		e.Seq, _ = res.LastInsertId()
	}
	return n == 1, nil
}

func scanEvents(rows *sql.Rows) ([]Event, error) {
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var e Event
		var t int64
		var data string
		if err := rows.Scan(&e.Seq, &e.Type, &t, &e.Announce, &data); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(data), &e); err != nil {
			return nil, fmt.Errorf("event %d: %w", e.Seq, err)
		}
		e.Time = time.Unix(0, t).UTC()
		out = append(out, e)
	}
	return out, rows.Err()
}

// Query selects events for Events.
type Query struct {
	Repo  string // required
	Pool  string
	Lock  string
	Types []string
	Since time.Time // events at or after
	Until time.Time // events before (zero: no bound)
	// AnnouncedOnly leaves out coalesced repeats of transient rejections.
	AnnouncedOnly bool
	Limit         int // 0: no limit
}

// Events returns matching events, newest first (by event time).
func (s *Store) Events(ctx context.Context, q Query) ([]Event, error) {
	var where []string
	var args []any
	add := func(cond string, a ...any) { where = append(where, cond); args = append(args, a...) }
	add("repo = ?", q.Repo)
	if q.Pool != "" {
		add("pool = ?", q.Pool)
	}
	if q.Lock != "" {
		add("lock = ?", q.Lock)
	}
	if len(q.Types) > 0 {
		add("type IN (?"+strings.Repeat(",?", len(q.Types)-1)+")", anySlice(q.Types)...)
	}
	if !q.Since.IsZero() {
		add("time >= ?", q.Since.UnixNano())
	}
	if !q.Until.IsZero() {
		add("time < ?", q.Until.UnixNano())
	}
	if q.AnnouncedOnly {
		add("announce = 1")
	}
	// Newest first by when it happened: a rejection or a commit without a
	// push record can be derived later than events that came after it.
	// Within one time (a push of several commits), derivation order.
	stmt := `SELECT seq,type,time,announce,data FROM events WHERE ` + strings.Join(where, " AND ") + ` ORDER BY time DESC, seq DESC`
	if q.Limit > 0 {
		stmt += fmt.Sprintf(" LIMIT %d", q.Limit)
	}
	rows, err := s.db.QueryContext(ctx, stmt, args...)
	if err != nil {
		return nil, err
	}
	return scanEvents(rows)
}

func anySlice(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// After returns up to limit events with seq > seq, oldest first, of every
// repo: what a webhook has still to deliver.
func (s *Store) After(ctx context.Context, seq int64, limit int) ([]Event, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT seq,type,time,announce,data FROM events WHERE seq > ? ORDER BY seq LIMIT ?`, seq, limit)
	if err != nil {
		return nil, err
	}
	return scanEvents(rows)
}

// MaxSeq is the newest event's seq (0 when there is none).
func (s *Store) MaxSeq(ctx context.Context) (int64, error) {
	var n sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT MAX(seq) FROM events`).Scan(&n)
	return n.Int64, err
}

// Hold is a claimed lock: who claimed it, when, from which build.
type Hold struct {
	Pool      string
	Lock      string
	Since     time.Time
	Claim     Event // the claimed (or added-claimed) event
	StaleSent bool
}

// Holds returns the repo's current claims as derived so far.
func (s *Store) Holds(ctx context.Context, repo string) ([]Hold, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT h.pool, h.lock, h.time, h.stale_sent, e.seq, e.type, e.time, e.announce, e.data
		FROM holds h JOIN events e ON e.id = h.event WHERE h.repo = ? ORDER BY h.pool, h.lock`, repo)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Hold
	for rows.Next() {
		var h Hold
		var t, et int64
		var data string
		if err := rows.Scan(&h.Pool, &h.Lock, &t, &h.StaleSent, &h.Claim.Seq, &h.Claim.Type, &et, &h.Claim.Announce, &data); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(data), &h.Claim); err != nil {
			return nil, err
		}
		h.Since = time.Unix(0, t).UTC()
		h.Claim.Time = time.Unix(0, et).UTC()
		out = append(out, h)
	}
	return out, rows.Err()
}

// WebhookState is a webhook's delivery cursor.
type WebhookState struct {
	Name     string `json:"name"`
	Seq      int64  `json:"seq"`                // last event delivered (or given up on)
	Disabled string `json:"disabled,omitempty"` // why delivery stopped, e.g. a 410
}

// InitWebhook makes sure a webhook has a cursor. A target seen for the
// first time starts after the newest event: adding a Slack webhook must not
// replay years of history into a channel.
func (s *Store) InitWebhook(ctx context.Context, name string) (WebhookState, error) {
	err := s.update(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT OR IGNORE INTO webhooks(name, seq) VALUES(?, (SELECT COALESCE(MAX(seq),0) FROM events))`, name)
		return err
	})
	if err != nil {
		return WebhookState{}, err
	}
	return s.Webhook(ctx, name)
}

// Webhook returns a webhook's cursor.
func (s *Store) Webhook(ctx context.Context, name string) (WebhookState, error) {
	w := WebhookState{Name: name}
	err := s.db.QueryRowContext(ctx, `SELECT seq, disabled FROM webhooks WHERE name=?`, name).Scan(&w.Seq, &w.Disabled)
	if errors.Is(err, sql.ErrNoRows) {
		err = nil
	}
	return w, err
}

// SetWebhookSeq moves a webhook's cursor forward.
func (s *Store) SetWebhookSeq(ctx context.Context, name string, seq int64) error {
	return s.update(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`UPDATE webhooks SET seq=? WHERE name=? AND seq < ?`, seq, name, seq)
		return err
	})
}

// DisableWebhook stops delivery to a target for good (until an operator
// clears it with EnableWebhook).
func (s *Store) DisableWebhook(ctx context.Context, name, why string) error {
	return s.update(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`UPDATE webhooks SET disabled=? WHERE name=?`, why, name)
		return err
	})
}

// WebhookURLChanged records the hash of a webhook's URL and reports
// whether it differs from the one recorded before. A target disabled by a
// 410 is enabled again when its URL changes: that is how an operator says
// "it lives elsewhere now".
func (s *Store) WebhookURLChanged(ctx context.Context, name, hash string) (bool, error) {
	changed := false
	err := s.update(ctx, func(tx *sql.Tx) error {
		var old string
		err := tx.QueryRow(`SELECT hash FROM webhook_urls WHERE name=?`, name).Scan(&old)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		changed = err == nil && old != hash
		_, err = tx.Exec(`INSERT INTO webhook_urls(name,hash) VALUES(?,?) ON CONFLICT(name) DO UPDATE SET hash=excluded.hash`, name, hash)
		return err
	})
	return changed, err
}

// EnableWebhook clears a disabled target.
func (s *Store) EnableWebhook(ctx context.Context, name string) error {
	return s.DisableWebhook(ctx, name, "")
}

// Delivery is one attempt to deliver to a webhook.
type Delivery struct {
	Webhook  string        `json:"webhook"`
	Time     time.Time     `json:"time"`
	Events   []string      `json:"events"` // event ids in the request
	Attempt  int           `json:"attempt"`
	Status   int           `json:"status"` // HTTP status, 0 if none
	Error    string        `json:"error,omitempty"`
	Duration time.Duration `json:"duration_ns"`
}

// LogDelivery records an attempt and trims the target's log to
// DeliveryLogSize entries.
func (s *Store) LogDelivery(ctx context.Context, d Delivery) error {
	ids, _ := json.Marshal(d.Events)
	return s.update(ctx, func(tx *sql.Tx) error {
		if _, err := tx.Exec(`INSERT INTO deliveries(webhook,time,events,attempt,status,error,duration) VALUES(?,?,?,?,?,?,?)`,
			d.Webhook, d.Time.UnixNano(), string(ids), d.Attempt, d.Status, d.Error, int64(d.Duration)); err != nil {
			return err
		}
		_, err := tx.Exec(`DELETE FROM deliveries WHERE webhook=? AND n <= (SELECT n FROM deliveries WHERE webhook=? ORDER BY n DESC LIMIT 1 OFFSET ?)`,
			d.Webhook, d.Webhook, DeliveryLogSize)
		return err
	})
}

// Deliveries returns a target's most recent attempts, newest first.
func (s *Store) Deliveries(ctx context.Context, webhook string, limit int) ([]Delivery, error) {
	if limit <= 0 || limit > DeliveryLogSize {
		limit = DeliveryLogSize
	}
	rows, err := s.db.QueryContext(ctx, `SELECT time,events,attempt,status,error,duration FROM deliveries WHERE webhook=? ORDER BY n DESC LIMIT ?`, webhook, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Delivery
	for rows.Next() {
		d := Delivery{Webhook: webhook}
		var t, dur int64
		var ids string
		if err := rows.Scan(&t, &ids, &d.Attempt, &d.Status, &d.Error, &dur); err != nil {
			return nil, err
		}
		d.Time = time.Unix(0, t).UTC()
		d.Duration = time.Duration(dur)
		json.Unmarshal([]byte(ids), &d.Events)
		out = append(out, d)
	}
	return out, rows.Err()
}

// Append stores an event that was not derived from a repo (tests, and
// future sources); false if one with its id exists already.
func (s *Store) Append(ctx context.Context, e *Event) (bool, error) {
	var isNew bool
	err := s.update(ctx, func(tx *sql.Tx) error {
		var err error
		isNew, err = insertEvent(tx, e)
		return err
	})
	return isNew, err
}

// FailingSince returns when delivery of the event at seq to a webhook
// first failed, recording now if this is the first failure. Kept in the
// store so the give-up bound counts across restarts.
func (s *Store) FailingSince(ctx context.Context, webhook string, seq int64, now time.Time) (time.Time, error) {
	var since int64
	err := s.update(ctx, func(tx *sql.Tx) error {
		var got int64
		err := tx.QueryRow(`SELECT seq, since FROM failing WHERE webhook=?`, webhook).Scan(&got, &since)
		if err == nil && got == seq {
			return nil
		}
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		since = now.UnixNano()
		_, err = tx.Exec(`INSERT INTO failing(webhook,seq,since) VALUES(?,?,?)
			ON CONFLICT(webhook) DO UPDATE SET seq=excluded.seq, since=excluded.since`, webhook, seq, since)
		return err
	})
	return time.Unix(0, since), err
}

// dbtx is what deriving a commit needs of a transaction: a *sql.Tx, or a
// preparedTx in the hot path.
type dbtx interface {
	Exec(query string, args ...any) (sql.Result, error)
	Query(query string, args ...any) (*sql.Rows, error)
	QueryRow(query string, args ...any) *sql.Row
}

// preparedTx prepares each statement once per transaction: the driver
// would otherwise parse the SQL again for every row, a third of the CPU of
// deriving a long history.
type preparedTx struct {
	*sql.Tx
	stmts map[string]*sql.Stmt
}

func prepared(tx *sql.Tx) *preparedTx { return &preparedTx{Tx: tx, stmts: map[string]*sql.Stmt{}} }

func (p *preparedTx) stmt(q string) (*sql.Stmt, error) {
	if s, ok := p.stmts[q]; ok {
		return s, nil
	}
	s, err := p.Tx.Prepare(q) // closed with the transaction
	if err != nil {
		return nil, err
	}
	p.stmts[q] = s
	return s, nil
}

func (p *preparedTx) Exec(q string, args ...any) (sql.Result, error) {
	s, err := p.stmt(q)
	if err != nil {
		return nil, err
	}
	return s.Exec(args...)
}

func (p *preparedTx) Query(q string, args ...any) (*sql.Rows, error) {
	s, err := p.stmt(q)
	if err != nil {
		return nil, err
	}
	return s.Query(args...)
}

func (p *preparedTx) QueryRow(q string, args ...any) *sql.Row {
	s, err := p.stmt(q)
	if err != nil {
		return p.Tx.QueryRow(q, args...) // reports the same error
	}
	return s.QueryRow(args...)
}

// Import stores an event derived on another node (a cluster node's refused
// push, shared through etcd) under its own id and a seq of this store, so
// this node's webhook delivery and history have it; it reports whether it
// was new here.
func (s *Store) Import(ctx context.Context, e Event) (bool, error) {
	isNew := false
	err := s.update(ctx, func(tx *sql.Tx) error {
		e.Seq = 0
		var err error
		isNew, err = insertEvent(tx, &e)
		return err
	})
	return isNew, err
}
