package gitread

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/poolgate/poolgate/gitstore"
)

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir,
		"GIT_AUTHOR_NAME=a", "GIT_AUTHOR_EMAIL=a@x", "GIT_COMMITTER_NAME=c", "GIT_COMMITTER_EMAIL=c@x")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// history makes a work tree repo with n commits moving locks between
// claimed/ and unclaimed/, and returns its git dir and the commits, oldest
// first.
func history(t *testing.T, n int) (string, []string) {
	dir := t.TempDir()
	git(t, dir, "init", "-q", "-b", "master")
	var commits []string
	for i := 0; i < n; i++ {
		os.RemoveAll(filepath.Join(dir, "p"))
		for l := 0; l < 5; l++ {
			state := "unclaimed"
			if (i+l)%3 == 0 {
				state = "claimed"
			}
			os.MkdirAll(filepath.Join(dir, "p", state), 0o755)
			os.WriteFile(filepath.Join(dir, "p", state, fmt.Sprintf("lock-%d", l)), []byte(fmt.Sprintf("meta %d\n", l)), 0o755)
		}
		git(t, dir, "add", "-A")
		git(t, dir, "commit", "-q", "-m", fmt.Sprintf("claiming: lock-%d\n\nBuild URL: https://ci/%d", i%5, i))
		commits = append(commits, git(t, dir, "rev-parse", "HEAD"))
	}
	return filepath.Join(dir, ".git"), commits
}

