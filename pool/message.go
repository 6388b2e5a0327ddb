package pool

import (
	"net/url"
	"regexp"
	"strings"
)

// Intent is what a pool-resource commit message says it does.
type Intent struct {
	// Verb is the message's operation word: "claiming", "unclaiming",
	// "adding claimed", "adding unclaimed", "removing" or "updating".
	// Empty when the message is not pool-resource's.
	Verb string
	Name string

	Team     string
	Pipeline string
	Job      string
	Build    string // build name (number), e.g. "42" or "42.1"
	BuildID  string // one-off build id
	BuildURL string
}

// Verbs in the order they are tried ("unclaiming" before "claiming" does not
// matter with anchored matching, but "adding claimed" must stay distinct).
var verbs = []string{"claiming", "unclaiming", "adding claimed", "adding unclaimed", "removing", "updating"}

var (
	// TEAM/PIPELINE/JOB build N VERB: NAME (and the team-less older form).
	jobPrefixRe = regexp.MustCompile(`^([^/\s]+)/([^/\s]+)(?:/([^/\s]+))? build (\S+) (.*)$`)
	oneOffRe    = regexp.MustCompile(`^one-off build (\S+) (.*)$`)
	// Concourse build URLs: /teams/T/pipelines/P/jobs/J/builds/N
	buildURLRe = regexp.MustCompile(`/teams/([^/]+)/pipelines/([^/]+)/jobs/([^/]+)/builds/([^/?#]+)`)
	oneOffURL  = regexp.MustCompile(`/builds/([0-9]+)$`)
)

// ParseMessage reads a commit message in any of pool-resource's formats.
// Anything else yields an Intent with an empty Verb: free-form messages are
// allowed and only the tree rules apply to them.
func ParseMessage(msg string) Intent {
	var in Intent
	lines := strings.Split(strings.ReplaceAll(msg, "\r\n", "\n"), "\n")
	first := strings.TrimRight(lines[0], " \t")
	for _, l := range lines[1:] {
		if u, ok := strings.CutPrefix(strings.TrimSpace(l), "Build URL:"); ok {
			in.BuildURL = strings.TrimSpace(u)
			break
		}
	}

	rest := first
	if m := oneOffRe.FindStringSubmatch(first); m != nil {
		in.BuildID, rest = m[1], m[2]
	} else if m := jobPrefixRe.FindStringSubmatch(first); m != nil {
		if m[3] == "" { // PIPELINE/JOB build N, before teams existed
			in.Pipeline, in.Job = m[1], m[2]
		} else {
			in.Team, in.Pipeline, in.Job = m[1], m[2], m[3]
		}
		in.Build, rest = m[4], m[5]
	}
	for _, v := range verbs {
		if name, ok := strings.CutPrefix(rest, v+": "); ok && name != "" {
			in.Verb, in.Name = v, name
			break
		}
	}
	if in.Verb == "" {
		// A prefix without a verb is not pool-resource's after all.
		return Intent{}
	}
	if in.BuildURL != "" {
		in.fromURL()
	}
	return in
}

// fromURL fills build fields the message prefix did not give (v1.8.0+
// messages carry only the URL).
func (in *Intent) fromURL() {
	u, err := url.Parse(in.BuildURL)
	if err != nil {
		return
	}
	if m := buildURLRe.FindStringSubmatch(u.EscapedPath()); m != nil {
		unesc := func(s string) string {
			if v, err := url.PathUnescape(s); err == nil {
				return v
			}
			return s
		}
		if in.Team == "" && in.Pipeline == "" && in.Job == "" && in.Build == "" {
			in.Team, in.Pipeline, in.Job, in.Build = unesc(m[1]), unesc(m[2]), unesc(m[3]), unesc(m[4])
		}
		return
	}
	if m := oneOffURL.FindStringSubmatch(u.EscapedPath()); m != nil && in.BuildID == "" && in.Build == "" {
		in.BuildID = m[1]
	}
}

// Ops returns the operations the intent's verb may stand for.
func (in Intent) Ops() []Op {
	switch in.Verb {
	case "claiming":
		return []Op{OpClaim}
	case "unclaiming":
		return []Op{OpRelease}
	case "adding claimed":
		// pool-resource's add overwrites an existing file: an update.
		return []Op{OpAddClaimed, OpUpdate}
	case "adding unclaimed":
		return []Op{OpAdd, OpUpdate}
	case "removing":
		return []Op{OpRemove, OpRemoveFree}
	case "updating":
		return []Op{OpUpdate}
	}
	return nil
}

// Subject is the first line of a commit message.
func Subject(msg string) string {
	s, _, _ := strings.Cut(msg, "\n")
	return strings.TrimRight(s, "\r")
}

// BuildLabel is how every part of poolgate names a build to people:
// "p/deploy #42" (DESIGN.md §5's Slack line), "p/deploy" without a number,
// "one-off build 17", "#42" with only a number; "" when nothing is known,
// so each caller picks its own fallback (the pusher, "-", "a build").
func BuildLabel(pipeline, job, build, buildID string) string {
	switch {
	case pipeline != "" && job != "":
		if build != "" {
			return pipeline + "/" + job + " #" + build
		}
		return pipeline + "/" + job
	case buildID != "":
		return "one-off build " + buildID
	case build != "":
		return "#" + build
	}
	return ""
}

// Label is BuildLabel of the build the message names.
func (in Intent) Label() string { return BuildLabel(in.Pipeline, in.Job, in.Build, in.BuildID) }
