package validator_test

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/poolgate/poolgate/pool"
	"github.com/poolgate/poolgate/validator"
)

// FuzzRules builds a random before/after pair of pool repo trees from the
// fuzz bytes, serves them to the real pool.Loader as synthetic tree objects,
// and judges the commit between them. The invariants are computed from the
// generator's own model of the two states, not from the loader, so a loader
// that misreads a tree fails them too.
//
// Encoding of data: byte 0 picks the message (kind = b%4: 0 the fuzzed
// free-form msg, 1 "VERB: NAME" + Build URL, 2 "TEAM/P/J build N VERB: NAME",
// 3 bare "VERB: NAME"; verb = (b/4)%6), byte 1 the message's lock name; then
// 3-byte ops [action, pool, name]. The action's top two bits say which trees
// it changes: 00 all (the merge base's state, which every tree shares), 10
// the judged commit's only, 01 a second parent's only, 11 the second parent's
// and the commit's (a change the merge takes over). With 00, the pool byte's
// bit 7 makes it a change of the first parent that the commit keeps, bit 6
// one of the first parent only (which a merge drops). Any op with action bit
// 6 set makes the commit a merge of the first parent and that second parent,
// as a human's `git pull` does; bit 7 of byte 1 makes it a merge with the
// merge base itself, an old commit of the branch (then 01 and 11 change the
// commit's tree only). Actions (low 6 bits % 12): 0 absent, 1 unclaimed, 2 claimed, 3 in both,
// 4 unclaimed with other bytes, 5 claimed with other bytes and mode 100755,
// 6 delete the pool, 7 a .pending-triggers dot-file, 8 a directory inside
// claimed/, 9 a symlink in unclaimed/, 10 a stray file at the pool's top,
// 11 a submodule at the pool's top.
func FuzzRules(f *testing.F) {
	for _, s := range ruleSeeds {
		f.Add(s.data, s.msg, s.limit, s.admin)
	}
	f.Fuzz(func(t *testing.T, data []byte, msg string, limit uint8, admin bool) {
		checkRules(t, data, msg, limit, admin)
	})
}

// Fixture universe: pools (one nested inside another) and lock names, the
// later ones invalid for bad-name.
var (
	fuzzPools = []string{"a", "team/b", "team/b/c"}
	fuzzNames = []string{
		"env-a", "env-b", "env-c", "env-d", "x y", "ünï",
		"bad\nline", "ctl\x01", "\xff\xfe", strings.Repeat("x", 256), "del\x7f", "c1\u0085",
	}
	fuzzVerbs = []string{"claiming", "unclaiming", "adding claimed", "adding unclaimed", "removing", "updating"}
)

const (
	opAbsent = iota
	opUnclaimed
	opClaimed
	opBoth
	opUnclaimedV1
	opClaimedV1
	opDeletePool
	opDot
	opStrayDir
	opStraySymlink
	opStrayFile
	opStraySubmodule
	numOps
	afterOnly = 0x80 // the judged commit's tree only
	otherOnly = 0x40 // a merge's second parent only
	merged    = 0xc0 // the second parent's, taken over by the merge
	opMask    = 0x3f
)

// Message kinds of byte 0.
const (
	msgFree = iota
	msgBuildURL
	msgPrefix
	msgBare
)

type ruleSeed struct {
	data  []byte
	msg   string
	limit uint8
	admin bool
}

// seed encodes a scenario: message kind, verb index, name index, then ops
// given as {action, pool, name} triples.
func seed(kind, verb, name int, ops ...[3]int) []byte {
	d := []byte{byte(verb*4 + kind), byte(name)}
	for _, o := range ops {
		d = append(d, byte(o[0]), byte(o[1]), byte(o[2]))
	}
	return d
}

// Verb and name indexes for seeds.
const (
	vClaiming = iota
	vUnclaiming
	vAddingClaimed
	vAddingUnclaimed
	vRemoving
	vUpdating
)
const (
	envA = iota
	envB
	envC
	envD
	_
	_
	badNewline
)

