// Package metrics is poolgate's Prometheus vocabulary: every metric name
// and label in one place, so dashboards have one file to read.
package metrics

import (
	"net/http"
	"slices"

	"github.com/poolgate/poolgate/pushlog"
	"github.com/poolgate/poolgate/validator"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds the collectors. A nil *Metrics is valid and records nothing,
// so packages and tests that do not care need no setup.
type Metrics struct {
	Registry *prometheus.Registry

	pushes        *prometheus.CounterVec
	rejections    *prometheus.CounterVec
	refused       *prometheus.CounterVec
	sessions      prometheus.Gauge
	sessionsTotal prometheus.Counter
	gitDuration   *prometheus.HistogramVec
	holdDuration  *prometheus.HistogramVec
	deliveries    *prometheus.CounterVec
	deliveryFails *prometheus.CounterVec
	diskFull      *prometheus.CounterVec
}

// New registers every collector on a fresh registry, with Go runtime and
// process metrics.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "poolgate_pushes_total", Help: "Pushes judged, by repo and result (accepted, rejected).",
		}, []string{"repo", "result"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "poolgate_push_rejections_total", Help: "Refused pushes by repo and each rule they broke (a push breaking two rules counts under both).",
		}, []string{"repo", "rule"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "poolgate_refused_pushes_total", Help: "Refused pushes, once each, by repo and kind (transient: the build waits; permanent: it fails).",
		}, []string{"repo", "kind"}),
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "poolgate_ssh_sessions", Help: "SSH sessions open now.",
		}),
		sessionsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "poolgate_ssh_sessions_total", Help: "SSH sessions opened.",
		}),
		gitDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "poolgate_git_command_duration_seconds", Help: "Duration of git commands served, by service.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"service"}),
		holdDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "poolgate_claim_hold_seconds", Help: "How long claims were held, observed at release or removal.",
			Buckets: []float64{10, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 259200},
		}, []string{"repo", "pool"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "poolgate_webhook_deliveries_total", Help: "Webhook delivery attempts, by target and result (ok, failed).",
		}, []string{"target", "result"}),
		deliveryFails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "poolgate_webhook_failures_total", Help: "Failed webhook delivery attempts, by target.",
		}, []string{"target"}),
	}
	m.Registry.MustRegister(m.pushes, m.rejections, m.refused, m.sessions, m.sessionsTotal, m.gitDuration,
		m.holdDuration, m.deliveries, m.deliveryFails,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.diskFull = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "poolgate_disk_full_total", Help: "Pushes that could not be stored because the disk was full, by repo.",
	}, []string{"repo"})
	m.Registry.MustRegister(m.diskFull)
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}

// Push records a judged push and, when refused, the rules it broke.
func (m *Metrics) Push(repo string, accepted bool, rules []string) {
	if m == nil {
		return
	}
	if accepted {
		m.pushes.WithLabelValues(repo, pushlog.VerdictAccepted).Inc()
		return
	}
	m.pushes.WithLabelValues(repo, pushlog.VerdictRejected).Inc()
	kind := validator.Transient
	var seen []string
	for _, r := range rules {
		if validator.KindOf(validator.Rule(r)) != validator.Transient {
			kind = validator.Permanent
		}
		if !slices.Contains(seen, r) {
			seen = append(seen, r)
			m.rejections.WithLabelValues(repo, r).Inc()
		}
	}
	m.refused.WithLabelValues(repo, string(kind)).Inc()
}

// Known creates every labelled counter series at 0 for the configured
// repos and webhook targets, so a rate() or an alert sees the series from
// the start rather than only after its first increment.
func (m *Metrics) Known(repos []string, pools [][2]string, targets []string) {
	if m == nil {
		return
	}
	for _, r := range repos {
		m.pushes.WithLabelValues(r, pushlog.VerdictAccepted)
		m.pushes.WithLabelValues(r, pushlog.VerdictRejected)
		for _, rule := range validator.Rules {
			m.rejections.WithLabelValues(r, string(rule))
		}
		m.refused.WithLabelValues(r, string(validator.Transient))
		m.refused.WithLabelValues(r, string(validator.Permanent))
	}
	for _, p := range pools {
		m.holdDuration.WithLabelValues(p[0], p[1])
	}
	for _, t := range targets {
		m.deliveries.WithLabelValues(t, "ok")
		m.deliveries.WithLabelValues(t, "failed")
		m.deliveryFails.WithLabelValues(t)
	}
	for _, svc := range []string{"git-upload-pack", "git-receive-pack"} {
		m.gitDuration.WithLabelValues(svc)
	}
}

// SessionOpened and SessionClosed track SSH sessions.
func (m *Metrics) SessionOpened() {
	if m != nil {
		m.sessions.Inc()
		m.sessionsTotal.Inc()
	}
}

func (m *Metrics) SessionClosed() {
	if m != nil {
		m.sessions.Dec()
	}
}

