// Package config loads poolgate's YAML configuration (DESIGN.md §4).
//
// Errors always name the file and line, because the person reading them is
// usually looking at a systemd journal, not at the file.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"go.yaml.in/yaml/v3"
)

// Role is what a user may do with a repo. Ordered: a higher role can do
// everything a lower one can.
type Role int

const (
	RoleNone Role = iota
	RoleRead
	RoleWrite
	RoleAdmin
)

func (r Role) String() string {
	switch r {
	case RoleRead:
		return "read"
	case RoleWrite:
		return "write"
	case RoleAdmin:
		return "admin"
	}
	return "none"
}

// ParseRole accepts the role names of DESIGN.md §4.
func ParseRole(s string) (Role, error) {
	switch s {
	case "read":
		return RoleRead, nil
	case "write":
		return RoleWrite, nil
	case "admin":
		return RoleAdmin, nil
	}
	return RoleNone, fmt.Errorf("unknown role %q (want read, write or admin)", s)
}

// Duration is a time.Duration written as "10m", "2h".
type Duration time.Duration

func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return lineErr(n, "expected a duration like 10m or 2h")
	}
	if n.Value == "" || n.Value == "0" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil || v < 0 {
		return lineErr(n, "bad duration %q (want e.g. 30s, 10m, 2h)", n.Value)
	}
	*d = Duration(v)
	return nil
}

func (d Duration) D() time.Duration { return time.Duration(d) }

type Config struct {
	// File is where the config came from ("" for the built-in default).
	File string `yaml:"-"`
	// EnvNames are the environment variables the file names as ${NAME}.
	EnvNames []string `yaml:"-"`
	// Warnings are settings that are allowed but probably not meant
	// ("file:line: ..."); the daemon logs them at start.
	Warnings []string `yaml:"-"`
	// lines are the lines of settings checked after decoding that have
	// no line of their own ("ssh.listen").
	lines    map[string]int
	warnings []*posErr

	DataDir  string     `yaml:"data_dir"`
	SSH      SSH        `yaml:"ssh"`
	HTTP     HTTP       `yaml:"http"`
	Limits   Limits     `yaml:"limits"`
	Users    []User     `yaml:"users"`
	Repos    []Repo     `yaml:"repos"`
	Webhooks []Webhook  `yaml:"webhooks"`
	Log      LogOptions `yaml:"log"`
	// Cluster, if set, makes this process one node of several (cluster.go).
	Cluster *Cluster `yaml:"cluster"`
}

type SSH struct {
	Listen      string   `yaml:"listen"`
	HostKey     string   `yaml:"host_key"`
	IdleTimeout Duration `yaml:"idle_timeout"`
	MaxSessions int      `yaml:"max_sessions"`
	// PushTimeout bounds how long one push may hold its repo's push lock.
	PushTimeout Duration `yaml:"push_timeout"`
	// HandshakeTimeout cuts a connection that has not finished the SSH
	// handshake and authentication in time.
	HandshakeTimeout Duration `yaml:"handshake_timeout"`
	// MaxSessionsPerKey caps the git commands one client key runs at once.
	MaxSessionsPerKey int `yaml:"max_sessions_per_key"`
	// MaxConnectionsPerKey caps the authenticated connections of one client
	// key; more wait their turn (up to QueueTimeout).
	MaxConnectionsPerKey int `yaml:"max_connections_per_key"`
	// QueueTimeout bounds how long a connection waits for a slot (over
	// max_sessions, or over its key's max_connections_per_key).
	QueueTimeout Duration `yaml:"queue_timeout"`
	// SessionStartTimeout closes an authenticated connection that has not
	// opened a session by then, keepalives or not.
	SessionStartTimeout Duration `yaml:"session_start_timeout"`
}

type HTTP struct {
	Listen *string `yaml:"listen"`
	Token  string  `yaml:"token"`
}

