package hooks_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/pushlog"
)

// stockClient replays pool-resource's out step with exactly its git commands
// (POOL-RESOURCE.md): clone, then fetch + reset, one local commit, push, and
// "[rejected]"/"[remote rejected]"/"Everything up-to-date" means try again.
type stockClient struct {
	t      *testing.T
	r      *poolRepo
	dir    string
	pool   string
	prefix func(verb, name string) string
}

func newStockClient(t *testing.T, r *poolRepo, format string) *stockClient {
	t.Helper()
	c := &stockClient{t: t, r: r, dir: filepath.Join(t.TempDir(), "pool-resource"), pool: "staging"}
	switch format {
	case "v1.8":
		c.prefix = func(verb, name string) string {
			return fmt.Sprintf("%s: %s\nBuild URL: https://ci.example.com/teams/main/pipelines/p/jobs/deploy/builds/42", verb, name)
		}
	case "team-prefix":
		c.prefix = func(verb, name string) string { return fmt.Sprintf("main/p/deploy build 42 %s: %s", verb, name) }
	case "one-off":
		c.prefix = func(verb, name string) string { return fmt.Sprintf("one-off build 77 %s: %s", verb, name) }
	}
	c.git("clone", "-q", "--single-branch", "--branch", "master", r.bare, c.dir)
	c.git("config", "user.name", "CI Pool Resource")
	c.git("config", "user.email", "ci-pool@localhost")
	return c
}

func (c *stockClient) git(args ...string) string {
	c.t.Helper()
	dir := c.dir
	if args[0] == "clone" {
		dir = filepath.Dir(c.dir)
	}
	return c.r.run(dir, "git", args...)
}

func (c *stockClient) path(state, name string) string { return filepath.Join(c.pool, state, name) }

func (c *stockClient) exists(state, name string) bool {
	_, err := os.Stat(filepath.Join(c.dir, c.path(state, name)))
	return err == nil
}

// do runs one operation in pool-resource's retry loop; op returns false
// when it must wait (nothing to claim yet).
func (c *stockClient) do(op func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		c.git("fetch", "-q", "origin", "master")
		c.git("reset", "-q", "--hard", "origin/master")
		if !op() {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		cmd := exec.Command("git", "push", "origin", "HEAD:master")
		cmd.Dir = c.dir
		cmd.Env = append(append([]string{}, c.r.env...), pushlog.EnvConfig+"="+c.r.config, pushlog.EnvRole+"=write")
		out, err := cmd.CombinedOutput()
		s := string(out)
		if strings.Contains(s, "[rejected]") || strings.Contains(s, "[remote rejected]") || strings.Contains(s, "Everything up-to-date") {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if err != nil {
			c.t.Fatalf("push failed: %v\n%s", err, s)
		}
		return
	}
	c.t.Fatal("operation did not land within 30s")
}

func (c *stockClient) commit(verb, name string) {
	c.git("commit", "-q", "-m", c.prefix(verb, name))
}

func (c *stockClient) writeLock(state, name, content string) {
	p := filepath.Join(c.dir, c.path(state, name))
	os.Remove(p)
	if err := os.WriteFile(p, []byte(content), 0o555); err != nil {
		c.t.Fatal(err)
	}
	c.git("add", c.path(state, name))
}

func (c *stockClient) acquire() string {
	var got string
	c.do(func() bool {
		entries, _ := os.ReadDir(filepath.Join(c.dir, c.pool, "unclaimed"))
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), ".") {
				got = e.Name()
				c.git("mv", c.path("unclaimed", got), c.path("claimed", got))
				c.commit("claiming", got)
				return true
			}
		}
		return false
	})
	return got
}

func (c *stockClient) claim(name string) {
	c.do(func() bool {
		if !c.exists("unclaimed", name) {
			return false
		}
		c.git("mv", c.path("unclaimed", name), c.path("claimed", name))
		c.commit("claiming", name)
		return true
	})
}

func (c *stockClient) release(name string) {
	c.do(func() bool {
		if !c.exists("claimed", name) {
			c.t.Fatalf("release of %s, which is not claimed", name)
		}
		c.git("mv", c.path("claimed", name), c.path("unclaimed", name))
		c.commit("unclaiming", name)
		return true
	})
}

