package metrics_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"go.yaml.in/yaml/v3"

	"github.com/poolgate/poolgate/metrics"
)

// The shipped alert rules and dashboard live in docs/.
var docs = filepath.Join("..", "docs")

// exported is every metric name a poolgate with one repo, pool, lock,
// webhook target and watched repo exports, histogram series included.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	m := metrics.New()
	m.Known([]string{"locks"}, [][2]string{{"locks", "staging"}}, []string{"ops"})
	m.WatchPools(func() []metrics.PoolGauge {
		return []metrics.PoolGauge{{Repo: "locks", Pool: "staging", Total: 1, Ages: map[string]float64{"env-a": 0}}}
	})
	m.WatchMirrors(func() []metrics.MirrorGauge { return []metrics.MirrorGauge{{Repo: "mirror"}} })
	m.SessionOpened()
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, f := range fams {
		out[f.GetName()] = true
		if f.GetType() == dto.MetricType_HISTOGRAM {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				out[f.GetName()+s] = true
			}
		}
	}
	return out
}

var poolgateName = regexp.MustCompile(`\bpoolgate_[a-zA-Z0-9_]+`)

// checkNames fails for an expression that names no poolgate metric or one
// that poolgate does not export (a typo, or a metric renamed since).
func checkNames(t *testing.T, where, expr string, names map[string]bool, needOne bool) {
	t.Helper()
	found := poolgateName.FindAllString(expr, -1)
	if needOne && len(found) == 0 {
		t.Errorf("%s: %q names no poolgate metric", where, expr)
	}
	for _, n := range found {
		if !names[n] {
			t.Errorf("%s: %q names %s, which poolgate does not export", where, expr, n)
		}
	}
}

func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err == nil {
		return p
	}
	if os.Getenv("POOLGATE_NO_PROMTOOL") == "1" {
		t.Skip("no promtool, and POOLGATE_NO_PROMTOOL=1")
	}
	t.Fatal("promtool not found: install Debian's prometheus package (bash .ci/run does) or set POOLGATE_NO_PROMTOOL=1")
	return ""
}

func TestAlertRulesPassPromtoolCheckAndFireOnTheirTestSeries(t *testing.T) {
	bin := promtool(t)
	for _, args := range [][]string{
		{"check", "rules", "prometheus-alerts.yaml"},
		{"test", "rules", "prometheus-alerts.test.yaml"},
	} {
		cmd := exec.Command(bin, args...)
		cmd.Dir = docs
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

func TestAlertRulesAndTheirTestSeriesNameOnlyExportedMetrics(t *testing.T) {
	names := exported(t)
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string
				Expr  string
			}
		}
	}
	readYAML(t, "prometheus-alerts.yaml", &rules)
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			// PoolgateDown and PoolgateDiskFilling watch poolgate from
			// outside (up, node_exporter).
			checkNames(t, r.Alert, r.Expr, names, r.Alert != "PoolgateDown" && r.Alert != "PoolgateDiskFilling")
		}
	}
	if n < 5 {
		t.Fatalf("only %d alert rules read", n)
	}
	var tests struct {
		Tests []struct {
			InputSeries []struct{ Series string } `yaml:"input_series"`
		}
	}
	readYAML(t, "prometheus-alerts.test.yaml", &tests)
	for _, tc := range tests.Tests {
		for _, s := range tc.InputSeries {
			checkNames(t, "test series", s.Series, names, false)
		}
	}
}

func readYAML(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(docs, name))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

func TestDashboardPanelsQueryMetricsWeExport(t *testing.T) {
	names := exported(t)
	b, err := os.ReadFile(filepath.Join(docs, "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title  string
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	if len(d.Panels) == 0 {
		t.Fatal("no panels")
	}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			checkNames(t, "panel "+p.Title, q.Expr, names, true)
		}
	}
	// Every metric an operator alerts on has a panel.
	all := string(b)
	for _, want := range []string{"poolgate_claim_age_seconds", "poolgate_waiting_builds", "poolgate_stale_claims",
		"poolgate_upstream_last_sync_timestamp_seconds", "poolgate_webhook_failures_total", "poolgate_refused_pushes_total"} {
		if !strings.Contains(all, want) {
			t.Errorf("no panel shows %s", want)
		}
	}
}
