package pool

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Trailers that mark a commit as an operator action (poolgate release,
// the API, the page, release_after). They follow pool-resource's own
// message ("unclaiming: NAME"), so every reader of that format still
// understands the commit; these lines say who did it and why.
//
// Security: a served repo's hook refuses these trailers from anything but
// the operator path (validator rule operator-trailer), so on a served repo
// they are as trustworthy as the push records.
const (
	OperatorTrailer = "Poolgate-Operator:"
	ReasonTrailer   = "Poolgate-Reason:"
)

// MaxReasonBytes bounds an operator's reason: one line for a log, a Slack
// message and a commit.
const MaxReasonBytes = 500

// Operator is who performed an operator action and why.
type Operator struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// OperatorMessage is the commit message of an operator action: the
// pool-resource message for the operation, then the trailers.
func OperatorMessage(verb, lock string, o Operator) string {
	return fmt.Sprintf("%s: %s\n\n%s %s\n%s %s\n", verb, lock, OperatorTrailer, o.Name, ReasonTrailer, o.Reason)
}

// ParseOperator returns the operator trailers of a message, or nil when it
// has none.
func ParseOperator(msg string) *Operator {
	var o Operator
	found := false
	for _, l := range strings.Split(strings.ReplaceAll(msg, "\r\n", "\n"), "\n") {
		l = strings.TrimSpace(l)
		if v, ok := strings.CutPrefix(l, OperatorTrailer); ok {
			o.Name, found = strings.TrimSpace(v), true
		} else if v, ok := strings.CutPrefix(l, ReasonTrailer); ok {
			o.Reason = strings.TrimSpace(v)
		}
	}
	if !found {
		return nil
	}
	return &o
}

// CheckReason reports why text cannot be an operator's reason (or name), or
// nil: it is one line of printable text, so it cannot forge another line of
// the message (a Build URL, a second trailer).
func CheckReason(what, text string) error {
	switch {
	case strings.TrimSpace(text) == "":
		return fmt.Errorf("%s is empty", what)
	case len(text) > MaxReasonBytes:
		return fmt.Errorf("%s is %d bytes, over %d", what, len(text), MaxReasonBytes)
	case !utf8.ValidString(text):
		return fmt.Errorf("%s is not valid UTF-8", what)
	}
	for _, r := range text {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' {
			return fmt.Errorf("%s must be one line without control characters", what)
		}
	}
	return nil
}
