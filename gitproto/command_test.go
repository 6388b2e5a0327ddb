package gitproto

import (
	"strings"
	"testing"
)

func TestUnquoteFollowsGitsSingleQuoting(t *testing.T) {
	for in, want := range map[string]string{
		`'locks.git'`:        "locks.git",
		`'it'\''s'`:          "it's",
		`'wow'\!''`:          "wow!",
		`'a b'`:              "a b",
		`plain-word_1.git`:   "plain-word_1.git",
		`'~/x'`:              "~/x",
		`'a''b'`:             "ab",
		`'/srv/x/locks.git'`: "/srv/x/locks.git",
	} {
		got, err := unquoteArg(in)
		if err != nil || got != want {
			t.Errorf("unquote(%s) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// The SSH command line is the first thing a client chooses. Whatever it
// is: no panic; a parsed command is one of the three services, with one
// path free of control characters that unquotes the way git quotes it.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{
		"git-upload-pack 'locks.git'", "git-receive-pack '/srv/poolgate/repos/locks.git'", "git upload-pack 'locks.git'",
		"git-upload-pack '~/locks.git'", `git-upload-pack 'a'\''b'`, `git-upload-pack 'x'\!'y'`, "git-upload-pack '../x'",
		"git-upload-pack '-x'", "git-upload-pack 'a' 'b'", "git-upload-pack '/srv/poolgate/repos/../locks.git'", "sh -c id",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		svc, path, err := ParseCommand(raw)
		if err != nil {
			return
		}
		switch svc {
		case UploadPack, ReceivePack, UploadArchive:
		default:
			t.Fatalf("%q parsed as service %q", raw, svc)
		}
		if strings.ContainsFunc(path, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Fatalf("%q: path %q holds a control character", raw, path)
		}
		// git's sq_quote of the path parses back to the same command.
		quoted := "'" + strings.NewReplacer("'", `'\''`, "!", `'\!'`).Replace(path) + "'"
		svc2, path2, err := ParseCommand(string(svc) + " " + quoted)
		if err != nil || svc2 != svc || path2 != path {
			t.Fatalf("%q: path %q quoted as %s parses as %q %q %v", raw, path, quoted, svc2, path2, err)
		}
	})
}
