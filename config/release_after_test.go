package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/config"
)

func TestReleaseAfterIsOptInAndValidated(t *testing.T) {
	cfg, err := config.Parse("/etc/p.yaml", []byte(yamlLines(
		"repos:",
		"  - name: locks",
		"    pools:",
		"      - name: a",
		"        release_after: 6h",
		"      - name: b",
	)))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Repo("locks").Pool("a").ReleaseAfter.D(); got != 6*time.Hour {
		t.Fatalf("release_after %v", got)
	}
	if got := cfg.Repo("locks").Pool("b").ReleaseAfter; got != 0 {
		t.Fatalf("a pool without release_after got %v: it must never be the default", got)
	}
	for _, tc := range []struct{ value, want string }{
		{"500ms", "release_after 500ms is under the minimum 1s"},
		{"-1h", "bad duration"},
		{"soon", "bad duration"},
	} {
		_, err := config.Parse("/etc/p.yaml", []byte(yamlLines(
			"repos:",
			"  - name: locks",
			"    pools:",
			"      - name: a",
			"        release_after: "+tc.value,
		)))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "/etc/p.yaml:") {
			t.Errorf("release_after %s: %v, want file:line and %q", tc.value, err, tc.want)
		}
	}
}
