// Package gitread reads a repository's branch tips and objects inside the
// daemon's own process, with go-git's plumbing: deriving events, the status
// page, the API and the metrics start no git process.
//
// It is for the daemon's reads of its own repos only. Serving runs the
// system git (git upload-pack/receive-pack are the protocol), and the
// pre-receive hook reads objects through gitstore, because the pushed
// objects sit in a quarantine directory that only git's environment
// variables point at. docs/architecture.md says why.
//
// go-git's filesystem storage is not used for objects, for its memory on a
// long history: on the first packed read it builds an offset→hash map of
// every object of a pack (about 60 bytes an object: ~60 MiB for the million
// objects of 200,000 pool commits), its default cache is 96 MiB, and each
// Packfile remembers the type of every object it ever read. Here the pack
// index is go-git's (~28 bytes an object), the reverse lookup a sorted
// array (4 bytes an object), the cache small, and a Packfile is replaced
// after a bounded number of reads.
package gitread

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/format/idxfile"
	"github.com/go-git/go-git/v5/plumbing/format/objfile"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/storage/filesystem/dotgit"

	"github.com/poolgate/poolgate/gitstore"
	"github.com/poolgate/poolgate/pool"
)

// ErrMissing is gitstore's: callers test one error whichever reader they use.
var ErrMissing = gitstore.ErrMissing

const (
	// cacheSize holds delta bases: a pool repo's objects are a few hundred
	// bytes, and deltas chain to the objects read just before.
	cacheSize = 4 * cache.MiByte
	// readsPerPackfile bounds go-git's per-Packfile map of object types.
	readsPerPackfile = 1 << 16
	// maxObject refuses what no pool repo's commit or tree comes near.
	maxObject = 64 << 20
)

// Repo reads one repository (bare or not: dir is its git dir). Not safe for
// concurrent use.
type Repo struct {
	dir   string
	fs    billy.Filesystem
	dg    *dotgit.DotGit
	cache cache.Object
	packs []*pack
	// packDir is objects/pack's state when packs were loaded: a repack
	// (the daemon's maintenance) changes it.
	packDir os.FileInfo
}

type pack struct {
	idx   *index
	file  billy.File
	pf    *packfile.Packfile
	reads int
}

// Open returns a reader for the git dir dir; nothing is read yet.
func Open(dir string) *Repo {
	fs := osfs.New(dir)
	return &Repo{dir: dir, fs: fs, dg: dotgit.New(fs), cache: cache.NewObjectLRU(cacheSize)}
}

// Dir is the git dir.
func (r *Repo) Dir() string { return r.dir }

// Close releases the open pack files.
func (r *Repo) Close() error {
	var first error
	for _, p := range r.packs {
		if err := p.file.Close(); err != nil && first == nil {
			first = err
		}
	}
	r.packs, r.packDir = nil, nil
	r.cache.Clear()
	return first
}

// Tip returns the commit a branch points at, or "" when there is no such
// branch. It reads the loose ref, then packed-refs, as git does.
func (r *Repo) Tip(branch string) (string, error) {
	ref, err := r.dg.Ref(plumbing.NewBranchReferenceName(branch))
	if errors.Is(err, plumbing.ErrReferenceNotFound) {
		if _, serr := os.Stat(filepath.Join(r.dir, "objects")); serr != nil {
			return "", fmt.Errorf("%s: not a git repository", r.dir)
		}
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if ref.Type() != plumbing.HashReference {
		return "", fmt.Errorf("refs/heads/%s is a symbolic ref", branch)
	}
	return ref.Hash().String(), nil
}

// Commit reads and parses a commit (parsed as the hook parses it).
func (r *Repo) Commit(hash string) (*gitstore.Commit, error) {
	data, err := r.read(hash, plumbing.CommitObject)
	if err != nil {
		return nil, err
	}
	c, err := gitstore.ParseCommit(data)
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", hash, err)
	}
	c.Hash = hash
	return c, nil
}

// Blob reads a blob (a lock file's bytes).
func (r *Repo) Blob(hash string) ([]byte, error) { return r.read(hash, plumbing.BlobObject) }

// ReadTree implements pool.TreeReader.
func (r *Repo) ReadTree(hash string) ([]pool.TreeEntry, error) {
	data, err := r.read(hash, plumbing.TreeObject)
	if err != nil {
		return nil, err
	}
	return gitstore.ParseTree(data, len(plumbing.ZeroHash))
}

func (r *Repo) read(hash string, want plumbing.ObjectType) ([]byte, error) {
	var h plumbing.Hash
	if len(hash) != 2*len(h) {
		return nil, fmt.Errorf("bad object name %q", hash)
	}
	if _, err := hex.Decode(h[:], []byte(hash)); err != nil {
		return nil, fmt.Errorf("bad object name %q", hash)
	}
	// Packs first: history is packed; only the last pushes are loose.
	typ, data, err := r.fromPacks(h)
	if errors.Is(err, ErrMissing) {
		typ, data, err = r.loose(h)
	}
	if errors.Is(err, ErrMissing) && r.packsChanged() {
		// Repacked since the packs were loaded: the object moved.
		r.Close()
		typ, data, err = r.fromPacks(h)
	}
	if err != nil {
		return nil, err
	}
	if typ != want {
		return nil, fmt.Errorf("%s is a %s, not a %s", hash, typ, want)
	}
	return data, nil
}

// Refresh drops the loaded packs if a repack replaced them, so a reader
// kept across syncs never holds deleted packs open for long.
func (r *Repo) Refresh() {
	if r.packDir != nil && r.packsChanged() {
		r.Close()
	}
}

