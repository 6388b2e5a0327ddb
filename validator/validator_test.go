package validator

import (
	"strings"
	"testing"

	"github.com/poolgate/poolgate/pool"
)

// snap builds a one-pool snapshot from "c:name" / "u:name" entries.
func snap(entries ...string) *pool.Snapshot {
	p := &pool.Pool{Path: "staging", Claimed: map[string]pool.Lock{}, Unclaimed: map[string]pool.Lock{}}
	for _, e := range entries {
		dir, name, _ := strings.Cut(e, ":")
		l := pool.Lock{Name: name, Mode: pool.ModeFile, Hash: "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"}
		if dir == "c" {
			p.Claimed[name] = l
		} else {
			p.Unclaimed[name] = l
		}
	}
	return &pool.Snapshot{Pools: map[string]*pool.Pool{"staging": p}}
}

func rules(vs []Violation) string {
	var s []string
	for _, v := range vs {
		s = append(s, string(v.Rule))
	}
	return strings.Join(s, ",")
}

func check(t *testing.T, in Input) string {
	t.Helper()
	if in.Commit.Hash == "" {
		in.Commit.Hash = "1234567890abcdef"
	}
	vs, err := CheckCommit(in)
	if err != nil {
		t.Fatal(err)
	}
	return rules(vs)
}

func TestLegacyDuplicateDoesNotBlockUnrelatedClaims(t *testing.T) {
	before := snap("c:old", "u:old", "u:a")
	after := snap("c:old", "u:old", "c:a")
	if got := check(t, Input{Commit: Commit{Message: "claiming: a"}, Before: before, After: after, Pusher: Pusher{Known: true}}); got != "" {
		t.Fatalf("got %q, want no violation", got)
	}
}

func TestReleaseInAPoolAlreadyOverItsLimitIsAllowed(t *testing.T) {
	// max_claimed lowered in the config while three were claimed.
	p := Policy{MaxClaimed: map[string]int{"staging": 1}}
	before := snap("c:a", "c:b", "c:c")
	after := snap("u:a", "c:b", "c:c")
	if got := check(t, Input{Commit: Commit{Message: "unclaiming: a"}, Before: before, After: after, Policy: p, Pusher: Pusher{Known: true}}); got != "" {
		t.Fatalf("got %q", got)
	}
	// But a claim that swaps one held lock for another at the limit is fine too:
	// the count does not rise.
	after = snap("c:a", "u:b", "c:c")
	if got := check(t, Input{Commit: Commit{Message: "pool-boy swap"}, Before: before, After: after, Policy: p}); got != "" {
		t.Fatalf("swap: got %q", got)
	}
}

func TestOfflineCheckDoesNotJudgePusherRules(t *testing.T) {
	after := snap("u:a")
	after.Pools["new"] = &pool.Pool{Path: "new", Claimed: map[string]pool.Lock{}, Unclaimed: map[string]pool.Lock{"n": {Name: "n", Hash: "ab"}}}
	if got := check(t, Input{Commit: Commit{Message: "x"}, Before: snap("u:a"), After: after}); got != "" {
		t.Fatalf("unknown pusher: got %q, want nothing", got)
	}
	if got := check(t, Input{Commit: Commit{Message: "x"}, Before: snap("u:a"), After: after, Pusher: Pusher{Known: true}}); got != "pool-change" {
		t.Fatalf("known writer: got %q, want pool-change", got)
	}
}

func TestMergeDoesNotReJudgeWhatItsOtherParentBrought(t *testing.T) {
	base := snap("u:a", "u:b")
	mine := snap("u:a", "u:b", "u:d")     // first parent: added d
	theirs := snap("c:new", "u:a", "u:b") // other parent: an admin's add-claimed
	merged := snap("c:new", "u:a", "u:b", "u:d")
	combined, conflicts := pool.Merged([]*pool.Snapshot{base}, []*pool.Snapshot{mine, theirs}, 0)
	if conflicts {
		t.Fatal("disjoint changes reported as a conflict")
	}
	in := Input{Commit: Commit{Message: "Merge branch 'master'"}, Before: combined, After: merged,
		Parents: []*pool.Snapshot{mine, theirs}, Pusher: Pusher{Known: true}}
	if got := check(t, in); got != "" {
		t.Fatalf("got %q, want nothing", got)
	}
	// Against the base as "theirs" (an old commit of the branch that did
	// not add it), the same claim is the merge's own.
	combined, _ = pool.Merged([]*pool.Snapshot{base}, []*pool.Snapshot{mine, base}, 0)
	in.Before, in.Parents = combined, []*pool.Snapshot{mine, base}
	if got := check(t, in); got != "claim-missing" {
		t.Fatalf("without the other parent's change: got %q, want claim-missing", got)
	}
}

func TestRefRule(t *testing.T) {
	p := Policy{Branch: "master"}
	w, a := Pusher{Known: true}, Pusher{Known: true, Admin: true}
	sha := "1111111111111111111111111111111111111111"
	cases := []struct {
		u    pool.RefUpdate
		who  Pusher
		want int
	}{
		{pool.RefUpdate{Old: sha, New: sha, Ref: "refs/heads/master", FastForward: true}, w, 0},
		{pool.RefUpdate{Old: pool.ZeroSHA, New: sha, Ref: "refs/heads/master", FastForward: true}, w, 0},
		{pool.RefUpdate{Old: sha, New: sha, Ref: "refs/heads/master"}, w, 1},
		{pool.RefUpdate{Old: sha, New: sha, Ref: "refs/heads/master"}, a, 0},
		{pool.RefUpdate{Old: sha, New: pool.ZeroSHA, Ref: "refs/heads/master"}, a, 1},
		{pool.RefUpdate{Old: pool.ZeroSHA, New: sha, Ref: "refs/tags/v1", FastForward: true}, w, 1},
		{pool.RefUpdate{Old: pool.ZeroSHA, New: sha, Ref: "refs/tags/v1", FastForward: true}, a, 0},
	}
	for i, c := range cases {
		if got := CheckRef(c.u, p, c.who); len(got) != c.want {
			t.Errorf("case %d: %d violations %v, want %d", i, len(got), got, c.want)
		}
	}
}

func TestViolationTextNamesRuleCommitPoolLockAndHint(t *testing.T) {
	v := newViolation(ClaimMissing, "staging", "env\nx", "reason.", "do this")
	v.Commit, v.Subject = "0123456789abcdef", "claiming: env"
	s := v.String()
	for _, want := range []string{"[claim-missing]", "commit 0123456789", `"claiming: env"`, "pool staging", `lock "env\nx"`, "hint: do this"} {
		if !strings.Contains(s, want) {
			t.Errorf("%q missing %q", s, want)
		}
	}
	if strings.Count(s, "\n") != 1 {
		t.Errorf("a hostile name must not add lines: %q", s)
	}
}
