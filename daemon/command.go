package daemon

import (
	"errors"
	"path/filepath"
	"strings"

	"github.com/poolgate/poolgate/config"
)

// Service is one of the git programs a client may run.
type Service string

const (
	UploadPack    Service = "git-upload-pack"
	ReceivePack   Service = "git-receive-pack"
	UploadArchive Service = "git-upload-archive"
)

// subcommand is the git subcommand that implements the service.
func (s Service) subcommand() string { return strings.TrimPrefix(string(s), "git-") }

// writes reports whether the service changes the repo.
func (s Service) writes() bool { return s == ReceivePack }

// Errors a client may see; each is shown as one line.
var (
	errNotGit      = errors.New("only git-upload-pack, git-receive-pack and git-upload-archive are served here")
	errBadPath     = errors.New("bad repository path")
	errUnknownRepo = errors.New("no such repository")
)

// parseCommand splits an exec request such as `git-upload-pack '/locks.git'`
// into the service and the repo path as the client wrote it. No shell is
// involved: only git's own single-quote form (sq_quote) or one plain word.
func parseCommand(raw string) (Service, string, error) {
	// Security: control characters never reach git or a path.
	for _, r := range raw {
		if r < 0x20 || r == 0x7f {
			return "", "", errBadPath
		}
	}
	var svc Service
	rest := ""
	for _, s := range []Service{UploadPack, ReceivePack, UploadArchive} {
		// "git upload-pack" is what git-shell also accepts.
		for _, form := range []string{string(s), "git " + s.subcommand()} {
			if strings.HasPrefix(raw, form+" ") {
				svc, rest = s, raw[len(form)+1:]
			}
		}
	}
	if svc == "" {
		return "", "", errNotGit
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
		return "", errBadPath
	}
	if s[0] != '\'' {
		for _, r := range s {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_.-/~", r)) {
				return "", errBadPath
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
				return "", errBadPath
			}
			b.WriteString(s[1 : 1+end])
			s = s[end+2:]
		case '\\':
			if len(s) < 2 || (s[1] != '\'' && s[1] != '!') {
				return "", errBadPath
			}
			b.WriteByte(s[1])
			s = s[2:]
		default:
			// A space or anything else outside quotes: a second argument.
			return "", errBadPath
		}
	}
	return b.String(), nil
}

// repoName maps a client path to a configured repo name. The forms
// `locks.git`, `/locks.git`, `locks`, `~/locks.git` and the repo's full
// path on this server all name repo `locks`; everything else is refused.
func repoName(cfg *config.Config, path string) (string, error) {
	name := path
	switch {
	case strings.HasPrefix(name, "~/"):
		name = name[2:]
	case strings.HasPrefix(name, "/"):
		// The full on-disk path is accepted only when it is exactly where
		// that repo lives: compared whole, never by prefix.
		if base := strings.TrimSuffix(filepath.Base(name), ".git"); validName(base) &&
			name == repoDir(cfg, base) {
			name = base
		} else {
			name = name[1:]
		}
	}
	name = strings.TrimSuffix(name, ".git")
	if !validName(name) {
		return "", errBadPath
	}
	if cfg.Repo(name) == nil {
		return "", errUnknownRepo
	}
	return name, nil
}

// validName is the single gate between client input and a file name: no
// '/', no "..", no leading '-' or '.', so a name can never leave repos/ or
// be read as an option by git.
func validName(name string) bool {
	return config.RepoNameRe.MatchString(name) && !strings.Contains(name, "..")
}

// repoDir is where a repo lives. Only ever called with a validated name.
func repoDir(cfg *config.Config, name string) string {
	return filepath.Join(cfg.DataDir, "repos", name+".git")
}
