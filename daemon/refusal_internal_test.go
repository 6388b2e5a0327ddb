package daemon

import (
	"testing"

	"github.com/poolgate/poolgate/gitproto"
)

func report(lines ...string) []byte {
	var b []byte
	for _, l := range lines {
		b = append(b, gitproto.EncodePkt(l+"\n")...)
	}
	return append(b, "0000"...)
}

// What git 2.39's receive-pack printed and reported, captured once from
// real pushes (the e2e tests push the same over SSH).
func TestClassifyStoreOnGitsRealOutput(t *testing.T) {
	dir := t.TempDir() // a disk with room
	unpackErr := report("unpack unpack-objects abnormal exit", "ng refs/heads/master unpacker error")
	for _, tc := range []struct {
		name    string
		report  []byte
		printed string
		rule    string
	}{
		{"duplicate entries", unpackErr, "error: object 59a23ae80cdb80f2ad9bff6a77ddbe720c0842bd: duplicateEntries: contains duplicate file entries\nfatal: fsck error in packed object\n", "bad-object"},
		{".git entry", unpackErr, "error: object b029c74687eae65c9a7e506c263bb1224758ec32: hasDotgit: contains '.git'\nfatal: fsck error in packed object\n", "bad-object"},
		{"full disk", unpackErr, "fatal: unable to write loose object file: No space left on device\n", "disk-full"},
		{"other unpack failure", report("unpack index-pack abnormal exit", "ng refs/heads/master unpacker error"), "fatal: early EOF\n", "unpack"},
		{"accepted", report("unpack ok", "ok refs/heads/master"), "", ""},
		{"hook declined", report("unpack ok", "ng refs/heads/master pre-receive hook declined"), "poolgate: over-limit\n", ""},
		{"non-fast-forward", report("unpack ok", "ng refs/heads/master non-fast-forward"), "", ""},
		// Security: a pusher's text relayed by the hook does not make a
		// full disk when the file system has room.
		{"hook quoting ENOSPC words", report("unpack ok", "ng refs/heads/master pre-receive hook declined"), "poolgate: bad-name: No space left on device\n", ""},
	} {
		f := classifyStore(dir, tc.report, []byte(tc.printed))
		got := ""
		if f != nil {
			got = f.rule
		}
		if got != tc.rule {
			t.Errorf("%s: classified %q (%+v), want %q", tc.name, got, f, tc.rule)
		}
	}
}
