package hooks_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAddClaimedNeedsItsMessageOrAnAdmin(t *testing.T) {
	r := newPoolRepo(t, defaultConfig)
	r.write("staging/claimed/new", "")
	r.commit("adding claimed: new")
	r.lands("write")

	r.write("staging/claimed/other", "")
	r.commit("put it straight into claimed")
	r.refused("claim-missing", "write", "lock other")
	r.lands("admin")
}

func TestAddingANameThatExistsInTheOtherDirectoryIsRefused(t *testing.T) {
	r := newPoolRepo(t, defaultConfig)
	r.git("mv", "staging/unclaimed/a", "staging/claimed/a")
	r.commit("claiming: a")
	r.lands("write")

	// pool-resource's add never looks at claimed/ (pool-resource issue #27).
	r.write("staging/unclaimed/a", "meta")
	r.commit("adding unclaimed: a")
	r.refused("duplicate-name", "write", "pool staging", "lock a", "both claimed/ and unclaimed/")
}

func TestOverLimitByClaimAndByAddClaimedIsTransient(t *testing.T) {
	r := newPoolRepo(t, defaultConfig) // staging max_claimed: 2
	for _, n := range []string{"a", "b"} {
		r.git("mv", "staging/unclaimed/"+n, "staging/claimed/"+n)
		r.commit("claiming: " + n)
		r.lands("write")
	}
	r.git("mv", "staging/unclaimed/c", "staging/claimed/c")
	r.commit("claiming: c")
	out := r.refused("over-limit", "write", "3 locks would be claimed, over max_claimed 2", "temporary")
	// The ordinary refusal keeps the stock client waiting and retrying.
	if !strings.Contains(out, "[remote rejected]") {
		t.Fatalf("a transient refusal should be an ordinary rejection:\n%s", out)
	}

	r.resetToServer()
	r.write("staging/claimed/d", "")
	r.commit("adding claimed: d")
	r.refused("over-limit", "write", "lock d")

	// A release makes room; then the same claim lands.
	r.resetToServer()
	r.git("mv", "staging/claimed/a", "staging/unclaimed/a")
	r.commit("unclaiming: a")
	r.lands("write")
	r.git("mv", "staging/unclaimed/c", "staging/claimed/c")
	r.commit("claiming: c")
	r.lands("write")
}

func TestMultiCommitPushWithABadSecondCommitLandsNothing(t *testing.T) {
	r := newPoolRepo(t, defaultConfig)
	r.git("mv", "staging/unclaimed/a", "staging/claimed/a")
	r.commit("claiming: a")
	good := r.git("rev-parse", "--short=10", "HEAD")
	r.write("staging/claimed/ghost", "")
	r.commit("claiming: ghost")
	out := r.refused("claim-missing", "write", "lock ghost")
	if strings.Contains(out, "commit "+good) {
		t.Fatalf("the good first commit was blamed:\n%s", out)
	}
}

func TestSymlinkSubmoduleNestedDirectoryAreRefused(t *testing.T) {
	r := newPoolRepo(t, defaultConfig)
	if err := os.Symlink("/etc/passwd", filepath.Join(r.work, "staging/unclaimed/evil")); err != nil {
		t.Fatal(err)
	}
	r.commit("adding unclaimed: evil")
	r.refused("bad-mode", "write", "symlink")

	r.resetToServer()
	r.git("update-index", "--add", "--cacheinfo", "160000,"+r.git("rev-parse", "HEAD")+",staging/unclaimed/sub")
	r.git("commit", "-q", "-m", "a submodule")
	r.refused("bad-mode", "write", "submodule")

	r.resetToServer()
	r.write("staging/claimed/dir/inner", "")
	r.commit("nested")
	r.refused("bad-path", "write", "staging/claimed/dir/")

	r.resetToServer()
	r.write("staging/notes.txt", "")
	r.commit("a stray file")
	r.refused("bad-path", "write", "staging/notes.txt")
}

func TestHostileLockNamesAreRefused(t *testing.T) {
	r := newPoolRepo(t, defaultConfig)
	r.write("staging/unclaimed/line\nbreak", "")
	r.commit("free-form add")
	r.refused("bad-name", "write", "newline")

	r.resetToServer()
	// Too long for the filesystem, not for git: written straight to the index.
	blob := r.git("hash-object", "-w", "README.md")
	r.git("update-index", "--add", "--cacheinfo", "100644,"+blob+",staging/unclaimed/"+strings.Repeat("n", 256))
	r.git("commit", "-q", "-m", "long name")
	r.refused("bad-name", "write", "over 255")

	r.resetToServer()
	r.write("staging/unclaimed/bad\xffutf8", "")
	r.commit("invalid utf-8")
	r.refused("bad-name", "write", "UTF-8")
}

