package webhook

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/events"
	"github.com/rs/zerolog"
)

// Options tune delivery; the zero value of a field means its default.
type Options struct {
	// Backoff is the first retry delay, doubled per attempt up to
	// MaxBackoff, with jitter (default 1s, 10m).
	Backoff    time.Duration
	MaxBackoff time.Duration
	// GiveUpAfter is how long one event (or concourse batch) is retried
	// before the target moves on without it (default 24h).
	GiveUpAfter time.Duration
	// Coalesce is the quiet time that ends a burst of changes for a
	// concourse target (default 1.5s; a webhook's coalesce overrides it),
	// CoalesceMax the longest a burst is held (default the larger of 5s
	// and 4×Coalesce).
	Coalesce    time.Duration
	CoalesceMax time.Duration
	// SlackInterval is the least time between two messages to one Slack
	// URL (default 1s: Slack's limit for incoming webhooks).
	SlackInterval time.Duration
	// Timeout bounds one HTTP request (default 10s).
	Timeout time.Duration
	// Poll is how often an idle target looks for events without being
	// notified (default 5s).
	Poll time.Duration
	// OnAttempt, if set, hears of every delivery attempt (metrics). It
	// must not block.
	OnAttempt func(webhook string, ok bool)
	// Ledger, if set, is shared with other dispatchers (cluster nodes, of
	// which one delivers at a time): an event it lists is passed over as
	// delivered, and each delivered event is added to it.
	Ledger Ledger
}

// Ledger records which events were delivered to which webhook, across nodes.
type Ledger interface {
	// Sent reports an event delivered already; false when unsure (it is
	// delivered again: at-least-once).
	Sent(ctx context.Context, webhook, id string) bool
	Add(ctx context.Context, webhook string, ids []string)
}

func (o *Options) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.Backoff, time.Second)
	def(&o.MaxBackoff, 10*time.Minute)
	def(&o.GiveUpAfter, 24*time.Hour)
	def(&o.Coalesce, 1500*time.Millisecond)
	def(&o.CoalesceMax, max(5*time.Second, 4*o.Coalesce))
	def(&o.SlackInterval, time.Second)
	def(&o.Timeout, 10*time.Second)
	def(&o.Poll, 5*time.Second)
}

// Dispatcher delivers events to every webhook of the running config: a
// reload that adds, changes or removes one is followed at once.
type Dispatcher struct {
	store  *events.Store
	log    zerolog.Logger
	opt    Options
	client *http.Client

	mu      sync.Mutex
	targets []*target     // the running config's webhooks, in its order
	changed chan struct{} // the targets changed: Run starts and stops them

	slackMu   sync.Mutex
	slackNext map[string]time.Time // per URL: earliest next send
}

// configSource is the running config (config.Live).
type configSource interface {
	Current() *config.Config
	Subscribe(func(*config.Config)) (cancel func())
}

