package pool

import (
	"fmt"
	"regexp"
	"strings"
)

// ZeroSHA is git's "no object" id.
const ZeroSHA = "0000000000000000000000000000000000000000"

// IsZero reports an all-zero object id of any hash length.
func IsZero(sha string) bool {
	for _, c := range sha {
		if c != '0' {
			return false
		}
	}
	return sha != ""
}

// Short is a commit's abbreviated id, as every message and log line
// shows it.
func Short(sha string) string {
	if len(sha) > 10 {
		return sha[:10]
	}
	return sha
}

var objectIDRe = regexp.MustCompile(`^([0-9a-f]{40}|[0-9a-f]{64})$`)

// IsObjectID reports a full object id, SHA-1 or SHA-256, as git prints
// it: what may be passed on to git from a hook's input, a peer or an
// operator without being read as an option or a revision expression.
func IsObjectID(s string) bool { return objectIDRe.MatchString(s) }

// RefUpdate is one "OLD NEW REF" line: a pusher's command, a hook's input,
// and what the hook learned of it.
type RefUpdate struct {
	Old, New, Ref string
	// FastForward: New descends from Old (or Old is zero). Only the
	// pre-receive hook, which reads the repo, knows it; parsed updates
	// start as fast-forwards.
	FastForward bool
	// Commits are the new first-parent commits the update brings to the
	// pool branch, oldest first (set by the pre-receive hook).
	Commits []string
}

// ParseRefUpdate reads one "OLD NEW REF" line; both ids must be full
// object ids.
func ParseRefUpdate(line string) (RefUpdate, error) {
	f := strings.Fields(line)
	if len(f) != 3 || !IsObjectID(f[0]) || !IsObjectID(f[1]) {
		return RefUpdate{}, fmt.Errorf("malformed ref update %q", line)
	}
	return RefUpdate{Old: f[0], New: f[1], Ref: f[2], FastForward: true}, nil
}

func (u RefUpdate) String() string { return u.Ref + " " + Short(u.Old) + "→" + Short(u.New) }
