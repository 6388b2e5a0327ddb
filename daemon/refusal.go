package daemon

import (
	"bytes"
	"fmt"
	"regexp"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/poolgate/poolgate/gitproto"
	"github.com/poolgate/poolgate/internal/logtext"
)

// Refusals of a push that retrying cannot fix. They reach the stock client
// through the permanent path (DESIGN.md §2): the report withheld, a band-3
// error naming the reason, a non-zero exit. A "[remote rejected] (unpacker
// error)" would make pool-resource retry silently forever.

// refusedMessage ends a push the hook refused permanently. The hook's own
// reasons were already relayed as "remote:" lines above it.
const refusedMessage = "poolgate: push refused, see the messages above"

// storeFailure is a push receive-pack did not store.
type storeFailure struct {
	rule   string // "bad-object", "disk-full" or "unpack"
	detail string // one line for the client and the log; no client text in it
}

func (f *storeFailure) clientMessage() string {
	return "poolgate: push refused: " + f.rule + ": " + f.detail
}

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
		return &storeFailure{rule: "bad-object", detail: fmt.Sprintf("git's fsck refuses object %.12s: %s: %s", m[1], m[2], bytes.TrimSpace(m[3]))}
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