// Limits that apply to every repo unless a repo overrides them.
type Limits struct {
	MaxLockBytes int64 `yaml:"max_lock_bytes"`
	// MaxPushBytes caps the bytes a client may send in one push (the
	// command list and the pack); also set as receive.maxInputSize.
	MaxPushBytes int64 `yaml:"max_push_bytes"`
	// MaxObjectBytes caps the inflated size of any one object in a pushed
	// pack, checked from the object's header before git sees its data.
	MaxObjectBytes int64 `yaml:"max_object_bytes"`
	// MaxPushObjects caps the objects in one pushed pack (its header says).
	MaxPushObjects int64 `yaml:"max_push_objects"`
	// MaxTreePaths and MaxTreeDepth bound what a judged commit's whole tree
	// may expand to (files and directories; path components), counted once
	// per distinct tree: a few KB of trees can name billions of paths.
	MaxTreePaths int64 `yaml:"max_tree_paths"`
	MaxTreeDepth int   `yaml:"max_tree_depth"`
	Line         int   `yaml:"-"`
}

func (l *Limits) UnmarshalYAML(n *yaml.Node) error {
	type plain Limits
	if err := n.Decode((*plain)(l)); err != nil {
		return err
	}
	l.Line = n.Line
	return nil
}

type LogOptions struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"` // console | json | "" (auto)
}

type User struct {
	Name     string   `yaml:"name"`
	Role     string   `yaml:"role"`
	Keys     []string `yaml:"keys"`
	KeysFile string   `yaml:"keys_file"`

	Line int  `yaml:"-"`
	role Role // parsed Role
}

// GlobalRole is the user's role for repos without a per-repo override.
func (u *User) GlobalRole() Role { return u.role }

type Repo struct {
	Name         string            `yaml:"name"`
	Branch       string            `yaml:"branch"`
	Access       map[string]string `yaml:"access"`
	MaxLockBytes int64             `yaml:"max_lock_bytes"`
	Pools        []Pool            `yaml:"pools"`
	// Upstream makes the repo a watched mirror of a repo hosted elsewhere
	// (watch mode): poolgate follows it instead of serving pushes.
	Upstream *Upstream `yaml:"upstream"`

	Line int `yaml:"-"`
}

// Upstream is where a watched repo lives.
type Upstream struct {
	URL      string `yaml:"url"`
	KeyFile  string `yaml:"key_file"`
	Provider string `yaml:"provider"` // github | gitlab | gitea
	// Secret verifies the provider's push webhooks; required.
	Secret       string   `yaml:"secret"`
	PollInterval Duration `yaml:"poll_interval"`
}

// DefaultPollInterval is how often a watched repo is fetched when no
// webhook arrives.
const DefaultPollInterval = 5 * time.Minute

type Pool struct {
	Name       string   `yaml:"name"`
	MaxClaimed int      `yaml:"max_claimed"`
	StaleAfter Duration `yaml:"stale_after"`
	Locks      []string `yaml:"locks"`

	// ReleaseAfter, if set, releases a claim held longer, as an operator
	// action of poolgate's own (operator.AutoRelease). Never the default.
	ReleaseAfter Duration `yaml:"release_after"`

	Line int `yaml:"-"`
}

type Webhook struct {
	Name   string   `yaml:"name"`
	URL    string   `yaml:"url"`
	Format string   `yaml:"format"`
	Events []string `yaml:"events"`
	Repos  []string `yaml:"repos"`
	Pools  []string `yaml:"pools"`
	Secret string   `yaml:"secret"`
	// Signer signs with Secret (json only); built when the config loads.
	Signer *standardwebhooks.Webhook `yaml:"-"`
	// Coalesce (concourse only) is the quiet time that ends a burst of
	// changes, sent as one check request (default 1.5s).
	Coalesce Duration `yaml:"coalesce"`

	Line int `yaml:"-"`
}

// Line-recording unmarshalers: semantic errors found after decoding still
// point at the right line.
func (u *User) UnmarshalYAML(n *yaml.Node) error {
	type plain User
	if err := n.Decode((*plain)(u)); err != nil {
		return err
	}
	u.Line = n.Line
	return nil
}

