package hooks_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/internal/testserver"
)

// The attacks of this file are pushed by a `write` key with plain git over
// real SSH to a real `poolgate serve`: no change may enter the branch
// unjudged (DESIGN.md §2), and no tree may expand past the bound. Each
// refused one is also built as history with plain git and no hook, which
// `poolgate check` must report.

const integrityPools = "[{name: staging, max_claimed: 2, locks: [a, b, c, d]}, {name: team/prod, locks: [x]}]"

// attacker is a writer's clone of the served repo, over SSH; its poolRepo
// helpers (run, git, write, commit) work on the clone.
type attacker struct {
	*poolRepo
	s *testserver.Server
}

func newAttacker(t *testing.T) *attacker {
	t.Helper()
	s := testserver.New(t, testserver.Options{Pools: integrityPools}).Start()
	home := t.TempDir()
	a := &attacker{s: s, poolRepo: &poolRepo{t: t, work: filepath.Join(home, "work"), bare: filepath.Join(s.F.Data, "repos", "locks.git"),
		env: append(gitEnv(home), "GIT_SSH_COMMAND="+s.SSHCommand(), "SSH_AUTH_SOCK=")}}
	a.run(home, "git", "clone", "-q", "ssh://git@127.0.0.1:"+s.SSHPort+"/locks.git", a.work)
	return a
}

// gitIn runs git with stdin.
func (a *attacker) gitIn(stdin string, args ...string) string {
	a.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = a.work
	cmd.Env = a.env
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.Output()
	if err != nil {
		a.t.Fatalf("git %v: %v", args, err)
	}
	return strings.TrimSpace(string(out))
}

// commitTree makes a commit of tree with parents and moves master to it
// without a checkout (a checkout of a bomb would never end).
func (a *attacker) commitTree(tree, msg string, parents ...string) string {
	a.t.Helper()
	args := []string{"commit-tree", tree, "-m", msg}
	for _, p := range parents {
		args = append(args, "-p", p)
	}
	c := a.git(args...)
	a.git("update-ref", "refs/heads/master", c)
	return c
}

// treeWith is base's root tree with one entry set at path (an index-free
// edit, so it works for trees too big to check out).
func (a *attacker) treeWith(base, path, mode, typ, hash string) string {
	a.t.Helper()
	dir, name := "", path
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		dir, name = path[:i], path[i+1:]
	}
	at := base
	if dir != "" {
		at = a.gitOptional("rev-parse", base+":"+dir)
	}
	var entries []string
	if at != "" {
		for _, l := range strings.Split(a.git("ls-tree", at), "\n") {
			if _, n, _ := strings.Cut(l, "\t"); l != "" && n != name {
				entries = append(entries, l)
			}
		}
	}
	entries = append(entries, fmt.Sprintf("%s %s %s\t%s", mode, typ, hash, name))
	t := a.gitIn(strings.Join(entries, "\n")+"\n", "mktree")
	if dir == "" {
		return t
	}
	return a.treeWith(base, dir, "040000", "tree", t)
}

