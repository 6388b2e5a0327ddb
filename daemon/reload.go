package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"

	"github.com/poolgate/poolgate/config"
	gossh "golang.org/x/crypto/ssh"
)

// liveConfig is the daemon's own view of the running config: the config
// with what sessions look up on every connection (users by key, the hook's
// copy of the file, the environment the file names). A reload (SIGHUP)
// replaces it in one step, then hands the same *config.Config to
// s.running, the holder every other part reads (events, webhooks, the
// page and API, metrics, watch mode, release_after). What a reload changes
// and what needs a restart (restartOnly) is listed in docs/daemon.md.
type liveConfig struct {
	*config.Config
	users    map[string]*config.User // by the key's wire encoding
	raw      []byte                  // the file as loaded; nil for a config not from a file
	hookFile string                  // the copy of raw the hook reads
	env      []string                // NAME=value for each ${NAME} the file uses
}

func newLiveConfig(cfg *config.Config) (*liveConfig, error) {
	keys, err := cfg.LoadKeys()
	if err != nil {
		return nil, err
	}
	lc := &liveConfig{Config: cfg, users: map[string]*config.User{}}
	for _, k := range keys {
		id := string(k.Key.Marshal())
		if prev, dup := lc.users[id]; dup && prev != k.User {
			return nil, &config.Error{File: cfg.File, Line: k.User.Line,
				Msg: fmt.Sprintf("user %q: key %s also belongs to user %q", k.User.Name, gossh.FingerprintSHA256(k.Key), prev.Name)}
		}
		lc.users[id] = k.User
	}
	lc.hookFile = cfg.File
	if cfg.File != "" {
		// Read again for the hook's copy; a config parsed from memory (tests)
		// has no file to copy, and the hook reads cfg.File as before.
		if raw, err := os.ReadFile(cfg.File); err == nil {
			lc.raw = raw
			lc.hookFile = filepath.Join(cfg.DataDir, "run", "config.yaml")
		}
	}
	for _, name := range cfg.EnvNames {
		if v, ok := os.LookupEnv(name); ok {
			lc.env = append(lc.env, name+"="+v)
		}
	}
	return lc, nil
}

// conf is the current live config.
func (s *Server) conf() *liveConfig { return s.live.Load() }

// writeHookConfig keeps the config the pre-receive hook reads in step with
// the one the daemon runs: a copy of the last file that loaded, so an
// operator's half-edited or broken file (which SIGHUP refuses) never makes
// every push fail in the hook.
func (s *Server) writeHookConfig(raw []byte) error {
	lc := s.conf()
	if raw == nil || lc.hookFile == "" || lc.hookFile == lc.Config.File {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(lc.hookFile), 0o700); err != nil {
		return err
	}
	tmp := lc.hookFile + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, lc.hookFile)
}

// Reload re-reads the config file (SIGHUP). A file that does not load is
// refused whole, with its file:line error, and the running config stays.
// Settings that cannot change in a running process keep their old value,
// each with a log line saying a restart is needed.
func (s *Server) Reload() error {
	old := s.conf()
	if old.Config.File == "" {
		return fmt.Errorf("no config file to reload (demo default)")
	}
	next, err := config.Load(old.Config.File)
	if err != nil {
		s.log.Error().Str("error", err.Error()).Msg("reload refused: config is invalid, the running config stays")
		return err
	}
	for _, f := range restartOnly(old.Config, next) {
		s.log.Warn().Str("setting", f).Msg("reload: this setting needs a restart (poolgate serve, or SIGUSR2 for a hand-over); the running value stays")
	}
	lc, err := newLiveConfig(next)
	if err != nil {
		s.log.Error().Str("error", err.Error()).Msg("reload refused: the running config stays")
		return err
	}
	s.live.Store(lc)
	if err := s.writeHookConfig(lc.raw); err != nil {
		s.log.Error().Err(err).Msg("reload: cannot write the hook's copy of the config")
	}
	// Every other part, at once; each has taken it when Store returns.
	s.running.Store(next)
	s.log.Info().Str("config", next.File).Int("users", len(next.Users)).Int("repos", len(next.Repos)).Msg("config reloaded")
	return nil
}

// restartOnly puts back, in next, every setting a running daemon cannot
// change, and names the ones that differed.
func restartOnly(old, next *config.Config) []string {
	var changed []string
	keep := func(name string, o, n any) {
		if !reflect.DeepEqual(reflect.ValueOf(o).Elem().Interface(), reflect.ValueOf(n).Elem().Interface()) {
			changed = append(changed, name)
			reflect.ValueOf(n).Elem().Set(reflect.ValueOf(o).Elem())
		}
	}
	keep("data_dir", &old.DataDir, &next.DataDir)
	keep("ssh.listen", &old.SSH.Listen, &next.SSH.Listen)
	keep("ssh.host_key", &old.SSH.HostKey, &next.SSH.HostKey)
	keep("ssh.max_sessions", &old.SSH.MaxSessions, &next.SSH.MaxSessions)
	keep("ssh.idle_timeout", &old.SSH.IdleTimeout, &next.SSH.IdleTimeout)
	keep("http", &old.HTTP, &next.HTTP)
	keep("log", &old.Log, &next.Log)
	keep("cluster", &old.Cluster, &next.Cluster)
	// Repos: access and pool settings may change; adding, removing or
	// renaming a repo or its branch needs the start-up that creates them,
	// and so does turning watch mode on or off (a watcher starts at start).
	same := len(old.Repos) == len(next.Repos)
	for i := 0; same && i < len(old.Repos); i++ {
		o, n := &old.Repos[i], &next.Repos[i]
		same = o.Name == n.Name && o.Branch == n.Branch && (o.Upstream == nil) == (n.Upstream == nil)
	}
	if !same {
		changed = append(changed, "repos (names, branches or upstream on/off)")
		next.Repos = old.Repos
	}
	return changed
}