var ruleSeeds = []ruleSeed{
	// A claim.
	{seed(msgBuildURL, vClaiming, envA, [3]int{opUnclaimed, 0, envA}, [3]int{opUnclaimed, 0, envB}, [3]int{afterOnly | opClaimed, 0, envA}), "", 0, false},
	// A release, old message format.
	{seed(msgPrefix, vUnclaiming, envA, [3]int{opClaimed, 0, envA}, [3]int{afterOnly | opUnclaimed, 0, envA}), "", 0x1, false},
	// Claim of a lock that does not exist (claim-missing).
	{seed(msgBare, vClaiming, envB, [3]int{opUnclaimed, 0, envA}, [3]int{afterOnly | opClaimed, 0, envB}), "", 0, false},
	// add_claimed with its message, and the same by an admin with another message.
	{seed(msgBuildURL, vAddingClaimed, envB, [3]int{opUnclaimed, 1, envA}, [3]int{afterOnly | opClaimed, 1, envB}), "", 0, false},
	{seed(msgFree, 0, 0, [3]int{opUnclaimed, 1, envA}, [3]int{afterOnly | opClaimed, 1, envB}), "set up", 0, true},
	// A name added to the other directory (duplicate-name).
	{seed(msgBare, vAddingUnclaimed, envA, [3]int{opClaimed, 0, envA}, [3]int{afterOnly | opBoth, 0, envA}), "", 0, false},
	// Over max_claimed by claim and by add-claimed.
	{seed(msgBare, vClaiming, envB, [3]int{opClaimed, 0, envA}, [3]int{opUnclaimed, 0, envB}, [3]int{afterOnly | opClaimed, 0, envB}), "", 1, false},
	{seed(msgBare, vAddingClaimed, envC, [3]int{opClaimed, 0, envA}, [3]int{afterOnly | opClaimed, 0, envC}), "", 1, false},
	// A pool already over its limit releasing one (allowed).
	{seed(msgBare, vUnclaiming, envA, [3]int{opClaimed, 0, envA}, [3]int{opClaimed, 0, envB}, [3]int{afterOnly | opUnclaimed, 0, envA}), "", 1, false},
	// Bad names, new and old.
	{seed(msgFree, 0, 0, [3]int{opUnclaimed, 0, envA}, [3]int{afterOnly | opUnclaimed, 0, badNewline}), "add", 0, false},
	{seed(msgFree, 0, 0, [3]int{opUnclaimed, 0, 7}, [3]int{afterOnly | opClaimed, 0, 8}, [3]int{afterOnly | opUnclaimed, 0, 9}), "add", 0, false},
	{seed(msgFree, 0, 0, [3]int{opUnclaimed, 0, 10}, [3]int{afterOnly | opClaimed, 0, 10}, [3]int{afterOnly | opBoth, 0, 11}), "move", 0, false},
	// Strays: directory, symlink, file, submodule; dot-files are fine.
	{seed(msgFree, 0, 0, [3]int{opUnclaimed, 2, envA}, [3]int{afterOnly | opStrayDir, 2, 0}, [3]int{afterOnly | opStraySymlink, 2, 0},
		[3]int{afterOnly | opStrayFile, 2, 0}, [3]int{afterOnly | opStraySubmodule, 2, 0}, [3]int{afterOnly | opDot, 2, 0}), "junk", 0, false},
	// Pool creation and deletion.
	{seed(msgFree, 0, 0, [3]int{opUnclaimed, 0, envA}, [3]int{afterOnly | opDeletePool, 0, 0}, [3]int{afterOnly | opUnclaimed, 1, envA}), "reorganise", 0, false},
	// pool-boy releasing three locks in one commit.
	{seed(msgFree, 0, 0, [3]int{opClaimed, 1, envA}, [3]int{opClaimed, 1, envB}, [3]int{opClaimed, 1, envC},
		[3]int{afterOnly | opUnclaimed, 1, envA}, [3]int{afterOnly | opUnclaimed, 1, envB}, [3]int{afterOnly | opUnclaimed, 1, envC}),
		"Freshening up the pool", 0x15, false},
	// A legacy duplicate left alone while another lock is claimed.
	{seed(msgBare, vClaiming, envB, [3]int{opBoth, 0, envA}, [3]int{opUnclaimed, 0, envB}, [3]int{afterOnly | opClaimed, 0, envB}), "", 0, false},
	// Updates (new bytes, new mode), removal, nested pools side by side.
	{seed(msgBare, vUpdating, envA, [3]int{opUnclaimed, 1, envA}, [3]int{opUnclaimed, 2, envA}, [3]int{afterOnly | opUnclaimedV1, 1, envA}), "", 0, false},
	{seed(msgBare, vRemoving, envD, [3]int{opClaimedV1, 2, envD}, [3]int{afterOnly | opAbsent, 2, envD}), "", 0, false},
	// A message that lies about its change.
	{seed(msgBuildURL, vUnclaiming, envC, [3]int{opUnclaimed, 0, envC}, [3]int{afterOnly | opClaimed, 0, envC}), "", 0, false},
	// Merges from a human's git pull: the other parent's claims, new pool and
	// legacy duplicate are taken over; an add-claimed the merge itself does
	// is judged; a claim of a lock the other parent added is a claim.
	{seed(msgFree, 0, 0, [3]int{opUnclaimed, 0, envA}, [3]int{opUnclaimed, 0, envB}, [3]int{afterOnly | opClaimed, 0, envA},
		[3]int{merged | opClaimed, 0, envB}, [3]int{merged | opUnclaimed, 1, envC}, [3]int{merged | opBoth, 1, envD}),
		"Merge branch 'master' of ssh://git@host:2222/locks", 0x2, false},
	{seed(msgFree, 0, 0, [3]int{opUnclaimed, 0, envA}, [3]int{otherOnly | opUnclaimed, 0, envB}, [3]int{afterOnly | opClaimed, 0, envB}),
		"Merge branch 'master' of ssh://git@host:2222/locks", 0, false},
	// Empty input: no pools at all.
	{nil, "", 0, false},
	// A merge with an old commit of the branch (the merge base itself) that
	// brings back as unclaimed a lock claimed since (duplicate-name), claims
	// released since (over-limit), a lock removed since (claim-missing).
	{seed(msgFree, 0, oldCommit, [3]int{opUnclaimed, 0, envA}, [3]int{opClaimed, mineKept, envA}, [3]int{afterOnly | opBoth, 0, envA}),
		"Merge old", 0, false},
	{seed(msgFree, 0, oldCommit, [3]int{opClaimed, 0, envA}, [3]int{opClaimed, 0, envB}, [3]int{opUnclaimed, mineOnly, envA},
		[3]int{opUnclaimed, mineOnly, envB}), "Merge old", 1, false},
	{seed(msgFree, 0, oldCommit, [3]int{opClaimed, 0, envA}, [3]int{opAbsent, mineOnly, envA}), "Merge old", 0, false},
	// An honest pull: a local claim and origin's claim, within the limit.
	{seed(msgFree, 0, 0, [3]int{opUnclaimed, 0, envA}, [3]int{opUnclaimed, 0, envB}, [3]int{opClaimed, mineKept, envA},
		[3]int{merged | opClaimed, 0, envB}), "Merge branch 'master'", 2, false},
	// A conflict: claimed on one side, removed on the other, kept claimed.
	{seed(msgFree, 0, 0, [3]int{opUnclaimed, 0, envA}, [3]int{opClaimed, mineKept, envA}, [3]int{otherOnly | opAbsent, 0, envA}),
		"Merge branch 'master'", 0, false},
}

