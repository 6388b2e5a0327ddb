package daemon

import (
	"path/filepath"
	"testing"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/gitproto"
)

func testConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte("data_dir: /srv/poolgate\nrepos:\n  - name: locks\n  - name: a.b-c\n"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestEveryPathFormNamesTheRepo(t *testing.T) {
	cfg := testConfig(t)
	for _, raw := range []string{
		"git-upload-pack 'locks.git'",
		"git-upload-pack '/locks.git'",
		"git-upload-pack 'locks'",
		"git-upload-pack '~/locks.git'",
		"git-upload-pack locks.git",
		"git-receive-pack '/srv/poolgate/repos/locks.git'",
		"git upload-pack 'locks.git'",
		"git-upload-archive '/locks'",
	} {
		_, path, err := gitproto.ParseCommand(raw)
		if err != nil {
			t.Errorf("%q: %v", raw, err)
			continue
		}
		if name, err := repoName(cfg, path); err != nil || name != "locks" {
			t.Errorf("%q: repo %q, %v", raw, name, err)
		}
	}
	if _, path, _ := gitproto.ParseCommand(`git-upload-pack 'a.b-c.git'`); path != "a.b-c.git" {
		t.Errorf("dotted name: %q", path)
	}
}

func TestHostilePathsNeverBecomeARepoOrAnOption(t *testing.T) {
	cfg := testConfig(t)
	for _, raw := range []string{
		"git-upload-pack '../../etc'",
		"git-upload-pack '/srv/poolgate/repos/../locks.git'",
		"git-upload-pack '/srv/other/locks.git'",
		"git-upload-pack '/srv/poolgate/repos/locks.git/..'",
		"git-upload-pack '//locks.git'",
		"git-upload-pack '--upload-pack=id'",
		"git-upload-pack '-locks'",
		"git-upload-pack '.locks'",
		"git-upload-pack 'locks/.git'",
		"git-upload-pack 'lo'\\''cks'",
		"git-upload-pack 'locks.git' extra",
		"git-upload-pack 'locks.git",
		"git-upload-pack locks.git;id",
		"git-upload-pack $(id)",
		"git-upload-pack 'locks\x00.git'",
		"git-upload-pack 'locks.git'\nid",
		"git-upload-pack ''",
		"git-upload-pack ",
		"git-upload-pack",
		"git-upload-packx 'locks.git'",
		"sh -c 'git-upload-pack locks.git'",
		"scp -t locks.git",
		"git-upload-pack 'other'",
		"git-upload-pack '~root/locks.git'",
	} {
		_, path, err := gitproto.ParseCommand(raw)
		if err == nil {
			var name string
			name, err = repoName(cfg, path)
			if err == nil {
				t.Errorf("%q was served as repo %q", raw, name)
			}
		}
	}
}

func TestRepoDirIsAJoinOfAValidatedName(t *testing.T) {
	cfg := testConfig(t)
	if got := cfg.RepoDir("locks"); got != filepath.Join("/srv/poolgate", "repos", "locks.git") {
		t.Fatal(got)
	}
}
