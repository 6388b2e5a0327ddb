package operator

import (
	"testing"
	"time"

	"github.com/poolgate/poolgate/config"
)

func TestAutoReleaseChecksATenthOfTheShortestReleaseAfter(t *testing.T) {
	cfg := func(ds ...time.Duration) *config.Config {
		r := config.Repo{Name: "locks"}
		for _, d := range ds {
			r.Pools = append(r.Pools, config.Pool{Name: "p" + d.String(), ReleaseAfter: config.Duration(d)})
		}
		return &config.Config{Repos: []config.Repo{r}}
	}
	for _, c := range []struct {
		pools []time.Duration
		want  time.Duration
	}{
		{nil, 30 * time.Second}, // none set: only watching for a reload that sets one
		{[]time.Duration{0}, 30 * time.Second},
		{[]time.Duration{6 * time.Hour}, 30 * time.Second},
		{[]time.Duration{6 * time.Hour, 100 * time.Second}, 10 * time.Second},
		{[]time.Duration{2 * time.Second}, time.Second},
	} {
		if got := interval(cfg(c.pools...)); got != c.want {
			t.Errorf("release_after %v: every %v, want %v", c.pools, got, c.want)
		}
	}
}
