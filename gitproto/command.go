package gitproto

import (
	"errors"
	"strings"
)

// Service is one of the git programs a client may run.
type Service string

const (
	UploadPack    Service = "git-upload-pack"
	ReceivePack   Service = "git-receive-pack"
	UploadArchive Service = "git-upload-archive"
)

// Subcommand is the git subcommand that implements the service.
func (s Service) Subcommand() string { return strings.TrimPrefix(string(s), "git-") }

// Writes reports whether the service changes the repo.
func (s Service) Writes() bool { return s == ReceivePack }

// Errors a client may see; each is shown as one line.
var (
	ErrNotGit  = errors.New("only git-upload-pack, git-receive-pack and git-upload-archive are served here")
	ErrBadPath = errors.New("bad repository path")
)

// ParseCommand splits an exec request such as `git-upload-pack '/locks.git'`
// into the service and the repo path as the client wrote it. No shell is
// involved: only git's own single-quote form (sq_quote) or one plain word.
func ParseCommand(raw string) (Service, string, error) {
	// Security: control characters never reach git or a path.
	for _, r := range raw {
		if r < 0x20 || r == 0x7f {
			return "", "", ErrBadPath
		}
	}
	var svc Service
	rest := ""
	for _, s := range []Service{UploadPack, ReceivePack, UploadArchive} {
		// "git upload-pack" is what git-shell also accepts.
		for _, form := range []string{string(s), "git " + s.Subcommand()} {
			if strings.HasPrefix(raw, form+" ") {
				svc, rest = s, raw[len(form)+1:]
			}
		}
	}
	if svc == "" {
		return "", "", ErrNotGit
	}
	arg, err := unquoteArg(rest)
	if err != nil {
		return "", "", err
	}
	return svc, arg, nil
}

// unquoteArg reads exactly one argument: a run of single-quoted strings
// with git's \' and \! escapes between them, or one plain word.
func unquoteArg(s string) (string, error) {
	if s == "" {
		return "", ErrBadPath
	}
	if s[0] != '\'' {
		for _, r := range s {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_.-/~", r)) {
				return "", ErrBadPath
			}
		}
		return s, nil
	}
	var b strings.Builder
	for len(s) > 0 {
		switch s[0] {
		case '\'':
			end := strings.IndexByte(s[1:], '\'')
			if end < 0 {
				return "", ErrBadPath
			}
			b.WriteString(s[1 : 1+end])
			s = s[end+2:]
		case '\\':
			if len(s) < 2 || (s[1] != '\'' && s[1] != '!') {
				return "", ErrBadPath
			}
			b.WriteByte(s[1])
			s = s[2:]
		default:
			// A space or anything else outside quotes: a second argument.
			return "", ErrBadPath
		}
	}
	return b.String(), nil
}
