package daemon_test

import (
	"testing"

	"github.com/poolgate/poolgate/config"
)

// The shipped example config must load as is.
func TestSystemdExampleConfigLoads(t *testing.T) {
	cfg, err := config.Load("../systemd/poolgate.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "/var/lib/poolgate" || len(cfg.Repos) != 1 || len(cfg.Repos[0].Pools) != 2 {
		t.Fatalf("example config read as %+v", cfg)
	}
}
