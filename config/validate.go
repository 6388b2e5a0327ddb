package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/poolgate/poolgate/pool"
	"github.com/poolgate/poolgate/validator"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	gossh "golang.org/x/crypto/ssh"
)

var repoNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$`)

// ValidRepoName is the one check of what a served repo may be called, for
// the config, a client's path and a peer's request alike. Kept narrow on
// purpose: the name becomes a directory under data_dir and an argument
// near git, so it may not start with '-' or '.', nor hold '/' or "..".
func ValidRepoName(name string) bool {
	return repoNameRe.MatchString(name) && !strings.Contains(name, "..")
}

var userNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$`)

// EventTypes are the event names webhooks may filter on (DESIGN.md §5).
var EventTypes = []string{"added", "removed", "claimed", "released", "updated", "stale", "rejected", "violation"}

func (c *Config) validate() error {
	if err := c.validateServer(); err != nil {
		return err
	}
	if err := c.validateLimits(); err != nil {
		return err
	}
	users, err := c.validateUsers()
	if err != nil {
		return err
	}
	repos := map[string]bool{}
	for i := range c.Repos {
		r := &c.Repos[i]
		if err := c.validateRepo(r, users, repos); err != nil {
			return err
		}
	}
	if err := c.validateWebhooks(repos); err != nil {
		return err
	}
	return c.validateCluster()
}

// validateServer sets the defaults of the daemon's listeners and SSH limits.
func (c *Config) validateServer() error {
	if c.DataDir == "" {
		c.DataDir = "poolgate-data"
	}
	c.DataDir = c.ResolvePath(c.DataDir)
	if c.SSH.Listen == "" {
		c.SSH.Listen = DefaultSSHListen
	}
	if err := checkListen(c.SSH.Listen); err != nil {
		return &posErr{line: c.lines["ssh.listen"], msg: "ssh.listen: " + err.Error()}
	}
	if l := c.HTTPListen(); l != "" {
		if err := checkListen(l); err != nil {
			return &posErr{line: c.lines["http.listen"], msg: "http.listen: " + err.Error()}
		}
	}
	if c.SSH.MaxSessions <= 0 {
		c.SSH.MaxSessions = DefaultMaxSessions
	}
	if c.SSH.IdleTimeout <= 0 {
		c.SSH.IdleTimeout = Duration(DefaultIdleTimeout)
	}
	if c.SSH.PushTimeout <= 0 {
		c.SSH.PushTimeout = Duration(DefaultPushTimeout)
	}
	if c.SSH.HandshakeTimeout <= 0 {
		c.SSH.HandshakeTimeout = Duration(DefaultHandshakeTimeout)
	}
	if c.SSH.MaxSessionsPerKey <= 0 {
		c.SSH.MaxSessionsPerKey = min(DefaultMaxSessionsPerKey, c.SSH.MaxSessions)
	}
	if c.SSH.MaxConnectionsPerKey <= 0 {
		// Half: one key (a runaway pipeline, or a hostile read key) never
		// holds the slots every other key needs.
		c.SSH.MaxConnectionsPerKey = max(1, c.SSH.MaxSessions/2)
	} else if c.SSH.MaxConnectionsPerKey >= c.SSH.MaxSessions && c.SSH.MaxSessions > 1 {
		return &posErr{msg: "ssh.max_connections_per_key must be below ssh.max_sessions"}
	}
	if c.SSH.QueueTimeout <= 0 {
		c.SSH.QueueTimeout = Duration(DefaultQueueTimeout)
	}
	if c.SSH.SessionStartTimeout <= 0 {
		c.SSH.SessionStartTimeout = Duration(DefaultSessionStart)
	}
	return nil
}

