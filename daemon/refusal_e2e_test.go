package daemon_test

import (
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/poolgate/poolgate/internal/gittest"
	"github.com/poolgate/poolgate/internal/poolclient"
)

// assertPushFailed checks a push's output reads as an error the stock
// client gives up on, not as a rejection it retries silently forever.
func assertPushFailed(t *testing.T, out string, err error, wants ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("push succeeded:\n%s", out)
	}
	if strings.Contains(out, "[rejected]") || strings.Contains(out, "[remote rejected]") {
		t.Errorf("push output reads as a rejection, the stock client would retry forever:\n%s", out)
	}
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("push output lacks %q:\n%s", w, out)
		}
	}
}

// Content git's own fsck refuses (receive.fsckObjects) is crafted with
// hash-object --literally, since git's porcelain will not make it, and
// pushed with the stock client's own push command.
func TestObjectsGitsFsckRefusesFailThePushAsBadObject(t *testing.T) {
	f := newFixture(t)
	s := f.start()
	ctx := ctxT(t, 120*time.Second)
	before := f.bareGit("rev-parse", "master")
	cases := map[string]struct {
		entries func(blob []byte) []byte
		msgID   string
	}{
		"duplicate tree entries": {func(b []byte) []byte {
			e := append([]byte("100644 a\x00"), b...)
			return append(e, e...)
		}, "duplicateEntries"},
		"a .git tree entry": {func(b []byte) []byte { return append([]byte("100644 .git\x00"), b...) }, "hasDotgit"},
		"a .GIT tree entry": {func(b []byte) []byte { return append([]byte("100644 .GIT\x00"), b...) }, "hasDotgit"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := s.client("writer", strings.ReplaceAll(name, " ", "-"))
			if err := c.Clone(ctx); err != nil {
				t.Fatal(err)
			}
			blob, _ := hex.DecodeString(gittest.Run(t, c.Dir, []byte("x\n"), "hash-object", "-w", "--stdin"))
			bad := gittest.Run(t, c.Dir, tc.entries(blob), "hash-object", "-t", "tree", "-w", "--literally", "--stdin")
			// The bad tree as a subtree of the branch's own tree, so the
			// commit is otherwise an ordinary one.
			top := gittest.Run(t, c.Dir, nil, "ls-tree", "HEAD")
			tree := gittest.Run(t, c.Dir, []byte(top+"\n040000 tree "+bad+"\tjunk\n"), "mktree")
			commit := gittest.Run(t, c.Dir, nil, "commit-tree", tree, "-p", "HEAD", "-m", "junk")
			out, err := c.Git(ctx, "push", "origin", commit+":master")
			assertPushFailed(t, out, err, "bad-object", tc.msgID)
		})
	}
	t.Run("a malformed commit", func(t *testing.T) {
		c := s.client("writer", "malformed-commit")
		if err := c.Clone(ctx); err != nil {
			t.Fatal(err)
		}
		tree := gittest.Run(t, c.Dir, nil, "rev-parse", "HEAD^{tree}")
		head := gittest.Run(t, c.Dir, nil, "rev-parse", "HEAD")
		// An author line without an email, which git's porcelain never writes.
		raw := "tree " + tree + "\nparent " + head + "\nauthor nobody 1700000000 +0000\ncommitter nobody 1700000000 +0000\n\nclaiming: lock-a\n"
		commit := gittest.Run(t, c.Dir, []byte(raw), "hash-object", "-t", "commit", "-w", "--literally", "--stdin")
		out, err := c.Git(ctx, "push", "origin", commit+":master")
		assertPushFailed(t, out, err, "bad-object", "missingEmail")
	})
	if after := f.bareGit("rev-parse", "master"); after != before {
		t.Errorf("master moved from %s to %s", before, after)
	}
	f.bareGit("fsck", "--strict")
	if !s.logged(`"rules":["bad-object"]`) {
		t.Errorf("log has no bad-object refusal")
	}
	// A normal stock client right after is unaffected.
	c := s.client("writer", "after")
	if err := c.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Acquire(ctx); err != nil {
		t.Fatalf("acquire after the refusals: %v", err)
	}
}

// A full disk: the data dir on a small tmpfs, filled up after the clone.
// The stock client's acquire fails its step with the reason (it would have
// retried "[remote rejected] (unpacker error)" forever), nothing lands, the
// log says so at error level, /healthz and /metrics say so; once space is
// freed a push lands and /healthz is ok again.
func TestFullDiskFailsThePushWithTheReasonAndRaisesTheAlarm(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root; the classification is covered by TestClassifyStoreOnGitsRealOutput")
	}
	f := newFixture(t)
	if err := os.MkdirAll(f.data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", f.data, "tmpfs", 0, "size=8m"); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(f.data, syscall.MNT_DETACH) })
	f.http = "127.0.0.1:0"
	f.writeConfig()
	s := f.start()
	ctx := ctxT(t, 120*time.Second)
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + s.http + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 {
		t.Fatalf("/healthz before: %d %s", code, body)
	}
	c := s.client("writer", "full")
	if err := c.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	before := f.bareGit("rev-parse", "master")
	fill := filepath.Join(f.data, "fill")
	fh, err := os.Create(fill)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for i := 0; i < 1024; i++ { // at most 64 MiB: the tmpfs is 8
		if _, err := fh.Write(chunk); err != nil {
			break
		}
	}
	fh.Close()

	_, err = c.Acquire(ctx)
	var failed *poolclient.FailedError
	if !errors.As(err, &failed) {
		t.Fatalf("acquire on a full disk ended with %v, want the step to fail", err)
	}
	for _, out := range failed.Outputs {
		assertPushFailed(t, out, errors.New("failed"), "disk-full", "disk is full")
	}
	if after := f.bareGit("rev-parse", "master"); after != before {
		t.Errorf("master moved from %s to %s", before, after)
	}
	if !s.logged(`"level":"error","repo":"locks","data_dir"`) {
		t.Errorf("no error log line for the full disk")
	}
	if code, body := get("/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "disk full") {
		t.Errorf("/healthz on a full disk: %d %q", code, body)
	}
	if _, body := get("/metrics"); !strings.Contains(body, `poolgate_disk_full_total{repo="locks"} `) {
		t.Errorf("/metrics has no poolgate_disk_full_total for locks")
	}

	os.Remove(fill)
	if _, err := c.Acquire(ctx); err != nil {
		t.Fatalf("acquire once space is freed: %v", err)
	}
	if code, body := get("/healthz"); code != 200 {
		t.Errorf("/healthz after space was freed and a push landed: %d %q", code, body)
	}
	f.bareGit("fsck")
}
