package daemon

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/internal/gittest"
)

func gitT(t *testing.T, dir string, stdin string, args ...string) string {
	t.Helper()
	return gittest.Run(t, dir, []byte(stdin), args...)
}

// A repo is maintained when it has loose objects and no packs, or packs
// without a bitmap or commit-graph; after the maintenance steps it is not,
// and the steps keep an object that no ref reaches (a push's pack whose
// ref has not moved yet, see maintenanceSteps).
func TestNeedsMaintenance(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "r.git")
	gitT(t, filepath.Dir(dir), "", "init", "-q", "--bare", dir)
	if needsMaintenance(dir) {
		t.Fatal("an empty repo needs no maintenance")
	}
	blob := gitT(t, dir, "x\n", "hash-object", "-w", "--stdin")
	tree := gitT(t, dir, "100644 blob "+blob+"\tf\n", "mktree")
	commit := gitT(t, dir, "", "commit-tree", tree, "-m", "m")
	gitT(t, dir, "", "update-ref", "refs/heads/master", commit)
	if !needsMaintenance(dir) {
		t.Fatal("loose objects and no pack: maintenance needed")
	}
	// An unreachable object that sits in a pack, as a pushed pack does
	// before its ref moves.
	orphan := gitT(t, dir, "orphan\n", "hash-object", "-w", "--stdin")
	gitT(t, dir, orphan+"\n", "pack-objects", "-q", "objects/pack/pack")
	gitT(t, dir, "", "prune-packed")
	gitT(t, dir, "", "repack", "-q", "-d") // packs the loose reachable ones, no bitmap
	if !needsMaintenance(dir) {
		t.Fatal("packs without a bitmap: maintenance needed")
	}
	s := &Server{cfg: &config.Config{DataDir: t.TempDir()}}
	steps := maintenanceSteps(context.Background(), s, dir)
	if !slices.Contains(steps[1], "-F") {
		t.Fatalf("first maintenance must rewrite the packs uncompressed: %v", steps)
	}
	for _, args := range steps {
		gitT(t, dir, "", args...)
	}
	if steps := maintenanceSteps(context.Background(), s, dir); slices.Contains(steps[1], "-F") {
		t.Fatalf("later maintenance must reuse the packs: %v", steps)
	}
	if needsMaintenance(dir) {
		t.Fatal("after maintenance no further maintenance is needed")
	}
	if got := gitT(t, dir, "", "cat-file", "-t", orphan); got != "blob" {
		t.Fatalf("unreachable packed object lost by maintenance: %s", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "objects", "info", "commit-graph")); err != nil {
		t.Fatal("no commit-graph after maintenance")
	}
}