func (c *Config) validateLimits() error {
	for _, l := range []struct {
		v   *int64
		key string
		def int64
	}{
		{&c.Limits.MaxPushBytes, "max_push_bytes", DefaultMaxPushBytes},
		{&c.Limits.MaxObjectBytes, "max_object_bytes", DefaultMaxObjectBytes},
		{&c.Limits.MaxPushObjects, "max_push_objects", DefaultMaxPushObjects},
		{&c.Limits.MaxTreePaths, "max_tree_paths", DefaultMaxTreePaths},
	} {
		if *l.v < 0 {
			return &posErr{line: c.Limits.Line, msg: "limits." + l.key + " must not be negative"}
		}
		if *l.v == 0 {
			*l.v = l.def
		}
	}
	if c.SSH.HostKey != "" {
		c.SSH.HostKey = c.ResolvePath(c.SSH.HostKey)
	}
	if c.Limits.MaxLockBytes < 0 {
		return &posErr{line: c.Limits.Line, msg: "limits.max_lock_bytes must not be negative"}
	}
	switch d := c.Limits.MaxTreeDepth; {
	case d < 0 || d > pool.MaxTreeDepth:
		return &posErr{line: c.Limits.Line, msg: fmt.Sprintf("limits.max_tree_depth must be between 1 and %d", pool.MaxTreeDepth)}
	case d == 0:
		c.Limits.MaxTreeDepth = DefaultMaxTreeDepth
	}
	return nil
}

// validateUsers returns the names it accepted, for the repos' access lists.
func (c *Config) validateUsers() (map[string]bool, error) {
	users := map[string]bool{}
	for i := range c.Users {
		u := &c.Users[i]
		if !userNameRe.MatchString(u.Name) {
			return nil, &posErr{line: u.Line, msg: fmt.Sprintf("user name %q is missing or invalid (letters, digits, _ . @ -)", u.Name)}
		}
		if users[u.Name] {
			return nil, &posErr{line: u.Line, msg: fmt.Sprintf("user %q is listed twice", u.Name)}
		}
		users[u.Name] = true
		if u.Role == "" {
			u.Role = "write"
		}
		r, err := ParseRole(u.Role)
		if err != nil {
			return nil, &posErr{line: u.Line, msg: fmt.Sprintf("user %q: %v", u.Name, err)}
		}
		u.role = r
		if len(u.Keys) == 0 && u.KeysFile == "" {
			return nil, &posErr{line: u.Line, msg: fmt.Sprintf("user %q has neither keys nor keys_file", u.Name)}
		}
		for _, k := range u.Keys {
			if _, _, _, _, err := gossh.ParseAuthorizedKey([]byte(k)); err != nil {
				return nil, &posErr{line: u.Line, msg: fmt.Sprintf("user %q: key %q is not an SSH public key: %v", u.Name, abbrev(k), err)}
			}
		}
		if u.KeysFile != "" {
			u.KeysFile = c.ResolvePath(u.KeysFile)
		}
	}
	return users, nil
}

// validateRepo checks one repo and records its name in seen.
func (c *Config) validateRepo(r *Repo, users, seen map[string]bool) error {
	r.Name = strings.TrimSuffix(r.Name, ".git")
	if !ValidRepoName(r.Name) {
		return &posErr{line: r.Line, msg: fmt.Sprintf("repo name %q is missing or invalid (letters, digits, _ . -; not starting with . or -)", r.Name)}
	}
	if seen[r.Name] {
		return &posErr{line: r.Line, msg: fmt.Sprintf("repo %q is listed twice", r.Name)}
	}
	seen[r.Name] = true
	if r.Branch == "" {
		r.Branch = DefaultBranch
	}
	if err := checkBranch(r.Branch); err != nil {
		return &posErr{line: r.Line, msg: fmt.Sprintf("repo %q: %v", r.Name, err)}
	}
	if r.MaxLockBytes < 0 {
		return &posErr{line: r.Line, msg: fmt.Sprintf("repo %q: max_lock_bytes must not be negative", r.Name)}
	}
	for who, role := range r.Access {
		if !users[who] {
			return &posErr{line: r.Line, msg: fmt.Sprintf("repo %q: access names unknown user %q", r.Name, who)}
		}
		if _, err := ParseRole(role); err != nil {
			return &posErr{line: r.Line, msg: fmt.Sprintf("repo %q: access for %q: %v", r.Name, who, err)}
		}
	}
	if u := r.Upstream; u != nil {
		if u.URL == "" {
			return &posErr{line: r.Line, msg: fmt.Sprintf("repo %q: upstream.url is required", r.Name)}
		}
		switch u.Provider {
		case "github", "gitlab", "gitea":
		default:
			return &posErr{line: r.Line, msg: fmt.Sprintf("repo %q: upstream.provider %q (want github, gitlab or gitea)", r.Name, u.Provider)}
		}
		if u.Secret == "" {
			return &posErr{line: r.Line, msg: fmt.Sprintf("repo %q: upstream.secret is required: unsigned webhooks are refused", r.Name)}
		}
		if u.KeyFile != "" {
			u.KeyFile = c.ResolvePath(u.KeyFile)
		}
		if u.PollInterval <= 0 {
			u.PollInterval = Duration(DefaultPollInterval)
		}
	}
	pools := map[string]bool{}
	for j := range r.Pools {
		p := &r.Pools[j]
		if err := validator.CheckPoolPath(p.Name); err != nil {
			return &posErr{line: p.Line, msg: fmt.Sprintf("repo %q: %v", r.Name, err)}
		}
		if pools[p.Name] {
			return &posErr{line: p.Line, msg: fmt.Sprintf("repo %q: pool %q is listed twice", r.Name, p.Name)}
		}
		pools[p.Name] = true
		if err := c.validatePool(r, p); err != nil {
			return err
		}
	}
	return nil
}