// New prepares delivery to the webhooks conf holds, and follows conf's
// changes for the dispatcher's life.
func New(conf configSource, store *events.Store, log zerolog.Logger, opt Options) *Dispatcher {
	opt.defaults()
	d := &Dispatcher{store: store, log: log, opt: opt, slackNext: map[string]time.Time{}, changed: make(chan struct{}, 1),
		client: &http.Client{
			Timeout: opt.Timeout,
			// A redirected POST would become a GET, and a signed body
			// sent somewhere the config does not name: a 3xx is a
			// failed attempt instead.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}}
	for _, w := range conf.Current().Webhooks {
		d.targets = append(d.targets, d.newTarget(w))
	}
	conf.Subscribe(d.reconfigure)
	return d
}

func (d *Dispatcher) newTarget(w config.Webhook) *target {
	return &target{d: d, cfg: w, wake: make(chan struct{}, 1)}
}

// current is the targets now.
func (d *Dispatcher) current() []*target {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.targets
}

// reconfigure takes a reloaded config's webhooks, inside the reload: an
// unchanged webhook keeps its running target; a new one gets its cursor
// now (after the newest event: the first event derived after the reload
// is its first delivery, and the past is not replayed); a changed one
// (URL, secret, filters, …) is a new target on the same cursor. A removed
// or changed target is stopped here, before the reload ends: nothing is
// sent to a removed URL after it, and two targets never deliver from one
// cursor.
func (d *Dispatcher) reconfigure(cfg *config.Config) {
	d.mu.Lock()
	defer d.mu.Unlock()
	old := map[string]*target{}
	for _, t := range d.targets {
		old[t.cfg.Name] = t
	}
	var next []*target
	var added, changed, removed []string
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, w := range cfg.Webhooks {
		t, ok := old[w.Name]
		if ok && sameWebhook(t.cfg, w) {
			next = append(next, t)
			delete(old, w.Name)
			continue
		}
		if ok {
			changed = append(changed, w.Name)
			t.stop()
			delete(old, w.Name)
		} else {
			added = append(added, w.Name)
		}
		t = d.newTarget(w)
		if err := d.initTarget(ctx, t); err != nil {
			// The target reads its cursor again when it starts, and
			// InitWebhook then creates it: only events before that are
			// missed.
			d.log.Error().Err(err).Str("webhook", w.Name).Msg("reload: initialising the webhook's cursor")
		}
		next = append(next, t)
	}
	for name, t := range old {
		t.stop()
		removed = append(removed, name)
	}
	if len(added)+len(changed)+len(removed) == 0 {
		return
	}
	slices.Sort(removed)
	d.targets = next
	d.log.Info().Strs("added", added).Strs("changed", changed).Strs("removed", removed).Msg("webhooks follow the reload")
	select {
	case d.changed <- struct{}{}:
	default:
	}
}

// sameWebhook: nothing a target delivers by differs (Signer is built from
// Secret, Line is where the file says it).
func sameWebhook(a, b config.Webhook) bool {
	a.Signer, b.Signer, a.Line, b.Line = nil, nil, 0, 0
	return reflect.DeepEqual(a, b)
}

// Notify wakes every target to look for new events. It never blocks.
func (d *Dispatcher) Notify() {
	for _, t := range d.current() {
		select {
		case t.wake <- struct{}{}:
		default:
		}
	}
}

// Init gives every target seen for the first time its cursor (after the
// newest stored event: a new target does not replay the past), and enables
// a target disabled by a 410 whose URL has changed since. Call it before
// the first sync of a start.
func (d *Dispatcher) Init(ctx context.Context) error {
	for _, t := range d.current() {
		if err := d.initTarget(ctx, t); err != nil {
			return err
		}
	}
	return nil
}

func (d *Dispatcher) initTarget(ctx context.Context, t *target) error {
	w, err := d.store.InitWebhook(ctx, t.cfg.Name)
	if err != nil {
		return err
	}
	sum := sha256.Sum256([]byte(t.cfg.URL))
	changed, err := d.store.WebhookURLChanged(ctx, t.cfg.Name, hex.EncodeToString(sum[:]))
	if err != nil {
		return err
	}
	if changed && w.Disabled != "" {
		d.log.Info().Str("webhook", t.cfg.Name).Str("was", w.Disabled).Msg("webhook URL changed: enabled again")
		if err := d.store.EnableWebhook(ctx, t.cfg.Name); err != nil {
			return err
		}
	}
	return nil
}

// Run delivers until ctx ends, one goroutine per target, started as
// reloads add targets (reconfigure stops the ones they remove). A target
// whose cursor cannot be read is retried; one that is disabled (after a
// 410) stays idle. Run may be called again after it returned (a cluster
// node that leads again).
func (d *Dispatcher) Run(ctx context.Context) {
	defer func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		for _, t := range d.targets {
			t.stop()
		}
	}()
	for {
		d.mu.Lock()
		for _, t := range d.targets {
			if t.done == nil {
				t.start(ctx)
			}
		}
		d.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-d.changed:
		}
	}
}

// start runs the target until ctx ends or stop. Under d.mu.
func (t *target) start(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	t.cancel, t.done = cancel, done
	go func() {
		defer close(done)
		t.run(ctx)
	}()
}

// stop ends the target's run, if started, and waits for it: an attempt in
// flight is cancelled (and redelivered by a successor: at least once).
// Under d.mu.
func (t *target) stop() {
	if t.done == nil {
		return
	}
	t.cancel()
	<-t.done
	t.cancel, t.done = nil, nil
}

