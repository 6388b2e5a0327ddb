package pool

import (
	"strings"
	"testing"
)

// messageSeeds are commit messages the stock pool-resource, its neighbours and
// humans write, plus hostile ones; `go test` runs each as a regular test.
var messageSeeds = []string{
	// v1.8.0+: the operation line, then Build URL (empty when Concourse sets none).
	"claiming: env-a\nBuild URL: https://ci.example.com/teams/main/pipelines/p/jobs/deploy/builds/42",
	"unclaiming: env-a\nBuild URL: https://ci.example.com/teams/main/pipelines/p/jobs/deploy/builds/42.1",
	"adding claimed: env-b\nBuild URL: ",
	"adding unclaimed: env-c\nBuild URL:",
	"removing: env-d\r\nBuild URL: https://ci.example.com/builds/1234\r\n",
	"updating: env-e\n\nBuild URL: https://ci.example.com/teams/a%2Fb/pipelines/p%20q/jobs/j/builds/7?x=1#y",
	// Before v1.8.0.
	"main/p/deploy build 42 claiming: env-a",
	"p/deploy build 3 unclaiming: env-a",
	"one-off build 1234 claiming: env-a",
	"main/p/deploy build 42 claiming: env-a\nBuild URL: https://ci.example.com/teams/other/pipelines/x/jobs/y/builds/9",
	"one-off build 77 adding claimed: x\nBuild URL: https://ci.example.com/teams/t/pipelines/p/jobs/j/builds/8",
	// Bare.
	"claiming: env-a",
	"claiming: name with spaces  \t",
	"claiming:  leading-space",
	"claiming: adding claimed: nested",
	"unclaiming: x\rBuild URL: https://ci.example.com/teams/t/pipelines/p/jobs/j/builds/1",
	// Not pool-resource's: free-form.
	"",
	"\n",
	"Freshening up the pool: releasing env-a, env-b, env-c",
	"Merge branch 'master' of ssh://git@host:2222/locks",
	"claiming:",
	"claiming: ",
	"claiming:env-a",
	"Claiming: env-a",
	"a/b build 1 frobbing: x",
	"a/b build 1  claiming: x",
	"a/b/c/d build 1 claiming: x",
	"one-off build claiming: x",
	"\xff\xfe claiming: \x00",
	"claiming: \xff\xfe",
	"claiming: " + strings.Repeat("x", 300),
}

var verbSet = map[string]bool{
	"claiming": true, "unclaiming": true, "adding claimed": true,
	"adding unclaimed": true, "removing": true, "updating": true,
}

// renderMessage writes an intent back as pool-resource would: a prefix the
// old formats carry (only when its fields fit the format), the operation
// line, and the Build URL line of v1.8.0+.
func renderMessage(in Intent) string {
	var b strings.Builder
	// The prefix regexps: TEAM, PIPELINE and JOB are [^/\s]+, the build
	// number and one-off id \S+.
	word := func(s string) bool { return s != "" && strings.IndexFunc(s, isSpaceRE2) < 0 }
	segment := func(s ...string) bool {
		for _, x := range s {
			if !word(x) || strings.Contains(x, "/") {
				return false
			}
		}
		return true
	}
	switch {
	case word(in.BuildID):
		b.WriteString("one-off build " + in.BuildID + " ")
	case in.Team == "" && word(in.Build) && segment(in.Pipeline, in.Job):
		b.WriteString(in.Pipeline + "/" + in.Job + " build " + in.Build + " ")
	case word(in.Build) && segment(in.Team, in.Pipeline, in.Job):
		b.WriteString(in.Team + "/" + in.Pipeline + "/" + in.Job + " build " + in.Build + " ")
	}
	b.WriteString(in.Verb + ": " + in.Name)
	if in.BuildURL != "" {
		b.WriteString("\nBuild URL: " + in.BuildURL)
	}
	return b.String()
}

// isSpaceRE2 is \s of Go's regexp (RE2): [\t\n\f\r ], not \v.
func isSpaceRE2(r rune) bool {
	return r == ' ' || r == '\t' || r == '\n' || r == '\f' || r == '\r'
}

