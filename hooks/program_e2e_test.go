package hooks_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/poolgate/poolgate/hooks"
	"github.com/poolgate/poolgate/pushlog"
)

// TestHookProgramWithoutDaemonJudgesInProcess: the small hook program
// installed by Install, run by plain git with no daemon (so no ticket),
// becomes `poolgate hook pre-receive` beside it and judges in-process;
// as post-receive (the same program under that name) it becomes `poolgate
// hook post-receive` and records the push that landed.
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
	for _, name := range []string{"pre-receive", "post-receive"} {
		if link, err := os.Readlink(filepath.Join(hookDir, name)); err != nil || link != small {
			t.Fatalf("%s links to %q (%v), want %s", name, link, err, small)
		}
	}
	r.write("staging/claimed/ghost", "")
	r.commit("claiming: ghost")
	r.refused("claim-missing", "write", "lock ghost")

	r.resetToServer()
	r.git("mv", "staging/unclaimed/a", "staging/claimed/a")
	r.commit("claiming: a")
	r.lands("write")
	recs, err := os.ReadFile(pushlog.At(r.bare).Path(pushlog.Pushes))
	lines := strings.Split(strings.TrimSpace(string(recs)), "\n")
	if last := lines[len(lines)-1]; err != nil || !strings.Contains(last, `"new":"`+r.tip()+`"`) || !strings.Contains(last, `"role":"write"`) {
		t.Fatalf("post-receive's record of the landed push (%v):\n%s", err, recs)
	}
}
