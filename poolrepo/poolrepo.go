// Package poolrepo is a pool repository on disk as the validator and the
// audit see it: commits, snapshots and first-parent ranges, read through
// gitstore so it works inside a pre-receive hook's quarantine.
package poolrepo

import (
	"errors"
	"fmt"
	"strings"

	"github.com/poolgate/poolgate/gitstore"
	"github.com/poolgate/poolgate/pool"
	"github.com/poolgate/poolgate/validator"
)

// Objects is where a Repo reads commits, trees and blob sizes: gitstore
// (git cat-file, which follows git's environment, as inside a hook) or
// gitread (in-process, for the daemon).
type Objects interface {
	Commit(hash string) (*gitstore.Commit, error)
	ReadTree(hash string) ([]pool.TreeEntry, error)
	BlobSize(hash string) (int64, error)
	Close() error
}

// Repo wraps a git repository with a snapshot cache.
type Repo struct {
	// Git runs git commands in the repo (and reads objects, unless the
	// Repo was opened with other Objects).
	Git    *gitstore.Repo
	objs   Objects
	loader *pool.Loader
	// commits caches parsed commits: a chain check reads each parent twice.
	commits map[string]*gitstore.Commit
}

// Open opens the repository at dir.
func Open(dir string) *Repo {
	g := gitstore.Open(dir)
	return OpenWith(g, g)
}

// OpenWith opens a repository that reads objects from objs and runs git
// commands (the rare walks the in-process paths leave to git) with g.
func OpenWith(g *gitstore.Repo, objs Objects) *Repo {
	return &Repo{Git: g, objs: objs, loader: pool.NewLoader(objs), commits: map[string]*gitstore.Commit{}}
}

func (r *Repo) Close() error {
	err := r.objs.Close()
	if gerr := r.Git.Close(); gerr != nil && err == nil {
		err = gerr
	}
	return err
}

// RawCommit returns the parsed commit.
func (r *Repo) RawCommit(hash string) (*gitstore.Commit, error) {
	if c, ok := r.commits[hash]; ok {
		return c, nil
	}
	c, err := r.objs.Commit(hash)
	if err != nil {
		return nil, err
	}
	if len(r.commits) > 10000 {
		r.commits = map[string]*gitstore.Commit{}
	}
	r.commits[hash] = c
	return c, nil
}

// Commit implements validator.Source.
func (r *Repo) Commit(hash string) (validator.Commit, error) {
	c, err := r.RawCommit(hash)
	if err != nil {
		return validator.Commit{}, err
	}
	return validator.Commit{Hash: c.Hash, Tree: c.Tree, Parents: c.Parents, Message: c.Message}, nil
}

// Snapshot implements validator.Source.
func (r *Repo) Snapshot(tree string) (*pool.Snapshot, error) { return r.loader.Load(tree) }

// BlobSize implements validator.Source.
func (r *Repo) BlobSize(hash string) (int64, error) { return r.objs.BlobSize(hash) }

// TreeShape implements validator.Source. The memo lives as long as the Repo:
// a whole push, so a tree shared by its commits is read once.
func (r *Repo) TreeShape(tree string, bound pool.Shape) (pool.Shape, bool, error) {
	return r.loader.Shape(tree, bound)
}

// MergeBases implements validator.Source.
func (r *Repo) MergeBases(commits []string) ([]string, error) {
	for _, c := range commits {
		if strings.HasPrefix(c, "-") {
			return nil, fmt.Errorf("bad commit %q", c)
		}
	}
	out, err := r.Git.GitStatus(1, append([]string{"merge-base", "--all", "--octopus"}, commits...)...)
	if err != nil || out == "" {
		// Exit 1 without output: unrelated histories, no base.
		return nil, err
	}
	return strings.Split(out, "\n"), nil
}

