package hooks_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/poolgate/poolgate/hooks"
)

// TestHookProgramWithoutDaemonJudgesInProcess: the small hook program
// installed by Install, run by plain git with no daemon (so no ticket),
// becomes `poolgate hook pre-receive` beside it and judges in-process.
func TestHookProgramWithoutDaemonJudgesInProcess(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, hooks.HookProgram)
	if out, err := exec.Command("go", "build", "-o", small, "../cmd/poolgate-hook").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	if err := os.Symlink(binary, filepath.Join(dir, "poolgate")); err != nil {
		t.Fatal(err)
	}
	r := newPoolRepo(t, defaultConfig)
	hookDir := filepath.Join(filepath.Dir(r.bare), "hooks")
	if err := hooks.Install(hookDir, filepath.Join(dir, "poolgate")); err != nil {
		t.Fatal(err)
	}
	if link, err := os.Readlink(filepath.Join(hookDir, "pre-receive")); err != nil || link != small {
		t.Fatalf("hook links to %q (%v), want %s", link, err, small)
	}
	r.write("staging/claimed/ghost", "")
	r.commit("claiming: ghost")
	r.refused("claim-missing", "write", "lock ghost")

	r.resetToServer()
	r.git("mv", "staging/unclaimed/a", "staging/claimed/a")
	r.commit("claiming: a")
	r.lands("write")
}