// GitCommand records one served git command.
func (m *Metrics) GitCommand(service string, seconds float64) {
	if m != nil {
		m.gitDuration.WithLabelValues(service).Observe(seconds)
	}
}

// Held records a claim's hold duration at its release or removal.
func (m *Metrics) Held(repo, pool string, seconds float64) {
	if m != nil {
		m.holdDuration.WithLabelValues(repo, pool).Observe(seconds)
	}
}

// Delivery records one webhook attempt.
func (m *Metrics) Delivery(target string, ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.deliveries.WithLabelValues(target, "ok").Inc()
		return
	}
	m.deliveries.WithLabelValues(target, "failed").Inc()
	m.deliveryFails.WithLabelValues(target).Inc()
}

// PoolGauge reports a pool's state at scrape time.
type PoolGauge struct {
	Repo, Pool     string
	Claimed, Total int
	// Waiting counts builds refused over max_claimed that still retry.
	Waiting int
	// Stale counts claims held longer than the pool's stale_after.
	Stale int
	// Ages is each lock's claim age in seconds; 0 for a free lock, so
	// every lock's series exists whether or not it is claimed.
	Ages map[string]float64
}

// PoolSource lists the pools' current state.
type PoolSource func() []PoolGauge

type poolCollector struct {
	src                                  PoolSource
	claimed, total, waiting, stale, ages *prometheus.Desc
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.claimed
	ch <- c.total
	ch <- c.waiting
	ch <- c.stale
	ch <- c.ages
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c.src() {
		ch <- prometheus.MustNewConstMetric(c.claimed, prometheus.GaugeValue, float64(p.Claimed), p.Repo, p.Pool)
		ch <- prometheus.MustNewConstMetric(c.total, prometheus.GaugeValue, float64(p.Total), p.Repo, p.Pool)
		ch <- prometheus.MustNewConstMetric(c.waiting, prometheus.GaugeValue, float64(p.Waiting), p.Repo, p.Pool)
		ch <- prometheus.MustNewConstMetric(c.stale, prometheus.GaugeValue, float64(p.Stale), p.Repo, p.Pool)
		for lock, age := range p.Ages {
			ch <- prometheus.MustNewConstMetric(c.ages, prometheus.GaugeValue, age, p.Repo, p.Pool, lock)
		}
	}
}

// WatchPools registers gauges computed from src at each scrape: the pool
// state lives in git, so it is read, not mirrored into counters.
func (m *Metrics) WatchPools(src PoolSource) {
	if m == nil {
		return
	}
	rp := []string{"repo", "pool"}
	m.Registry.MustRegister(&poolCollector{
		src:     src,
		claimed: prometheus.NewDesc("poolgate_locks_claimed", "Locks claimed now, per pool.", rp, nil),
		total:   prometheus.NewDesc("poolgate_locks", "Locks in the pool now, claimed or not.", rp, nil),
		waiting: prometheus.NewDesc("poolgate_waiting_builds", "Builds refused over max_claimed that still retry, per pool.", rp, nil),
		stale:   prometheus.NewDesc("poolgate_stale_claims", "Claims held longer than the pool's stale_after, per pool (0 without stale_after).", rp, nil),
		ages: prometheus.NewDesc("poolgate_claim_age_seconds", "How long each lock's current claim has been held; 0 while the lock is free.",
			[]string{"repo", "pool", "lock"}, nil),
	})
}

// MirrorGauge is a watched (watch-mode) repo's fetch health.
type MirrorGauge struct {
	Repo string
	// LastSync is the Unix time of the last successful fetch; 0 before it.
	LastSync float64
	// Failures counts failed fetches since start.
	Failures float64
}

// MirrorSource lists the watched repos at scrape time.
type MirrorSource func() []MirrorGauge

type mirrorCollector struct {
	src            MirrorSource
	last, failures *prometheus.Desc
}

func (c *mirrorCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.last; ch <- c.failures }

func (c *mirrorCollector) Collect(ch chan<- prometheus.Metric) {
	for _, g := range c.src() {
		ch <- prometheus.MustNewConstMetric(c.last, prometheus.GaugeValue, g.LastSync, g.Repo)
		ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, g.Failures, g.Repo)
	}
}

// WatchMirrors registers watch-mode fetch health, read at each scrape.
func (m *Metrics) WatchMirrors(src MirrorSource) {
	if m == nil {
		return
	}
	m.Registry.MustRegister(&mirrorCollector{
		src: src,
		last: prometheus.NewDesc("poolgate_upstream_last_sync_timestamp_seconds",
			"Unix time of a watched repo's last successful fetch from its upstream; 0 before the first.", []string{"repo"}, nil),
		failures: prometheus.NewDesc("poolgate_upstream_fetch_failures_total",
			"Failed fetches of a watched repo from its upstream since start.", []string{"repo"}, nil),
	})
}

// DiskFull records a push lost to a full disk.
func (m *Metrics) DiskFull(repo string) {
	if m != nil {
		m.diskFull.WithLabelValues(repo).Inc()
	}
}