// Unjudged returns every commit that moving a branch from old to new makes
// reachable from it and that was not before, parents before children: what
// a push must have judged (DESIGN.md §2). Reachable from the branch is what
// counts, not whether the objects are new: a commit an admin pushed under
// another ref is still unjudged for the branch. old may be zero (a new
// branch: all of new's history). chain is NewCommits' first-parent chain;
// when it reached old through commits of one parent each (a pool-resource
// push), it is the whole answer and git is not asked.
func (r *Repo) Unjudged(old, new string, chain []string) ([]string, error) {
	if len(chain) > 0 && !pool.IsZero(old) {
		linear := true
		for i, h := range chain {
			c, err := r.RawCommit(h)
			if err != nil {
				return nil, err
			}
			parent := old
			if i > 0 {
				parent = chain[i-1]
			}
			if len(c.Parents) != 1 || c.Parents[0] != parent {
				linear = false
				break
			}
		}
		if linear {
			return chain, nil
		}
	}
	args := []string{"rev-list", "--topo-order", "--reverse", new}
	if !pool.IsZero(old) {
		args = append(args, "--not", old)
	}
	out, err := r.Git.Git(append(args, "--")...)
	if err != nil || out == "" {
		return nil, err
	}
	return strings.Split(out, "\n"), nil
}

// SnapshotAt loads the snapshot of a commit.
func (r *Repo) SnapshotAt(commit string) (*pool.Snapshot, error) {
	c, err := r.RawCommit(commit)
	if err != nil {
		return nil, err
	}
	return r.Snapshot(c.Tree)
}

// fastWalkLimit bounds the in-process walk before falling back to git
// rev-list; a pool-resource push is one commit.
const fastWalkLimit = 1000

// NewCommits returns the first-parent chain of commits in new that old does
// not have, oldest first, and whether new descends from old. old may be zero
// (a new branch: the whole first-parent history of new).
//
// The common case, new's first-parent chain reaching old within a few
// steps, is answered from cat-file alone; anything else asks git, whose
// commit-graph makes it cheap. Either way the cost follows the size of the
// push, not the length of history.
func (r *Repo) NewCommits(old, new string) (chain []string, fastForward bool, err error) {
	if !pool.IsZero(old) {
		h := new
		for i := 0; i < fastWalkLimit; i++ {
			if h == old {
				reverse(chain)
				return chain, true, nil
			}
			c, err := r.RawCommit(h)
			if err != nil {
				return nil, false, err
			}
			chain = append(chain, h)
			if len(c.Parents) == 0 {
				break
			}
			h = c.Parents[0]
		}
		chain = nil
	}
	args := []string{"rev-list", "--first-parent", "--reverse", new}
	if !pool.IsZero(old) {
		args = append(args, "--not", old)
	}
	out, err := r.Git.Git(append(args, "--")...)
	if err != nil {
		return nil, false, err
	}
	if out != "" {
		chain = strings.Split(out, "\n")
	}
	if pool.IsZero(old) {
		return chain, true, nil
	}
	ff, err := r.Git.IsAncestor(old, new)
	if err != nil {
		return nil, false, fmt.Errorf("checking fast-forward: %w", err)
	}
	return chain, ff, nil
}

func reverse(s []string) {
	for i, j := 0, len(s)-1; i < j; i, j = i+1, j-1 {
		s[i], s[j] = s[j], s[i]
	}
}

// WithFallback reads from primary and asks fallback for what primary does
// not have (gitstore.ErrMissing). The daemon reads a push in-process and
// keeps git's cat-file, which knows every object source git does
// (alternates files, the environment), for anything its reader misses, so
// a judgement never differs from what git itself would read.
func WithFallback(primary, fallback Objects) Objects { return &fallbackObjects{primary, fallback} }

type fallbackObjects struct{ primary, fallback Objects }

func (f *fallbackObjects) Commit(hash string) (*gitstore.Commit, error) {
	c, err := f.primary.Commit(hash)
	if errors.Is(err, gitstore.ErrMissing) {
		return f.fallback.Commit(hash)
	}
	return c, err
}

func (f *fallbackObjects) ReadTree(hash string) ([]pool.TreeEntry, error) {
	t, err := f.primary.ReadTree(hash)
	if errors.Is(err, gitstore.ErrMissing) {
		return f.fallback.ReadTree(hash)
	}
	return t, err
}

func (f *fallbackObjects) BlobSize(hash string) (int64, error) {
	n, err := f.primary.BlobSize(hash)
	if errors.Is(err, gitstore.ErrMissing) {
		return f.fallback.BlobSize(hash)
	}
	return n, err
}

func (f *fallbackObjects) Close() error {
	err := f.primary.Close()
	if ferr := f.fallback.Close(); ferr != nil && err == nil {
		err = ferr
	}
	return err
}
