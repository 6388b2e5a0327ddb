package daemon

import (
	"errors"
	"path/filepath"
	"strings"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/gitproto"
)

// The services, as the session code names them.
type Service = gitproto.Service

const (
	UploadPack    = gitproto.UploadPack
	ReceivePack   = gitproto.ReceivePack
	UploadArchive = gitproto.UploadArchive
)

var errUnknownRepo = errors.New("no such repository")

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
		return "", gitproto.ErrBadPath
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
	return cfg.RepoDir(name)
}