func (r *Repo) packsChanged() bool {
	fi, err := os.Stat(filepath.Join(r.dir, "objects", "pack"))
	if err != nil || r.packDir == nil {
		return err == nil || r.packDir != nil
	}
	return !fi.ModTime().Equal(r.packDir.ModTime()) || !os.SameFile(fi, r.packDir)
}

func (r *Repo) loadPacks() error {
	if r.packDir != nil {
		return nil
	}
	fi, err := os.Stat(filepath.Join(r.dir, "objects", "pack"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	hashes, err := r.dg.ObjectPacks()
	if err != nil {
		return err
	}
	for _, h := range hashes {
		p, err := r.openPack(h)
		if err != nil {
			r.Close()
			return err
		}
		r.packs = append(r.packs, p)
	}
	r.packDir = fi
	return nil
}

func (r *Repo) openPack(h plumbing.Hash) (*pack, error) {
	f, err := r.dg.ObjectPackIdx(h)
	if err != nil {
		return nil, err
	}
	mi := idxfile.NewMemoryIndex()
	err = idxfile.NewDecoder(f).Decode(mi)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", h, err)
	}
	idx, err := newIndex(mi)
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", h, err)
	}
	pf, err := r.dg.ObjectPack(h)
	if err != nil {
		return nil, err
	}
	p := &pack{idx: idx, file: pf}
	p.renew(r.cache)
	return p, nil
}

// renew replaces the Packfile (not the open file) before go-git's record
// of every object type it has read grows large.
func (p *pack) renew(c cache.Object) {
	// No filesystem: go-git then reads every object into memory at once
	// rather than handing out objects that reopen the pack.
	p.pf = packfile.NewPackfileWithCache(p.idx, nil, p.file, c, 0)
	p.reads = 0
}

func (r *Repo) fromPacks(h plumbing.Hash) (plumbing.ObjectType, []byte, error) {
	if err := r.loadPacks(); err != nil {
		return 0, nil, err
	}
	for _, p := range r.packs {
		if ok, _ := p.idx.Contains(h); !ok {
			continue
		}
		if p.reads++; p.reads > readsPerPackfile {
			p.renew(r.cache)
		}
		obj, err := p.pf.Get(h) // by hash: no reverse lookup unless a delta needs one
		if err != nil {
			return 0, nil, fmt.Errorf("object %s: %w", h, err)
		}
		if obj.Size() > maxObject {
			return 0, nil, fmt.Errorf("object %s is %d bytes, too large to read", h, obj.Size())
		}
		rd, err := obj.Reader()
		if err != nil {
			return 0, nil, err
		}
		data, err := io.ReadAll(rd)
		rd.Close()
		return obj.Type(), data, err
	}
	return 0, nil, fmt.Errorf("%s: %w", h, ErrMissing)
}

func (r *Repo) loose(h plumbing.Hash) (plumbing.ObjectType, []byte, error) {
	f, err := r.dg.Object(h)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil, fmt.Errorf("%s: %w", h, ErrMissing)
	}
	if err != nil {
		return 0, nil, err
	}
	defer f.Close()
	or, err := objfile.NewReader(f)
	if err != nil {
		return 0, nil, err
	}
	defer or.Close()
	typ, size, err := or.Header()
	if err != nil {
		return 0, nil, err
	}
	if size > maxObject {
		return 0, nil, fmt.Errorf("object %s is %d bytes, too large to read", h, size)
	}
	data := make([]byte, size)
	_, err = io.ReadFull(or, data)
	return typ, data, err
}

// index is go-git's in-memory pack index with a compact reverse index:
// go-git's own FindHash builds a map of every object on first use.
type index struct {
	*idxfile.MemoryIndex
	// byOffset holds every object's position in name order, sorted by its
	// offset in the pack.
	byOffset []uint32
}

func newIndex(mi *idxfile.MemoryIndex) (*index, error) {
	n, _ := mi.Count()
	x := &index{MemoryIndex: mi, byOffset: make([]uint32, n)}
	for i := range x.byOffset {
		x.byOffset[i] = uint32(i)
	}
	offs := make([]uint64, n) // only while sorting
	for i := range offs {
		offs[i] = x.offsetAt(uint32(i))
	}
	slices.SortFunc(x.byOffset, func(a, b uint32) int {
		switch {
		case offs[a] < offs[b]:
			return -1
		case offs[a] > offs[b]:
			return 1
		}
		return 0
	})
	return x, nil
}

// level returns the fanout bucket of position pos and pos within it.
func (x *index) level(pos uint32) (bucket int, second uint32) {
	k := sort.Search(256, func(k int) bool { return x.Fanout[k] > pos })
	if k > 0 {
		pos -= x.Fanout[k-1]
	}
	return x.FanoutMapping[k], pos
}

// offsetAt reads the pack offset of the object at pos (idx v2: 31-bit
// offsets, or an index into the 64-bit table when the top bit is set).
func (x *index) offsetAt(pos uint32) uint64 {
	b, s := x.level(pos)
	o := binary.BigEndian.Uint32(x.Offset32[b][s*4:])
	if o&(1<<31) == 0 {
		return uint64(o)
	}
	i := uint64(o &^ (1 << 31))
	return binary.BigEndian.Uint64(x.Offset64[i*8:])
}

// FindHash implements idxfile.Index with a binary search.
func (x *index) FindHash(o int64) (plumbing.Hash, error) {
	i := sort.Search(len(x.byOffset), func(i int) bool { return x.offsetAt(x.byOffset[i]) >= uint64(o) })
	if i == len(x.byOffset) || x.offsetAt(x.byOffset[i]) != uint64(o) {
		return plumbing.ZeroHash, plumbing.ErrObjectNotFound
	}
	b, s := x.level(x.byOffset[i])
	var h plumbing.Hash
	copy(h[:], x.Names[b][s*uint32(len(h)):])
	return h, nil
}