type target struct {
	d    *Dispatcher
	cfg  config.Webhook
	wake chan struct{}
	seq  int64
	// cancel and done are its running delivery's (nil: not running);
	// guarded by d.mu.
	cancel func()
	done   chan struct{}
}

func (t *target) logger() *zerolog.Logger {
	l := t.d.log.With().Str("webhook", t.cfg.Name).Str("format", t.cfg.Format).Logger()
	return &l
}

// sleep waits d or until ctx ends; false if ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}

func (t *target) run(ctx context.Context) {
	st := t.d.store
	for {
		w, err := st.InitWebhook(ctx, t.cfg.Name)
		if err == nil {
			if w.Disabled != "" {
				t.logger().Warn().Str("reason", w.Disabled).Msg("webhook disabled; not delivering")
				return
			}
			t.seq = w.Seq
			break
		}
		if ctx.Err() != nil {
			return
		}
		t.logger().Error().Err(err).Msg("reading webhook cursor")
		if !sleep(ctx, t.d.opt.Poll) {
			return
		}
	}
	for ctx.Err() == nil {
		more, err := t.step(ctx)
		if errors.Is(err, errDisabled) {
			return
		}
		if err != nil && ctx.Err() == nil {
			t.logger().Error().Err(err).Msg("webhook delivery")
			sleep(ctx, t.d.opt.Poll)
			continue
		}
		if more {
			continue
		}
		tm := time.NewTimer(t.d.opt.Poll)
		select {
		case <-ctx.Done():
		case <-t.wake:
		case <-tm.C:
		}
		tm.Stop()
	}
}

var errDisabled = errors.New("webhook disabled")

// matches applies the target's filters.
func (t *target) matches(e *events.Event) bool {
	if !e.Announce {
		return false
	}
	if len(t.cfg.Events) > 0 && !slices.Contains(t.cfg.Events, e.Type) {
		return false
	}
	if len(t.cfg.Repos) > 0 && !slices.Contains(t.cfg.Repos, e.Repo) {
		return false
	}
	if len(t.cfg.Pools) > 0 && !slices.Contains(t.cfg.Pools, e.Pool) {
		return false
	}
	return true
}

const batchSize = 100

// step delivers what is pending after the cursor; more reports that a full
// batch was read and there may be more.
func (t *target) step(ctx context.Context) (more bool, err error) {
	evs, err := t.d.store.After(ctx, t.seq, batchSize)
	if err != nil || len(evs) == 0 {
		return false, err
	}
	switch t.cfg.Format {
	case "concourse":
		return t.stepConcourse(ctx, evs)
	case "slack":
		return t.stepSlack(ctx, evs)
	}
	for i := range evs {
		e := &evs[i]
		if t.matches(e) && !t.sent(ctx, e) {
			if err := t.deliver(ctx, []*events.Event{e}); err != nil {
				return false, err
			}
			t.record(ctx, []*events.Event{e})
		}
		if err := t.advance(ctx, e.Seq); err != nil {
			return false, err
		}
	}
	return len(evs) == batchSize, nil
}

// stepConcourse waits out a burst, then sends one check request for every
// matching change that arrived meanwhile: Concourse only needs to know
// "look again", not what changed. A burst ends after Coalesce without a
// new matching change, or CoalesceMax after its first one, whichever comes
// first, so a pipeline's chain of puts becomes one check, yet a steady
// stream still gets one at least every CoalesceMax.
func (t *target) stepConcourse(ctx context.Context, evs []events.Event) (bool, error) {
	if !slices.ContainsFunc(evs, func(e events.Event) bool { return t.matches(&e) }) {
		return len(evs) == batchSize, t.advance(ctx, evs[len(evs)-1].Seq)
	}
	first := time.Now()
	seen := evs[len(evs)-1].Seq
	quietFor, maxHold := t.d.opt.Coalesce, t.d.opt.CoalesceMax
	if c := t.cfg.Coalesce.D(); c > 0 {
		quietFor, maxHold = c, max(maxHold, 4*c)
	}
	for {
		wait := min(quietFor, maxHold-time.Since(first))
		if !sleep(ctx, wait) {
			return false, ctx.Err()
		}
		newer, err := t.d.store.After(ctx, seen, 10000)
		if err != nil {
			return false, err
		}
		if len(newer) > 0 {
			seen = newer[len(newer)-1].Seq
		}
		quiet := !slices.ContainsFunc(newer, func(e events.Event) bool { return t.matches(&e) })
		if quiet || time.Since(first) >= maxHold {
			break
		}
	}
	evs, err := t.d.store.After(ctx, t.seq, 100000)
	if err != nil {
		return false, err
	}
	var batch []*events.Event
	for i := range evs {
		if evs[i].Seq <= seen && t.matches(&evs[i]) && !t.sent(ctx, &evs[i]) {
			batch = append(batch, &evs[i])
		}
	}
	if len(batch) > 0 {
		if err := t.deliver(ctx, batch); err != nil {
			return false, err
		}
		t.record(ctx, batch)
	}
	return false, t.advance(ctx, seen)
}

