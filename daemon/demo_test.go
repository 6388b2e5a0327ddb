package daemon_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/daemon"
	"github.com/rs/zerolog"
)

// TestDemoPrintsCommandsThatWorkAsPrinted starts the demo default in
// process (on free ports instead of 2222/8080) and runs the printed clone
// command through a shell, exactly as a user would paste it.
func TestDemoPrintsCommandsThatWorkAsPrinted(t *testing.T) {
	dir := t.TempDir()
	home := filepath.Join(dir, "home") // no ~/.ssh: the demo generates a key
	cfg, demo, err := daemon.DemoConfig(filepath.Join(dir, "poolgate-data"), home)
	if err != nil {
		t.Fatal(err)
	}
	if demo.ClientKey == "" {
		t.Fatal("no client key generated")
	}
	fi, err := os.Stat(demo.ClientKey)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("client key: %v %v", fi, err)
	}
	sshLn, httpLn, printed := serveDemo(t, cfg, demo, true)

	var clone string
	for _, l := range strings.Split(printed.String(), "\n") {
		if strings.Contains(l, "git clone ") {
			clone = strings.TrimSpace(l)
		}
	}
	if clone == "" || !strings.Contains(printed.String(), "uri: ssh://git@"+sshLn.Addr().String()+"/locks.git") || !strings.Contains(printed.String(), "pool: demo") {
		t.Fatalf("demo output:\n%s", printed.String())
	}
	work := t.TempDir()
	sh := exec.Command("sh", "-c", clone)
	sh.Dir = work
	sh.Env = append(os.Environ(), "HOME="+home, "SSH_AUTH_SOCK=", "GIT_CONFIG_NOSYSTEM=1")
	if out, err := sh.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", clone, err, out)
	}
	if _, err := os.Stat(filepath.Join(work, "locks", "demo", "unclaimed", "lock-a")); err != nil {
		t.Fatalf("clone lacks the demo pool: %v", err)
	}
	// The clone pushes as is: a claim by the demo's admin key.
	push := exec.Command("sh", "-c", `git mv demo/unclaimed/lock-a demo/claimed/ &&
		git -c user.name=me -c user.email=me@localhost commit -qm "claiming: lock-a" && git push -q origin HEAD:master`)
	push.Dir = filepath.Join(work, "locks")
	push.Env = sh.Env
	if out, err := push.CombinedOutput(); err != nil {
		t.Fatalf("push from the printed clone: %v\n%s", err, out)
	}

	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + httpLn.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.TrimSpace(string(body)) != "ok" {
		t.Fatalf("/healthz said %q", body)
	}
}

// serveDemo runs the demo's server on free loopback ports until the test
// ends and returns its listeners and what it printed.
func serveDemo(t *testing.T, cfg *config.Config, demo *daemon.Demo, withHTTP bool) (sshLn, httpLn net.Listener, printed *bytes.Buffer) {
	t.Helper()
	srv, err := daemon.New(cfg, zerolog.New(io.Discard), binPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Prepare(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	sshLn, _ = net.Listen("tcp", "127.0.0.1:0")
	httpAddr := ""
	if withHTTP {
		httpLn, _ = net.Listen("tcp", "127.0.0.1:0")
		httpAddr = httpLn.Addr().String()
	}
	printed = &bytes.Buffer{}
	if err := daemon.PrintDemo(printed, srv, demo, sshLn.Addr().String(), httpAddr); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, sshLn, httpLn) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return sshLn, httpLn, printed
}

func TestDemoAuthorizesTheUsersOwnKeys(t *testing.T) {
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	k := newKey(t, filepath.Join(home, ".ssh"), "id_ed25519")
	os.WriteFile(k.path+".pub", []byte(k.public+" me@laptop\n"), 0o644)
	cfg, demo, err := daemon.DemoConfig(filepath.Join(dir, "data"), home)
	if err != nil {
		t.Fatal(err)
	}
	if demo.ClientKey != "" || len(cfg.Users) != 2 || cfg.Users[0].Role != "admin" || len(cfg.Users[0].Keys) != 1 ||
		!strings.HasPrefix(cfg.Users[0].Keys[0], k.public) {
		t.Fatalf("demo users: %+v, generated key %q", cfg.Users, demo.ClientKey)
	}
}

// The printed source: block uses the demo's write key, not the admin's, so
// what a newcomer's pipeline pushes is judged like any pipeline's: creating
// a pool is refused. The written config reads in a person's order.
func TestDemoSourceBlockUsesAWriteKeySoTheRulesApply(t *testing.T) {
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	cfg, demo, err := daemon.DemoConfig(filepath.Join(dir, "poolgate-data"), home)
	if err != nil {
		t.Fatal(err)
	}
	body, err := os.ReadFile(cfg.File)
	if err != nil {
		t.Fatal(err)
	}
	text := string(body)
	if strings.Contains(text, "edits are lost") {
		t.Errorf("demo config says edits are lost:\n%s", text)
	}
	last := -1
	for _, key := range []string{"\ndata_dir:", "\nssh:", "\nhttp:", "\nusers:", "\nrepos:"} {
		i := strings.Index(text, key)
		if i < last {
			t.Errorf("demo config: %s out of order:\n%s", strings.TrimSpace(key), text)
		}
		last = i
	}
	sshLn, _, printed := serveDemo(t, cfg, demo, false)
	key := ""
	for _, l := range strings.Split(printed.String(), "\n") {
		if _, after, ok := strings.Cut(l, `poolgate_private_key="$(cat `); ok {
			key = strings.Trim(strings.TrimSuffix(after, `)"`), "'")
		}
	}
	if key == "" || key != demo.PipelineKey {
		t.Fatalf("the printed fly command does not use the pipeline key %q:\n%s", demo.PipelineKey, printed.String())
	}
	for _, u := range cfg.Users {
		if u.Name == "pipeline" && u.Role != "write" {
			t.Fatalf("pipeline user has role %q", u.Role)
		}
	}
	work := t.TempDir()
	sshCmd := "ssh -i " + key + " -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
	env := append(os.Environ(), "HOME="+home, "SSH_AUTH_SOCK=", "GIT_CONFIG_NOSYSTEM=1", "GIT_SSH_COMMAND="+sshCmd)
	url := "ssh://git@" + sshLn.Addr().String() + "/locks.git"
	run := func(dir, script string) (string, error) {
		sh := exec.Command("sh", "-c", script)
		sh.Dir, sh.Env = dir, env
		out, err := sh.CombinedOutput()
		return string(out), err
	}
	if out, err := run(work, "git clone -q "+url+" locks"); err != nil {
		t.Fatalf("clone with the pipeline key: %v\n%s", err, out)
	}
	out, err := run(filepath.Join(work, "locks"), `mkdir -p evil/unclaimed && touch evil/unclaimed/x && git add -A &&
		git -c user.name=me -c user.email=me@localhost commit -qm "new pool" && git push origin HEAD:master`)
	if err == nil || !strings.Contains(out, "pool-change") {
		t.Fatalf("a new pool pushed with the printed key was not refused by pool-change: %v\n%s", err, out)
	}
}
