package events

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"time"

	"github.com/poolgate/poolgate/validator"
)

// WaiterGoneAfter is how long a waiting build may go without retrying
// before it counts as gone (aborted, or timed out on the client side).
// pool-resource retries every retry_delay (10s by default); five minutes
// covers a retry_delay of up to a minute several times over.
const WaiterGoneAfter = 5 * time.Minute

// overLimit is the only rule that makes a build wait (DESIGN.md §2): every
// other refusal ends its step.
const overLimit = "over-limit"

// Waiter is a build whose claim was refused because its pool is at
// max_claimed, and that is still retrying (the pools API's `waiting`).
type Waiter struct {
	BuildURL string    `json:"build_url"`
	Team     string    `json:"team"`
	Pipeline string    `json:"pipeline"`
	Job      string    `json:"job"`
	Build    string    `json:"build"`
	User     string    `json:"user,omitempty"` // who pushed the refused claim
	FirstTry time.Time `json:"first_try"`
	LastTry  time.Time `json:"last_try"`
	Tries    int       `json:"tries"`
}

// waiterKeys names the build a commit came from, most precise first: its
// Build URL, its team/pipeline/job/build, a one-off build's id, and last
// the pusher (one user per Concourse usually, so builds whose refused
// messages carried nothing else share one waiter).
func waiterKeys(e *Event) []string {
	var keys []string
	switch {
	case e.BuildURL != "":
		keys = append(keys, "url:"+e.BuildURL)
	case e.Pipeline != "" || e.Job != "" || e.Build != "":
		keys = append(keys, "build:"+e.Team+"/"+e.Pipeline+"/"+e.Job+"/"+e.Build)
	case e.BuildID != "":
		keys = append(keys, "one-off:"+e.BuildID)
	}
	if e.Pusher != nil && e.Pusher.User != "" {
		keys = append(keys, "user:"+e.Pusher.User)
	}
	return keys
}

// noteWaiter records a refused over-limit push as a try of a waiting build.
// Only new events come here, so a re-derive does not count a try twice.
// The table holds only builds seen within WaiterGoneAfter (pruned here), so
// its size follows the waiters, never the history.
func (d *Deriver) noteWaiter(tx *sql.Tx, e *Event) error {
	if e.Kind == string(validator.Permanent) {
		return nil
	}
	pool := ""
	for _, v := range e.Violations {
		if v.Rule == overLimit {
			pool = v.Pool
			break
		}
	}
	keys := waiterKeys(e)
	if pool == "" || len(keys) == 0 {
		return nil
	}
	if err := d.pruneWaiters(tx, e.Time); err != nil {
		return err
	}
	w := Waiter{BuildURL: e.BuildURL, Team: e.Team, Pipeline: e.Pipeline, Job: e.Job, Build: e.Build}
	if w.Build == "" {
		w.Build = e.BuildID
	}
	if e.Pusher != nil {
		w.User = e.Pusher.User
	}
	data, _ := json.Marshal(w)
	t := e.Time.UnixNano()
	var first, last, gotIn int64
	err := tx.QueryRow(`SELECT first_try, last_try, got_in FROM waiters WHERE repo=? AND pool=? AND who=?`,
		d.cfg.Name, pool, keys[0]).Scan(&first, &last, &gotIn)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		_, err = tx.Exec(`INSERT INTO waiters(repo,pool,who,data,first_try,last_try,tries,got_in) VALUES(?,?,?,?,?,?,1,0)`,
			d.cfg.Name, pool, keys[0], string(data), t, t)
	case err != nil:
	case gotIn >= t:
		// Derived after the claim that ended this wait (both landed
		// between two syncs): an old try, not a new wait.
	case gotIn > first || t-last > int64(WaiterGoneAfter):
		_, err = tx.Exec(`UPDATE waiters SET data=?, first_try=?, last_try=?, tries=1 WHERE repo=? AND pool=? AND who=?`,
			string(data), t, t, d.cfg.Name, pool, keys[0])
	default:
		_, err = tx.Exec(`UPDATE waiters SET data=?, last_try=MAX(last_try, ?), tries=tries+1 WHERE repo=? AND pool=? AND who=?`,
			string(data), t, d.cfg.Name, pool, keys[0])
	}
	return err
}

// waiterGotIn ends the wait of the build that made a claim. It leaves a
// mark rather than deleting, so a refused try of the same build derived
// after the claim (both between two syncs) is not taken for a new wait.
func (d *Deriver) waiterGotIn(tx dbtx, e *Event) error {
	for _, k := range waiterKeys(e) {
		if _, err := tx.Exec(`INSERT INTO waiters(repo,pool,who,data,first_try,last_try,tries,got_in) VALUES(?,?,?,'{}',0,0,0,?)
			ON CONFLICT(repo,pool,who) DO UPDATE SET got_in=MAX(got_in, excluded.got_in)`,
			d.cfg.Name, e.Pool, k, e.Time.UnixNano()); err != nil {
			return err
		}
	}
	return d.pruneWaiters(tx, e.Time)
}

func (d *Deriver) pruneWaiters(tx dbtx, now time.Time) error {
	_, err := tx.Exec(`DELETE FROM waiters WHERE repo=? AND MAX(last_try, got_in) < ?`,
		d.cfg.Name, now.Add(-WaiterGoneAfter).UnixNano())
	return err
}

// Waiters returns each pool's waiting builds, longest waiting first: those
// refused over max_claimed whose last try is within WaiterGoneAfter of now
// and that have not got in since.
func (s *Store) Waiters(ctx context.Context, repo string, now time.Time) (map[string][]Waiter, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT pool, data, first_try, last_try, tries FROM waiters
		WHERE repo=? AND tries > 0 AND got_in < first_try AND last_try >= ? ORDER BY first_try, who`,
		repo, now.Add(-WaiterGoneAfter).UnixNano())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]Waiter{}
	for rows.Next() {
		var p, data string
		var first, last int64
		var tries int
		if err := rows.Scan(&p, &data, &first, &last, &tries); err != nil {
			return nil, err
		}
		var w Waiter
		json.Unmarshal([]byte(data), &w)
		w.FirstTry, w.LastTry, w.Tries = time.Unix(0, first).UTC(), time.Unix(0, last).UTC(), tries
		out[p] = append(out[p], w)
	}
	return out, rows.Err()
}
