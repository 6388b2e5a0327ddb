package config_test

import (
	"encoding/base64"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/poolgate/poolgate/config"
)

const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE3EX/wMG3P8AdKtWqR4wVUhOzIcz3WxAxHJLuJlhYt0 test"

// yamlLines joins lines into a config file; cases name the offending line by
// its 1-based position, so the expected line is visible in the case itself.
func yamlLines(lines ...string) string { return strings.Join(lines, "\n") + "\n" }

func TestMalformedConfigNamesFileLineAndReason(t *testing.T) {
	const unsetVar = "POOLGATE_TEST_SURELY_UNSET_VAR"
	for _, tc := range []struct {
		name   string
		yaml   string
		line   int
		reason string // a fragment of the message
	}{
		{"unknown top-level key", yamlLines(
			"data_dir: /tmp/x",
			"ssh:",
			"  listen: :2222",
			"webhoooks: []",
		), 4, `unknown key "webhoooks"`},
		{"unknown key deep in a pool", yamlLines(
			"repos:",
			"  - name: locks",
			"    pools:",
			"      - name: staging",
			"        max_claim: 1",
		), 5, `unknown key "max_claim"`},
		{"bad role", yamlLines(
			"users:",
			"  - name: alice",
			"    role: boss",
			"    keys: [\""+testKey+"\"]",
		), 2, `unknown role "boss"`},
		{"bad per-repo access role", yamlLines(
			"users:",
			"  - name: alice",
			"    keys: [\""+testKey+"\"]",
			"repos:",
			"  - name: locks",
			"    access: {alice: owner}",
		), 5, `unknown role "owner"`},
		{"access for an unknown user", yamlLines(
			"repos:",
			"  - name: locks",
			"    access: {mallory: admin}",
		), 2, `unknown user "mallory"`},
		{"bad duration", yamlLines(
			"repos:",
			"  - name: locks",
			"    pools:",
			"      - name: staging",
			"        stale_after: 2 hours",
		), 5, `bad duration "2 hours"`},
		{"negative duration", yamlLines(
			"ssh:",
			"  idle_timeout: -5m",
		), 2, `bad duration "-5m"`},
		{"duplicate repo", yamlLines(
			"repos:",
			"  - name: locks",
			"  - name: other",
			"  - name: locks.git",
		), 4, `repo "locks" is listed twice`},
		{"pool name escaping the repo", yamlLines(
			"repos:",
			"  - name: locks",
			"    pools:",
			"      - name: staging",
			"      - name: ../x",
		), 5, `"../x"`},
		{"pool name absolute", yamlLines(
			"repos:",
			"  - name: locks",
			"    pools:",
			"      - name: /etc",
		), 4, `"/etc"`},
		{"pool named claimed", yamlLines(
			"repos:",
			"  - name: locks",
			"    pools:",
			"      - name: team/claimed",
		), 4, `"claimed"`},
		{"duplicate pool", yamlLines(
			"repos:",
			"  - name: locks",
			"    pools:",
			"      - name: a",
			"      - name: a",
		), 5, `pool "a" is listed twice`},
		{"bad lock name", yamlLines(
			"repos:",
			"  - name: locks",
			"    pools:",
			"      - name: a",
			"        locks: [ok, \"bad\\nname\"]",
		), 4, `lock name "bad\nname" is invalid`},
		{"unset environment variable", yamlLines(
			"http:",
			"  listen: 127.0.0.1:8080",
			"  token: ${"+unsetVar+"}",
		), 3, "environment variable " + unsetVar + " is not set"},
		{"bad key", yamlLines(
			"users:",
			"  - name: concourse",
			"    role: write",
			"    keys: [\"ssh-ed25519 not-base64 x\"]",
		), 2, "is not an SSH public key"},
		{"user without keys", yamlLines(
			"users:",
			"  - name: concourse",
		), 2, "neither keys nor keys_file"},
		{"YAML syntax error", yamlLines(
			"repos:",
			"  - name: locks",
			"    branch: master: x",
			"    pools: []",
		), 3, "a second ':' on one line"},
		{"tab indentation", yamlLines(
			"ssh:",
			"\tlisten: :2222",
		), 2, "a tab used for indentation"},
		{"key given twice", yamlLines(
			"data_dir: /srv/a",
			"ssh:",
			"  listen: :22",
			"data_dir: /srv/b",
		), 4, `"data_dir" already defined at line 1`},
		{"type mismatch", yamlLines(
			"repos:",
			"  - name: locks",
			"    pools:",
			"      - name: a",
			"        max_claimed: lots",
		), 5, `max_claimed must be a number, not text "lots"`},
		{"a list where text belongs", yamlLines(
			"repos:",
			"  - name: [locks]",
		), 2, "name must be text, not a list"},
		{"text where a list belongs", yamlLines(
			"repos:",
			"  - name: locks",
			"    pools:",
			"      - name: a",
			"        locks: env-a",
		), 5, `locks must be a list (- item lines, or [a, b]), not text "env-a"`},
		{"unclosed quote", yamlLines(
			"data_dir: /srv/x",
			"ssh:",
			"  listen: ':2222",
		), 3, "a quote is not closed"},
		{"ssh listen without a port", yamlLines(
			"data_dir: /srv/x",
			"ssh:",
			"  idle_timeout: 5m",
			"  listen: 2222",
		), 4, `ssh.listen: "2222" is not HOST:PORT`},
		{"http listen with a bad port", yamlLines(
			"http:",
			"  listen: 127.0.0.1:http-alt",
		), 2, `http.listen: "127.0.0.1:http-alt": port "http-alt" is not a number`},
		{"webhook with bad format", yamlLines(
			"repos:",
			"  - name: locks",
			"webhooks:",
			"  - name: ops",
			"    url: https://hooks.example.com/x",
			"    format: xml",
		), 4, `format "xml"`},
		{"webhook secret without whsec_", yamlLines(
			"webhooks:",
			"  - name: ops",
			"    url: https://hooks.example.com/x",
			"    secret: hunter2",
		), 2, "whsec_"},
		{"webhook secret not base64", yamlLines(
			"webhooks:",
			"  - name: ops",
			"    url: https://hooks.example.com/x",
			"    format: json",
			"    secret: whsec_hunter2!!",
		), 2, "not valid base64"},
		{"webhook secret with an empty key", yamlLines(
			"webhooks:",
			"  - name: ops",
			"    url: https://hooks.example.com/x",
			"    secret: whsec_",
		), 2, "empty key"},
		{"webhook not http", yamlLines(
			"webhooks:",
			"  - name: ops",
			"    url: ftp://hooks.example.com/x",
		), 2, "not an http(s) URL"},
		{"webhook unknown event", yamlLines(
			"webhooks:",
			"  - name: ops",
			"    url: https://hooks.example.com/x",
			"    events: [claimed, exploded]",
		), 2, `unknown event "exploded"`},
		{"bad branch", yamlLines(
			"repos:",
			"  - name: locks",
			"    branch: refs/heads/master",
		), 2, "not a valid branch name"},
		{"bad repo name", yamlLines(
			"repos:",
			"  - name: ../etc",
		), 2, `repo name "../etc"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.Unsetenv(unsetVar)
			const file = "/etc/poolgate/poolgate.yaml"
			_, err := config.Parse(file, []byte(tc.yaml))
			if err == nil {
				t.Fatalf("config accepted:\n%s", tc.yaml)
			}
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v (%T) is not a *config.Error", err, err)
			}
			if ce.File != file || ce.Line != tc.line {
				t.Errorf("error at %s:%d, want %s:%d: %v", ce.File, ce.Line, file, tc.line, err)
			}
			want := file + ":" + itoa(tc.line) + ": "
			if !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error %q does not start with %q", err, want)
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("error %q does not give the reason %q", err, tc.reason)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		if n /= 10; n == 0 {
			return string(b[i:])
		}
	}
}

// TestLoadNamesTheFileItRead: errors from Load carry the path as given, and a
// missing file is an error naming it.
func TestLoadNamesTheFileItRead(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "poolgate.yaml")
	if err := os.WriteFile(path, []byte("repos:\n  - name: locks\n    colour: blue\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := config.Load(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+":3: ") || !strings.Contains(err.Error(), `"colour"`) {
		t.Fatalf("Load: %v, want %s:3: unknown key \"colour\"", err, path)
	}
	missing := filepath.Join(dir, "nope.yaml")
	if _, err := config.Load(missing); err == nil || !strings.HasPrefix(err.Error(), missing+": ") {
		t.Fatalf("Load of a missing file: %v", err)
	}
}

func TestEnvironmentVariablesAreExpanded(t *testing.T) {
	t.Setenv("PG_TEST_SECRET", "whsec_c2VjcmV0")
	t.Setenv("PG_TEST_HOST", "hooks.example.com")
	t.Setenv("PG_TEST_TOKEN", "t0ken with spaces: and # not a comment")
	c, err := config.Parse("x.yaml", []byte(yamlLines(
		"http:",
		"  token: ${PG_TEST_TOKEN}",
		"repos:",
		"  - name: locks",
		"webhooks:",
		"  - name: ops",
		"    url: https://${PG_TEST_HOST}/hook/${PG_TEST_HOST}",
		"    secret: \"${PG_TEST_SECRET}\"",
	)))
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTP.Token != "t0ken with spaces: and # not a comment" {
		t.Errorf("token = %q", c.HTTP.Token)
	}
	if w := c.Webhooks[0]; w.URL != "https://hooks.example.com/hook/hooks.example.com" || w.Secret != "whsec_c2VjcmV0" {
		t.Errorf("webhook = %+v", w)
	}
}

// TestEnvironmentVariableInANumberField: DESIGN.md §4 says values may name an
// environment variable; a number is a value too.
func TestEnvironmentVariableInANumberField(t *testing.T) {
	t.Setenv("PG_TEST_MAX", "3")
	c, err := config.Parse("x.yaml", []byte(yamlLines(
		"repos:",
		"  - name: locks",
		"    pools:",
		"      - name: staging",
		"        max_claimed: ${PG_TEST_MAX}",
	)))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Repo("locks").Pool("staging").MaxClaimed; got != 3 {
		t.Fatalf("max_claimed = %d, want 3", got)
	}
}

func TestDefaultsAreApplied(t *testing.T) {
	c, err := config.Parse("x.yaml", []byte(yamlLines(
		"repos:",
		"  - name: locks",
		"    pools:",
		"      - name: staging",
		"  - name: big",
		"    max_lock_bytes: 1048576",
		"webhooks:",
		"  - name: ops",
		"    url: https://hooks.example.com/x",
	)))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Repo("locks")
	if r == nil || r.Branch != "master" {
		t.Fatalf("repo locks = %+v, want branch master", r)
	}
	if got := c.LockBytes(r); got != 64<<10 {
		t.Errorf("max_lock_bytes = %d, want 64 KiB", got)
	}
	if got := c.LockBytes(c.Repo("big")); got != 1<<20 {
		t.Errorf("per-repo max_lock_bytes = %d, want 1 MiB", got)
	}
	if c.SSH.Listen != ":2222" {
		t.Errorf("ssh.listen = %q, want :2222", c.SSH.Listen)
	}
	if c.HTTPListen() != "127.0.0.1:8080" {
		t.Errorf("http.listen = %q, want 127.0.0.1:8080", c.HTTPListen())
	}
	if c.SSH.IdleTimeout.D().Minutes() != 10 || c.SSH.MaxSessions != 256 {
		t.Errorf("ssh idle_timeout %v, max_sessions %d; want 10m, 256", c.SSH.IdleTimeout.D(), c.SSH.MaxSessions)
	}
	if c.Webhooks[0].Format != "json" {
		t.Errorf("webhook format = %q, want json", c.Webhooks[0].Format)
	}
	if p := r.Pool("staging"); p == nil || p.MaxClaimed != 0 || p.StaleAfter != 0 {
		t.Errorf("pool staging = %+v, want no limit and no stale_after", p)
	}

	empty, err := config.Parse("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if empty.SSH.Listen != ":2222" || empty.LockBytes(nil) != 64<<10 || len(empty.Repos) != 0 {
		t.Errorf("empty config: %+v", empty)
	}
}

// TestRelativePathsResolveAgainstTheConfigFile: data_dir, host_key and
// keys_file written relative mean relative to the config file, whatever
// directory the daemon starts in; the default data_dir too.
func TestRelativePathsResolveAgainstTheConfigFile(t *testing.T) {
	c, err := config.Parse("/etc/poolgate/poolgate.yaml", []byte(yamlLines(
		"ssh:",
		"  host_key: keys/host",
		"users:",
		"  - name: alice",
		"    keys_file: alice.pub",
	)))
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/etc/poolgate/poolgate-data" || c.SSH.HostKey != "/etc/poolgate/keys/host" ||
		c.Users[0].KeysFile != "/etc/poolgate/alice.pub" {
		t.Fatalf("data_dir %q, host_key %q, keys_file %q", c.DataDir, c.SSH.HostKey, c.Users[0].KeysFile)
	}
	c, err = config.Parse("/etc/poolgate/poolgate.yaml", []byte("data_dir: /var/lib/poolgate\n"))
	if err != nil || c.DataDir != "/var/lib/poolgate" {
		t.Fatalf("absolute data_dir: %v %q", err, c.DataDir)
	}
}

func TestEmptyHTTPListenTurnsHTTPOff(t *testing.T) {
	c, err := config.Parse("x.yaml", []byte("http:\n  listen: \"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPListen() != "" {
		t.Fatalf("http.listen \"\" gives %q, want HTTP off", c.HTTPListen())
	}
}

func TestRoleForUsesPerRepoAccessOverrides(t *testing.T) {
	c, err := config.Parse("x.yaml", []byte(yamlLines(
		"users:",
		"  - name: alice",
		"    role: write",
		"    keys: [\""+testKey+"\"]",
		"  - name: bob",
		"    role: read",
		"    keys: [\""+testKey+"\"]",
		"  - name: carol",
		"    role: admin",
		"    keys: [\""+testKey+"\"]",
		"  - name: dave",
		"    keys: [\""+testKey+"\"]",
		"repos:",
		"  - name: locks",
		"    access: {alice: read, bob: admin}",
		"  - name: other",
	)))
	if err != nil {
		t.Fatal(err)
	}
	locks, other := c.Repo("locks"), c.Repo("other")
	for _, tc := range []struct {
		user string
		repo *config.Repo
		want config.Role
	}{
		{"alice", locks, config.RoleRead},  // lowered on locks
		{"bob", locks, config.RoleAdmin},   // raised on locks
		{"carol", locks, config.RoleAdmin}, // no override: own role
		{"dave", locks, config.RoleWrite},  // no role given: write
		{"alice", other, config.RoleWrite},
		{"bob", other, config.RoleRead},
		{"alice", nil, config.RoleWrite},
		{"mallory", locks, config.RoleNone},
		{"mallory", nil, config.RoleNone},
	} {
		if got := c.RoleFor(tc.user, tc.repo); got != tc.want {
			name := "<nil>"
			if tc.repo != nil {
				name = tc.repo.Name
			}
			t.Errorf("RoleFor(%s, %s) = %s, want %s", tc.user, name, got, tc.want)
		}
	}
}

func TestParseRole(t *testing.T) {
	for s, want := range map[string]config.Role{"read": config.RoleRead, "write": config.RoleWrite, "admin": config.RoleAdmin} {
		if r, err := config.ParseRole(s); err != nil || r != want || r.String() != s {
			t.Errorf("ParseRole(%q) = %v, %v", s, r, err)
		}
	}
	for _, s := range []string{"", "Admin", "owner", "none"} {
		if _, err := config.ParseRole(s); err == nil {
			t.Errorf("ParseRole(%q) accepted", s)
		}
	}
}

// TestProtectionLimitsHaveDefaults: every limit that protects the server
// has a default, can be set, and refuses a negative value with its line.
func TestProtectionLimitsHaveDefaults(t *testing.T) {
	c, err := config.Parse("x.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.SSH.HandshakeTimeout.D() != 15*time.Second || c.SSH.MaxSessionsPerKey != 128 || c.SSH.PushTimeout.D() != 2*time.Minute ||
		c.Limits.MaxPushBytes != 32<<20 || c.Limits.MaxObjectBytes != 1<<20 || c.Limits.MaxPushObjects != 10000 {
		t.Errorf("defaults: ssh %+v, limits %+v", c.SSH, c.Limits)
	}
	c, err = config.Parse("x.yaml", []byte(yamlLines(
		"ssh:",
		"  max_sessions: 10",
		"  handshake_timeout: 3s",
		"limits:",
		"  max_push_bytes: 1000",
		"  max_object_bytes: 100",
		"  max_push_objects: 5",
	)))
	if err != nil {
		t.Fatal(err)
	}
	if c.SSH.HandshakeTimeout.D() != 3*time.Second || c.SSH.MaxSessionsPerKey != 10 ||
		c.Limits.MaxPushBytes != 1000 || c.Limits.MaxObjectBytes != 100 || c.Limits.MaxPushObjects != 5 {
		t.Errorf("set: ssh %+v, limits %+v (max_sessions_per_key defaults to at most max_sessions)", c.SSH, c.Limits)
	}
	_, err = config.Parse("x.yaml", []byte(yamlLines("limits:", "  max_object_bytes: -1")))
	if err == nil || !strings.Contains(err.Error(), "limits.max_object_bytes must not be negative") {
		t.Errorf("negative limit: %v", err)
	}
}

// TestTreeBoundsHaveDefaultsAndRefuseNonsense: the bound on what a pushed
// tree may expand to is always on; a value that would switch it off or pass
// git's own depth limit is a config error with file and line.
func TestTreeBoundsHaveDefaultsAndRefuseNonsense(t *testing.T) {
	c, err := config.Parse("x.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Limits.MaxTreePaths != 100000 || c.Limits.MaxTreeDepth != 64 {
		t.Errorf("defaults: %+v", c.Limits)
	}
	c, err = config.Parse("x.yaml", []byte(yamlLines("limits:", "  max_tree_paths: 500", "  max_tree_depth: 8")))
	if err != nil || c.Limits.MaxTreePaths != 500 || c.Limits.MaxTreeDepth != 8 {
		t.Errorf("set: %+v, %v", c.Limits, err)
	}
	for _, bad := range []struct{ line, want string }{
		{"  max_tree_paths: -1", "x.yaml:2: limits.max_tree_paths must not be negative"},
		{"  max_tree_depth: -1", "x.yaml:2: limits.max_tree_depth must be between 1 and 4096"},
		{"  max_tree_depth: 5000", "x.yaml:2: limits.max_tree_depth must be between 1 and 4096"},
	} {
		_, err := config.Parse("x.yaml", []byte(yamlLines("limits:", bad.line)))
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: got %v, want %q", bad.line, err, bad.want)
		}
	}
}

// TestEnvNamesListsTheVariablesTheFileUses: the daemon passes exactly these
// to the hook, so the hook can read the same config.
func TestEnvNamesListsTheVariablesTheFileUses(t *testing.T) {
	t.Setenv("PG_TEST_TOKEN", "t0k3n")
	t.Setenv("PG_TEST_MAX", "3")
	c, err := config.Parse("x.yaml", []byte(yamlLines(
		"http:",
		"  token: ${PG_TEST_TOKEN}",
		"repos:",
		"  - name: locks",
		"    pools:",
		"      - name: p",
		"        max_claimed: ${PG_TEST_MAX}",
		"      - name: q",
		"        max_claimed: ${PG_TEST_MAX}",
	)))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.EnvNames, ",") != "PG_TEST_TOKEN,PG_TEST_MAX" {
		t.Errorf("EnvNames = %v", c.EnvNames)
	}
}

// A secret that cannot sign fails at load, not at every delivery; the
// error does not repeat it; a good one yields the signer deliveries use,
// and what it signs verifies with the Standard Webhooks library.
func TestWebhookSecretIsDecodedAtLoadIntoTheSigner(t *testing.T) {
	bad := yamlLines("webhooks:", "  - name: ops", "    url: https://h.example.com/x", "    secret: whsec_s3cr3t-not-b64")
	_, err := config.Parse("/etc/p.yaml", []byte(bad))
	if err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Fatalf("bad secret: err %v (want an error without the secret)", err)
	}
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("a test key of some length"))
	good := yamlLines("webhooks:", "  - name: ops", "    url: https://h.example.com/x", "    secret: "+secret)
	cfg, err := config.Parse("/etc/p.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	sg := cfg.Webhooks[0].Signer
	if sg == nil {
		t.Fatal("no signer built at load")
	}
	ts := time.Now()
	sig, err := sg.Sign("msg_1", ts, []byte(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	verifier, _ := standardwebhooks.NewWebhook(secret)
	h := http.Header{"Webhook-Id": {"msg_1"}, "Webhook-Timestamp": {strconv.FormatInt(ts.Unix(), 10)}, "Webhook-Signature": {sig}}
	if err := verifier.Verify([]byte(`{"a":1}`), h); err != nil {
		t.Fatalf("signature does not verify: %v", err)
	}
}

// Parser internals (tags, Go types) never reach the person editing the file.
func TestYAMLErrorsAreInWordsNotParserInternals(t *testing.T) {
	for _, y := range []string{
		"repos:\n  - name: locks\n    pools:\n      - name: a\n        max_claimed: two\n",
		"ssh:\n  max_sessions: [1]\n",
		"repos: locks\n",
		"users:\n  - name: a\n    keys: {x: y}\n",
		"repos:\n  - name: locks\n   branch: x\n",
		"repos:\n  - name: locks\n    branch: master: x\n",
	} {
		_, err := config.Parse("c.yaml", []byte(y))
		if err == nil {
			t.Errorf("accepted:\n%s", y)
			continue
		}
		for _, bad := range []string{"!!", "unmarshal", "[]string", "config.", "map[", "yaml: "} {
			if strings.Contains(err.Error(), bad) {
				t.Errorf("%q: error speaks the parser's language (%q): %v", y, bad, err)
			}
		}
		if !regexp.MustCompile(`^c\.yaml:\d+: `).MatchString(err.Error()) {
			t.Errorf("%q: error has no line: %v", y, err)
		}
	}
}

func TestAnEmptyConfigFileIsAnError(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{"empty.yaml": "", "comments.yaml": "# nothing yet\n\n", "null.yaml": "---\n"} {
		path := filepath.Join(dir, name)
		os.WriteFile(path, []byte(content), 0o644)
		for _, load := range []func(string) (*config.Config, error){config.Load, config.LoadForReading} {
			_, err := load(path)
			if err == nil || !strings.HasPrefix(err.Error(), path+": ") || !strings.Contains(err.Error(), "empty") {
				t.Errorf("%s: %v, want an error saying the file is empty", name, err)
			}
		}
	}
}

func TestMissingKeyFilesNameTheLineAndThePath(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "keys", "alice.pub")
	c, err := config.Parse(filepath.Join(dir, "c.yaml"), []byte(yamlLines(
		"users:",
		"  - name: concourse",
		"    keys_file: "+filepath.Join(dir, "ok.pub"),
		"  - name: alice",
		"    keys_file: "+missing,
	)))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "ok.pub"), nil, 0o644)
	_, err = c.LoadKeys()
	want := filepath.Join(dir, "c.yaml") + ":4: "
	if err == nil || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("LoadKeys: %v, want %s... naming %s", err, want, missing)
	}

	upKey := filepath.Join(dir, "deploy_key")
	c, err = config.Parse(filepath.Join(dir, "c.yaml"), []byte(yamlLines(
		"repos:",
		"  - name: gh",
		"    upstream: {url: git@github.com:o/r.git, provider: github, secret: s, key_file: "+upKey+"}",
	)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err = c.LoadKeys(); err == nil || !strings.Contains(err.Error(), "c.yaml:2: ") || !strings.Contains(err.Error(), upKey) {
		t.Fatalf("missing upstream key: %v", err)
	}
}

func TestMaxClaimedNotBelowTheLockCountIsAWarning(t *testing.T) {
	c, err := config.Parse("c.yaml", []byte(yamlLines(
		"repos:",
		"  - name: locks",
		"    pools:",
		"      - name: staging",
		"        max_claimed: 2",
		"        locks: [env-a, env-b]",
		"      - name: prod",
		"        max_claimed: 1",
		"        locks: [p1, p2]",
	)))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 1 || !strings.HasPrefix(c.Warnings[0], "c.yaml:4: ") || !strings.Contains(c.Warnings[0], `pool "staging"`) {
		t.Fatalf("warnings %q, want one for staging at line 4", c.Warnings)
	}
}

// The reading commands (status, history) need none of the config's
// secrets; serving still does.
func TestLoadForReadingNeedsNoSecret(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(path, []byte(yamlLines(
		"http:",
		"  token: ${PG_TEST_UNSET_TOKEN}",
		"repos:",
		"  - name: locks",
		"  - name: gh",
		"    upstream: {url: \"${PG_TEST_UNSET_URL}\", provider: github, secret: \"${PG_TEST_UNSET_SECRET}\"}",
		"webhooks:",
		"  - name: ops",
		"    url: ${PG_TEST_UNSET_HOOK}",
		"    secret: ${PG_TEST_UNSET_WHSEC}",
	)), 0o644)
	if _, err := config.Load(path); err == nil || !strings.Contains(err.Error(), "is not set") {
		t.Fatalf("Load: %v, want an unset variable refused", err)
	}
	c, err := config.LoadForReading(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Webhooks) != 0 || c.HTTP.Token != "" || c.Repo("gh") == nil || c.Repo("locks") == nil {
		t.Fatalf("read config: webhooks %v, token %q, repos %v", c.Webhooks, c.HTTP.Token, c.Repos)
	}
}
