package daemon

import (
	"bytes"
	"fmt"
	"io"
	"regexp"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/gitproto"
	"github.com/poolgate/poolgate/internal/logtext"
	"github.com/poolgate/poolgate/pool"
)

// Every refusal a client sees, in one place: one line each, prefixed
// "poolgate: ". What went wrong inside (an error from git, a file, a
// process) goes to the log only; a client is told errInternal.

// refusal is a message for the client.
type refusal struct{ msg string }

func (r *refusal) Error() string { return r.msg }

var (
	errAuthRequired = &refusal{"authentication required"}
	errInteractive  = &refusal{"interactive sessions are not served here; use git"}
	errSubsystem    = &refusal{"subsystems are not served here; use git"}
	errStopping     = &refusal{"server is stopping, try again"}
	errRepoBusy     = &refusal{"repository busy, try again"}
	errInternal     = &refusal{"internal error"}
	errPushTooLong  = &refusal{"push took too long and was stopped"}
	// errPushRefused ends a push the hook refused permanently; the hook's
	// own reasons were already relayed as "remote:" lines above it.
	errPushRefused = &refusal{"push refused, see the messages above"}
)

const channelRefused = "poolgate: only git commands are served here"

func errNoShell(user string) error {
	return &refusal{fmt.Sprintf("hi %s, there is no shell here; use git clone ssh://HOST/REPO.git", user)}
}

// errNoRepo quotes the client's path, bounded.
func errNoRepo(err error, path string) error {
	return &refusal{fmt.Sprintf("%v: %q", err, logtext.Clip(path))}
}

func errMirror(repo string) error {
	return &refusal{repo + " is a read-only mirror; push to its upstream"}
}

func errRole(user string, role config.Role, writes bool, repo string) error {
	verb := "read"
	if writes {
		verb = "push to"
	}
	return &refusal{fmt.Sprintf("%s (role %s) may not %s %s", user, role, verb, repo)}
}

func errKeySessions(max int) error {
	return &refusal{fmt.Sprintf("too many sessions for this key (ssh.max_sessions_per_key %d), try again", max)}
}

func errPushLimit(le *gitproto.LimitError) error { return &refusal{"push refused: " + le.Error()} }

// errCluster carries the cluster's reason a node cannot serve now (etcd
// unreachable, no quorum, still catching up): written for the client.
func errCluster(err error) error { return &refusal{err.Error()} }

func errProtocol(err error) error { return &refusal{"protocol error: " + err.Error()} }

// tell writes a refusal's line to the client.
func tell(w io.Writer, err error) { fmt.Fprintln(w, line(err)) }

func line(err error) string { return "poolgate: " + err.Error() }

// Refusals of a push that retrying cannot fix reach the stock client
// through the permanent path (DESIGN.md §2): the report withheld, a band-3
// error naming the reason, a non-zero exit. A "[remote rejected] (unpacker
// error)" would make pool-resource retry silently forever.

// storeFailure is a push receive-pack did not store.
type storeFailure struct {
	rule   string // "bad-object", "disk-full" or "unpack"
	detail string // one line for the client and the log; no client text in it
}

func (f *storeFailure) Error() string { return "push refused: " + f.rule + ": " + f.detail }

// gitTail keeps the last bytes of what git printed during a push (its
// stderr and band 2), for classifying a failure; safe for concurrent use.
type gitTail struct {
	mu sync.Mutex
	b  []byte
}

const gitTailMax = 16 << 10

func (t *gitTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - gitTailMax; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *gitTail) Bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]byte(nil), t.b...)
}

// fsckLineRe is git's fsck report of one object (fsck.c, report()):
// "error: object OID: msgId: text". msgId and text are git's own words.
var fsckLineRe = regexp.MustCompile(`error: object ([0-9a-f]{40,64}): ([A-Za-z]+): ([ -~]{0,200})`)

var noSpace = [][]byte{[]byte("No space left on device"), []byte("Disk quota exceeded")}

// classifyStore says why receive-pack did not store a push, from its
// report and what git printed, or nil when it was stored or refused for
// an ordinary reason (the hook's verdict, a non-fast-forward, a lost race).
// dir is the repo, for confirming a full disk.
func classifyStore(dir string, report, printed []byte) *storeFailure {
	unpack, _, ng := gitproto.ReportStatus(report)
	unpackFailed := unpack != "" && unpack != "ok"
	if !unpackFailed && len(ng) == 0 {
		return nil
	}
	full := false
	for _, s := range noSpace {
		full = full || bytes.Contains(printed, s)
	}
	// Security: past the unpacker the hook has run, and its output can
	// carry a pusher's text (a lock name): there, the words alone do not
	// make a full disk; the file system must say so too.
	// An unpacker that fails on a full disk may say so in other words
	// ("unable to create temporary object directory").
	if (full || unpackFailed) && (unpackFailed || diskLow(dir)) && (full || diskLow(dir)) {
		return &storeFailure{rule: "disk-full", detail: "the server's disk is full, nothing was stored; an operator must free space"}
	}
	if !unpackFailed {
		return nil
	}
	if m := fsckLineRe.FindSubmatch(printed); m != nil {
		return &storeFailure{rule: "bad-object", detail: fmt.Sprintf("git's fsck refuses object %s: %s: %s", pool.Short(string(m[1])), m[2], bytes.TrimSpace(m[3]))}
	}
	if bytes.Contains(printed, []byte("fsck error")) {
		return &storeFailure{rule: "bad-object", detail: "git's fsck refuses the pushed objects"}
	}
	return &storeFailure{rule: "unpack", detail: "the server could not store the pushed objects (" + logtext.ClipN(unpack, 80) + ")"}
}

// diskLowBytes: less free space than this on the data dir's file system
// is a full disk for /healthz and for confirming a push's ENOSPC.
const diskLowBytes = 1 << 20

// diskLow reports whether the file system holding dir is (nearly) full, in
// bytes or in inodes.
func diskLow(dir string) bool {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return false
	}
	return st.Bavail*uint64(st.Bsize) < diskLowBytes || (st.Files > 0 && st.Ffree == 0)
}

// diskHealth remembers the last push lost to a full disk until a push is
// stored again, for /healthz.
type diskHealth struct {
	last atomic.Pointer[diskTrouble]
}

type diskTrouble struct {
	repo string
	at   time.Time
}

func (d *diskHealth) failed(repo string) { d.last.Store(&diskTrouble{repo: repo, at: time.Now()}) }
func (d *diskHealth) stored()            { d.last.Store(nil) }

// problem is what /healthz says about the disk, "" when all is well.
func (d *diskHealth) problem(dataDir string) string {
	if t := d.last.Load(); t != nil {
		return fmt.Sprintf("disk full: a push to %s could not be stored at %s", t.repo, t.at.UTC().Format(time.RFC3339))
	}
	if diskLow(dataDir) {
		return "disk full: less than 1 MiB free in " + dataDir
	}
	return ""
}