// Seed flags: the first parent's own changes (kept by the commit, or
// dropped by a merge), and a merge with the merge base itself.
const (
	mineKept  = 0x80
	mineOnly  = 0x40
	oldCommit = 0x80
)

// fuzzState is the generator's model of one tree.
type fuzzState map[string]*fuzzPool

type fuzzFile struct {
	mode uint32
	hash string
}

type fuzzPool struct {
	claimed, unclaimed map[string]fuzzFile
	top                map[string]fuzzFile // entries at the pool's top (dot-files, strays)
	claimedDirs        []string            // directories inside claimed/ (strays)
	unclaimedLinks     []string            // symlinks inside unclaimed/ (strays)
}

func (s fuzzState) pool(p string) *fuzzPool {
	fp := s[p]
	if fp == nil {
		fp = &fuzzPool{claimed: map[string]fuzzFile{}, unclaimed: map[string]fuzzFile{}, top: map[string]fuzzFile{}}
		s[p] = fp
	}
	return fp
}

func (s fuzzState) clone() fuzzState {
	out := fuzzState{}
	for path, p := range s {
		q := out.pool(path)
		for k, v := range p.claimed {
			q.claimed[k] = v
		}
		for k, v := range p.unclaimed {
			q.unclaimed[k] = v
		}
		for k, v := range p.top {
			q.top[k] = v
		}
		q.claimedDirs = append([]string(nil), p.claimedDirs...)
		q.unclaimedLinks = append([]string(nil), p.unclaimedLinks...)
	}
	return out
}

