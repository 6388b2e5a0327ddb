package poolrepo

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/poolgate/poolgate/internal/fixture"
	"github.com/poolgate/poolgate/pool"
)

// history is testdata/pools/staging-env-a.fi (env-a moves at commits 1..3)
// followed by `quiet` commits in which only env-b moves.
func history(t *testing.T, quiet int) (dir, tip string) {
	dir = filepath.Join(t.TempDir(), "locks.git")
	var b strings.Builder
	for i := 0; i < quiet; i++ {
		from, to, verb := "unclaimed", "claimed", "claiming"
		if i%2 == 1 {
			from, to, verb = "claimed", "unclaimed", "unclaiming"
		}
		msg := verb + ": env-b"
		// No from: fast-import goes on from the branch the fixture left.
		fmt.Fprintf(&b, "commit refs/heads/master\ncommitter git <git@localhost> %d +0000\ndata %d\n%s\nD staging/%s/env-b\nM 100644 :1 staging/%s/env-b\n\n",
			1700000100+i, len(msg), msg, from, to)
	}
	fixture.Import(t, dir, fixture.Read(t, "pools/staging-env-a.fi"), []byte(b.String()))
	out, err := exec.Command("git", "-C", dir, "rev-parse", "refs/heads/master").Output()
	if err != nil {
		t.Fatal(err)
	}
	return dir, strings.TrimSpace(string(out))
}

// LockSteps answers the same from its in-process walk and, past
// lockWalkLimit, from git log.
func TestLockStepsNearAndFarBack(t *testing.T) {
	for _, quiet := range []int{3, lockWalkLimit + 10} {
		t.Run(fmt.Sprint(quiet), func(t *testing.T) {
			dir, tip := history(t, quiet)
			r := Open(dir)
			defer r.Close()
			steps, err := r.LockSteps(tip, "staging", "env-a", 16)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range steps {
				got = append(got, strings.TrimSpace(s.Message)+"="+s.State.String())
			}
			want := "claiming: env-a=claimed,unclaiming: env-a=unclaimed,claiming: env-a=claimed,create=unclaimed"
			if strings.Join(got, ",") != want {
				t.Fatalf("steps:\n got %s\nwant %s", strings.Join(got, ","), want)
			}
			if one, err := r.LockSteps(tip, "staging", "env-a", 1); err != nil || len(one) != 1 || one[0].State != pool.StateClaimed {
				t.Fatalf("n=1: %v %v", one, err)
			}
		})
	}
}
