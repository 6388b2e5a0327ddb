// Package gitread reads a repository's branch tips and objects inside the
// daemon's own process, with go-git's plumbing: deriving events, the status
// page, the API and the metrics start no git process.
//
// It is for the daemon's reads of its own repos only, including a push's
// quarantine while the daemon judges it for the hook (OpenQuarantine: the
// hook hands over git's GIT_QUARANTINE_PATH). Serving runs the system git
// (git upload-pack/receive-pack are the protocol), and a hook judging in
// its own process (no daemon) reads objects through gitstore, whose git
// follows the environment receive-pack gave it. docs/architecture.md says
// why.
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
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"weak"

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
// concurrent use; the pack indexes it loads are shared with every other
// Repo of the process (see loadIndex), so a reader per push is cheap.
type Repo struct {
	dir   string
	dg    *dotgit.DotGit // refs only
	cache cache.Object
	// objs are the object directories, searched in order.
	objs []*objectDir
}

// objectDir is one object directory: loose objects and packs.
type objectDir struct {
	path  string
	packs []*pack
	// packDir is pack/'s state when packs were loaded: a repack (the
	// daemon's maintenance) changes it.
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
	return OpenObjects(dir, filepath.Join(dir, "objects"))
}

// OpenQuarantine reads a push as its pre-receive hook sees it: the
// objects receive-pack keeps in quarantine (git's GIT_QUARANTINE_PATH,
// checked by the caller to be inside dir's objects), then the repo's own.
func OpenQuarantine(dir, quarantine string) *Repo {
	return OpenObjects(dir, quarantine, filepath.Join(dir, "objects"))
}

// OpenObjects reads refs from the git dir dir and objects from objDirs, in
// that order.
func OpenObjects(dir string, objDirs ...string) *Repo {
	r := &Repo{dir: dir, dg: dotgit.New(osfs.New(dir)), cache: cache.NewObjectLRU(cacheSize)}
	for _, p := range objDirs {
		r.objs = append(r.objs, &objectDir{path: p})
	}
	return r
}

// Dir is the git dir.
func (r *Repo) Dir() string { return r.dir }

// Close releases the open pack files.
func (r *Repo) Close() error {
	var first error
	for _, o := range r.objs {
		if err := o.close(); err != nil && first == nil {
			first = err
		}
	}
	r.cache.Clear()
	return first
}

