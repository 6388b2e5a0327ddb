package gitproto

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// packOf builds a pack of the objects reachable from HEAD of a repo made
// by setup, preceded by a one-command list, as a push sends it.
func packOf(t *testing.T, files map[string][]byte) []byte {
	t.Helper()
	dir := t.TempDir()
	git := func(stdin io.Reader, args ...string) []byte {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Stdin = stdin
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir,
			"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t")
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("git %v: %v: %s", args, err, errb.String())
		}
		return out.Bytes()
	}
	git(nil, "init", "-q")
	for name, data := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	git(nil, "add", "-A")
	git(nil, "commit", "-q", "-m", "c")
	head := strings.TrimSpace(string(git(nil, "rev-parse", "HEAD")))
	pack := git(strings.NewReader(head+"\n"), "pack-objects", "--stdout", "--revs", "-q")
	cmds := EncodePkt(strings.Repeat("0", 40) + " " + head + " refs/heads/master\x00report-status side-band-64k\n")
	return append(append(cmds, "0000"...), pack...)
}

func limitKey(err error) string {
	var le *LimitError
	if errors.As(err, &le) {
		return le.Key
	}
	return ""
}

func TestGuardPushPassesAPushThroughUnchanged(t *testing.T) {
	push := packOf(t, map[string][]byte{"demo/unclaimed/a": []byte("x"), "demo/claimed/.keep": nil})
	var got bytes.Buffer
	err := GuardPush(&got, bytes.NewReader(push), PackLimits{MaxBytes: 1 << 20, MaxObject: 1 << 20, MaxObjects: 100})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), push) {
		t.Fatalf("forwarded %d bytes, sent %d (or different)", got.Len(), len(push))
	}
}

func TestGuardPushStopsABlobOverMaxObjectBytesAtItsHeader(t *testing.T) {
	// 4 MiB of zeros: a few KiB on the wire, refused by its header.
	push := packOf(t, map[string][]byte{"demo/unclaimed/big": make([]byte, 4<<20)})
	err := GuardPush(io.Discard, bytes.NewReader(push), PackLimits{MaxBytes: 1 << 30, MaxObject: 1 << 20, MaxObjects: 100})
	if limitKey(err) != "max_object_bytes" {
		t.Fatalf("got %v, want a max_object_bytes refusal", err)
	}
}

func TestGuardPushStopsAPackOverMaxPushObjectsAtItsHeader(t *testing.T) {
	files := map[string][]byte{}
	for i := range 20 {
		files["f"+strings.Repeat("x", i)] = []byte(strings.Repeat("y", i))
	}
	push := packOf(t, files)
	err := GuardPush(io.Discard, bytes.NewReader(push), PackLimits{MaxBytes: 1 << 30, MaxObject: 1 << 20, MaxObjects: 10})
	if limitKey(err) != "max_push_objects" {
		t.Fatalf("got %v, want a max_push_objects refusal", err)
	}
}

func TestGuardPushStopsAPushOverMaxPushBytes(t *testing.T) {
	files := map[string][]byte{}
	for i := range 50 {
		files[strings.Repeat("n", i+1)] = bytes.Repeat([]byte{byte(i)}, 1000+i)
	}
	push := packOf(t, files)
	var got bytes.Buffer
	err := GuardPush(&got, bytes.NewReader(push), PackLimits{MaxBytes: 1024, MaxObject: 1 << 20, MaxObjects: 1000})
	if limitKey(err) != "max_push_bytes" {
		t.Fatalf("got %v, want a max_push_bytes refusal", err)
	}
	if got.Len() > 1024 {
		t.Errorf("forwarded %d bytes past a 1024-byte cap", got.Len())
	}
	// Exactly at the cap is still fine.
	if err := GuardPush(io.Discard, bytes.NewReader(push), PackLimits{MaxBytes: int64(len(push)), MaxObject: 1 << 20, MaxObjects: 1000}); err != nil {
		t.Fatalf("a push of exactly max_push_bytes: %v", err)
	}
}

func TestGuardPushLetsGitJudgeWhatIsNotAPack(t *testing.T) {
	in := append(EncodePkt(strings.Repeat("0", 40)+" "+strings.Repeat("0", 40)+" refs/heads/x\n"), "0000garbage that is no pack"...)
	var got bytes.Buffer
	if err := GuardPush(&got, bytes.NewReader(in), PackLimits{MaxBytes: 1 << 20, MaxObject: 1, MaxObjects: 1}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), in) {
		t.Fatal("input not forwarded unchanged")
	}
}
