package daemon

import (
	"context"
	"os"
	"path/filepath"
	"strings"
)

// EnvMaintenance, set to "off", stops the daemon's own repo maintenance
// (the start-up pass and the schedule). For benchmarks that measure a repo
// as it is, and for operators who maintain repos themselves.
const EnvMaintenance = "POOLGATE_MAINTENANCE"

func maintenanceOff() bool { return strings.EqualFold(os.Getenv(EnvMaintenance), "off") }

// maintenanceSteps are the git commands of one maintenance run of the repo
// in dir.
//
// repack -a -d -k: -k (--keep-unreachable) matters because the repack runs
// beside pushes, unlocked. A push of more than transfer.unpackLimit objects
// moves its pack into objects/pack before its ref moves; a plain -a -d that
// starts in between sees those objects as unreachable, leaves them out of
// the new pack and deletes the old one: the ref would then point at
// missing objects. With -k they are kept. Pool pushes are a handful of
// loose objects, which repack never deletes, but an admin's import is not.
// Pool repos have almost no garbage to keep: a refused push's objects never
// leave its quarantine.
//
// pack.compression 0: a pool repo is ~100,000s of commits of ~250 bytes
// that zlib barely shrinks, and a clone's cost is the client's index-pack
// inflating each of them; stored uncompressed (and deltified against each
// other) the pack is smaller and the client's clone CPU about a third
// lower (bench/RESULTS.md). The first run recompresses what is there (-F,
// seconds per 100,000 commits, once); later runs reuse it.
func maintenanceSteps(ctx context.Context, s *Server, dir string) [][]string {
	repack := []string{"repack", "-a", "-d", "-k", "-q", "--write-bitmap-index"}
	if v, _ := s.git(ctx, dir, nil, nil, "config", "--get", markerKey); v != "true" {
		repack = append(repack, "-F")
	}
	return [][]string{
		{"config", "pack.compression", "0"},
		repack,
		{"commit-graph", "write", "--reachable"},
		{"config", markerKey, "true"},
	}
}

// markerKey records that the repo's packs were rewritten uncompressed.
const markerKey = "poolgate.uncompressedPacks"

// maxLoose and maxPacks decide when a repo that took no push through this
// daemon (imported, restored, pushed to before an upgrade) is maintained
// anyway: git gc --auto's own idea of "too many", scaled down because pool
// objects are tiny and every clone walks them.
const (
	maxLoose = 512
	maxPacks = 8
)

// needsMaintenance reports whether a repo lacks what makes a clone cheap to
// serve: a reachability bitmap, a commit-graph, few loose objects and packs.
func needsMaintenance(dir string) bool {
	objs := filepath.Join(dir, "objects")
	packs, _ := filepath.Glob(filepath.Join(objs, "pack", "pack-*.pack"))
	bitmaps, _ := filepath.Glob(filepath.Join(objs, "pack", "pack-*.bitmap"))
	if len(packs) == 0 {
		// Nothing packed yet: maintain once there is something to pack.
		return hasLoose(objs)
	}
	if len(bitmaps) == 0 || len(packs) > maxPacks {
		return true
	}
	if _, err := os.Stat(filepath.Join(objs, "info", "commit-graph")); err != nil {
		if _, err := os.Stat(filepath.Join(objs, "info", "commit-graphs", "commit-graph-chain")); err != nil {
			return true
		}
	}
	return looseEstimate(objs) > maxLoose
}

// looseEstimate guesses the number of loose objects from one fan-out
// directory, as git gc --auto does.
func looseEstimate(objs string) int {
	ents, _ := os.ReadDir(filepath.Join(objs, "17"))
	n := 0
	for _, e := range ents {
		if len(e.Name()) == 38 || len(e.Name()) == 62 {
			n++
		}
	}
	return n * 256
}

func hasLoose(objs string) bool {
	dirs, _ := filepath.Glob(filepath.Join(objs, "[0-9a-f][0-9a-f]"))
	for _, d := range dirs {
		if ents, _ := os.ReadDir(d); len(ents) > 0 {
			return true
		}
	}
	return false
}

// startupPass maintains, at start and in the background, every served
// repo that needs it: a repo restored from backup or imported with a long
// history is cheap to clone from the first hour on, not after it.
func (m *maintainer) startupPass(ctx context.Context) {
	for _, r := range m.s.cfg.Repos {
		if ctx.Err() != nil {
			return
		}
		if needsMaintenance(m.s.cfg.RepoDir(r.Name)) {
			m.repack(ctx, r.Name)
		}
	}
}

// due adds to the dirty set every repo that needs maintenance by the
// numbers, pushed to through this daemon or not.
func (m *maintainer) due(dirty map[string]bool) map[string]bool {
	for _, r := range m.s.cfg.Repos {
		if !dirty[r.Name] && needsMaintenance(m.s.cfg.RepoDir(r.Name)) {
			dirty[r.Name] = true
		}
	}
	return dirty
}