func fakeHash(parts ...string) string {
	h := sha1.Sum([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(h[:])
}

var (
	blobV0 = fakeHash("blob", "v0")
	blobV1 = fakeHash("blob", "v1")
	keep   = fakeHash("blob", "")
)

// Blob sizes the fake store reports: v1 is over the policy's MaxLockBytes.
var fuzzSizes = map[string]int64{blobV0: 10, blobV1: 100, keep: 0}

func (s fuzzState) apply(action byte, path, name string) {
	switch int(action) % numOps {
	case opAbsent:
		p := s.pool(path)
		delete(p.claimed, name)
		delete(p.unclaimed, name)
	case opUnclaimed:
		p := s.pool(path)
		delete(p.claimed, name)
		p.unclaimed[name] = fuzzFile{pool.ModeFile, blobV0}
	case opClaimed:
		p := s.pool(path)
		delete(p.unclaimed, name)
		p.claimed[name] = fuzzFile{pool.ModeFile, blobV0}
	case opBoth:
		p := s.pool(path)
		p.claimed[name] = fuzzFile{pool.ModeExec, blobV0}
		p.unclaimed[name] = fuzzFile{pool.ModeFile, blobV0}
	case opUnclaimedV1:
		p := s.pool(path)
		delete(p.claimed, name)
		p.unclaimed[name] = fuzzFile{pool.ModeFile, blobV1}
	case opClaimedV1:
		p := s.pool(path)
		delete(p.unclaimed, name)
		p.claimed[name] = fuzzFile{pool.ModeExec, blobV1}
	case opDeletePool:
		delete(s, path)
	case opDot:
		s.pool(path).top[".pending-triggers"] = fuzzFile{pool.ModeFile, blobV0}
	case opStrayDir:
		s.pool(path).claimedDirs = append(s.pool(path).claimedDirs, "zz-dir")
	case opStraySymlink:
		s.pool(path).unclaimedLinks = append(s.pool(path).unclaimedLinks, "zz-link")
	case opStrayFile:
		s.pool(path).top["README"] = fuzzFile{pool.ModeFile, blobV0}
	case opStraySubmodule:
		s.pool(path).top["zz-module"] = fuzzFile{pool.ModeSubmodule, fakeHash("commit", "sub")}
	}
}

// memTrees serves tree objects by hash, as git cat-file would.
type memTrees map[string][]pool.TreeEntry

func (m memTrees) ReadTree(h string) ([]pool.TreeEntry, error) {
	t, ok := m[h]
	if !ok {
		return nil, fmt.Errorf("tree %s: not found", h)
	}
	return t, nil
}

// dirNode is a directory being assembled into tree objects.
type dirNode struct {
	files map[string]fuzzFile
	dirs  map[string]*dirNode
}

func newDir() *dirNode { return &dirNode{files: map[string]fuzzFile{}, dirs: map[string]*dirNode{}} }

func (d *dirNode) sub(path string) *dirNode {
	for _, c := range strings.Split(path, "/") {
		n := d.dirs[c]
		if n == nil {
			n = newDir()
			d.dirs[c] = n
		}
		d = n
	}
	return d
}

// write stores d and its subdirectories as tree objects; equal trees get
// equal hashes, as in git, so the loader's per-tree cache is exercised.
func (d *dirNode) write(m memTrees) string {
	var es []pool.TreeEntry
	for name, f := range d.files {
		es = append(es, pool.TreeEntry{Name: name, Mode: f.mode, Hash: f.hash})
	}
	for name, sub := range d.dirs {
		es = append(es, pool.TreeEntry{Name: name, Mode: pool.ModeTree, Hash: sub.write(m)})
	}
	sort.Slice(es, func(i, j int) bool { return es[i].Name < es[j].Name })
	var b strings.Builder
	for _, e := range es {
		fmt.Fprintf(&b, "%o %s\x00%s", e.Mode, e.Name, e.Hash)
	}
	h := fakeHash("tree", b.String())
	m[h] = es
	return h
}

// tree writes the state as a root tree. Every pool keeps claimed/.gitkeep
// and unclaimed/.gitkeep, as pool repos do, so an empty pool stays a pool.
func (s fuzzState) tree(m memTrees) string {
	root := newDir()
	root.files["README.md"] = fuzzFile{pool.ModeFile, blobV0}
	for path, p := range s {
		d := root.sub(path)
		for k, v := range p.top {
			d.files[k] = v
		}
		c, u := d.sub(pool.Claimed), d.sub(pool.Unclaimed)
		c.files[".gitkeep"] = fuzzFile{pool.ModeFile, keep}
		u.files[".gitkeep"] = fuzzFile{pool.ModeFile, keep}
		for k, v := range p.claimed {
			c.files[k] = v
		}
		for k, v := range p.unclaimed {
			u.files[k] = v
		}
		for _, name := range p.claimedDirs {
			c.sub(name).files["x"] = fuzzFile{pool.ModeFile, blobV0}
		}
		for _, name := range p.unclaimedLinks {
			u.files[name] = fuzzFile{pool.ModeSymlink, blobV0}
		}
	}
	return root.write(m)
}

// model is the generator's view of one judged commit: its merge base, first
// parent, second parent (nil unless a merge) and tree.
type model struct {
	base, before, after, other fuzzState
	// oldOther: the second parent is the merge base itself.
	oldOther bool
	msg      string
}

// decode turns fuzz bytes into the states and the commit message.
func decode(data []byte, free string) model {
	m := model{base: fuzzState{}, before: fuzzState{}, after: fuzzState{}, other: fuzzState{}}
	isMerge := false
	next := func() byte {
		if len(data) == 0 {
			return 0
		}
		b := data[0]
		data = data[1:]
		return b
	}
	sel, nameIdx := next(), next()
	m.oldOther = nameIdx&0x80 != 0
	verb, name := fuzzVerbs[int(sel/4)%len(fuzzVerbs)], fuzzNames[int(nameIdx&0x7f)%len(fuzzNames)]
	switch int(sel) % 4 {
	case msgFree:
		m.msg = free
	case msgBuildURL:
		m.msg = verb + ": " + name + "\nBuild URL: https://ci.example.com/teams/main/pipelines/p/jobs/j/builds/1\n"
	case msgPrefix:
		m.msg = "main/p/j build 1 " + verb + ": " + name + "\n"
	case msgBare:
		m.msg = verb + ": " + name + "\n"
	}
	for len(data) > 0 {
		action, p, n := next(), next(), next()
		path, name := fuzzPools[int(p&0x3f)%len(fuzzPools)], fuzzNames[int(n)%len(fuzzNames)]
		op := action & opMask
		switch action &^ opMask {
		case 0:
			switch {
			case p&0x80 != 0:
				m.before.apply(op, path, name)
				m.after.apply(op, path, name)
			case p&0x40 != 0:
				m.before.apply(op, path, name)
			default:
				m.base.apply(op, path, name)
				m.before.apply(op, path, name)
				m.after.apply(op, path, name)
				m.other.apply(op, path, name)
			}
		case afterOnly:
			m.after.apply(op, path, name)
		case otherOnly:
			if !m.oldOther {
				m.other.apply(op, path, name)
			}
			isMerge = true
		case merged:
			if !m.oldOther {
				m.other.apply(op, path, name)
			}
			m.after.apply(op, path, name)
			isMerge = true
		}
	}
	if m.oldOther {
		isMerge = true
		m.other = m.base
	}
	if !isMerge {
		m.other = nil
	}
	return m
}

// judge builds the commits of m (base, first parent on it, second parent on
// it or the base itself, the judged commit) and judges the commit as the
// hook does.
func (m model) judge(t *testing.T, limit uint8, admin bool) (validator.Commit, validator.Policy, []validator.Violation) {
	t.Helper()
	trees := memTrees{}
	policy := validator.Policy{Branch: "master", MaxClaimed: map[string]int{}, MaxLockBytes: 50, MaxTree: pool.Shape{Paths: 1000, Depth: 10}}
	for i, p := range fuzzPools {
		if n := int(limit>>(2*i)) & 3; n > 0 {
			policy.MaxClaimed[p] = n
		}
	}
	base := validator.Commit{Hash: fakeHash("commit", "base"), Tree: m.base.tree(trees), Message: "base\n"}
	parent := validator.Commit{Hash: fakeHash("commit", "parent"), Tree: m.before.tree(trees), Parents: []string{base.Hash}, Message: "parent\n"}
	commit := validator.Commit{Tree: m.after.tree(trees), Parents: []string{parent.Hash}, Message: m.msg}
	src := memSource{commits: map[string]validator.Commit{base.Hash: base, parent.Hash: parent}, loader: pool.NewLoader(trees), base: base.Hash}
	switch {
	case m.oldOther:
		commit.Parents = append(commit.Parents, base.Hash)
	case m.other != nil:
		second := validator.Commit{Hash: fakeHash("commit", "second parent"), Tree: m.other.tree(trees), Parents: []string{base.Hash}, Message: "theirs\n"}
		src.commits[second.Hash] = second
		commit.Parents = append(commit.Parents, second.Hash)
	}
	commit.Hash = fakeHash("commit", commit.Tree, m.msg, strings.Join(commit.Parents, " "))
	src.commits[commit.Hash] = commit
	vs, err := validator.CheckCommits(src, []string{commit.Hash}, validator.Pusher{Known: true, Admin: admin}, policy)
	if err != nil {
		t.Fatalf("CheckCommits: %v", err)
	}
	return commit, policy, vs
}

// memSource is a validator.Source over the fake trees: a parent commit
// with the before tree and the judged commit on top.
type memSource struct {
	commits map[string]validator.Commit
	loader  *pool.Loader
	base    string // every merge's merge base
}

func (s memSource) MergeBases([]string) ([]string, error) { return []string{s.base}, nil }
func (s memSource) TreeShape(tree string, bound pool.Shape) (pool.Shape, bool, error) {
	return s.loader.Shape(tree, bound)
}

func (s memSource) Commit(h string) (validator.Commit, error) {
	c, ok := s.commits[h]
	if !ok {
		return c, fmt.Errorf("commit %s: not found", h)
	}
	return c, nil
}
func (s memSource) Snapshot(tree string) (*pool.Snapshot, error) { return s.loader.Load(tree) }
func (s memSource) BlobSize(h string) (int64, error) {
	if n, ok := fuzzSizes[h]; ok {
		return n, nil
	}
	return 0, fmt.Errorf("blob %s: not found", h)
}

func checkRules(t *testing.T, data []byte, free string, limit uint8, admin bool) {
	m := decode(data, free)
	before, after, other, msg := m.before, m.after, m.other, m.msg
	commit, policy, vs := m.judge(t, limit, admin)

	report := func() string {
		var b strings.Builder
		fmt.Fprintf(&b, "message %q, admin %v, limits %v\nbase:\n%sbefore:\n%safter:\n%s", msg, admin, policy.MaxClaimed, m.base, before, after)
		if other != nil {
			fmt.Fprintf(&b, "second parent (old commit %v):\n%s", m.oldOther, other)
		}
		b.WriteString("violations:\n")
		for _, v := range vs {
			fmt.Fprintf(&b, "  %s\n", v)
		}
		return b.String()
	}
	reported := func(rule validator.Rule, p, name string) bool {
		for _, v := range vs {
			if v.Rule == rule && v.Pool == p && (name == "" || v.Lock == name) {
				return true
			}
		}
		return false
	}
	// A bad name is reported as bad-name alone: the other rules are not
	// judged for a lock that cannot exist at all.
	reportedOrBadName := func(rule validator.Rule, p, name string) bool {
		return reported(rule, p, name) || (validator.CheckName(name) != nil && reported(validator.BadName, p, name))
	}
	intent := pool.ParseMessage(msg)

	for _, path := range fuzzPools {
		ap := after[path]
		if ap == nil {
			continue
		}
		// What the commit starts from, lock by lock: its parent, or for a
		// merge the three-way result of its parents over the merge base;
		// where the two sides changed a lock differently, each side.
		sides := []*fuzzPool{before.poolOrEmpty(path)}
		if other != nil {
			sides = append(sides, other.poolOrEmpty(path))
		}
		baseP := m.base.poolOrEmpty(path)
		conflicted := false
		for _, name := range fuzzNames {
			starts := []*fuzzPool{sides[0]}
			if other != nil {
				starts = threeWay(baseP, sides, name)
				conflicted = conflicted || len(starts) > 1
			}
			for _, bp := range starts {
				if bp.lockState(name) == ap.lockState(name) {
					continue
				}
				_, ac := ap.claimed[name]
				_, au := ap.unclaimed[name]
				_, bc := bp.claimed[name]
				_, bu := bp.unclaimed[name]
				// (a) a name newly in both directories of a pool.
				if ac && au && !(bc && bu) && !reportedOrBadName(validator.DuplicateName, path, name) {
					t.Fatalf("%q is newly in both claimed/ and unclaimed/ of %s, no duplicate-name:\n%s", name, path, report())
				}
				// (c) a lock entering claimed/ from nowhere, for a non-admin
				// without "adding claimed: NAME".
				if ac && !bc && !bu && !admin && !(intent.Verb == "adding claimed" && intent.Name == name) &&
					!reportedOrBadName(validator.ClaimMissing, path, name) && !reported(validator.DuplicateName, path, name) {
					t.Fatalf("%q entered %s/claimed/ from nowhere, no claim-missing:\n%s", name, path, report())
				}
				// (d) a new bad name.
				if (ac || au) && !bc && !bu && validator.CheckName(name) != nil && !reported(validator.BadName, path, name) {
					t.Fatalf("new bad name %q in %s, no bad-name:\n%s", name, path, report())
				}
			}
		}
		// (b) over max_claimed, and more claimed than the commit started
		// from. A merge starts from the lower of what its parents combine to
		// and the most either parent held: two lines may not sum over the
		// limit, and an old commit may not bring its claims back.
		from := len(sides[0].claimed)
		if other != nil && !conflicted {
			combined := 0
			for _, name := range fuzzNames {
				if _, c := threeWay(baseP, sides, name)[0].claimed[name]; c {
					combined++
				}
			}
			from = min(combined, max(len(sides[0].claimed), len(sides[1].claimed)))
		}
		if limit := policy.MaxClaimed[path]; limit > 0 && len(ap.claimed) > limit && len(ap.claimed) > from &&
			(other == nil || !conflicted) && !reported(validator.OverLimit, path, "") {
			t.Fatalf("%s has %d claimed (started from %d), over max_claimed %d, no over-limit:\n%s",
				path, len(ap.claimed), from, limit, report())
		}
	}

	// Each reported violation is true of the trees, of the right kind, and
	// renders as the rule line plus at most a hint line.
	for _, v := range vs {
		if (v.Kind == validator.Transient) != (v.Rule == validator.OverLimit) || v.Kind != validator.KindOf(v.Rule) {
			t.Fatalf("violation %s has kind %s:\n%s", v.Rule, v.Kind, report())
		}
		if v.Commit != commit.Hash {
			t.Fatalf("violation %s names commit %q, want %s", v.Rule, v.Commit, commit.Hash)
		}
		if n := strings.Count(v.String(), "\n"); n > 1 {
			t.Fatalf("violation renders on %d lines:\n%s", n+1, v.String())
		}
		ap, bp := after[v.Pool], before[v.Pool]
		if bp == nil {
			bp = &fuzzPool{}
		}
		switch v.Rule {
		case validator.DuplicateName:
			if ap == nil || !has(ap.claimed, v.Lock) || !has(ap.unclaimed, v.Lock) {
				t.Fatalf("duplicate-name for %q in %s, which is not in both directories:\n%s", v.Lock, v.Pool, report())
			}
		case validator.ClaimMissing:
			if other != nil && ap != nil && has(ap.claimed, v.Lock) && !admin {
				break // judged against the merged state or a side, not only the first parent
			}
			if admin || ap == nil || !has(ap.claimed, v.Lock) || has(bp.claimed, v.Lock) || has(bp.unclaimed, v.Lock) {
				t.Fatalf("claim-missing for %q in %s, which did not enter claimed/ from nowhere:\n%s", v.Lock, v.Pool, report())
			}
		case validator.OverLimit:
			max := policy.MaxClaimed[v.Pool]
			if ap == nil || max == 0 || len(ap.claimed) <= max || (other == nil && len(ap.claimed) <= len(bp.claimed)) {
				t.Fatalf("over-limit for %s without going over its limit:\n%s", v.Pool, report())
			}
		case validator.BadName:
			if validator.CheckName(v.Lock) == nil {
				t.Fatalf("bad-name for the good name %q:\n%s", v.Lock, report())
			}
		}
	}
	for _, r := range validator.Rules {
		if (validator.KindOf(r) == validator.Transient) != (r == validator.OverLimit) {
			t.Fatalf("rule %s has kind %s", r, validator.KindOf(r))
		}
	}
}

func has(m map[string]fuzzFile, k string) bool { _, ok := m[k]; return ok }

func (s fuzzState) poolOrEmpty(path string) *fuzzPool {
	if p := s[path]; p != nil {
		return p
	}
	return &fuzzPool{}
}

// threeWay is the model's own merge of one lock: the sides that changed it
// from the base must agree and then the result is as they have it, else
// each side is a starting point of its own.
func threeWay(base *fuzzPool, sides []*fuzzPool, name string) []*fuzzPool {
	var changed []*fuzzPool
	for _, s := range sides {
		if s.lockState(name) != base.lockState(name) {
			changed = append(changed, s)
		}
	}
	switch {
	case len(changed) == 0:
		return []*fuzzPool{base}
	case len(changed) == 1 || changed[0].lockState(name) == changed[1].lockState(name):
		return changed[:1]
	}
	return sides
}

// lockState is a name's state and its file as the validator compares them
// (the claimed copy when there are two).
func (p *fuzzPool) lockState(name string) string {
	c, hc := p.claimed[name]
	u, hu := p.unclaimed[name]
	switch {
	case hc && hu:
		return fmt.Sprintf("both %o %s", c.mode, c.hash)
	case hc:
		return fmt.Sprintf("claimed %o %s", c.mode, c.hash)
	case hu:
		return fmt.Sprintf("unclaimed %o %s", u.mode, u.hash)
	}
	return "absent"
}

// String prints a state for failure reports.
func (s fuzzState) String() string {
	var b strings.Builder
	paths := make([]string, 0, len(s))
	for p := range s {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, path := range paths {
		p := s[path]
		fmt.Fprintf(&b, "  %s: claimed %q unclaimed %q top %q dirs %q links %q\n", path,
			keys(p.claimed), keys(p.unclaimed), keys(p.top), p.claimedDirs, p.unclaimedLinks)
	}
	return b.String()
}

func keys(m map[string]fuzzFile) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestFuzzRulesSeedsReportTheirRule pins that the seed scenarios reach the
// rules they are named after, so the corpus keeps exercising every rule.
func TestFuzzRulesSeedsReportTheirRule(t *testing.T) {
	want := map[int]validator.Rule{
		2:  validator.ClaimMissing,
		5:  validator.DuplicateName,
		6:  validator.OverLimit,
		7:  validator.OverLimit,
		9:  validator.BadName,
		12: validator.BadMode,
		13: validator.PoolChange,
		16: validator.TooLarge,
		18: validator.IntentMismatch,
		22: validator.DuplicateName,
		23: validator.OverLimit,
		24: validator.ClaimMissing,
		26: validator.ClaimMissing,
	}
	clean := []int{0, 1, 3, 4, 8, 14, 15, 17, 19, 20, 21, 25}
	for i, s := range ruleSeeds {
		m := decode(s.data, s.msg)
		msg := m.msg
		_, _, vs := m.judge(t, s.limit, s.admin)
		if r, ok := want[i]; ok {
			found := false
			for _, v := range vs {
				found = found || v.Rule == r
			}
			if !found {
				t.Errorf("seed %d (%q): want [%s], got %v", i, msg, r, vs)
			}
		}
		for _, c := range clean {
			if c == i && len(vs) > 0 {
				t.Errorf("seed %d (%q): want no violation, got %v", i, msg, vs)
			}
		}
	}
}

// TestMergeCannotTakeAPoolOverMaxClaimed: a human claims env-a locally
// while origin claims env-b and env-c, then `git pull` merges. Each line of
// history kept staging within max_claimed 2, but the merge holds three
// claims. Judged against its first parent, the merge only "takes over"
// origin's two claims, and nothing reports that together they go over the
// limit; the push (local claim + merge) lands with 3 of 2 claimed.
func TestMergeCannotTakeAPoolOverMaxClaimed(t *testing.T) {
	base := fuzzState{}
	for _, n := range []string{"env-a", "env-b", "env-c"} {
		base.apply(opUnclaimed, "staging", n)
	}
	local := base.clone()
	local.apply(opClaimed, "staging", "env-a")
	origin := base.clone()
	origin.apply(opClaimed, "staging", "env-b")
	origin.apply(opClaimed, "staging", "env-c")
	merge := origin.clone()
	merge.apply(opClaimed, "staging", "env-a")

	trees := memTrees{}
	l := pool.NewLoader(trees)
	bs, _ := l.Load(base.tree(trees))
	ls, _ := l.Load(local.tree(trees))
	ors, _ := l.Load(origin.tree(trees))
	ms, _ := l.Load(merge.tree(trees))
	policy := validator.Policy{Branch: "master", MaxClaimed: map[string]int{"staging": 2}}
	combined, _ := pool.Merged([]*pool.Snapshot{bs}, []*pool.Snapshot{ls, ors}, 0)
	vs, err := validator.CheckCommit(validator.Input{
		Commit: validator.Commit{Hash: "4d3e1f", Message: "Merge branch 'master' of ssh://git@host:2222/locks\n"},
		Before: combined, After: ms, Parents: []*pool.Snapshot{ls, ors}, Pusher: validator.Pusher{Known: true}, Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		if v.Rule == validator.OverLimit && v.Pool == "staging" {
			return
		}
	}
	t.Fatalf("merge leaves %d locks claimed in staging (max_claimed 2), no over-limit: %v", ms.Pool("staging").ClaimedCount(), vs)
}
