package pool

import "errors"

// Shape is how far a tree expands when checked out: Paths counts every file
// and directory below it, Depth the most path components of any of them.
type Shape struct {
	Paths int64
	Depth int
}

// errTooDeep stops a measurement that went past the depth bound.
var errTooDeep = errors.New("tree too deep")

// Shape measures a tree against bound without expanding it. Security: a few KB
// of trees can name billions of paths (a tree of 1,500 entries that all point
// at one tree of 1,500 entries ...), so each distinct tree id is read and
// counted once, memoised for the Loader's life (a whole push), and counting
// stops as soon as a bound is passed: the cost follows the number of distinct
// trees, never the number of paths they name. The shape returned is exact
// when within bound; past it, only "over" is meaningful.
func (l *Loader) Shape(tree string, bound Shape) (s Shape, over bool, err error) {
	if l.shapes == nil || l.shapeMax != bound {
		l.shapes, l.shapeMax = map[string]Shape{}, bound
	}
	s, err = l.shape(tree, 1)
	if errors.Is(err, errTooDeep) {
		return Shape{Paths: s.Paths, Depth: bound.Depth + 1}, true, nil
	}
	if err != nil {
		return s, false, err
	}
	return s, s.Paths > bound.Paths || s.Depth > bound.Depth, nil
}

// shape measures the tree whose entries sit at depth level.
func (l *Loader) shape(hash string, level int) (Shape, error) {
	bound := l.shapeMax
	if s, ok := l.shapes[hash]; ok {
		if level-1+s.Depth > bound.Depth {
			return s, errTooDeep
		}
		return s, nil
	}
	if level > bound.Depth {
		return Shape{}, errTooDeep
	}
	entries, err := l.tree(hash)
	if err != nil {
		return Shape{}, err
	}
	var s Shape
	if len(entries) > 0 {
		s.Depth = 1
	}
	for _, e := range entries {
		s.Paths++
		if e.IsTree() {
			sub, err := l.shape(e.Hash, level+1)
			if err != nil {
				return s, err
			}
			s.Paths += sub.Paths
			s.Depth = max(s.Depth, sub.Depth+1)
		}
		if s.Paths > bound.Paths {
			// Saturated: over the bound wherever this tree appears, so the
			// memo may keep it; the sum cannot overflow.
			s.Paths = bound.Paths + 1
			break
		}
	}
	if len(l.shapes) > 200000 {
		// A long offline check: forget rather than grow without end.
		l.shapes = map[string]Shape{}
	}
	l.shapes[hash] = s
	return s, nil
}
