package events

import (
	"database/sql"
	"fmt"
	"strconv"

	"github.com/poolgate/poolgate/pool"
	"github.com/poolgate/poolgate/pushlog"
	"github.com/poolgate/poolgate/validator"
)

// Violation is the event type of a rule broken by a commit that landed
// upstream (watch mode), where nothing could refuse it.
const Violated = "violation"

const (
	cursorViolations = "violations"
	cursorRewrites   = "rewrites"
)

// readWatchRecords turns a watched mirror's violation and rewrite records
// into `violation` events. Served repos have no such files and cost one
// stat each.
func (d *Deriver) readWatchRecords(tx *sql.Tx) ([]Event, error) {
	var out []Event
	err := d.readRecordFile(tx, pushlog.Violations, cursorViolations, func(l []byte) (*Event, error) {
		var r pushlog.UpstreamViolation
		if !pushlog.Decode(l, &r) {
			return nil, nil
		}
		e := &Event{ID: ID(d.cfg.Name, Violated, string(l)), Type: Violated, Time: r.Time.UTC(), Announce: d.announce(r.Time),
			Repo: d.cfg.Name, Branch: d.branch, Action: Violated, Pool: r.Pool, Lock: r.Lock, Commit: r.Commit,
			Message: r.Subject, Rule: r.Rule, Kind: r.Kind, Reason: r.Reason}
		if r.User != "" {
			e.Pusher = &Pusher{User: r.User}
		}
		if mc, _ := d.poolCfg(e.Pool); e.Pool != "" {
			e.MaxClaimed = mc
		}
		return e, nil
	}, &out)
	if err != nil {
		return nil, err
	}
	err = d.readRecordFile(tx, pushlog.Rewrites, cursorRewrites, func(l []byte) (*Event, error) {
		var r pushlog.Rewrite
		if !pushlog.Decode(l, &r) {
			return nil, nil
		}
		e := &Event{ID: ID(d.cfg.Name, Violated, string(l)), Type: Violated, Time: r.Time.UTC(), Announce: d.announce(r.Time),
			Repo: d.cfg.Name, Branch: d.branch, Action: Violated, Commit: r.New, Rule: "ref", Kind: string(validator.Permanent),
			Ref:    "refs/heads/" + d.branch,
			Reason: fmt.Sprintf("history rewritten upstream (force push from %s): %d commit(s) dropped", pool.Short(r.Old), r.Dropped)}
		if r.User != "" {
			e.Pusher = &Pusher{User: r.User}
		}
		return e, nil
	}, &out)
	return out, err
}

func (d *Deriver) readRecordFile(tx *sql.Tx, file pushlog.Kind, cursor string, conv func([]byte) (*Event, error), out *[]Event) error {
	off, err := cursorInt(tx, d.cfg.Name, cursor)
	if err != nil {
		return err
	}
	lines, next, err := d.records().Read(file, off)
	if err != nil || next == off {
		return err
	}
	for _, l := range lines {
		e, err := conv(l)
		if err != nil {
			return err
		}
		if e == nil {
			continue
		}
		isNew, err := insertEvent(tx, e)
		if err != nil {
			return err
		}
		if isNew {
			*out = append(*out, *e)
		}
	}
	return setCursor(tx, d.cfg.Name, cursor, strconv.FormatInt(next, 10))
}
