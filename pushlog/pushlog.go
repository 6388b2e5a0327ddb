// Package pushlog is the contract between poolgate's git hooks and the
// rest of it: the environment the hooks read, the verdict a hook leaves for
// the daemon, and the fsynced JSON-lines records kept beside a repository
// (who pushed what, every refusal, and what watch mode saw upstream) that
// the event deriver reads. Writers and readers meet only here.
package pushlog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/poolgate/poolgate/validator"
)

// Environment variables the hooks read. The daemon sets them for every git
// command it runs; other git servers map their own (see README).
const (
	EnvConfig      = "POOLGATE_CONFIG"
	EnvRepo        = "POOLGATE_REPO"
	EnvUser        = "POOLGATE_USER"
	EnvRole        = "POOLGATE_ROLE"
	EnvKey         = "POOLGATE_KEY"
	EnvVerdictFile = "POOLGATE_VERDICT_FILE"
	// EnvOperator "1" marks poolgate's own operator action (the operator
	// package sets it on its local push). Security: the daemon's SSH
	// sessions never pass it from a client; a hook-only server's sshd must
	// not accept it either (AcceptEnv).
	EnvOperator = "POOLGATE_OPERATOR"
)

// The verdict words: written by the pre-receive hook to
// POOLGATE_VERDICT_FILE, stored in rejection records, read by the daemon
// to decide how to end a push before receive-pack writes its report.
const (
	VerdictAccepted = "accepted"
	// A refusal's verdict is the kind of the rules it broke.
	VerdictTransient = string(validator.Transient)
	VerdictPermanent = string(validator.Permanent)
)

// The words the daemon's log line of a push adds for pushes the hook gave
// no verdict on (or did not run for).
const (
	VerdictRejected = "rejected"       // by git itself, or a hook without a verdict
	VerdictFailed   = "failed"         // git failed
	VerdictNothing  = "nothing-pushed" // no ref update reached the server
)

// RuleMoved is the rule a cluster node's reference-transaction hook writes
// with a transient verdict when it lost the compare-and-set (another node
// moved the branch first): the daemon answers the client as receive-pack
// would have rejected it, an ordinary "[remote rejected]".
const RuleMoved = "moved"

// WriteVerdict writes the verdict file: the verdict on the first line, the
// broken rules on the second. Written once per hook run.
func WriteVerdict(path, verdict string, rules []string) error {
	return os.WriteFile(path, []byte(verdict+"\nrules: "+strings.Join(rules, ",")+"\n"), 0o600)
}

// ReadVerdict reads a verdict file. A missing file reads as "".
func ReadVerdict(path string) (verdict string, rules []string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", nil
	}
	first, rest, _ := strings.Cut(string(b), "\n")
	if r, ok := strings.CutPrefix(strings.TrimSpace(rest), "rules: "); ok && r != "" {
		rules = strings.Split(r, ",")
	}
	return strings.TrimSpace(first), rules
}

// Kind names one record file of a repository.
type Kind string

// The record files, in <git dir>/poolgate/.
const (
	// Pending: a push the validator let through, written by pre-receive
	// before git moves the ref. It says who pushed which commits, so that
	// events derived the moment the ref moves already know the pusher. It
	// is not an acceptance: the ref update can still fail.
	Pending Kind = "pending.jsonl"
	// Pushes: an accepted push, written once its ref has moved (by
	// post-receive, or by watch mode after the mirror fetched).
	Pushes Kind = "pushes.jsonl"
	// Rejections: a refused push.
	Rejections Kind = "rejections.jsonl"
	// Violations and Rewrites: watch mode's findings upstream.
	Violations Kind = "violations.jsonl"
	Rewrites   Kind = "rewrites.jsonl"
)

// dir is the records' directory inside a git dir.
const dir = "poolgate"

// maxRead bounds one Read; the rest is read at the next one.
const maxRead = 16 << 20

// Log is the record directory of one repository.
type Log struct{ dir string }

// At is the log of the repository whose git dir is gitDir.
func At(gitDir string) Log { return Log{dir: filepath.Join(gitDir, dir)} }

// Dir is the records' directory; other files of poolgate's in a repo (the
// operator's lock file) live there too.
func (l Log) Dir() string { return l.dir }

// Path is where records of kind k are kept.
func (l Log) Path(k Kind) string { return filepath.Join(l.dir, string(k)) }

// Append appends records as JSON lines and fsyncs them before returning:
// a record is durable before the hook answers. One write call per batch,
// so a crash leaves at worst one torn last line, which Decode skips.
func (l Log) Append(k Kind, recs ...any) error {
	var buf []byte
	for _, r := range recs {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		buf = append(append(buf, b...), '\n')
	}
	if len(buf) == 0 {
		return nil
	}
	if err := l.append(l.Path(k), buf); err != nil {
		return fmt.Errorf("recording the push: %w", err)
	}
	return nil
}

func (l Log) append(path string, buf []byte) error {
	if err := os.MkdirAll(l.dir, 0o755); err != nil {
		return err
	}
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(buf); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if errors.Is(statErr, os.ErrNotExist) {
		// A new file's name is durable only once its directory is.
		if d, err := os.Open(l.dir); err == nil {
			err = d.Sync()
			d.Close()
			return err
		}
	}
	return nil
}

// Read returns the complete lines of records of kind k from offset on, and
// the offset after them. A line still being written (no newline yet) is
// left for the next read. A file shorter than offset (truncated or replaced
// by an operator) is read from the start.
func (l Log) Read(k Kind, offset int64) ([][]byte, int64, error) {
	f, err := os.Open(l.Path(k))
	if errors.Is(err, os.ErrNotExist) {
		return nil, offset, nil
	}
	if err != nil {
		return nil, offset, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, offset, err
	}
	if fi.Size() < offset {
		offset = 0
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil, offset, err
	}
	data, err := io.ReadAll(io.LimitReader(f, maxRead))
	if err != nil {
		return nil, offset, err
	}
	end := bytes.LastIndexByte(data, '\n')
	if end < 0 {
		return nil, offset, nil
	}
	data = data[:end+1]
	var lines [][]byte
	for _, ln := range bytes.Split(data[:end], []byte("\n")) {
		if len(bytes.TrimSpace(ln)) > 0 {
			lines = append(lines, ln)
		}
	}
	return lines, offset + int64(len(data)), nil
}

// Decode parses one record line. A crash can leave a torn line that the
// next record then continues on the same line; the intact record at its
// end is still read.
func Decode(line []byte, v any) bool {
	if json.Unmarshal(line, v) == nil {
		return true
	}
	if i := bytes.LastIndex(line, []byte(`{"time"`)); i > 0 {
		return json.Unmarshal(line[i:], v) == nil
	}
	return false
}