// validatePool checks one pool of r, whose name is already known good and unique.
func (c *Config) validatePool(r *Repo, p *Pool) error {
	if p.MaxClaimed < 0 {
		return &posErr{line: p.Line, msg: fmt.Sprintf("pool %q: max_claimed must not be negative", p.Name)}
	}
	if p.ReleaseAfter > 0 && p.ReleaseAfter.D() < MinReleaseAfter {
		return &posErr{line: p.Line, msg: fmt.Sprintf("pool %q: release_after %s is under the minimum %s", p.Name, p.ReleaseAfter.D(), MinReleaseAfter)}
	}
	if p.ReleaseAfter > 0 && r.Upstream != nil {
		return &posErr{line: p.Line, msg: fmt.Sprintf("pool %q: release_after needs a served repo; %q is a mirror of its upstream", p.Name, r.Name)}
	}
	if p.MaxClaimed > 0 && len(p.Locks) > 0 && p.MaxClaimed >= len(p.Locks) {
		c.warnings = append(c.warnings, &posErr{line: p.Line, msg: fmt.Sprintf(
			"pool %q: max_claimed %d is not below its %d declared lock(s), so it never holds a build back", p.Name, p.MaxClaimed, len(p.Locks))})
	}
	names := map[string]bool{}
	for _, l := range p.Locks {
		if err := validator.CheckName(l); err != nil || pool.IsDot(l) {
			return &posErr{line: p.Line, msg: fmt.Sprintf("pool %q: lock name %q is invalid", p.Name, l)}
		}
		if names[l] {
			return &posErr{line: p.Line, msg: fmt.Sprintf("pool %q: lock %q is listed twice", p.Name, l)}
		}
		names[l] = true
	}
	return nil
}

func (c *Config) validateWebhooks(repos map[string]bool) error {
	hooks := map[string]bool{}
	for i := range c.Webhooks {
		w := &c.Webhooks[i]
		if w.Name == "" {
			return &posErr{line: w.Line, msg: "webhook without a name"}
		}
		if hooks[w.Name] {
			return &posErr{line: w.Line, msg: fmt.Sprintf("webhook %q is listed twice", w.Name)}
		}
		hooks[w.Name] = true
		u, err := url.Parse(w.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			// The URL itself is not repeated: a Slack URL or a Concourse
			// webhook_token is a credential, often from ${ENV}.
			return &posErr{line: w.Line, msg: fmt.Sprintf("webhook %q: url is not an http(s) URL", w.Name)}
		}
		if w.Format == "" {
			w.Format = "json"
		}
		switch w.Format {
		case "json", "slack", "concourse":
		default:
			return &posErr{line: w.Line, msg: fmt.Sprintf("webhook %q: format %q (want json, slack or concourse)", w.Name, w.Format)}
		}
		for _, e := range w.Events {
			if !contains(EventTypes, e) {
				return &posErr{line: w.Line, msg: fmt.Sprintf("webhook %q: unknown event %q (want one of %s)", w.Name, e, strings.Join(EventTypes, ", "))}
			}
		}
		for _, r := range w.Repos {
			if !repos[strings.TrimSuffix(r, ".git")] {
				return &posErr{line: w.Line, msg: fmt.Sprintf("webhook %q: unknown repo %q", w.Name, r)}
			}
		}
		if w.Secret != "" {
			if w.Format != "json" {
				return &posErr{line: w.Line, msg: fmt.Sprintf("webhook %q: secret is only used by format json", w.Name)}
			}
			// Decoded here, once: a secret that cannot sign would
			// otherwise fail every delivery, silently, for hours.
			sg, err := WebhookSigner(w.Secret)
			if err != nil {
				return &posErr{line: w.Line, msg: fmt.Sprintf("webhook %q: %v", w.Name, err)}
			}
			w.Signer = sg
		}
	}
	return nil
}

