package pool

import "testing"

// Every place that names a build (the stale-release reason, Slack lines,
// the status page, poolgate status/history) goes through BuildLabel, so
// this table is the one place the text is pinned; a one-off build once
// came out wrong in one of four copies.
func TestBuildLabelOfEveryPoolResourceMessageFormat(t *testing.T) {
	cases := []struct{ msg, want string }{
		{"claiming: env-a\nBuild URL: https://ci.example.com/teams/main/pipelines/p/jobs/deploy/builds/42", "p/deploy #42"},
		{"main/p/deploy build 42 claiming: env-a", "p/deploy #42"},
		{"p/deploy build 3 adding claimed: x", "p/deploy #3"},
		{"one-off build 977 removing: x", "one-off build 977"},
		{"one-off build 977 removing: x\nBuild URL: https://ci/builds/977", "one-off build 977"},
		{"claiming: env-a\nBuild URL: https://ci/builds/978", "one-off build 978"},
		{"claiming: env-a\nBuild URL: ", ""},
		{"updating: my lock", ""},
		{"Freshening up the pool staging", ""},
	}
	for _, c := range cases {
		if got := ParseMessage(c.msg).Label(); got != c.want {
			t.Errorf("label of %q = %q, want %q", c.msg, got, c.want)
		}
	}
	if got := BuildLabel("p", "deploy", "", ""); got != "p/deploy" {
		t.Errorf("a job without a build number = %q", got)
	}
	if got := BuildLabel("", "", "42", ""); got != "#42" {
		t.Errorf("a build number alone = %q", got)
	}
}
