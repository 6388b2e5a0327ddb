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
		if base := strings.TrimSuffix(filepath.Base(name), ".git"); config.ValidRepoName(base) &&
			name == cfg.RepoDir(base) {
			name = base
		} else {
			name = name[1:]
		}
	}
	name = strings.TrimSuffix(name, ".git")
	if !config.ValidRepoName(name) {
		return "", gitproto.ErrBadPath
	}
	if cfg.Repo(name) == nil {
		return "", errUnknownRepo
	}
	return name, nil
}