// WebhookSigner builds the Standard Webhooks signer of a "whsec_<base64>"
// secret. Its errors never repeat the secret.
func WebhookSigner(secret string) (*standardwebhooks.Webhook, error) {
	b64, ok := strings.CutPrefix(secret, "whsec_")
	if !ok {
		return nil, errors.New("secret must look like whsec_<base64>")
	}
	if b64 == "" {
		return nil, errors.New("secret whsec_<base64> has an empty key")
	}
	sg, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		return nil, fmt.Errorf("secret after whsec_ is not valid base64 (%v)", err)
	}
	return sg, nil
}

// checkListen refuses what net.Listen would refuse only at start, where
// the error could not name the file and line: HOST:PORT, HOST optional.
func checkListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not HOST:PORT (e.g. \":2222\" or \"127.0.0.1:8080\")", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: port %q is not a number from 0 to 65535", addr, port)
	}
	if strings.ContainsAny(host, " /\t") {
		return fmt.Errorf("%q: %q is not a host name or IP address", addr, host)
	}
	return nil
}

func checkBranch(b string) error {
	if strings.HasPrefix(b, "-") || strings.HasPrefix(b, "refs/") || strings.Contains(b, "..") ||
		strings.ContainsAny(b, " ~^:?*[\\\x7f") || strings.HasSuffix(b, ".lock") || strings.HasSuffix(b, "/") {
		return fmt.Errorf("branch %q is not a valid branch name", b)
	}
	for _, r := range b {
		if r < 0x20 {
			return fmt.Errorf("branch %q is not a valid branch name", b)
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func abbrev(s string) string {
	if len(s) > 24 {
		return s[:24] + "…"
	}
	return s
}

// AuthorizedKey is one key a user may log in with.
type AuthorizedKey struct {
	User *User
	Key  gossh.PublicKey
}

// LoadKeys parses every user's keys, reading keys_file entries from disk.
// Kept out of Parse so the pre-receive hook, which never needs keys, does not
// read key files on every push.
func (c *Config) LoadKeys() ([]AuthorizedKey, error) {
	var out []AuthorizedKey
	for i := range c.Users {
		u := &c.Users[i]
		lines := append([]string(nil), u.Keys...)
		if u.KeysFile != "" {
			data, err := os.ReadFile(u.KeysFile)
			if err != nil {
				return nil, &Error{File: c.File, Line: u.Line, Msg: fmt.Sprintf("user %q: keys_file %s: %s", u.Name, u.KeysFile, errMsg(err))}
			}
			for _, l := range strings.Split(string(data), "\n") {
				l = strings.TrimSpace(l)
				if l != "" && !strings.HasPrefix(l, "#") {
					lines = append(lines, l)
				}
			}
		}
		for _, l := range lines {
			k, _, _, _, err := gossh.ParseAuthorizedKey([]byte(l))
			if err != nil {
				return nil, &Error{File: c.File, Line: u.Line, Msg: fmt.Sprintf("user %q: key %q is not an SSH public key", u.Name, abbrev(l))}
			}
			out = append(out, AuthorizedKey{User: u, Key: k})
		}
	}
	// Not a login key, but read at each fetch: a missing one is better
	// said at start, with its line, than at the first fetch.
	for _, r := range c.Repos {
		if u := r.Upstream; u != nil && u.KeyFile != "" {
			if _, err := os.Stat(u.KeyFile); err != nil {
				return nil, &Error{File: c.File, Line: r.Line, Msg: fmt.Sprintf("repo %q: upstream.key_file %s: %s", r.Name, u.KeyFile, errMsg(err))}
			}
		}
	}
	return out, nil
}
