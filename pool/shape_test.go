package pool_test

import (
	"fmt"
	"testing"

	"github.com/poolgate/poolgate/pool"
)

// countingTrees serves trees from memory and counts reads.
type countingTrees struct {
	trees map[string][]pool.TreeEntry
	reads int
}

func (c *countingTrees) ReadTree(h string) ([]pool.TreeEntry, error) {
	c.reads++
	t, ok := c.trees[h]
	if !ok {
		return nil, fmt.Errorf("tree %s: not found", h)
	}
	return t, nil
}

// bomb is a root tree whose levels each hold width entries pointing at the
// one tree below: width^levels paths from levels+1 distinct trees.
func bomb(width, levels int) (*countingTrees, string) {
	c := &countingTrees{trees: map[string][]pool.TreeEntry{}}
	var es []pool.TreeEntry
	for i := 0; i < width; i++ {
		es = append(es, pool.TreeEntry{Name: fmt.Sprintf("f%d", i), Mode: pool.ModeFile, Hash: "b0"})
	}
	c.trees["t0"] = es
	for l := 1; l <= levels; l++ {
		es = nil
		for i := 0; i < width; i++ {
			es = append(es, pool.TreeEntry{Name: fmt.Sprintf("d%d", i), Mode: pool.ModeTree, Hash: fmt.Sprintf("t%d", l-1)})
		}
		c.trees[fmt.Sprintf("t%d", l)] = es
	}
	return c, fmt.Sprintf("t%d", levels)
}

func TestShapeCountsEachDistinctTreeOnce(t *testing.T) {
	c, root := bomb(3, 2) // 3 dirs × (1 + 3 dirs × (1 + 3 files))
	l := pool.NewLoader(c)
	s, over, err := l.Shape(root, pool.Shape{Paths: 100, Depth: 10})
	if err != nil || over || s != (pool.Shape{Paths: 3 + 3*(3+3*3), Depth: 3}) {
		t.Fatalf("shape %+v over %v err %v", s, over, err)
	}
	if c.reads != 3 {
		t.Fatalf("%d tree reads for 3 distinct trees", c.reads)
	}
	// Memoised across calls, as across the commits of one push.
	if _, _, err := l.Shape(root, pool.Shape{Paths: 100, Depth: 10}); err != nil || c.reads != 3 {
		t.Fatalf("second measurement read trees again: %d reads, %v", c.reads, err)
	}
}

func TestShapeOfABillionPathBombReadsFourTrees(t *testing.T) {
	c, root := bomb(1500, 3)
	s, over, err := pool.NewLoader(c).Shape(root, pool.Shape{Paths: 100000, Depth: 64})
	if err != nil || !over || s.Paths <= 100000 {
		t.Fatalf("shape %+v over %v err %v", s, over, err)
	}
	if c.reads > 4 {
		t.Fatalf("%d tree reads: the bomb was expanded", c.reads)
	}
}

func TestShapeStopsAtTheDepthBound(t *testing.T) {
	c, root := bomb(1, 100)
	s, over, err := pool.NewLoader(c).Shape(root, pool.Shape{Paths: 100000, Depth: 64})
	if err != nil || !over || s.Depth <= 64 {
		t.Fatalf("shape %+v over %v err %v", s, over, err)
	}
	if c.reads > 65 {
		t.Fatalf("%d tree reads past depth 64", c.reads)
	}
	c, root = bomb(1, 63)
	if s, over, err := pool.NewLoader(c).Shape(root, pool.Shape{Paths: 100000, Depth: 64}); err != nil || over || s.Depth != 64 {
		t.Fatalf("64 levels: shape %+v over %v err %v", s, over, err)
	}
}