func (r *Repo) UnmarshalYAML(n *yaml.Node) error {
	type plain Repo
	if err := n.Decode((*plain)(r)); err != nil {
		return err
	}
	r.Line = n.Line
	return nil
}

func (p *Pool) UnmarshalYAML(n *yaml.Node) error {
	type plain Pool
	if err := n.Decode((*plain)(p)); err != nil {
		return err
	}
	p.Line = n.Line
	return nil
}

func (w *Webhook) UnmarshalYAML(n *yaml.Node) error {
	type plain Webhook
	if err := n.Decode((*plain)(w)); err != nil {
		return err
	}
	w.Line = n.Line
	return nil
}

// MinReleaseAfter is the shortest release_after: below it, a claim would
// be taken from a build that is still starting.
const MinReleaseAfter = time.Second

// Defaults applied to whatever the file leaves out.
const (
	DefaultMaxLockBytes = 64 << 10
	// A large pool repo (a few hundred pools of a few hundred locks) is tens
	// of thousands of paths, a few levels deep; a checkout of 100,000 files
	// still takes seconds. Git itself stops at 4096 levels.
	DefaultMaxTreePaths = 100_000
	DefaultMaxTreeDepth = 64
	DefaultBranch       = "master"
	DefaultSSHListen    = ":2222"
	DefaultHTTPListen   = "127.0.0.1:8080"
	DefaultMaxSessions  = 256
	DefaultIdleTimeout  = 10 * time.Minute
	DefaultPushTimeout  = 2 * time.Minute

	DefaultHandshakeTimeout  = 15 * time.Second
	DefaultMaxSessionsPerKey = 128
	DefaultQueueTimeout      = time.Minute
	DefaultSessionStart      = 10 * time.Second
	DefaultMaxPushBytes      = 32 << 20
	DefaultMaxObjectBytes    = 1 << 20
	DefaultMaxPushObjects    = 10000
)

// Error is a config problem with its position.
type Error struct {
	File string
	Line int
	Msg  string
}

func (e *Error) Error() string {
	f := e.File
	if f == "" {
		f = "config"
	}
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", f, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", f, e.Msg)
}

type posErr struct {
	line int
	msg  string
}

func (e *posErr) Error() string { return e.msg }

func lineErr(n *yaml.Node, format string, args ...any) error {
	return &posErr{line: n.Line, msg: fmt.Sprintf(format, args...)}
}

// Load reads and validates the config file at path.
func Load(path string) (*Config, error) { return load(path, false) }

func load(path string, reading bool) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{File: path, Msg: errMsg(err)}
	}
	if err := checkNotEmpty(path, data); err != nil {
		return nil, err
	}
	return parse(path, data, reading)
}

// checkNotEmpty refuses a config file with no settings: an empty file is
// a mistake (a failed copy, the wrong path), never a wish for defaults.
func checkNotEmpty(path string, data []byte) error {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil // Parse reports it with its line
	}
	if root.Kind == 0 || (root.Kind == yaml.DocumentNode && (len(root.Content) == 0 || root.Content[0].Tag == "!!null")) {
		return &Error{File: path, Msg: "the file is empty (or only comments): a config needs at least its repos: (see the README's Configuration)"}
	}
	return nil
}

