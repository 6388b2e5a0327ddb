package validator

import (
	"fmt"
	"strings"

	"github.com/poolgate/poolgate/pool"
)

// Kind says whether retrying the same push can ever succeed.
type Kind string

const (
	// Transient: the pool may change so the same push lands later; the
	// stock client waits and retries, which is what a limit should do.
	Transient Kind = "transient"
	// Permanent: the push can never land; the build must hear why.
	Permanent Kind = "permanent"
)

// KindOf returns a rule's kind.
func KindOf(r Rule) Kind {
	if r == OverLimit {
		return Transient
	}
	return Permanent
}

// Violation is one broken rule.
type Violation struct {
	Rule    Rule
	Kind    Kind
	Commit  string // full sha; empty for ref-level violations
	Subject string
	Ref     string
	Pool    string
	Lock    string
	Reason  string
	Hint    string
}

// String renders the violation as the pusher sees it: the rule first, then
// the commit, pool and lock, then what to do about it.
func (v Violation) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "[%s] ", v.Rule)
	if v.Commit != "" {
		fmt.Fprintf(&b, "commit %s %q: ", pool.Short(v.Commit), clip(v.Subject, 72))
	} else if v.Ref != "" {
		fmt.Fprintf(&b, "%s: ", v.Ref)
	}
	var where []string
	if v.Pool != "" {
		where = append(where, "pool "+quoteIfOdd(v.Pool))
	}
	if v.Lock != "" {
		where = append(where, "lock "+quoteIfOdd(v.Lock))
	}
	if len(where) > 0 {
		b.WriteString(strings.Join(where, ", ") + ": ")
	}
	b.WriteString(v.Reason)
	if v.Hint != "" {
		b.WriteString("\n  hint: " + v.Hint)
	}
	return b.String()
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// quoteIfOdd keeps ordinary names readable and makes hostile ones (newlines,
// control characters, invalid UTF-8) visible and single-line.
func quoteIfOdd(s string) string {
	if CheckName(strings.ReplaceAll(s, "/", "_")) == nil && !strings.ContainsAny(s, " \"'") {
		return s
	}
	return fmt.Sprintf("%q", s)
}

func newViolation(r Rule, pool, lock, reason, hint string) Violation {
	return Violation{Rule: r, Kind: KindOf(r), Pool: pool, Lock: lock, Reason: reason, Hint: hint}
}
