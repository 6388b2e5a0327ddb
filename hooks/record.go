package hooks

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/poolgate/poolgate/validator"
)

// Files the hook appends to inside the repository's git dir. They are the
// durable record of who pushed what and of every refusal: written and
// synced before the hook answers, so a daemon that dies right after a push
// loses neither. The event deriver reads them.
const (
	RecordDir      = "poolgate"
	PushesFile     = "pushes.jsonl"
	RejectionsFile = "rejections.jsonl"
)

// PushRecord is one line of pushes.jsonl: an accepted ref update. The
// update can still fail after the hook (a lost race on the ref lock), so
// readers count only commits that are really on the branch.
type PushRecord struct {
	Time    time.Time `json:"time"`
	User    string    `json:"user"`
	Key     string    `json:"key,omitempty"`
	Role    string    `json:"role"`
	Ref     string    `json:"ref"`
	Old     string    `json:"old"`
	New     string    `json:"new"`
	Commits []string  `json:"commits"`
}

// RejectionRecord is one line of rejections.jsonl: a refused push.
type RejectionRecord struct {
	Time       time.Time         `json:"time"`
	User       string            `json:"user"`
	Key        string            `json:"key,omitempty"`
	Role       string            `json:"role"`
	Ref        string            `json:"ref"`
	Old        string            `json:"old"`
	New        string            `json:"new"`
	Verdict    string            `json:"verdict"`
	Violations []ViolationRecord `json:"violations"`
}

// ViolationRecord is a validator.Violation as stored and announced.
type ViolationRecord struct {
	Rule    string `json:"rule"`
	Kind    string `json:"kind"`
	Commit  string `json:"commit,omitempty"`
	Subject string `json:"subject,omitempty"`
	Ref     string `json:"ref,omitempty"`
	Pool    string `json:"pool,omitempty"`
	Lock    string `json:"lock,omitempty"`
	Reason  string `json:"reason"`
	Hint    string `json:"hint,omitempty"`
}

func violationRecords(vs []validator.Violation) []ViolationRecord {
	out := make([]ViolationRecord, len(vs))
	for i, v := range vs {
		out[i] = ViolationRecord{Rule: string(v.Rule), Kind: string(v.Kind), Commit: v.Commit, Subject: v.Subject,
			Ref: v.Ref, Pool: v.Pool, Lock: v.Lock, Reason: v.Reason, Hint: v.Hint}
	}
	return out
}

func (h *PreReceive) gitDir() string {
	if d := h.Getenv("GIT_DIR"); d != "" {
		if filepath.IsAbs(d) {
			return d
		}
		return filepath.Join(h.Dir, d)
	}
	return h.Dir
}

func (h *PreReceive) record(res Result) error {
	now := time.Now().UTC()
	user, key, role := h.Getenv(EnvUser), h.Getenv(EnvKey), h.Getenv(EnvRole)
	if role == "" {
		role = "write"
	}
	var lines []any
	file := PushesFile
	if len(res.Violations) > 0 {
		file = RejectionsFile
		for _, u := range res.Updates {
			lines = append(lines, RejectionRecord{Time: now, User: user, Key: key, Role: role, Ref: u.Ref,
				Old: u.Old, New: u.New, Verdict: res.Verdict, Violations: violationRecords(res.Violations)})
			break // one line per refused push; the violations name their refs
		}
	} else {
		for _, u := range res.Updates {
			lines = append(lines, PushRecord{Time: now, User: user, Key: key, Role: role, Ref: u.Ref,
				Old: u.Old, New: u.New, Commits: u.Commits})
		}
	}
	if len(lines) == 0 {
		return nil
	}
	return AppendJSONLines(filepath.Join(h.gitDir(), RecordDir, file), lines...)
}

// AppendJSONLines appends and fsyncs. One write call per batch, so a crash
// leaves at worst one torn last line, which readers skip.
func AppendJSONLines(path string, lines ...any) error {
	var buf []byte
	for _, l := range lines {
		b, err := json.Marshal(l)
		if err != nil {
			return err
		}
		buf = append(append(buf, b...), '\n')
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("recording the push: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("recording the push: %w", err)
	}
	if _, err := f.Write(buf); err != nil {
		f.Close()
		return fmt.Errorf("recording the push: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("recording the push: %w", err)
	}
	return f.Close()
}