// slackBurst is the most events of one push that a Slack target gets one
// message each for; more become one summary message, so that one push
// adding 5,000 locks cannot queue 5,000 messages (at Slack's 1/s) ahead of
// the claims pushed after it.
const slackBurst = 5

// maxSummary bounds the events read for one summary message.
const maxSummary = 100000

// samePush reports whether two events came from one push: the deriver
// gives every event of a push the push's time and pusher.
func samePush(a, b *events.Event) bool {
	if !a.Time.Equal(b.Time) || (a.Pusher == nil) != (b.Pusher == nil) {
		return false
	}
	return a.Pusher == nil || *a.Pusher == *b.Pusher
}

// stepSlack delivers evs push by push: a push with up to slackBurst
// matching events as one message each, a bigger one as one summary.
func (t *target) stepSlack(ctx context.Context, evs []events.Event) (bool, error) {
	for i := 0; i < len(evs); {
		j := i + 1
		for j < len(evs) && samePush(&evs[i], &evs[j]) {
			j++
		}
		run := evs[i:j:j]
		extended := false
		if j == len(evs) && len(evs) == batchSize {
			// The push may go on past this batch: read the rest of it.
			more, err := t.d.store.After(ctx, evs[j-1].Seq, maxSummary)
			if err != nil {
				return false, err
			}
			for k := 0; k < len(more) && samePush(&evs[i], &more[k]); k++ {
				run, extended = append(run, more[k]), true
			}
		}
		var match []*events.Event
		for k := range run {
			if t.matches(&run[k]) {
				match = append(match, &run[k])
			}
		}
		if len(match) > slackBurst {
			if err := t.deliver(ctx, match); err != nil {
				return false, err
			}
		} else {
			for _, e := range match {
				if err := t.deliver(ctx, []*events.Event{e}); err != nil {
					return false, err
				}
				if err := t.advance(ctx, e.Seq); err != nil {
					return false, err
				}
			}
		}
		if err := t.advance(ctx, run[len(run)-1].Seq); err != nil {
			return false, err
		}
		if extended {
			return true, nil
		}
		i = j
	}
	return len(evs) == batchSize, nil
}

// Wants reports whether the named webhook takes e (its filters), for a
// ledger's follower that must pass over what the webhook never takes.
func (d *Dispatcher) Wants(webhook string, e *events.Event) bool {
	for _, t := range d.current() {
		if t.cfg.Name == webhook {
			return t.matches(e)
		}
	}
	return false
}

// Webhooks are the configured webhooks' names.
func (d *Dispatcher) Webhooks() []string {
	ts := d.current()
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = t.cfg.Name
	}
	return names
}

// sent asks the shared ledger, if any, whether e went out already.
func (t *target) sent(ctx context.Context, e *events.Event) bool {
	return t.d.opt.Ledger != nil && t.d.opt.Ledger.Sent(ctx, t.cfg.Name, e.ID)
}

// record adds delivered events to the shared ledger, if any.
func (t *target) record(ctx context.Context, batch []*events.Event) {
	if t.d.opt.Ledger == nil {
		return
	}
	ids := make([]string, len(batch))
	for i, e := range batch {
		ids[i] = e.ID
	}
	t.d.opt.Ledger.Add(ctx, t.cfg.Name, ids)
}