func (o *objectDir) close() error {
	var first error
	for _, p := range o.packs {
		if err := p.file.Close(); err != nil && first == nil {
			first = err
		}
	}
	o.packs, o.packDir = nil, nil
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

// BlobSize returns an object's size without reading its contents (a lock
// file over max_lock_bytes is refused by its size, whatever it holds).
func (r *Repo) BlobSize(hash string) (int64, error) {
	h, err := parseHash(hash)
	if err != nil {
		return 0, err
	}
	return find(r, h, func(o *objectDir) (int64, error) { return o.packedSize(r, h) },
		func(o *objectDir) (int64, error) {
			obj, err := o.loose(h, true)
			return obj.size, err
		})
}

func parseHash(hash string) (plumbing.Hash, error) {
	var h plumbing.Hash
	if len(hash) != 2*len(h) {
		return h, fmt.Errorf("bad object name %q", hash)
	}
	if _, err := hex.Decode(h[:], []byte(hash)); err != nil {
		return h, fmt.Errorf("bad object name %q", hash)
	}
	return h, nil
}

type object struct {
	typ  plumbing.ObjectType
	size int64
	data []byte
}

func (r *Repo) read(hash string, want plumbing.ObjectType) ([]byte, error) {
	h, err := parseHash(hash)
	if err != nil {
		return nil, err
	}
	obj, err := find(r, h, func(o *objectDir) (object, error) { return o.fromPacks(r, h) },
		func(o *objectDir) (object, error) { return o.loose(h, false) })
	if err != nil {
		return nil, err
	}
	if obj.typ != want {
		return nil, fmt.Errorf("%s is a %s, not a %s", hash, obj.typ, want)
	}
	return obj.data, nil
}

// find looks for h in each object directory in turn, packs first (history
// is packed; only the last pushes are loose), and once more in packs that
// a repack replaced since they were loaded (the object moved).
func find[T any](r *Repo, h plumbing.Hash, packed, loose func(*objectDir) (T, error)) (T, error) {
	var zero T
	for _, o := range r.objs {
		v, err := packed(o)
		if errors.Is(err, ErrMissing) {
			v, err = loose(o)
		}
		if !errors.Is(err, ErrMissing) {
			return v, err
		}
	}
	for _, o := range r.objs {
		if !o.packsChanged() {
			continue
		}
		o.close()
		if v, err := packed(o); !errors.Is(err, ErrMissing) {
			return v, err
		}
	}
	return zero, fmt.Errorf("%s: %w", h, ErrMissing)
}

// Refresh drops the loaded packs if a repack replaced them, so a reader
// kept across syncs never holds deleted packs open for long.
func (r *Repo) Refresh() {
	for _, o := range r.objs {
		if o.packDir != nil && o.packsChanged() {
			o.close()
		}
	}
}

func (o *objectDir) packsChanged() bool {
	fi, err := os.Stat(filepath.Join(o.path, "pack"))
	if err != nil || o.packDir == nil {
		return err == nil || o.packDir != nil
	}
	return !fi.ModTime().Equal(o.packDir.ModTime()) || !os.SameFile(fi, o.packDir)
}

func (o *objectDir) loadPacks(c cache.Object) error {
	if o.packDir != nil {
		return nil
	}
	dir := filepath.Join(o.path, "pack")
	fi, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	fs := osfs.New(dir)
	for _, e := range ents {
		// A pack counts once its index is written: git writes the .idx
		// last, so a .pack alone is one still being made.
		name, ok := strings.CutSuffix(e.Name(), ".idx")
		if !ok || !strings.HasPrefix(name, "pack-") {
			continue
		}
		p, err := openPack(fs, name, c)
		if errors.Is(err, os.ErrNotExist) {
			continue // removed by a repack since the listing
		}
		if err != nil {
			o.close()
			return err
		}
		o.packs = append(o.packs, p)
	}
	o.packDir = fi
	return nil
}

func openPack(fs billy.Filesystem, name string, c cache.Object) (*pack, error) {
	idx, err := loadIndex(fs, name+".idx")
	if err != nil {
		return nil, err
	}
	pf, err := fs.Open(name + ".pack")
	if err != nil {
		return nil, err
	}
	p := &pack{idx: idx, file: pf}
	p.renew(c)
	return p, nil
}

// indexes are the pack indexes loaded by any Repo of this process, by file:
// the events service's long-lived reader and each push's judge share one
// copy, dropped once no Repo uses it. A pack's name is its content's hash,
// and git never rewrites a pack index in place, so path, size and mtime
// name one index.
var indexes = struct {
	sync.Mutex
	m map[indexKey]weak.Pointer[index]
}{m: map[indexKey]weak.Pointer[index]{}}

type indexKey struct {
	path  string
	size  int64
	mtime int64
}

func loadIndex(fs billy.Filesystem, name string) (*index, error) {
	f, err := fs.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := fs.Stat(name)
	if err != nil {
		return nil, err
	}
	key := indexKey{fs.Join(fs.Root(), name), fi.Size(), fi.ModTime().UnixNano()}
	indexes.Lock()
	if x := indexes.m[key].Value(); x != nil {
		indexes.Unlock()
		return x, nil
	}
	indexes.Unlock()
	mi := idxfile.NewMemoryIndex()
	if err := idxfile.NewDecoder(f).Decode(mi); err != nil {
		return nil, fmt.Errorf("pack index %s: %w", name, err)
	}
	x, err := newIndex(mi)
	if err != nil {
		return nil, fmt.Errorf("pack index %s: %w", name, err)
	}
	indexes.Lock()
	defer indexes.Unlock()
	if y := indexes.m[key].Value(); y != nil {
		return y, nil // loaded by another reader meanwhile
	}
	for k, w := range indexes.m {
		if w.Value() == nil {
			delete(indexes.m, k)
		}
	}
	indexes.m[key] = weak.Make(x)
	return x, nil
}

// renew replaces the Packfile (not the open file) before go-git's record
// of every object type it has read grows large.
func (p *pack) renew(c cache.Object) {
	// No filesystem: go-git then reads every object into memory at once
	// rather than handing out objects that reopen the pack.
	p.pf = packfile.NewPackfileWithCache(p.idx, nil, p.file, c, 0)
	p.reads = 0
}

// lookup returns the pack holding h and its Packfile, counting the read.
func (o *objectDir) lookup(r *Repo, h plumbing.Hash) (*pack, error) {
	if err := o.loadPacks(r.cache); err != nil {
		return nil, err
	}
	for _, p := range o.packs {
		if ok, _ := p.idx.Contains(h); !ok {
			continue
		}
		if p.reads++; p.reads > readsPerPackfile {
			p.renew(r.cache)
		}
		return p, nil
	}
	return nil, fmt.Errorf("%s: %w", h, ErrMissing)
}

func (o *objectDir) fromPacks(r *Repo, h plumbing.Hash) (object, error) {
	p, err := o.lookup(r, h)
	if err != nil {
		return object{}, err
	}
	obj, err := p.pf.Get(h) // by hash: no reverse lookup unless a delta needs one
	if err != nil {
		return object{}, fmt.Errorf("object %s: %w", h, err)
	}
	if obj.Size() > maxObject {
		return object{}, fmt.Errorf("object %s is %d bytes, too large to read", h, obj.Size())
	}
	rd, err := obj.Reader()
	if err != nil {
		return object{}, err
	}
	data, err := io.ReadAll(rd)
	rd.Close()
	return object{obj.Type(), int64(len(data)), data}, err
}

func (o *objectDir) packedSize(r *Repo, h plumbing.Hash) (int64, error) {
	p, err := o.lookup(r, h)
	if err != nil {
		return 0, err
	}
	off, err := p.idx.FindOffset(h)
	if err != nil {
		return 0, err
	}
	return p.pf.GetSizeByOffset(off)
}

// loose reads a loose object; with headerOnly, only its type and size.
func (o *objectDir) loose(h plumbing.Hash, headerOnly bool) (object, error) {
	hx := h.String()
	f, err := os.Open(filepath.Join(o.path, hx[:2], hx[2:]))
	if errors.Is(err, os.ErrNotExist) {
		return object{}, fmt.Errorf("%s: %w", h, ErrMissing)
	}
	if err != nil {
		return object{}, err
	}
	defer f.Close()
	or, err := objfile.NewReader(f)
	if err != nil {
		return object{}, err
	}
	defer or.Close()
	typ, size, err := or.Header()
	if err != nil || headerOnly {
		return object{typ: typ, size: size}, err
	}
	if size > maxObject {
		return object{}, fmt.Errorf("object %s is %d bytes, too large to read", h, size)
	}
	data := make([]byte, size)
	_, err = io.ReadFull(or, data)
	return object{typ, size, data}, err
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
func (x *index) offsetAt(pos uint32) uint64 { return x.offsetIn(x.level(pos)) }

// offsetIn reads the offset of the s-th object of bucket b.
func (x *index) offsetIn(b int, s uint32) uint64 {
	o := binary.BigEndian.Uint32(x.Offset32[b][s*4:])
	if o&(1<<31) == 0 {
		return uint64(o)
	}
	i := uint64(o &^ (1 << 31))
	return binary.BigEndian.Uint64(x.Offset64[i*8:])
}

// FindOffset implements idxfile.Index. go-git's own remembers every hash
// it was asked for (a map that grows for as long as the index lives, and
// the index is shared across readers); this one only searches.
func (x *index) FindOffset(h plumbing.Hash) (int64, error) {
	k := int(h[0])
	b := x.FanoutMapping[k]
	if b < 0 || b >= len(x.Names) { // go-git's mark of an empty bucket is -1
		return 0, plumbing.ErrObjectNotFound
	}
	names := x.Names[b]
	n := len(names) / len(h)
	i := sort.Search(n, func(i int) bool { return bytes.Compare(names[i*len(h):(i+1)*len(h)], h[:]) >= 0 })
	if i == n || !bytes.Equal(names[i*len(h):(i+1)*len(h)], h[:]) {
		return 0, plumbing.ErrObjectNotFound
	}
	return int64(x.offsetIn(b, uint32(i))), nil
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
