package hooks

import (
	"path/filepath"
	"time"

	"github.com/poolgate/poolgate/pushlog"
)

func (h *PreReceive) gitDir() string {
	if d := h.Getenv("GIT_DIR"); d != "" {
		if filepath.IsAbs(d) {
			return d
		}
		return filepath.Join(h.Dir, d)
	}
	return h.Dir
}

// record appends the push's record, fsynced, before the hook answers, so a
// daemon that dies right after a push loses neither a push nor a refusal.
func (h *PreReceive) record(res Result) error {
	now := time.Now().UTC()
	user, key, role := h.Getenv(pushlog.EnvUser), h.Getenv(pushlog.EnvKey), h.Getenv(pushlog.EnvRole)
	if role == "" {
		role = "write"
	}
	log := pushlog.At(h.gitDir())
	if len(res.Violations) > 0 {
		for _, u := range res.Updates {
			// One line per refused push; the violations name their refs.
			return log.Append(pushlog.Rejections, pushlog.Rejection{Time: now, User: user, Key: key, Role: role, Ref: u.Ref,
				Old: u.Old, New: u.New, Verdict: res.Verdict, Violations: pushlog.ViolationsOf(res.Violations)})
		}
		return nil
	}
	var lines []any
	for _, u := range res.Updates {
		lines = append(lines, pushlog.Push{Time: now, User: user, Key: key, Role: role, Ref: u.Ref,
			Old: u.Old, New: u.New, Commits: u.Commits})
	}
	return log.Append(pushlog.Pushes, lines...)
}
