package poolrepo

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/poolgate/poolgate/pool"
)

// history writes a repo whose lock env-a moves at commits 1..4 and then
// not for `quiet` commits (env-b moves instead), with git fast-import.
func history(t *testing.T, quiet int) (dir, tip string) {
	dir = t.TempDir()
	if out, err := exec.Command("git", "init", "-q", "--bare", dir).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	var b strings.Builder
	b.WriteString("blob\nmark :1\ndata 0\n\n")
	mark := 1
	commit := func(msg string, ops ...string) {
		mark++
		fmt.Fprintf(&b, "commit refs/heads/master\nmark :%d\ncommitter git <git@localhost> %d +0000\ndata %d\n%s\n", mark, 1700000000+mark, len(msg), msg)
		if mark > 2 {
			fmt.Fprintf(&b, "from :%d\n", mark-1)
		}
		for _, o := range ops {
			b.WriteString(o + "\n")
		}
		b.WriteString("\n")
	}
	mv := func(name, from, to string) []string {
		return []string{"D staging/" + from + "/" + name, "M 100644 :1 staging/" + to + "/" + name}
	}
	commit("create", "M 100644 :1 staging/claimed/.gitkeep", "M 100644 :1 staging/unclaimed/env-a", "M 100644 :1 staging/unclaimed/env-b")
	commit("claiming: env-a", mv("env-a", "unclaimed", "claimed")...)
	commit("unclaiming: env-a", mv("env-a", "claimed", "unclaimed")...)
	commit("claiming: env-a", mv("env-a", "unclaimed", "claimed")...)
	for i := 0; i < quiet; i++ {
		if i%2 == 0 {
			commit("claiming: env-b", mv("env-b", "unclaimed", "claimed")...)
		} else {
			commit("unclaiming: env-b", mv("env-b", "claimed", "unclaimed")...)
		}
	}
	cmd := exec.Command("git", "-C", dir, "fast-import", "--quiet")
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("fast-import: %v %s", err, out)
	}
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