func errMsg(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

var yamlLineRe = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// Parse decodes and validates a config held in memory; file names it in errors.
func Parse(file string, data []byte) (*Config, error) { return parse(file, data, false) }

// LoadForReading loads a config for commands that only read what the
// daemon recorded (status, history): they deliver nothing and serve
// nothing, so the webhooks, the HTTP token and the upstream credentials
// are left out and their ${VAR}s need not be set. The result must not be
// used to serve.
func LoadForReading(path string) (*Config, error) { return load(path, true) }

// dropSecrets removes, before ${VAR} expansion, what a reading command
// never uses and what typically names a secret.
func dropSecrets(root *yaml.Node) {
	doc := root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	if doc.Kind != yaml.MappingNode {
		return
	}
	del := func(m *yaml.Node, keys ...string) {
		for i := 0; i+1 < len(m.Content); {
			if contains(keys, m.Content[i].Value) {
				m.Content = append(m.Content[:i], m.Content[i+2:]...)
				continue
			}
			i += 2
		}
	}
	del(doc, "webhooks")
	for i := 0; i+1 < len(doc.Content); i += 2 {
		k, v := doc.Content[i], doc.Content[i+1]
		switch {
		case k.Value == "http" && v.Kind == yaml.MappingNode:
			del(v, "token")
		case k.Value == "repos" && v.Kind == yaml.SequenceNode:
			for _, r := range v.Content {
				for j := 0; r.Kind == yaml.MappingNode && j+1 < len(r.Content); j += 2 {
					if u := r.Content[j+1]; r.Content[j].Value == "upstream" && u.Kind == yaml.MappingNode {
						// Kept valid for validate(), never used to fetch.
						for n := 0; n+1 < len(u.Content); n += 2 {
							switch u.Content[n].Value {
							case "url", "secret":
								u.Content[n+1].Value, u.Content[n+1].Tag, u.Content[n+1].Style = "unused", "!!str", 0
							case "key_file":
								u.Content[n+1].Value = ""
							}
						}
					}
				}
			}
		}
	}
}

func parse(file string, data []byte, reading bool) (*Config, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if err.Error() == "EOF" {
			root = yaml.Node{}
		} else {
			return nil, yamlError(file, data, err)
		}
	}
	c := &Config{File: file}
	if root.Kind != 0 {
		if reading {
			dropSecrets(&root)
		}
		if err := expandEnv(&root, &c.EnvNames); err != nil {
			return nil, posToError(file, data, err)
		}
		if err := decodeStrict(&root, c); err != nil {
			return nil, posToError(file, data, err)
		}
		c.lines = map[string]int{}
		for _, k := range [][2]string{{"ssh", "listen"}, {"http", "listen"}, {"ssh", "host_key"}} {
			if n := keyNode(&root, k[0], k[1]); n != nil {
				c.lines[k[0]+"."+k[1]] = n.Line
			}
		}
	}
	c.File = file
	if err := c.validate(); err != nil {
		return nil, posToError(file, data, err)
	}
	for _, w := range c.warnings {
		c.Warnings = append(c.Warnings, posToError(file, data, w).Error())
	}
	return c, nil
}

// keyNode is the key node at path in a mapping tree, or nil.
func keyNode(n *yaml.Node, path ...string) *yaml.Node {
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	for i, p := range path {
		if n.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for j := 0; j+1 < len(n.Content); j += 2 {
			if n.Content[j].Value == p {
				if i == len(path)-1 {
					return n.Content[j]
				}
				next = n.Content[j+1]
			}
		}
		if next == nil {
			return nil
		}
		n = next
	}
	return nil
}

// decodeStrict decodes with unknown keys refused: a misspelt max_claimed
// must not silently mean "no limit".
func decodeStrict(root *yaml.Node, c *Config) error {
	if err := checkKeys(root, reflect.TypeOf(c).Elem()); err != nil {
		return err
	}
	return root.Decode(c)
}

