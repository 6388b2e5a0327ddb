package daemon

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
	cmds := encodePkt(zeroOID + " " + head + " refs/heads/master\x00report-status side-band-64k\n")
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
	err := guardPush(&got, bytes.NewReader(push), packLimits{maxBytes: 1 << 20, maxObject: 1 << 20, maxObjects: 100})
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
	err := guardPush(io.Discard, bytes.NewReader(push), packLimits{maxBytes: 1 << 30, maxObject: 1 << 20, maxObjects: 100})
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
	err := guardPush(io.Discard, bytes.NewReader(push), packLimits{maxBytes: 1 << 30, maxObject: 1 << 20, maxObjects: 10})
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
	err := guardPush(&got, bytes.NewReader(push), packLimits{maxBytes: 1024, maxObject: 1 << 20, maxObjects: 1000})
	if limitKey(err) != "max_push_bytes" {
		t.Fatalf("got %v, want a max_push_bytes refusal", err)
	}
	if got.Len() > 1024 {
		t.Errorf("forwarded %d bytes past a 1024-byte cap", got.Len())
	}
	// Exactly at the cap is still fine.
	if err := guardPush(io.Discard, bytes.NewReader(push), packLimits{maxBytes: int64(len(push)), maxObject: 1 << 20, maxObjects: 1000}); err != nil {
		t.Fatalf("a push of exactly max_push_bytes: %v", err)
	}
}

func TestGuardPushLetsGitJudgeWhatIsNotAPack(t *testing.T) {
	in := append(encodePkt(zeroOID+" "+zeroOID+" refs/heads/x\n"), "0000garbage that is no pack"...)
	var got bytes.Buffer
	if err := guardPush(&got, bytes.NewReader(in), packLimits{maxBytes: 1 << 20, maxObject: 1, maxObjects: 1}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), in) {
		t.Fatal("input not forwarded unchanged")
	}
}

func TestKeySessionsCapsOneKeyNotOthers(t *testing.T) {
	var k keySessions
	var rel []func()
	for range 3 {
		r, ok := k.acquire("a", 3)
		if !ok {
			t.Fatal("refused under the cap")
		}
		rel = append(rel, r)
	}
	if _, ok := k.acquire("a", 3); ok {
		t.Fatal("a fourth session of one key admitted over 3")
	}
	if r, ok := k.acquire("b", 3); !ok {
		t.Fatal("another key refused")
	} else {
		r()
	}
	rel[0]()
	if _, ok := k.acquire("a", 3); !ok {
		t.Fatal("slot not given back")
	}
}