func FuzzParseMessage(f *testing.F) {
	for _, s := range messageSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, msg string) {
		in := ParseMessage(msg)
		if s := Subject(msg); strings.Contains(s, "\n") {
			t.Fatalf("Subject(%q) = %q holds a newline", msg, s)
		}
		if in.Verb == "" {
			if in != (Intent{}) {
				t.Fatalf("ParseMessage(%q) = %+v: fields set without a verb", msg, in)
			}
			if in.Ops() != nil {
				t.Fatalf("free-form message %q maps to operations %v", msg, in.Ops())
			}
			return
		}
		if !verbSet[in.Verb] {
			t.Fatalf("ParseMessage(%q): verb %q is not one of pool-resource's six", msg, in.Verb)
		}
		if len(in.Ops()) == 0 {
			t.Fatalf("ParseMessage(%q): verb %q maps to no operation", msg, in.Verb)
		}
		if in.Name == "" || strings.ContainsAny(in.Name, "\n") {
			t.Fatalf("ParseMessage(%q): name %q is empty or holds a newline", msg, in.Name)
		}
		if strings.TrimRight(in.Name, " \t") != in.Name {
			t.Fatalf("ParseMessage(%q): name %q keeps trailing blanks", msg, in.Name)
		}
		lines := strings.Split(strings.ReplaceAll(msg, "\r\n", "\n"), "\n")
		if !strings.HasSuffix(strings.TrimRight(lines[0], " \t"), in.Verb+": "+in.Name) {
			t.Fatalf("ParseMessage(%q): %q does not end the first line", msg, in.Verb+": "+in.Name)
		}

		// The bare operation line parses back to the same verb and name.
		bare := ParseMessage(in.Verb + ": " + in.Name)
		if bare.Verb != in.Verb || bare.Name != in.Name {
			t.Fatalf("ParseMessage(%q) = %q %q, but re-rendered %q parses as %q %q",
				msg, in.Verb, in.Name, in.Verb+": "+in.Name, bare.Verb, bare.Name)
		}
		if bare.BuildURL != "" || bare.Team != "" || bare.Build != "" || bare.BuildID != "" {
			t.Fatalf("bare %q yields build fields %+v", in.Verb+": "+in.Name, bare)
		}

		// Build URL: the first "Build URL:" line after the subject, trimmed.
		wantURL := ""
		for _, l := range lines[1:] {
			if u, ok := strings.CutPrefix(strings.TrimSpace(l), "Build URL:"); ok {
				wantURL = strings.TrimSpace(u)
				break
			}
		}
		if in.BuildURL != wantURL {
			t.Fatalf("ParseMessage(%q).BuildURL = %q, want %q", msg, in.BuildURL, wantURL)
		}
		if in.Team != "" && (in.Pipeline == "" || in.Job == "" || in.Build == "") {
			t.Fatalf("ParseMessage(%q) = %+v: a team without pipeline, job and build", msg, in)
		}
		if (in.Pipeline != "") != (in.Job != "") || (in.Job != "" && in.Build == "") {
			t.Fatalf("ParseMessage(%q) = %+v: pipeline, job and build come together", msg, in)
		}

		// The whole intent survives being written back in pool-resource's
		// format: prefix (when the fields fit one), operation, Build URL.
		// A name ending in CR cannot be followed by a line break without
		// the pair reading as CRLF, so it only round-trips bare (above).
		if strings.HasSuffix(in.Name, "\r") && in.BuildURL != "" {
			return
		}
		again := ParseMessage(renderMessage(in))
		if again != in {
			t.Fatalf("ParseMessage(%q)\n = %+v\nrendered %q\n = %+v", msg, in, renderMessage(in), again)
		}
	})
}

// TestParseMessageFormats pins what each pool-resource format yields.
func TestParseMessageFormats(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		want Intent
	}{
		{"claiming: env-a\nBuild URL: https://ci.example.com/teams/main/pipelines/p/jobs/deploy/builds/42",
			Intent{Verb: "claiming", Name: "env-a", Team: "main", Pipeline: "p", Job: "deploy", Build: "42",
				BuildURL: "https://ci.example.com/teams/main/pipelines/p/jobs/deploy/builds/42"}},
		{"main/p/deploy build 42 unclaiming: env-a",
			Intent{Verb: "unclaiming", Name: "env-a", Team: "main", Pipeline: "p", Job: "deploy", Build: "42"}},
		{"p/deploy build 3 adding claimed: env-a",
			Intent{Verb: "adding claimed", Name: "env-a", Pipeline: "p", Job: "deploy", Build: "3"}},
		{"one-off build 1234 removing: env-a", Intent{Verb: "removing", Name: "env-a", BuildID: "1234"}},
		{"updating: env-a\nBuild URL: https://ci.example.com/builds/99", Intent{Verb: "updating", Name: "env-a", BuildID: "99",
			BuildURL: "https://ci.example.com/builds/99"}},
		{"adding unclaimed: env-a\nBuild URL: ", Intent{Verb: "adding unclaimed", Name: "env-a"}},
		{"Freshening up the pool", Intent{}},
		{"claiming:env-a", Intent{}},
	} {
		if got := ParseMessage(tc.msg); got != tc.want {
			t.Errorf("ParseMessage(%q)\n = %+v\nwant %+v", tc.msg, got, tc.want)
		}
	}
}

// TestRenderMessageRoundTripsOddURLFields: URL fields that cannot be written
// as an old-style prefix are still carried by the Build URL line.
func TestRenderMessageRoundTripsOddURLFields(t *testing.T) {
	in := ParseMessage("claiming: x\nBuild URL: https://h/teams/a%20b/pipelines/p%20q/jobs/j/builds/1")
	if in.Team != "a b" || in.Pipeline != "p q" {
		t.Fatalf("unescaping: %+v", in)
	}
	if r := renderMessage(in); strings.Contains(Subject(r), " build ") || ParseMessage(r) != in {
		t.Fatalf("render %q does not round-trip %+v", r, in)
	}
}
