package hooks_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/poolgate/poolgate/hooks"
	"github.com/poolgate/poolgate/pushlog"
)

// binary is a poolgate built once for the package's tests: the hook is
// tested as git runs it, as a separate process.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "poolgate-hooks-test")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "poolgate")
	out, err := exec.Command("go", "build", "-o", binary, "../cmd/poolgate").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building poolgate: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// poolRepo is a bare repo with the hook installed and a work clone.
type poolRepo struct {
	t      *testing.T
	bare   string
	work   string
	config string
	env    []string
}

// gitEnv isolates git from the machine's own config.
func gitEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "GIT_") || strings.HasPrefix(kv, "POOLGATE_") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"HOME="+home,
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=git", "GIT_AUTHOR_EMAIL=git@localhost",
		"GIT_COMMITTER_NAME=git", "GIT_COMMITTER_EMAIL=git@localhost",
	)
}

const defaultConfig = `
repos:
  - name: locks
    branch: master
    pools:
      - name: staging
        max_claimed: 2
`

// newPoolRepo makes locks.git with pools staging (a, b, c) and
// team/prod (x), pushed by an admin, and a writer's clone of it.
func newPoolRepo(t *testing.T, cfg string) *poolRepo {
	t.Helper()
	root := t.TempDir()
	r := &poolRepo{t: t, bare: filepath.Join(root, "locks.git"), work: filepath.Join(root, "work"),
		config: filepath.Join(root, "poolgate.yaml")}
	r.env = gitEnv(root)
	if err := os.WriteFile(r.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	r.run(root, "git", "init", "-q", "--bare", "-b", "master", r.bare)
	hookDir := filepath.Join(root, "hooks")
	if err := hooks.Install(hookDir, binary); err != nil {
		t.Fatal(err)
	}
	r.run(r.bare, "git", "config", "core.hooksPath", hookDir)
	r.run(root, "git", "clone", "-q", r.bare, r.work)
	for _, f := range []string{"staging/claimed/.gitkeep", "staging/unclaimed/.gitkeep", "staging/unclaimed/a",
		"staging/unclaimed/b", "staging/unclaimed/c", "team/prod/claimed/.gitkeep", "team/prod/unclaimed/x", "README.md"} {
		r.write(f, "")
	}
	r.git("add", "-A")
	r.git("commit", "-q", "-m", "create pools")
	r.mustPush("admin", "origin", "HEAD:master")
	return r
}

func (r *poolRepo) run(dir string, name string, args ...string) string {
	r.t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = r.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func (r *poolRepo) git(args ...string) string {
	r.t.Helper()
	return r.run(r.work, "git", args...)
}

func (r *poolRepo) write(rel, content string) {
	r.t.Helper()
	p := filepath.Join(r.work, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		r.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		r.t.Fatal(err)
	}
}

// push runs git push as a pusher with role; the local transport hands the
// environment to receive-pack and so to the hook, as the daemon does.
func (r *poolRepo) push(role string, args ...string) (string, error) {
	r.t.Helper()
	cmd := exec.Command("git", append([]string{"push"}, args...)...)
	cmd.Dir = r.work
	cmd.Env = append(append([]string{}, r.env...),
		pushlog.EnvConfig+"="+r.config, pushlog.EnvUser+"=tester", pushlog.EnvRole+"="+role)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (r *poolRepo) mustPush(role string, args ...string) {
	r.t.Helper()
	if out, err := r.push(role, args...); err != nil {
		r.t.Fatalf("push refused: %v\n%s", err, out)
	}
}

// refused pushes and asserts the hook refused it for rule, naming each of
// the given fragments, and that the branch did not move.
func (r *poolRepo) refused(rule string, role string, fragments ...string) string {
	r.t.Helper()
	before := r.tip()
	out, err := r.push(role, "origin", "HEAD:master")
	if err == nil {
		r.t.Fatalf("push landed, want it refused by [%s]:\n%s", rule, out)
	}
	if !strings.Contains(out, "remote: poolgate: ["+rule+"]") {
		r.t.Fatalf("refusal does not name rule [%s]:\n%s", rule, out)
	}
	for _, f := range fragments {
		if !strings.Contains(out, f) {
			r.t.Fatalf("refusal does not mention %q:\n%s", f, out)
		}
	}
	if after := r.tip(); after != before {
		r.t.Fatalf("branch moved from %s to %s on a refused push", before, after)
	}
	return out
}

// lands pushes HEAD and asserts the branch now points at it.
func (r *poolRepo) lands(role string) {
	r.t.Helper()
	r.mustPush(role, "origin", "HEAD:master")
	if head := r.git("rev-parse", "HEAD"); r.tip() != head {
		r.t.Fatalf("branch is %s, want %s", r.tip(), head)
	}
}

func (r *poolRepo) tip() string {
	r.t.Helper()
	return r.run(r.bare, "git", "rev-parse", "refs/heads/master")
}

// commit stages everything and commits with msg.
func (r *poolRepo) commit(msg string) {
	r.t.Helper()
	r.git("add", "-A")
	r.git("commit", "-q", "--allow-empty", "-m", msg)
}

// resetToServer drops local commits, like pool-resource's fetch + reset.
func (r *poolRepo) resetToServer() {
	r.t.Helper()
	r.git("fetch", "-q", "origin", "master")
	r.git("reset", "-q", "--hard", "origin/master")
}