func (c *stockClient) add(name string, claimed bool) {
	c.do(func() bool {
		state, verb := "unclaimed", "adding unclaimed"
		if claimed {
			state, verb = "claimed", "adding claimed"
		}
		c.writeLock(state, name, "meta: "+name)
		c.commit(verb, name)
		return true
	})
}

func (c *stockClient) remove(name string) {
	c.do(func() bool {
		c.git("rm", "-q", c.path("claimed", name))
		c.commit("removing", name)
		return true
	})
}

func (c *stockClient) update(name, content string) {
	c.do(func() bool {
		if c.exists("claimed", name) {
			return false
		}
		verb := "updating"
		if !c.exists("unclaimed", name) {
			verb = "adding unclaimed"
		}
		c.writeLock("unclaimed", name, content)
		c.commit(verb, name)
		return true
	})
}

func (c *stockClient) state(name string) string {
	c.git("fetch", "-q", "origin", "master")
	c.git("reset", "-q", "--hard", "origin/master")
	switch {
	case c.exists("claimed", name) && c.exists("unclaimed", name):
		return "both"
	case c.exists("claimed", name):
		return "claimed"
	case c.exists("unclaimed", name):
		return "unclaimed"
	}
	return "absent"
}

func TestEveryPoolResourceOperationLandsInEveryMessageFormat(t *testing.T) {
	for _, format := range []string{"v1.8", "team-prefix", "one-off"} {
		t.Run(format, func(t *testing.T) {
			r := newPoolRepo(t, `repos: [{name: locks, pools: [{name: staging, max_claimed: 3}]}]`)
			c := newStockClient(t, r, format)
			want := func(name, state string) {
				t.Helper()
				if got := c.state(name); got != state {
					t.Fatalf("%s is %s, want %s", name, got, state)
				}
			}
			got := c.acquire()
			want(got, "claimed")
			c.release(got)
			want(got, "unclaimed")
			c.claim("b")
			want("b", "claimed")
			c.add("env-new", false)
			want("env-new", "unclaimed")
			c.add("env-held", true)
			want("env-held", "claimed")
			c.remove("env-held")
			want("env-held", "absent")
			c.update("env-new", "v2")
			want("env-new", "unclaimed")
			c.update("env-fresh", "v1")
			want("env-fresh", "unclaimed")
			c.release("b")
			want("b", "unclaimed")

			out, err := exec.Command(binary, "check", "--repo", r.bare, "--config", r.config).CombinedOutput()
			if err != nil {
				t.Fatalf("poolgate check finds violations in the replayed history: %v\n%s", err, out)
			}
		})
	}
}

func TestHookReadsPushedObjectsFromQuarantine(t *testing.T) {
	r := newPoolRepo(t, defaultConfig)
	// The lock file's content is new, so its blob exists only in the push's
	// quarantine while the hook runs. Judging too-large needs its size.
	r.write("staging/unclaimed/q", strings.Repeat("q", 70<<10))
	r.commit("adding unclaimed: q")
	blob := r.git("rev-parse", "HEAD:staging/unclaimed/q")
	r.refused("too-large", "write", "71680 bytes")
	if err := exec.Command("git", "-C", r.bare, "cat-file", "-e", blob).Run(); err == nil {
		t.Fatal("the refused blob reached the main object store")
	}

	// Control: the same hook with git's quarantine variables stripped
	// cannot see the pushed objects, so the push fails to validate. This is
	// what the test above would catch if the hook read only the main store.
	wrapper := filepath.Join(t.TempDir(), "hooks")
	os.MkdirAll(wrapper, 0o755)
	script := "#!/bin/sh\nunset GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES GIT_QUARANTINE_PATH\nexec '" + binary + "' hook pre-receive\n"
	if err := os.WriteFile(filepath.Join(wrapper, "pre-receive"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	r.run(r.bare, "git", "config", "core.hooksPath", wrapper)
	r.resetToServer()
	r.git("mv", "staging/unclaimed/a", "staging/claimed/a")
	r.commit("claiming: a")
	out, err := r.push("write", "origin", "HEAD:master")
	if err == nil || !strings.Contains(out, "could not validate") {
		t.Fatalf("a hook blind to the quarantine should fail closed: %v\n%s", err, out)
	}
}