func (t *target) advance(ctx context.Context, seq int64) error {
	if seq <= t.seq {
		return nil
	}
	if err := t.d.store.SetWebhookSeq(ctx, t.cfg.Name, seq); err != nil {
		return err
	}
	t.seq = seq
	return nil
}

// deliver sends one request (one event, or one concourse batch) until it
// succeeds, the target answers 410 (disabled), or GiveUpAfter passes (the
// batch is skipped and logged). It returns an error only to stop the target.
func (t *target) deliver(ctx context.Context, batch []*events.Event) error {
	ids := make([]string, len(batch))
	for i, e := range batch {
		ids[i] = e.ID
	}
	// A summary or a Concourse batch can stand for thousands of events:
	// the log names the first few and counts them all.
	logged := ids[:min(len(ids), 10)]
	first := time.Now()
	for attempt := 1; ; attempt++ {
		if t.cfg.Format == "slack" {
			if !t.d.slackWait(ctx, t.cfg.URL) {
				return ctx.Err()
			}
		}
		start := time.Now()
		status, wait, err := t.send(ctx, batch)
		if ctx.Err() != nil {
			// Stopping: this attempt does not count, and the cursor
			// stays, so the next start sends the event again.
			return ctx.Err()
		}
		d := events.Delivery{Webhook: t.cfg.Name, Time: start, Events: ids, Attempt: attempt, Status: status, Duration: time.Since(start)}
		if err != nil {
			d.Error = err.Error()
		}
		if t.d.opt.OnAttempt != nil {
			t.d.opt.OnAttempt(t.cfg.Name, err == nil)
		}
		if lerr := t.d.store.LogDelivery(ctx, d); lerr != nil {
			t.logger().Error().Err(lerr).Msg("recording delivery")
		}
		lg := t.logger()
		if err == nil {
			lg.Debug().Strs("events", logged).Int("count", len(ids)).Int("status", status).Int("attempt", attempt).Dur("duration", d.Duration).Msg("delivered")
			return nil
		}
		if status == http.StatusGone {
			why := fmt.Sprintf("410 Gone from %s at %s", t.cfg.Name, start.UTC().Format(time.RFC3339))
			lg.Error().Int("status", status).Msg("webhook target answered 410 Gone: disabled until re-enabled")
			if derr := t.d.store.DisableWebhook(ctx, t.cfg.Name, why); derr != nil {
				lg.Error().Err(derr).Msg("disabling webhook")
			}
			return errDisabled
		}
		if attempt == 1 {
			// The bound counts from the first failure ever, across
			// restarts, not from this process's first try.
			if since, ferr := t.d.store.FailingSince(ctx, t.cfg.Name, batch[0].Seq, start); ferr == nil {
				first = since
			}
		}
		delay := backoff(t.d.opt.Backoff, t.d.opt.MaxBackoff, attempt)
		if wait > 0 {
			// The receiver said when; it knows its limits better than
			// our backoff, within the same ceiling.
			delay = min(wait, max(t.d.opt.MaxBackoff, time.Hour))
		}
		if time.Since(first)+delay > t.d.opt.GiveUpAfter {
			lg.Error().Strs("events", logged).Int("count", len(ids)).Int("attempts", attempt).Err(err).Dur("since", time.Since(first)).
				Msg("giving up on delivery; moving on")
			gave := events.Delivery{Webhook: t.cfg.Name, Time: time.Now(), Events: ids, Attempt: attempt,
				Error: fmt.Sprintf("gave up after %d attempts over %s", attempt, Human(time.Since(first)))}
			t.d.store.LogDelivery(ctx, gave)
			return nil
		}
		lg.Warn().Strs("events", logged).Int("count", len(ids)).Int("status", status).Int("attempt", attempt).Err(err).Dur("retry_in", delay).Msg("delivery failed")
		if !sleep(ctx, delay) {
			return ctx.Err()
		}
	}
}

