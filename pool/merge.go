package pool

// Merged is the state a merge commit's parents combine to, lock by lock, the
// way a three-way merge does: a lock keeps its state in the merge base unless
// a parent changed it, and then takes that parent's state. It is what a merge
// may hold without having changed anything itself, so the validator judges
// the merge's tree against it (DESIGN.md §2).
//
// Two things make it stricter than git's own merge, on purpose:
//   - a lock is one unit (its claimed/ and unclaimed/ files together), so a
//     claim on one side and a removal on the other is a conflict, not a
//     clean merge that brings the removed lock back claimed;
//   - with several merge bases (criss-cross history), a parent counts as
//     having changed a lock unless it matches every base.
//
// Where parents changed one lock differently (a conflict), the result takes
// the state of parents[prefer]; Conflicts reports whether that happened, so a
// caller can judge the merge against each side in turn.
func Merged(bases, parents []*Snapshot, prefer int) (out *Snapshot, conflicts bool) {
	if len(bases) == 0 {
		bases = []*Snapshot{Empty}
	}
	out = &Snapshot{Pools: map[string]*Pool{}}
	paths := map[string]bool{}
	for _, s := range append(append([]*Snapshot{}, bases...), parents...) {
		for p := range s.Pools {
			paths[p] = true
		}
	}
	for path := range paths {
		bp := make([]*Pool, len(bases))
		for i, b := range bases {
			bp[i] = b.Pool(path)
		}
		pp := make([]*Pool, len(parents))
		for i, p := range parents {
			pp[i] = p.Pool(path)
		}
		p, c := mergePool(bp, pp, prefer)
		conflicts = conflicts || c
		if p != nil {
			out.Pools[path] = p
		}
	}
	return out, conflicts
}

// mergePool merges one pool: its locks, and its extras by path. Whole pools are taken over when only one state
// of the pool's tree is involved besides the base, the usual case: only one
// side of the merge touched the pool.
func mergePool(bases, parents []*Pool, prefer int) (*Pool, bool) {
	exists := func(p *Pool) bool { return p != nil }
	// A pool deleted on one side and changed on the other is a conflict
	// too: judged against each side, keeping it is a creation, dropping it
	// a deletion.
	present, conflict := merge3(bases, parents, prefer, exists)
	if !present {
		return nil, conflict
	}
	if p, ok := sameTree(bases, parents); ok {
		return p, conflict
	}
	out := &Pool{Claimed: map[string]Lock{}, Unclaimed: map[string]Lock{}}
	for _, p := range parents {
		if p != nil {
			out.Path = p.Path
			break
		}
	}
	keys := func(list func(p *Pool) []string) map[string]bool {
		set := map[string]bool{}
		for _, p := range append(append([]*Pool{}, bases...), parents...) {
			if p != nil {
				for _, k := range list(p) {
					set[k] = true
				}
			}
		}
		return set
	}
	type lockState struct {
		c, u   Lock
		hc, hu bool
	}
	conflict = mergeEach(keys((*Pool).Names), bases, parents, prefer, func(p *Pool, name string) (lockState, bool) {
		var s lockState
		s.c, s.hc = p.Claimed[name]
		s.u, s.hu = p.Unclaimed[name]
		return s, s.hc || s.hu
	}, func(name string, s lockState) {
		if s.hc {
			out.Claimed[name] = s.c
		}
		if s.hu {
			out.Unclaimed[name] = s.u
		}
	}) || conflict
	conflict = mergeEach(keys(func(p *Pool) []string {
		var paths []string
		for _, x := range p.Extras {
			paths = append(paths, x.Path)
		}
		return paths
	}), bases, parents, prefer, func(p *Pool, path string) (Extra, bool) {
		for _, x := range p.Extras {
			if x.Path == path {
				return x, true
			}
		}
		return Extra{}, false
	}, func(_ string, x Extra) { out.Extras = append(out.Extras, x) }) || conflict
	return out, conflict
}

// mergeEach merges each key's value across the pools (get's false: the key
// is absent there, as in a missing pool) and hands every present result to
// set; it reports whether any key was a conflict.
func mergeEach[V comparable](keys map[string]bool, bases, parents []*Pool, prefer int,
	get func(p *Pool, key string) (V, bool), set func(key string, v V)) (conflict bool) {
	type opt struct {
		v  V
		ok bool
	}
	for key := range keys {
		o, c := merge3(bases, parents, prefer, func(p *Pool) opt {
			if p == nil {
				return opt{}
			}
			v, ok := get(p, key)
			return opt{v, ok}
		})
		conflict = conflict || c
		if o.ok {
			set(key, o.v)
		}
	}
	return conflict
}

// sameTree returns the pool when every base and parent that changed it holds
// the same tree: then the merge of it is that tree, whole.
func sameTree(bases, parents []*Pool) (*Pool, bool) {
	tree := func(p *Pool) string {
		if p == nil || p.Tree == "" {
			return "-"
		}
		return p.Tree
	}
	var changed *Pool
	changedTree := ""
	for _, p := range parents {
		unchanged := true
		for _, b := range bases {
			if tree(b) != tree(p) {
				unchanged = false
			}
		}
		if unchanged {
			continue
		}
		if changed != nil && tree(p) != changedTree {
			return nil, false
		}
		changed, changedTree = p, tree(p)
	}
	if changed == nil {
		changed = parents[0]
	}
	if changed == nil || tree(changed) == "-" {
		return nil, false
	}
	return changed, true
}

// merge3 is the three-way rule for one value: the parents that changed it
// (differ from some base) must agree, and their value wins; with none, the
// base's. Otherwise it is a conflict and parents[prefer] wins.
func merge3[P any, V comparable](bases, parents []P, prefer int, get func(P) V) (V, bool) {
	var changed []V
	for _, p := range parents {
		v := get(p)
		for _, b := range bases {
			if get(b) != v {
				changed = append(changed, v)
				break
			}
		}
	}
	if len(changed) == 0 {
		return get(bases[0]), false
	}
	for _, v := range changed[1:] {
		if v != changed[0] {
			return get(parents[prefer]), true
		}
	}
	return changed[0], false
}