// sameAsGit reads every commit and its trees with both readers.
func sameAsGit(t *testing.T, r *Repo, gitDir string, commits []string) {
	t.Helper()
	g := gitstore.Open(gitDir)
	defer g.Close()
	for _, h := range commits {
		want, err := g.Commit(h)
		if err != nil {
			t.Fatal(err)
		}
		got, err := r.Commit(h)
		if err != nil {
			t.Fatalf("commit %s: %v", h, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("commit %s: got %+v, want %+v", h, got, want)
		}
		trees := []string{want.Tree}
		for len(trees) > 0 {
			tr := trees[0]
			trees = trees[1:]
			wt, err := g.ReadTree(tr)
			if err != nil {
				t.Fatal(err)
			}
			gt, err := r.ReadTree(tr)
			if err != nil {
				t.Fatalf("tree %s: %v", tr, err)
			}
			if !reflect.DeepEqual(gt, wt) {
				t.Fatalf("tree %s: got %+v, want %+v", tr, gt, wt)
			}
			for _, e := range wt {
				if e.IsTree() {
					trees = append(trees, e.Hash)
				}
			}
		}
	}
}

func TestReadsWhatGitReadsLooseThenPackedThenRepackedUnderAnOpenReader(t *testing.T) {
	gitDir, commits := history(t, 30)
	r := Open(gitDir)
	defer r.Close()
	tip, err := r.Tip("master")
	if err != nil || tip != commits[len(commits)-1] {
		t.Fatalf("tip %q, %v; want %s", tip, err, commits[len(commits)-1])
	}
	sameAsGit(t, r, gitDir, commits) // loose

	// Packed with deltas, refs packed: the reader still holds no packs,
	// so this is its first packed read.
	git(t, gitDir, "repack", "-adf", "-q", "--depth=50", "--window=50")
	git(t, gitDir, "pack-refs", "--all")
	if tip, err := r.Tip("master"); err != nil || tip != commits[len(commits)-1] {
		t.Fatalf("tip from packed-refs %q, %v", tip, err)
	}
	sameAsGit(t, r, gitDir, commits)

	// More commits, then a repack that deletes the pack the reader has
	// open: objects it has never seen are found after it reloads.
	wt := filepath.Dir(gitDir)
	os.WriteFile(filepath.Join(wt, "p", "unclaimed", "lock-new"), []byte("x"), 0o644)
	git(t, wt, "add", "-A")
	git(t, wt, "commit", "-q", "-m", "adding unclaimed: lock-new")
	commits = append(commits, git(t, wt, "rev-parse", "HEAD"))
	git(t, gitDir, "repack", "-adf", "-q")
	sameAsGit(t, r, gitDir, commits)
	r.Refresh()
	sameAsGit(t, r, gitDir, commits)
}

func TestMissingBranchObjectAndWrongTypeAreErrors(t *testing.T) {
	gitDir, commits := history(t, 2)
	r := Open(gitDir)
	defer r.Close()
	if tip, err := r.Tip("nope"); err != nil || tip != "" {
		t.Fatalf("missing branch: %q, %v; want no tip and no error", tip, err)
	}
	if _, err := Open(t.TempDir()).Tip("master"); err == nil {
		t.Fatal("a dir that is no repository gave no error")
	}
	if _, err := r.Commit(strings.Repeat("ab", 20)); !errors.Is(err, ErrMissing) {
		t.Fatalf("missing object: %v, want ErrMissing", err)
	}
	c, err := r.Commit(commits[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Commit(c.Tree); err == nil || !strings.Contains(err.Error(), "not a commit") {
		t.Fatalf("tree read as a commit: %v", err)
	}
	if _, err := r.Commit("HEAD"); err == nil {
		t.Fatal("a revision expression was accepted as an object name")
	}
}

// TestQuarantineReadsThePushThenTheRepoAndSizesAsGitDoes: a commit made
// into a quarantine object directory (as receive-pack keeps a push) is
// read with the repo's packed history behind it, blob sizes agree with
// git's for loose and packed objects alike, and the repo alone does not
// have the quarantined commit.
func TestQuarantineReadsThePushThenTheRepoAndSizesAsGitDoes(t *testing.T) {
	gitDir, commits := history(t, 20)
	git(t, gitDir, "repack", "-adf", "-q", "--depth=50", "--window=50")
	wt := filepath.Dir(gitDir)
	q := filepath.Join(gitDir, "objects", "tmp_objdir-incoming-test")
	if err := os.Mkdir(q, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(wt, "p", "unclaimed", "lock-big"), []byte(strings.Repeat("x", 5000)), 0o644)
	git(t, wt, "add", "-A")
	env := []string{"GIT_OBJECT_DIRECTORY=" + q, "GIT_ALTERNATE_OBJECT_DIRECTORIES=" + filepath.Join(gitDir, "objects")}
	cmd := exec.Command("git", "commit", "-q", "-m", "adding unclaimed: lock-big")
	cmd.Dir = wt
	cmd.Env = append(os.Environ(), append(env, "HOME="+wt, "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=a", "GIT_AUTHOR_EMAIL=a@x", "GIT_COMMITTER_NAME=c", "GIT_COMMITTER_EMAIL=c@x")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("commit into the quarantine: %v\n%s", err, out)
	}
	pushed := git(t, wt, "rev-parse", "HEAD") // resolves only through the ref; the object is in q
	if _, err := Open(gitDir).Commit(pushed); !errors.Is(err, ErrMissing) {
		t.Fatalf("the repo alone read the quarantined commit: %v", err)
	}

	r := OpenQuarantine(gitDir, q)
	defer r.Close()
	g := gitstore.Open(gitDir)
	g.Env = append(os.Environ(), env...)
	defer g.Close()
	all := append(commits, pushed)
	c, err := r.Commit(pushed)
	if err != nil || c.Parents[0] != commits[len(commits)-1] {
		t.Fatalf("quarantined commit: %+v, %v", c, err)
	}
	// Trees and blob sizes of the packed history and the loose push.
	for _, h := range all {
		c, err := g.Commit(h)
		if err != nil {
			t.Fatal(err)
		}
		trees := []string{c.Tree}
		for len(trees) > 0 {
			want, err := g.ReadTree(trees[0])
			if err != nil {
				t.Fatal(err)
			}
			got, err := r.ReadTree(trees[0])
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("tree %s: %v, %v; want %v", trees[0], got, err, want)
			}
			trees = trees[1:]
			for _, e := range want {
				if e.IsTree() {
					trees = append(trees, e.Hash)
					continue
				}
				ws, err := g.BlobSize(e.Hash)
				if err != nil {
					t.Fatal(err)
				}
				if gs, err := r.BlobSize(e.Hash); err != nil || gs != ws {
					t.Fatalf("blob %s (%s): size %d, %v; git says %d", e.Hash, e.Name, gs, err, ws)
				}
			}
		}
	}
	if _, err := r.BlobSize(strings.Repeat("ab", 20)); !errors.Is(err, ErrMissing) {
		t.Fatalf("size of a missing object: %v, want ErrMissing", err)
	}
}

// TestReadersShareOnePackIndex: a second reader of the same packs (the
// judge of a push beside the events service's reader) does not load the
// pack index again.
func TestReadersShareOnePackIndex(t *testing.T) {
	gitDir, commits := history(t, 5)
	git(t, gitDir, "repack", "-adf", "-q")
	a, b := Open(gitDir), Open(gitDir)
	defer a.Close()
	defer b.Close()
	for _, r := range []*Repo{a, b} {
		if _, err := r.Commit(commits[0]); err != nil {
			t.Fatal(err)
		}
	}
	pa, pb := a.objs[0].packs, b.objs[0].packs
	if len(pa) != 1 || len(pb) != 1 || pa[0].idx != pb[0].idx {
		t.Fatalf("two readers of one pack hold indexes %v and %v, want one shared", pa, pb)
	}
}
