package pool

// Op is what one commit did to one lock (DESIGN.md §2 table).
type Op string

const (
	OpAdd         Op = "add"
	OpAddClaimed  Op = "add-claimed"
	OpClaim       Op = "claim"
	OpRelease     Op = "release"
	OpRemove      Op = "remove"
	OpRemoveFree  Op = "remove-unclaimed"
	OpUpdate      Op = "update"
	OpDuplicate   Op = "duplicate" // the name ends up in both directories
	OpDeduplicate Op = "deduplicate"
)

// Change is one lock's operation in one commit.
type Change struct {
	Pool   string
	Name   string
	Op     Op
	Before State
	After  State
	Old    Lock // the file before (zero if absent)
	New    Lock // the file after (zero if absent)
}

// Diff lists every lock change between two snapshots, ordered by pool then
// name so messages and events come out in a stable order.
func Diff(before, after *Snapshot) []Change {
	var out []Change
	paths := map[string]bool{}
	for _, p := range before.PoolPaths() {
		paths[p] = true
	}
	for _, p := range after.PoolPaths() {
		paths[p] = true
	}
	for _, path := range sortedKeys(paths) {
		bp, ap := before.Pool(path), after.Pool(path)
		if Unchanged(bp, ap) {
			continue
		}
		names := map[string]bool{}
		for _, n := range bp.Names() {
			names[n] = true
		}
		for _, n := range ap.Names() {
			names[n] = true
		}
		for _, name := range sortedKeys(names) {
			c := Change{Pool: path, Name: name, Before: bp.StateOf(name), After: ap.StateOf(name)}
			c.Old, _ = bp.Lock(name)
			c.New, _ = ap.Lock(name)
			c.Op = opFor(c)
			if c.Op != "" {
				out = append(out, c)
			}
		}
	}
	return out
}

func opFor(c Change) Op {
	switch {
	case c.Before == c.After:
		if c.Before == StateBoth {
			if samePair(c) {
				return ""
			}
			return OpUpdate
		}
		if c.Old.Hash != c.New.Hash || c.Old.Mode != c.New.Mode {
			return OpUpdate
		}
		return ""
	case c.After == StateBoth:
		return OpDuplicate
	case c.Before == StateBoth:
		return OpDeduplicate
	case c.Before == Absent && c.After == StateUnclaimed:
		return OpAdd
	case c.Before == Absent && c.After == StateClaimed:
		return OpAddClaimed
	case c.Before == StateUnclaimed && c.After == StateClaimed:
		return OpClaim
	case c.Before == StateClaimed && c.After == StateUnclaimed:
		return OpRelease
	case c.Before == StateClaimed && c.After == Absent:
		return OpRemove
	case c.Before == StateUnclaimed && c.After == Absent:
		return OpRemoveFree
	}
	return ""
}

// samePair is only used for names in both directories before and after;
// Old/New hold the claimed copy, so the unclaimed copy is not compared. A
// change there still surfaces as the duplicate it already was.
func samePair(c Change) bool { return c.Old == c.New }

// ClaimedCount is how many locks are claimed in a pool.
func (p *Pool) ClaimedCount() int {
	if p == nil {
		return 0
	}
	return len(p.Claimed)
}

// Unchanged reports whether two pools are known to be identical: loaded
// from the same tree object.
func Unchanged(a, b *Pool) bool {
	return a != nil && b != nil && a.Tree != "" && a.Tree == b.Tree
}