// backoff is base·2^(attempt-1), capped, with "equal jitter" (half fixed,
// half random) so many failing targets do not retry in lockstep.
func backoff(base, ceiling time.Duration, attempt int) time.Duration {
	d := base
	for i := 1; i < attempt && d < ceiling; i++ {
		d *= 2
	}
	d = min(d, ceiling)
	return d/2 + rand.N(d/2+1)
}

// slackWait holds a Slack send until the URL's 1 message/second allows it.
func (d *Dispatcher) slackWait(ctx context.Context, url string) bool {
	d.slackMu.Lock()
	now := time.Now()
	at := d.slackNext[url]
	if at.Before(now) {
		at = now
	}
	d.slackNext[url] = at.Add(d.opt.SlackInterval)
	d.slackMu.Unlock()
	return sleep(ctx, time.Until(at))
}

// send makes one HTTP request. It returns the status, a Retry-After the
// receiver asked for, and an error unless the receiver answered 2xx.
func (t *target) send(ctx context.Context, batch []*events.Event) (int, time.Duration, error) {
	var body []byte
	var err error
	hdr := http.Header{}
	switch t.cfg.Format {
	case "slack":
		body, err = SlackBody(batch...)
		hdr.Set("Content-Type", "application/json")
	case "concourse":
		// A bare POST: the URL (with its webhook_token) is all Concourse needs.
	default:
		e := batch[0]
		body, err = JSONBody(e)
		hdr.Set("Content-Type", "application/json")
		ts := time.Now()
		hdr.Set("webhook-id", e.ID)
		hdr.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
		if t.cfg.Signer != nil && err == nil {
			// Built from the secret when the config loaded.
			var sig string
			sig, err = t.cfg.Signer.Sign(e.ID, ts, body)
			hdr.Set("webhook-signature", sig)
		}
	}
	if err != nil {
		return 0, 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return 0, 0, err
	}
	req.Header = hdr
	req.Header.Set("User-Agent", "poolgate-webhook")
	resp, err := t.d.client.Do(req)
	if err != nil {
		// Without the URL: it may hold a token (a Concourse webhook's
		// always does), and this error goes to logs and the API.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, 0, err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp.StatusCode, 0, nil
	}
	wait := time.Duration(0)
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		wait = retryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	return resp.StatusCode, wait, fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(msg))
}

// Status is a webhook with its cursor and recent deliveries (the API's
// /webhooks).
type Status struct {
	Name   string `json:"name"`
	Format string `json:"format"`
	URL    string `json:"-"` // may hold a token: redact before showing
	Cursor int64  `json:"cursor"`
	// Pending counts the events after the cursor that this target will
	// send (its filters applied), up to 10,000.
	Pending    int64             `json:"pending"`
	Disabled   string            `json:"disabled,omitempty"`
	LastOK     *time.Time        `json:"last_ok,omitempty"`
	LastError  string            `json:"last_error,omitempty"` // of the latest attempt, if it failed
	Deliveries []events.Delivery `json:"deliveries"`
}

// Targets reports every configured webhook's state, with its most recent
// delivery attempts (at most recent, newest first).
func Targets(ctx context.Context, cfg *config.Config, st *events.Store, recent int) ([]Status, error) {
	var out []Status
	for _, w := range cfg.Webhooks {
		ws, err := st.Webhook(ctx, w.Name)
		if err != nil {
			return nil, err
		}
		ds, err := st.Deliveries(ctx, w.Name, events.DeliveryLogSize)
		if err != nil {
			return nil, err
		}
		after, err := st.After(ctx, ws.Seq, 10000)
		if err != nil {
			return nil, err
		}
		t := &target{cfg: w}
		s := Status{Name: w.Name, Format: w.Format, URL: w.URL, Cursor: ws.Seq, Disabled: ws.Disabled, Deliveries: ds}
		for i := range after {
			if t.matches(&after[i]) {
				s.Pending++
			}
		}
		for i, d := range ds {
			if d.Error == "" && s.LastOK == nil {
				at := d.Time
				s.LastOK = &at
			}
			if i == 0 && d.Error != "" {
				s.LastError = d.Error
			}
		}
		if recent >= 0 && len(s.Deliveries) > recent {
			s.Deliveries = s.Deliveries[:recent]
		}
		out = append(out, s)
	}
	return out, nil
}
