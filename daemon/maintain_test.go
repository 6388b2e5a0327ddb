package daemon

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/poolgate/poolgate/config"
	"github.com/rs/zerolog"
)

func TestRepackWritesBitmapAndCommitGraph(t *testing.T) {
	dir := t.TempDir()
	cfg, err := config.Parse(filepath.Join(dir, "c.yaml"), []byte("data_dir: data\nrepos:\n  - name: locks\n    pools:\n      - name: p\n        locks: [a]\n"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, zerolog.Nop(), "/bin/false")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	s.maint.repack(ctx, "locks")
	repo := cfg.RepoDir("locks")
	if b, _ := filepath.Glob(filepath.Join(repo, "objects", "pack", "*.bitmap")); len(b) != 1 {
		t.Errorf("bitmaps: %v", b)
	}
	if _, err := os.Stat(filepath.Join(repo, "objects", "info", "commit-graph")); err != nil {
		t.Errorf("commit-graph: %v", err)
	}
}