// checkKeys walks the node tree beside the Go type and refuses mapping keys
// that no field takes. yaml.v3's KnownFields does not reach into types with
// their own UnmarshalYAML, so it is done here once for the whole tree.
func checkKeys(n *yaml.Node, t reflect.Type) error {
	if n.Kind == yaml.DocumentNode {
		for _, c := range n.Content {
			if err := checkKeys(c, t); err != nil {
				return err
			}
		}
		return nil
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return nil // the decoder reports the type mismatch with its line
		}
		fields := map[string]reflect.Type{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			fields[tag] = f.Type
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			ft, ok := fields[k.Value]
			if !ok {
				return lineErr(k, "unknown key %q", k.Value)
			}
			if err := checkKeys(v, ft); err != nil {
				return err
			}
		}
	case reflect.Slice:
		if n.Kind == yaml.SequenceNode {
			for _, c := range n.Content {
				if err := checkKeys(c, t.Elem()); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func posToError(file string, data []byte, err error) error {
	var pe *posErr
	if errors.As(err, &pe) {
		return &Error{File: file, Line: pe.line, Msg: pe.msg}
	}
	return yamlError(file, data, err)
}

// yamlError turns the parser's error into one line with its position, in
// words (yamlWords).
func yamlError(file string, data []byte, err error) error {
	var te *yaml.TypeError
	msg := err.Error()
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	line := 0
	if m := yamlLineRe.FindStringSubmatch(msg); m != nil {
		fmt.Sscanf(m[1], "%d", &line)
		msg = m[2]
	}
	if strings.Contains(msg, "already defined at line") {
		return &Error{File: file, Line: line, Msg: msg} // already in words
	}
	if line == 0 && strings.Contains(msg, "mapping values are not allowed") {
		line = lineOfDoubleColon(data)
	}
	return &Error{File: file, Line: line, Msg: yamlWords(msg, keyAtLine(data, line))}
}

var envRe = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// expandEnv replaces ${NAME} in scalar values. An unset variable is an error:
// an empty webhook secret or token must never be the quiet result of a typo.
func expandEnv(n *yaml.Node, names *[]string) error {
	if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, "${") {
		var missing string
		n.Value = envRe.ReplaceAllStringFunc(n.Value, func(m string) string {
			name := m[2 : len(m)-1]
			if !contains(*names, name) {
				*names = append(*names, name)
			}
			v, ok := os.LookupEnv(name)
			if !ok && missing == "" {
				missing = name
			}
			return v
		})
		if missing != "" {
			return lineErr(n, "environment variable %s is not set", missing)
		}
		if n.Style == 0 {
			// A plain scalar is typed by its expanded value (max_claimed:
			// ${MAX} is a number); a quoted one stays a string, so a secret
			// that reads "null" or "true" is not turned into something else.
			n.Tag = ""
		}
	}
	for _, c := range n.Content {
		if err := expandEnv(c, names); err != nil {
			return err
		}
	}
	return nil
}

// RepoDir is where the daemon keeps the repo called name, under the data
// dir. name must be a configured (hence validated) repo name: it becomes a
// file name.
func (c *Config) RepoDir(name string) string {
	return filepath.Join(c.DataDir, "repos", name+".git")
}

// Repo returns the named repo's settings, or nil.
func (c *Config) Repo(name string) *Repo {
	for i := range c.Repos {
		if c.Repos[i].Name == name {
			return &c.Repos[i]
		}
	}
	return nil
}

// User returns the named user, or nil.
func (c *Config) User(name string) *User {
	for i := range c.Users {
		if c.Users[i].Name == name {
			return &c.Users[i]
		}
	}
	return nil
}

// RoleFor is the user's role on a repo: the per-repo access entry if there is
// one, else the user's own role.
func (c *Config) RoleFor(user string, repo *Repo) Role {
	if repo != nil {
		if s, ok := repo.Access[user]; ok {
			r, _ := ParseRole(s)
			return r
		}
	}
	if u := c.User(user); u != nil {
		return u.role
	}
	return RoleNone
}

// Pool returns the pool settings for a pool path, or nil.
func (r *Repo) Pool(path string) *Pool {
	for i := range r.Pools {
		if r.Pools[i].Name == path {
			return &r.Pools[i]
		}
	}
	return nil
}

// LockBytes is the largest lock file the repo accepts.
func (c *Config) LockBytes(r *Repo) int64 {
	if r != nil && r.MaxLockBytes > 0 {
		return r.MaxLockBytes
	}
	if c.Limits.MaxLockBytes > 0 {
		return c.Limits.MaxLockBytes
	}
	return DefaultMaxLockBytes
}

// HTTPListen is the HTTP address; "" means HTTP is off.
func (c *Config) HTTPListen() string {
	if c.HTTP.Listen == nil {
		return DefaultHTTPListen
	}
	return *c.HTTP.Listen
}

// ResolvePath makes p absolute relative to the config file's directory, so
// a config works the same whatever directory the daemon starts in.
func (c *Config) ResolvePath(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	if c.File != "" {
		p = filepath.Join(filepath.Dir(c.File), p)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return abs
}
