package pool

import (
	"fmt"
	"sort"
)

// Git file modes as they appear in tree objects.
const (
	ModeTree       = 0o040000
	ModeFile       = 0o100644
	ModeExec       = 0o100755
	ModeSymlink    = 0o120000
	ModeSubmodule  = 0o160000
	modeTypeMask   = 0o170000
	modeRegularBit = 0o100000
)

// TreeEntry is one entry of a git tree object.
type TreeEntry struct {
	Name string
	Mode uint32
	Hash string
}

func (e TreeEntry) IsTree() bool    { return e.Mode&modeTypeMask == ModeTree }
func (e TreeEntry) IsRegular() bool { return e.Mode&modeTypeMask == modeRegularBit }

// TreeReader reads tree objects by hash. The hook implements it over
// `git cat-file` so it sees quarantined objects; tests implement it in memory.
type TreeReader interface {
	ReadTree(hash string) ([]TreeEntry, error)
}

// Lock is one lock file.
type Lock struct {
	Name string
	Mode uint32
	Hash string
}

// Extra is an entry in a pool that is not a lock: a dot-file, and whatever
// else is there (a file at the pool's top, a directory, a symlink, a
// submodule). Which of them a pool may hold is the validator's to say
// (bad-path, bad-mode), not the model's.
type Extra struct {
	Path string // relative to the pool; a directory's ends in "/"
	Mode uint32
	Hash string
}

// Pool is the state of one pool directory.
type Pool struct {
	Path string
	// Tree is the pool directory's tree hash: equal hashes, equal pools,
	// which lets a diff skip every pool a commit did not touch.
	Tree      string
	Claimed   map[string]Lock
	Unclaimed map[string]Lock
	Extras    []Extra
}

// State of one lock name in a pool.
type State int

const (
	Absent State = iota
	StateUnclaimed
	StateClaimed
	// StateBoth is a name in claimed/ and unclaimed/ at once: the state the
	// duplicate-name rule exists to prevent, possible in old histories.
	StateBoth
)

func (s State) String() string {
	return [...]string{"absent", "unclaimed", "claimed", "claimed+unclaimed"}[s]
}

// StateOf returns a name's state in the pool; a nil pool holds nothing.
func (p *Pool) StateOf(name string) State {
	if p == nil {
		return Absent
	}
	_, c := p.Claimed[name]
	_, u := p.Unclaimed[name]
	switch {
	case c && u:
		return StateBoth
	case c:
		return StateClaimed
	case u:
		return StateUnclaimed
	}
	return Absent
}

// Lock returns the lock file for name in its current state (claimed first).
func (p *Pool) Lock(name string) (Lock, bool) {
	if p == nil {
		return Lock{}, false
	}
	if l, ok := p.Claimed[name]; ok {
		return l, true
	}
	l, ok := p.Unclaimed[name]
	return l, ok
}

// Names returns every lock name in the pool, sorted.
func (p *Pool) Names() []string {
	if p == nil {
		return nil
	}
	set := map[string]bool{}
	for n := range p.Claimed {
		set[n] = true
	}
	for n := range p.Unclaimed {
		set[n] = true
	}
	return sortedKeys(set)
}