func TestDotFilesOfPoolTriggerResourceAreAllowed(t *testing.T) {
	r := newPoolRepo(t, defaultConfig)
	r.write("staging/.pending-triggers", "a\n")
	r.write("staging/.pending-removals", "")
	r.write("staging/unclaimed/.keep", "")
	r.commit("pending triggers")
	r.lands("write")
	r.git("commit", "-q", "--allow-empty", "-m", "empty trigger commit")
	r.lands("write")
}

func TestPoolBoyReleasingThreeLocksInOneCommitIsAllowed(t *testing.T) {
	r := newPoolRepo(t, `repos: [{name: locks, pools: [{name: staging, max_claimed: 3}]}]`)
	for _, n := range []string{"a", "b", "c"} {
		r.git("mv", "staging/unclaimed/"+n, "staging/claimed/"+n)
		r.commit("claiming: " + n)
	}
	r.lands("write")
	for _, n := range []string{"a", "b", "c"} {
		r.git("mv", "staging/claimed/"+n, "staging/unclaimed/"+n)
	}
	r.commit("Freshening up the pool staging: releasing stale locks a, b, c")
	r.lands("write")
}

func TestMergeCommitFromAHumanGitPullIsJudgedAgainstItsFirstParent(t *testing.T) {
	r := newPoolRepo(t, defaultConfig)
	// Someone else claims a and lands first.
	other := filepath.Join(t.TempDir(), "other")
	r.run(r.work, "git", "clone", "-q", r.bare, other)
	r.run(other, "git", "mv", "staging/unclaimed/a", "staging/claimed/a")
	r.run(other, "git", "commit", "-q", "-m", "claiming: a")
	r.run(other, "git", "push", "-q", "origin", "HEAD:master")

	// The human edits their stale clone and pulls with a merge.
	r.write("staging/unclaimed/d", "")
	r.commit("adding unclaimed: d")
	r.git("pull", "-q", "--no-rebase", "--no-edit", "origin", "master")
	if n := r.git("rev-list", "--count", "--merges", "HEAD^..HEAD"); n != "1" {
		t.Fatalf("want a merge commit at HEAD, got %s merges", n)
	}
	r.lands("write")

	// A merge that smuggles in a claim of its own is still refused.
	r.git("checkout", "-q", "-b", "side", "HEAD")
	r.write("staging/unclaimed/e", "")
	r.commit("adding unclaimed: e")
	r.git("checkout", "-q", "master")
	r.git("merge", "-q", "--no-ff", "--no-commit", "side")
	r.write("staging/claimed/ghost", "")
	r.git("add", "-A")
	r.git("commit", "-q", "-m", "Merge branch 'side'")
	r.refused("claim-missing", "write", "lock ghost")
}

func TestMessageThatLiesAboutItsChangeIsRefused(t *testing.T) {
	r := newPoolRepo(t, defaultConfig)
	r.git("mv", "staging/unclaimed/a", "staging/claimed/a")
	r.commit("claiming: b")
	r.refused("intent-mismatch", "write", `"claiming: b"`, "does not touch that lock")

	r.resetToServer()
	r.git("mv", "staging/unclaimed/a", "staging/claimed/a")
	r.commit("unclaiming: a")
	r.refused("intent-mismatch", "write", "does claim in pool staging")
}

func TestPoolCreationAndDeletionNeedAnAdmin(t *testing.T) {
	r := newPoolRepo(t, defaultConfig)
	r.write("newpool/unclaimed/n1", "")
	r.commit("adding unclaimed: n1")
	r.refused("pool-change", "write", "pool newpool", "creates a new pool")
	r.lands("admin")

	r.git("rm", "-q", "-r", "team/prod")
	r.commit("drop prod")
	r.refused("pool-change", "write", "pool team/prod", "deletes the pool")
	r.lands("admin")
}

func TestReadRoleCannotPushAndUnknownRoleFailsClosed(t *testing.T) {
	r := newPoolRepo(t, defaultConfig)
	r.git("mv", "staging/unclaimed/a", "staging/claimed/a")
	r.commit("claiming: a")
	for _, role := range []string{"read", "root"} {
		out, err := r.push(role, "origin", "HEAD:master")
		if err == nil || !strings.Contains(out, "could not validate") {
			t.Fatalf("role %q: push not refused: %v\n%s", role, err, out)
		}
	}
}

func TestBrokenConfigRefusesEveryPush(t *testing.T) {
	r := newPoolRepo(t, defaultConfig)
	if err := os.WriteFile(r.config, []byte("repos:\n  - name: locks\n    max_claimd: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.git("mv", "staging/unclaimed/a", "staging/claimed/a")
	r.commit("claiming: a")
	out, err := r.push("write", "origin", "HEAD:master")
	if err == nil || !strings.Contains(out, "poolgate.yaml:3: unknown key \"max_claimd\"") {
		t.Fatalf("broken config did not refuse with its file and line: %v\n%s", err, out)
	}
}
