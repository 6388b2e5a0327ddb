package pool_test

import (
	"testing"

	"github.com/poolgate/poolgate/pool"
)

func onePool(claimed, unclaimed []string) *pool.Snapshot {
	p := &pool.Pool{Path: "p", Claimed: map[string]pool.Lock{}, Unclaimed: map[string]pool.Lock{}}
	for _, n := range claimed {
		p.Claimed[n] = pool.Lock{Name: n, Mode: pool.ModeFile, Hash: "e1"}
	}
	for _, n := range unclaimed {
		p.Unclaimed[n] = pool.Lock{Name: n, Mode: pool.ModeFile, Hash: "e1"}
	}
	return &pool.Snapshot{Pools: map[string]*pool.Pool{"p": p}}
}

// TestMergedTakesEachSidesChangeAndKeepsALockWhole: disjoint changes combine;
// a claim on one side and a removal on the other is a conflict (a per-file
// merge would bring the removed lock back claimed), resolved per side.
func TestMergedTakesEachSidesChangeAndKeepsALockWhole(t *testing.T) {
	base := onePool(nil, []string{"a", "b", "c"})
	mine := onePool([]string{"a"}, []string{"b", "c"})
	theirs := onePool([]string{"b"}, []string{"a", "c"})
	m, conflicts := pool.Merged([]*pool.Snapshot{base}, []*pool.Snapshot{mine, theirs}, 0)
	if conflicts || m.Pool("p").StateOf("a") != pool.StateClaimed || m.Pool("p").StateOf("b") != pool.StateClaimed ||
		m.Pool("p").StateOf("c") != pool.StateUnclaimed {
		t.Fatalf("disjoint claims: %+v conflicts %v", m.Pool("p"), conflicts)
	}

	removed := onePool(nil, []string{"b", "c"})
	for prefer, want := range []pool.State{pool.StateClaimed, pool.Absent} {
		m, conflicts := pool.Merged([]*pool.Snapshot{base}, []*pool.Snapshot{mine, removed}, prefer)
		if !conflicts || m.Pool("p").StateOf("a") != want {
			t.Fatalf("claim vs removal, prefer %d: a is %s, conflicts %v", prefer, m.Pool("p").StateOf("a"), conflicts)
		}
	}

	// An old commit as a parent (the merge base itself) brings nothing.
	m, conflicts = pool.Merged([]*pool.Snapshot{base}, []*pool.Snapshot{mine, base}, 0)
	if conflicts || m.Pool("p").StateOf("a") != pool.StateClaimed {
		t.Fatalf("merge with the base: %+v", m.Pool("p"))
	}
	// No base (an unrelated root commit): everything is a side's change.
	m, _ = pool.Merged(nil, []*pool.Snapshot{mine, pool.Empty}, 0)
	if m.Pool("p").StateOf("a") != pool.StateClaimed {
		t.Fatalf("unrelated histories: %+v", m.Pool("p"))
	}
}
