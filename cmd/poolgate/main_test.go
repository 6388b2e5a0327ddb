package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func runCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestEveryCommandHasHelp(t *testing.T) {
	for name := range commands {
		code, out, _ := runCLI(name, "--help")
		if code != exitOK || !strings.Contains(out, "Usage: poolgate "+name) {
			t.Errorf("%s --help: exit %d, output %q", name, code, out)
		}
	}
}

func TestUsageErrorsExitTwoWithOneLine(t *testing.T) {
	for _, args := range [][]string{{"nope"}, {"check", "--bogus"}, {"hook", "update"}, {}} {
		code, _, errOut := runCLI(args...)
		if code != exitUsage {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
		if len(args) > 0 && strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("%v: error is not one line: %q", args, errOut)
		}
	}
}

func gitIn(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=a", "GIT_AUTHOR_EMAIL=a@x", "GIT_COMMITTER_NAME=a", "GIT_COMMITTER_EMAIL=a@x", "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
}

// newPoolHistory is a work tree whose one commit holds pool p with lock a.
func newPoolHistory(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	gitIn(t, dir, "init", "-q", "-b", "master")
	for _, f := range []string{"p/claimed/.gitkeep", "p/unclaimed/a"} {
		os.MkdirAll(filepath.Join(dir, filepath.Dir(f)), 0o755)
		os.WriteFile(filepath.Join(dir, f), nil, 0o644)
	}
	gitIn(t, dir, "add", "-A")
	gitIn(t, dir, "commit", "-q", "-m", "init")
	return dir
}

func TestCheckExitCodes(t *testing.T) {
	dir := newPoolHistory(t)

	if code, out, errOut := runCLI("check", "--repo", dir); code != exitOK || !strings.Contains(out, "ok: 1 commit") {
		t.Fatalf("clean history: exit %d\n%s%s", code, out, errOut)
	}

	os.WriteFile(filepath.Join(dir, "p/claimed/ghost"), nil, 0o644)
	gitIn(t, dir, "add", "-A")
	gitIn(t, dir, "commit", "-q", "-m", "claiming: ghost")
	code, out, _ := runCLI("check", "--repo", dir)
	if code != exitFailed || !strings.Contains(out, "[claim-missing]") {
		t.Fatalf("history with a violation: exit %d\n%s", code, out)
	}
	// A range that excludes the bad commit is clean.
	if code, _, _ := runCLI("check", "--repo", dir, "HEAD~1"); code != exitOK {
		t.Fatalf("range HEAD~1: exit %d", code)
	}

	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("repos:\n  - name: ../etc\n"), 0o644)
	code, _, errOut := runCLI("check", "--repo", dir, "--config", bad)
	if code != exitUsage || !strings.Contains(errOut, "bad.yaml:2:") {
		t.Fatalf("bad config: exit %d, %q", code, errOut)
	}
	if code, _, _ := runCLI("check", "--repo", filepath.Join(dir, "missing")); code != exitFailed {
		t.Fatalf("missing repo: exit %d, want 1", code)
	}
}

// TestCheckReportsMergeThatSmuggledAClaimOfAMissingLock: a history built
// with plain git (no hook) in which a merge's second parent claims a lock
// that does not exist; judged by its first-parent chain alone, it was clean.
func TestCheckReportsMergeThatSmuggledAClaimOfAMissingLock(t *testing.T) {
	dir := newPoolHistory(t)
	gitIn(t, dir, "checkout", "-q", "-b", "side")
	os.WriteFile(filepath.Join(dir, "p/claimed/ghost"), nil, 0o644)
	gitIn(t, dir, "add", "-A")
	gitIn(t, dir, "commit", "-q", "-m", "claiming: ghost")
	gitIn(t, dir, "checkout", "-q", "master")
	gitIn(t, dir, "merge", "-q", "--no-ff", "--no-edit", "side")
	code, out, _ := runCLI("check", "--repo", dir)
	if code != exitFailed || !strings.Contains(out, "[claim-missing]") || !strings.Contains(out, "lock ghost") {
		t.Fatalf("history with a smuggling merge: exit %d\n%s", code, out)
	}
}

// TestCheckReportsATreeThatExpandsPastTheBound: 40 entries pointing at one
// tree of 40 entries, four levels: 2.6 million paths from a few KB.
func TestCheckReportsATreeThatExpandsPastTheBound(t *testing.T) {
	dir := t.TempDir()
	gitIn(t, dir, "init", "-q", "-b", "master")
	os.WriteFile(filepath.Join(dir, "README"), nil, 0o644)
	gitIn(t, dir, "add", "-A")
	gitIn(t, dir, "commit", "-q", "-m", "init")
	tree := gitOut(t, dir, "", "hash-object", "-w", "--stdin")
	mode, typ := "100644", "blob"
	for level := 0; level < 4; level++ {
		var b strings.Builder
		for i := 0; i < 40; i++ {
			b.WriteString(mode + " " + typ + " " + tree + "\tn" + strconv.Itoa(i) + "\n")
		}
		tree, mode, typ = gitOut(t, dir, b.String(), "mktree"), "040000", "tree"
	}
	root := gitOut(t, dir, "100644 blob "+gitOut(t, dir, "", "rev-parse", "HEAD:README")+"\tREADME\n040000 tree "+tree+"\tbomb\n", "mktree")
	gitIn(t, dir, "update-ref", "refs/heads/master", gitOut(t, dir, "", "commit-tree", root, "-p", "HEAD", "-m", "docs"))
	code, out, _ := runCLI("check", "--repo", dir)
	if code != exitFailed || !strings.Contains(out, "[too-large]") || !strings.Contains(out, "limits.max_tree_paths 100000") {
		t.Fatalf("history with an expanding tree: exit %d\n%s", code, out)
	}
}

func gitOut(t *testing.T, dir, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=a", "GIT_AUTHOR_EMAIL=a@x", "GIT_COMMITTER_NAME=a", "GIT_COMMITTER_EMAIL=a@x", "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %v: %v", args, err)
	}
	return strings.TrimSpace(string(out))
}