func (a *attacker) gitOptional(args ...string) string {
	cmd := exec.Command("git", args...)
	cmd.Dir = a.work
	cmd.Env = a.env
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// refused pushes and asserts the refusal names rule and each fragment,
// that nothing landed, that the served repo is sound, that `poolgate
// check` reports the same history (checkRule, "" where the offline check
// cannot judge it: rules that depend on who pushed), and that a stock-like
// client claims right after.
func (a *attacker) refused(rule, checkRule string, fragments ...string) string {
	a.t.Helper()
	before := a.tip()
	out, err := a.push("write", "origin", "master:master")
	if err == nil {
		a.t.Fatalf("push landed, want it refused by [%s]:\n%s", rule, out)
	}
	for _, f := range append([]string{"poolgate: [" + rule + "]"}, fragments...) {
		if !strings.Contains(out, f) {
			a.t.Fatalf("refusal does not mention %q:\n%s", f, out)
		}
	}
	// A permanent refusal is an error the stock client prints and fails
	// on, never the ordinary rejection it retries silently (DESIGN.md §2).
	if rule != "over-limit" && strings.Contains(out, "[remote rejected]") {
		a.t.Fatalf("permanent [%s] ended as an ordinary rejection:\n%s", rule, out)
	}
	if after := a.tip(); after != before {
		a.t.Fatalf("branch moved from %s to %s on a refused push", before, after)
	}
	a.run(a.bare, "git", "fsck", "--no-progress", "--no-dangling")

	if checkRule != "" {
		cmd := exec.Command(binary, "check", "--config", a.s.F.Config, "--name", "locks", "--repo", a.work)
		cmd.Env = a.env
		cout, err := cmd.CombinedOutput()
		if code := exitCode(err); code != 1 || !strings.Contains(string(cout), "["+checkRule+"]") {
			a.t.Fatalf("poolgate check on the attack's history: exit %d, want 1 naming [%s]:\n%s", code, checkRule, cout)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := a.s.Client("after-"+rule, "staging", "https://ci.example.com/builds/1")
	if _, err := c.Acquire(ctx); err != nil {
		a.t.Fatalf("a stock client could not claim after the refusal: %v", err)
	}
	return out
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// claimAndRemove has a stock client claim lock d and remove it, and returns
// the commit at which d was claimed: an old commit of the branch whose
// state is a violation now.
func (a *attacker) claimAndRemove() (old string) {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := a.s.Client("ci", "staging", "https://ci.example.com/builds/7")
	if err := c.Claim(ctx, "d"); err != nil {
		a.t.Fatal(err)
	}
	old = a.tip()
	if err := c.Remove(ctx, "d"); err != nil {
		a.t.Fatal(err)
	}
	a.resetToServer()
	return old
}

// An old commit of the branch as the other parent: the merge may not take
// over what the branch had then and no longer has.
func TestMergeWithOldCommitBringsBackRemovedLockClaimed(t *testing.T) {
	a := newAttacker(t)
	old := a.claimAndRemove()
	tip := a.git("rev-parse", "HEAD")
	d := strings.Fields(a.git("ls-tree", old, "staging/claimed/d"))
	a.commitTree(a.treeWith(tip, "staging/claimed/d", d[0], "blob", d[2]), "Merge old", tip, old)
	a.refused("claim-missing", "claim-missing", "lock d")
}

func TestMergeWithOldCommitBringsBackClaimedLockAsUnclaimed(t *testing.T) {
	a := newAttacker(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	old := a.tip()
	if err := a.s.Client("ci", "staging", "https://ci.example.com/builds/7").Claim(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	a.resetToServer()
	tip := a.git("rev-parse", "HEAD")
	u := strings.Fields(a.git("ls-tree", old, "staging/unclaimed/a"))
	a.commitTree(a.treeWith(tip, "staging/unclaimed/a", u[0], "blob", u[2]), "Merge old", tip, old)
	a.refused("duplicate-name", "duplicate-name", "lock a")
}

// The first parent is an old commit (the "new side" first, as `git merge`
// run on an old checkout makes it): judged against its first parent only,
// the merge changed nothing, yet it undoes the branch's removal of d.
func TestMergeWithOldFirstParentUndoesTheBranch(t *testing.T) {
	a := newAttacker(t)
	old := a.claimAndRemove()
	tip := a.git("rev-parse", "HEAD")
	a.commitTree(a.git("rev-parse", old+"^{tree}"), "Merge branch 'master'", old, tip)
	a.refused("claim-missing", "claim-missing", "lock d")
}

// A human's `git pull` (a local commit merged with the server's newer tip)
// still lands, and the history stays clean for `poolgate check`.
func TestHonestGitPullMergeLandsOverSSH(t *testing.T) {
	a := newAttacker(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a.s.Client("ci", "staging", "https://ci.example.com/builds/7").Claim(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	a.write("staging/unclaimed/e", "")
	a.commit("adding unclaimed: e")
	a.git("pull", "-q", "--no-rebase", "--no-edit", "origin", "master")
	if n := len(strings.Fields(a.git("log", "-1", "--format=%P"))); n != 2 {
		t.Fatalf("want a merge at HEAD, got %d parents", n)
	}
	if out, err := a.push("write", "origin", "master:master"); err != nil {
		t.Fatalf("honest merge refused: %v\n%s", err, out)
	}
	if a.tip() != a.git("rev-parse", "HEAD") {
		t.Fatal("the merge did not land")
	}
	cmd := exec.Command(binary, "check", "--config", a.s.F.Config, "--name", "locks", "--repo", a.bare)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("poolgate check after an honest merge: %v\n%s", err, out)
	}
	if _, err := a.s.Client("next", "staging", "https://ci.example.com/builds/8").Acquire(ctx); err != nil {
		t.Fatal(err)
	}
}

// A few KB of trees that name billions of paths, outside any pool: each of
// three levels has 1,500 entries pointing at the one tree below.
func TestTreeThatExpandsToBillionsOfPathsIsRefused(t *testing.T) {
	a := newAttacker(t)
	blob := a.gitIn("", "hash-object", "-w", "--stdin")
	level := func(mode, typ, hash, prefix string) string {
		var b strings.Builder
		for i := 0; i < 1500; i++ {
			fmt.Fprintf(&b, "%s %s %s\t%s%04d\n", mode, typ, hash, prefix, i)
		}
		return a.gitIn(b.String(), "mktree")
	}
	t3 := level("100644", "blob", blob, "f")
	t2 := level("040000", "tree", t3, "d")
	t1 := level("040000", "tree", t2, "d")
	tip := a.git("rev-parse", "HEAD")
	a.commitTree(a.treeWith(tip, "bomb", "040000", "tree", t1), "docs", tip)
	a.refused("too-large", "too-large", "limits.max_tree_paths 100000")
}

func TestTreeNestedPastMaxDepthIsRefused(t *testing.T) {
	a := newAttacker(t)
	blob := a.gitIn("", "hash-object", "-w", "--stdin")
	tree := a.gitIn("100644 blob "+blob+"\tf\n", "mktree")
	for i := 0; i < 70; i++ {
		tree = a.gitIn("040000 tree "+tree+"\td\n", "mktree")
	}
	tip := a.git("rev-parse", "HEAD")
	a.commitTree(a.treeWith(tip, "deep", "040000", "tree", tree), "docs", tip)
	a.refused("too-large", "too-large", "limits.max_tree_depth 64")
}
