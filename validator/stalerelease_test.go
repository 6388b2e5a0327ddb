package validator

import (
	"strings"
	"testing"

	"github.com/poolgate/poolgate/pool"
)

func buildMsg(verb, pipeline, build string) string {
	return verb + ": env-a\nBuild URL: https://ci.example.com/teams/main/pipelines/" + pipeline + "/jobs/j/builds/" + build
}

func opRelease(name string) LockStep {
	return LockStep{Commit: "0pe0pe0pe0pe", State: pool.StateUnclaimed,
		Message: pool.OperatorMessage("unclaiming", "env-a", pool.Operator{Name: name, Reason: "aborted"})}
}

func claimBy(pipeline, build string) LockStep {
	return LockStep{Commit: "c1a1c1a1c1a1" + build, State: pool.StateClaimed, Message: buildMsg("claiming", pipeline, build)}
}

func releaseBy(pipeline, build string) LockStep {
	return LockStep{Commit: "4e14e14e" + build, State: pool.StateUnclaimed, Message: buildMsg("unclaiming", pipeline, build)}
}

// The steps are the lock's history before the release, newest first.
func TestStaleRelease(t *testing.T) {
	for _, c := range []struct {
		name     string
		releaser string // pipeline of the releasing build
		steps    []LockStep
		want     string
	}{
		{"old holder after an operator release and a new claim", "p1",
			[]LockStep{claimBy("p2", "7"), opRelease("alice"), claimBy("p1", "41")}, "stale-release"},
		{"old holder after two operator releases", "p1",
			[]LockStep{claimBy("p3", "9"), opRelease("bob"), claimBy("p2", "7"), opRelease("alice"), claimBy("p1", "41")}, "stale-release"},
		{"the current holder releases", "p2",
			[]LockStep{claimBy("p2", "7"), opRelease("alice"), claimBy("p1", "41")}, ""},
		{"another pipeline that never held it (a hand-over between pipelines)", "p3",
			[]LockStep{claimBy("p2", "7"), opRelease("alice"), claimBy("p1", "41")}, ""},
		{"no operator release in between", "p1",
			[]LockStep{claimBy("p2", "7"), releaseBy("p1", "41"), claimBy("p1", "41")}, ""},
		{"an operator's claim, then the old holder", "p1",
			[]LockStep{{Commit: "0c0c0c0c0c0c", State: pool.StateClaimed,
				Message: pool.OperatorMessage("claiming", "env-a", pool.Operator{Name: "alice", Reason: "maintenance"})},
				opRelease("alice"), claimBy("p1", "41")}, "stale-release"},
		{"no history", "p1", nil, ""},
		{"old message format (TEAM/PIPELINE/JOB build N)", "p1",
			[]LockStep{{Commit: "c1a1c1a1c1a17", State: pool.StateClaimed, Message: "main/p2/test build 7 claiming: env-a"},
				opRelease("alice"), {Commit: "c1a1c1a1c1a141", State: pool.StateClaimed, Message: "main/p1/j build 41 claiming: env-a"}}, "stale-release"},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := Input{Commit: Commit{Hash: "feedfeedfeed", Message: buildMsg("unclaiming", c.releaser, "41")},
				Before: snap("c:env-a"), After: snap("u:env-a"), Pusher: Pusher{Known: true},
				History: func(p, l string, n int) ([]LockStep, error) {
					if p != "staging" || l != "env-a" {
						t.Fatalf("history of %s/%s asked", p, l)
					}
					return c.steps[:min(n, len(c.steps))], nil
				}}
			vs, err := CheckCommit(in)
			if err != nil {
				t.Fatal(err)
			}
			if got := rules(vs); got != c.want {
				t.Fatalf("got %q, want %q: %v", got, c.want, vs)
			}
			if c.want != "" {
				s := vs[0].String()
				for _, w := range []string{"p1/j #41", "operator alice", "lock env-a"} {
					if !strings.Contains(s, w) {
						t.Errorf("message lacks %q: %s", w, s)
					}
				}
				if vs[0].Kind != Permanent {
					t.Errorf("kind %s, want permanent (the stock client must fail, not wait)", vs[0].Kind)
				}
			}
		})
	}
}

func TestOperatorTrailerOnlyFromTheOperatorPath(t *testing.T) {
	msg := pool.OperatorMessage("unclaiming", "env-a", pool.Operator{Name: "alice", Reason: "x"})
	in := Input{Commit: Commit{Message: msg}, Before: snap("c:env-a"), After: snap("u:env-a")}
	in.Pusher = Pusher{Known: true}
	if got := check(t, in); got != "operator-trailer" {
		t.Fatalf("pushed over git: %q, want operator-trailer", got)
	}
	in.Pusher = Pusher{Known: true, Operator: true}
	if got := check(t, in); got != "" {
		t.Fatalf("operator path: %q", got)
	}
	in.Pusher = Pusher{} // poolgate check: who pushed is unknown
	if got := check(t, in); got != "" {
		t.Fatalf("offline: %q", got)
	}
}

// The reason names both builds with pool's one label: a one-off build that
// claimed the lock since was once glued to the text before it.
func TestStaleReleaseNamesAOneOffBuildThatClaimedSince(t *testing.T) {
	steps := []LockStep{{Commit: "c1a1c1a1c1a1977", State: pool.StateClaimed, Message: "one-off build 977 claiming: env-a"},
		opRelease("alice"), claimBy("p1", "41")}
	in := Input{Commit: Commit{Hash: "feedfeedfeed", Message: buildMsg("unclaiming", "p1", "41")},
		Before: snap("c:env-a"), After: snap("u:env-a"), Pusher: Pusher{Known: true},
		History: func(p, l string, n int) ([]LockStep, error) { return steps[:min(n, len(steps))], nil }}
	vs, err := CheckCommit(in)
	if err != nil || len(vs) != 1 {
		t.Fatalf("got %v, %v; want one stale-release", vs, err)
	}
	want := "p1/j #41 (https://ci.example.com/teams/main/pipelines/p1/jobs/j/builds/41) no longer holds this lock"
	if s := vs[0].String(); !strings.Contains(s, want) || !strings.Contains(s, "and one-off build 977 has claimed it since") {
		t.Fatalf("reason does not name the builds as pool.BuildLabel does:\n%s", s)
	}
}

// A build named only by a URL poolgate cannot read a build from is still
// "a build", with its URL; never a bare "(URL)".
func TestStaleReleaseNamesABuildKnownOnlyByItsURL(t *testing.T) {
	for msg, want := range map[string]string{
		"claiming: env-a\nBuild URL: https://ci.example.com/x": "a build (https://ci.example.com/x)",
		"claiming: env-a":                   "a build",
		"one-off build 977 claiming: env-a": "one-off build 977",
	} {
		if got := buildOf(msg); got != want {
			t.Errorf("buildOf(%q) = %q, want %q", msg, got, want)
		}
	}
}