func sortedKeys(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Snapshot is every pool of one commit's tree.
type Snapshot struct {
	Tree  string
	Pools map[string]*Pool
}

// PoolPaths returns the snapshot's pool paths, sorted.
func (s *Snapshot) PoolPaths() []string {
	if s == nil {
		return nil
	}
	set := map[string]bool{}
	for p := range s.Pools {
		set[p] = true
	}
	return sortedKeys(set)
}

// Pool returns the pool at path, or nil.
func (s *Snapshot) Pool(path string) *Pool {
	if s == nil {
		return nil
	}
	return s.Pools[path]
}

// Loader builds snapshots, memoising per directory tree hash: consecutive
// commits share almost every subtree, so a push of many commits reads each
// unchanged subtree once.
type Loader struct {
	r     TreeReader
	trees map[string][]TreeEntry
	// dirs caches the pools found under a directory, keyed by tree hash,
	// with paths relative to that directory.
	dirs map[string][]*Pool
	// shapes memoises Shape per tree id, for the bound shapeMax.
	shapes   map[string]Shape
	shapeMax Shape
}

func NewLoader(r TreeReader) *Loader {
	return &Loader{r: r, trees: map[string][]TreeEntry{}, dirs: map[string][]*Pool{}}
}

// Empty is the snapshot of the empty tree (before a root commit).
var Empty = &Snapshot{Pools: map[string]*Pool{}}

func (l *Loader) tree(hash string) ([]TreeEntry, error) {
	if t, ok := l.trees[hash]; ok {
		return t, nil
	}
	t, err := l.r.ReadTree(hash)
	if err != nil {
		return nil, err
	}
	if len(l.trees) > 100000 {
		l.trees = map[string][]TreeEntry{}
	}
	l.trees[hash] = t
	return t, nil
}

// Load reads the snapshot of a root tree.
func (l *Loader) Load(rootTree string) (*Snapshot, error) {
	if rootTree == "" {
		return Empty, nil
	}
	pools, err := l.dir(rootTree, 0)
	if err != nil {
		return nil, err
	}
	s := &Snapshot{Tree: rootTree, Pools: make(map[string]*Pool, len(pools))}
	for _, p := range pools {
		s.Pools[p.Path] = p
	}
	return s, nil
}

// maxDepth bounds recursion on hostile deep trees; real pool repos are a few
// levels deep. Pushed trees are measured against limits.max_tree_depth
// (at most this) before they are loaded.
const maxDepth = MaxTreeDepth

// MaxTreeDepth is the deepest tree the loader reads, and so the highest
// limits.max_tree_depth may be set (git's own core.maxTreeDepth default).
const MaxTreeDepth = 4096

func (l *Loader) dir(hash string, depth int) ([]*Pool, error) {
	if ps, ok := l.dirs[hash]; ok {
		return ps, nil
	}
	if depth > maxDepth {
		return nil, fmt.Errorf("tree nested deeper than %d levels", maxDepth)
	}
	entries, err := l.tree(hash)
	if err != nil {
		return nil, err
	}
	var out []*Pool
	isPool := false
	for _, e := range entries {
		if e.IsTree() && (e.Name == Claimed || e.Name == Unclaimed) {
			isPool = true
		}
	}
	var self *Pool
	if isPool {
		self = &Pool{Tree: hash, Claimed: map[string]Lock{}, Unclaimed: map[string]Lock{}}
		out = append(out, self)
	}
	for _, e := range entries {
		switch {
		case isPool && e.IsTree() && (e.Name == Claimed || e.Name == Unclaimed):
			if err := l.lockDir(self, e, depth+1); err != nil {
				return nil, err
			}
		case e.IsTree():
			sub, err := l.dir(e.Hash, depth+1)
			if err != nil {
				return nil, err
			}
			if isPool && len(sub) == 0 {
				// A directory in a pool that holds no pool: only its
				// existence is recorded.
				self.Extras = append(self.Extras, Extra{Path: e.Name + "/", Mode: e.Mode, Hash: e.Hash})
			}
			for _, p := range sub {
				out = append(out, p.withPrefix(e.Name))
			}
		case isPool:
			self.Extras = append(self.Extras, Extra{Path: e.Name, Mode: e.Mode, Hash: e.Hash})
		}
	}
	if len(l.dirs) > 100000 {
		l.dirs = map[string][]*Pool{}
	}
	l.dirs[hash] = out
	return out, nil
}

func (l *Loader) lockDir(p *Pool, e TreeEntry, depth int) error {
	entries, err := l.tree(e.Hash)
	if err != nil {
		return err
	}
	dst := p.Unclaimed
	if e.Name == Claimed {
		dst = p.Claimed
	}
	for _, f := range entries {
		// A lock is a regular file that is not a dot-file; the rest is
		// recorded as it is.
		if f.IsRegular() && !IsDot(f.Name) {
			dst[f.Name] = Lock{Name: f.Name, Mode: f.Mode, Hash: f.Hash}
			continue
		}
		rel := e.Name + "/" + f.Name
		if f.IsTree() {
			rel += "/"
		}
		p.Extras = append(p.Extras, Extra{Path: rel, Mode: f.Mode, Hash: f.Hash})
	}
	return nil
}

// withPrefix returns a copy of p as seen from the parent directory. Copies,
// because the cached original is shared by every snapshot containing it.
func (p *Pool) withPrefix(dir string) *Pool {
	q := *p
	if q.Path == "" {
		q.Path = dir
	} else {
		q.Path = dir + "/" + q.Path
	}
	return &q
}

// ExtraPath is an extra's path from the repo root.
func (p *Pool) ExtraPath(s Extra) string {
	if p.Path == "" {
		return s.Path
	}
	return p.Path + "/" + s.Path
}
