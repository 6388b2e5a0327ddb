// Package metrics is poolgate's Prometheus vocabulary: every metric name
// and label in one place, so dashboards have one file to read.
package metrics

import (
	"net/http"

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
			Name: "poolgate_push_rejections_total", Help: "Rule violations in refused pushes, by repo and rule.",
		}, []string{"repo", "rule"}),
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
	m.Registry.MustRegister(m.pushes, m.rejections, m.sessions, m.sessionsTotal, m.gitDuration,
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
		m.pushes.WithLabelValues(repo, "accepted").Inc()
		return
	}
	m.pushes.WithLabelValues(repo, "rejected").Inc()
	for _, r := range rules {
		m.rejections.WithLabelValues(repo, r).Inc()
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

// PoolGauge reports claimed and total locks per pool at scrape time.
type PoolGauge struct {
	Repo, Pool     string
	Claimed, Total int
}

// PoolSource lists the pools' current counts.
type PoolSource func() []PoolGauge

type poolCollector struct {
	src            PoolSource
	claimed, total *prometheus.Desc
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.claimed; ch <- c.total }

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c.src() {
		ch <- prometheus.MustNewConstMetric(c.claimed, prometheus.GaugeValue, float64(p.Claimed), p.Repo, p.Pool)
		ch <- prometheus.MustNewConstMetric(c.total, prometheus.GaugeValue, float64(p.Total), p.Repo, p.Pool)
	}
}

// WatchPools registers gauges computed from src at each scrape: the pool
// state lives in git, so it is read, not mirrored into counters.
func (m *Metrics) WatchPools(src PoolSource) {
	if m == nil {
		return
	}
	m.Registry.MustRegister(&poolCollector{
		src:     src,
		claimed: prometheus.NewDesc("poolgate_locks_claimed", "Locks claimed now, per pool.", []string{"repo", "pool"}, nil),
		total:   prometheus.NewDesc("poolgate_locks", "Locks in the pool now, claimed or not.", []string{"repo", "pool"}, nil),
	})
}

// DiskFull records a push lost to a full disk.
func (m *Metrics) DiskFull(repo string) {
	if m != nil {
		m.diskFull.WithLabelValues(repo).Inc()
	}
}
