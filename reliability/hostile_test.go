package reliability

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// rssBoundKiB is the most the daemon's resident memory may reach while it
// refuses hostile input (it idles at a few tens of MiB).
const rssBoundKiB = 256 << 10

// fastImportPush makes a commit (or many) on top of the server's master in
// a fresh clone with `git fast-import`, streaming whatever gen writes, and
// pushes it as user. It returns the push's output and whether it failed.
func (e *env) fastImportPush(t *testing.T, name, user string, gen func(w *bufio.Writer, parent string)) (string, bool, time.Duration) {
	t.Helper()
	dir := filepath.Join(e.dir, "clients", name)
	cmd := exec.Command("git", "clone", "-q", "--single-branch", "--branch", "master", e.url(), dir)
	cmd.Env = append(os.Environ(), e.gitEnv(user)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("clone: %v\n%s", err, out)
	}
	parent := e.mustGit(dir, "rev-parse", "HEAD")
	fi := exec.Command("git", "fast-import", "--quiet", "--force")
	fi.Dir = dir
	fi.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+e.dir)
	stdin, err := fi.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var fiErr strings.Builder
	fi.Stderr = &fiErr
	if err := fi.Start(); err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriterSize(stdin, 1<<20)
	gen(w, parent)
	w.Flush()
	stdin.Close()
	if err := fi.Wait(); err != nil {
		t.Fatalf("fast-import: %v\n%s", err, fiErr.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	push := exec.CommandContext(ctx, "git", "push", "origin", "refs/heads/master:refs/heads/master")
	push.Dir = dir
	push.Env = append(os.Environ(), e.gitEnv(user)...)
	st := time.Now()
	out, err := push.CombinedOutput()
	return string(out), err != nil, time.Since(st)
}

const committer = "committer git <git@localhost> 1764230400 +0000\n"

func commitHeader(w *bufio.Writer, msg, parent string) {
	fmt.Fprintf(w, "commit refs/heads/master\n%sdata %d\n%s\n", committer, len(msg), msg)
	if parent != "" {
		fmt.Fprintf(w, "from %s\n", parent)
	}
}

func inline(w *bufio.Writer, path, content string) {
	fmt.Fprintf(w, "M 100644 inline %s\ndata %d\n%s\n", path, len(content), content)
}

// Hostile pushes: each is refused with a clear message, the daemon stays up
// with bounded memory, and nothing changes in the repo.
func TestHostilePushesAreRefusedAndChangeNothing(t *testing.T) {
	e := newEnv(t)
	e.writeConfig()
	pid := e.start()
	repo := filepath.Join(e.data, "repos", "locks.git")
	maxRSS := rssKB(pid)

	cases := []struct {
		name string
		want string // in the push's output
		gen  func(w *bufio.Writer, parent string)
	}{{
		name: "a 1 GiB blob",
		want: "max_object_bytes",
		gen: func(w *bufio.Writer, parent string) {
			const size = 1 << 30
			fmt.Fprintf(w, "blob\nmark :1\ndata %d\n", size)
			zeros := make([]byte, 1<<20)
			for n := 0; n < size; n += len(zeros) {
				w.Write(zeros)
			}
			w.WriteString("\n")
			commitHeader(w, "adding unclaimed: big\nBuild URL: ", parent)
			w.WriteString("M 100644 :1 demo/unclaimed/big\n\n")
		},
	}, {
		name: "100,000 files",
		want: "max_push_objects",
		gen: func(w *bufio.Writer, parent string) {
			commitHeader(w, "many files", parent)
			for i := 0; i < 100000; i++ {
				inline(w, fmt.Sprintf("junk/%03d/f-%d", i%1000, i), fmt.Sprint(i))
			}
			w.WriteString("\n")
		},
	}, {
		name: "a 10,000-commit push",
		want: "max_push_objects",
		gen: func(w *bufio.Writer, parent string) {
			for i := 0; i < 10000; i++ {
				p := ""
				if i == 0 {
					p = parent
				}
				commitHeader(w, fmt.Sprintf("note %d", i), p)
				inline(w, "notes/n", fmt.Sprint(i))
				w.WriteString("\n")
			}
		},
	}, {
		// Past limits.max_tree_depth (64): the tree bound is judged before
		// the tree is loaded, so it is refused as too-large, not bad-path.
		name: "a tree 2,000 levels deep in a pool",
		want: "too-large",
		gen: func(w *bufio.Writer, parent string) {
			commitHeader(w, "deep", parent)
			inline(w, "demo/unclaimed/"+strings.Repeat("d/", 2000)+"x", "x")
			w.WriteString("\n")
		},
	}, {
		name: "a lock name that is not UTF-8",
		want: "bad-name",
		gen: func(w *bufio.Writer, parent string) {
			commitHeader(w, "adding unclaimed: bad\nBuild URL: ", parent)
			inline(w, "demo/unclaimed/bad\xff\xfe", "x")
			w.WriteString("\n")
		},
	}}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := e.tip()
			out, failed, took := e.fastImportPush(t, fmt.Sprintf("hostile-%d", i), "writer", c.gen)
			if !failed {
				t.Fatalf("push accepted:\n%s", out)
			}
			if !strings.Contains(out, c.want) {
				t.Errorf("push output does not name %s:\n%s", c.want, tail(out, 15))
			}
			if strings.Contains(out, "[remote rejected]") || strings.Contains(out, "[rejected]") {
				t.Errorf("a permanent refusal looks like a rejection to pool-resource (it would retry forever):\n%s", tail(out, 15))
			}
			if after := e.tip(); after != before {
				t.Errorf("master moved from %s to %s", before, after)
			}
			if left, _ := filepath.Glob(filepath.Join(repo, "objects", "incoming-*")); len(left) > 0 {
				t.Errorf("quarantine left behind: %v", left)
			}
			if !alive(pid) {
				t.Fatal("daemon died")
			}
			if err := e.serving(); err != nil {
				t.Fatalf("daemon not serving: %v", err)
			}
			rss := rssKB(pid)
			maxRSS = max(maxRSS, rss)
			if rss > rssBoundKiB {
				t.Errorf("daemon RSS %d KiB", rss)
			}
			t.Logf("push refused in %s: %s", took.Round(time.Millisecond), firstLine(out, "poolgate"))
		})
	}
	figures(t, "hostile_pushes", "cases", len(cases), "daemon_max_rss_kib", maxRSS)
}

func firstLine(out, sub string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, sub) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

// Case-colliding names (`lock-a` and `LOCK-A` in one pool) are allowed:
// git, the servers pool-resource runs on and pool-resource itself are
// case-sensitive, they are two locks, and refusing would break pools that
// already have such names. SECURITY.md says so.
func TestCaseCollidingLockNamesAreTwoLocks(t *testing.T) {
	e := newEnv(t)
	e.writeConfig()
	e.start()
	c := e.client("writer", "case")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Add(ctx, "LOCK-A", []byte("upper"), false); err != nil {
		t.Fatalf("adding LOCK-A beside lock-a: %v", err)
	}
	if err := c.Claim(ctx, "LOCK-A"); err != nil {
		t.Fatal(err)
	}
	ls := e.mustGit("", "ls-tree", "-r", "--name-only", "master", "demo")
	if !strings.Contains(ls, "demo/claimed/LOCK-A") || !strings.Contains(ls, "demo/unclaimed/lock-a") {
		t.Errorf("want LOCK-A claimed and lock-a unclaimed:\n%s", ls)
	}
}

// A corrupted config: at start, one line naming file:line and exit 2; at
// SIGHUP, the running config (and the hook's copy) stays and the log names
// file:line; a valid reload applies users at once and refuses a new listen
// address with a log line.
func TestCorruptedConfigIsRefusedAtStartAndAtReload(t *testing.T) {
	e := newEnv(t)
	e.writeConfig()
	good, err := os.ReadFile(e.cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	// A misspelt key on line 5.
	corrupt := strings.Replace(string(good), "  push_timeout: 60s\n", "  push_timeout: 60s\n  max_sesions: 3\n", 1)
	bad := filepath.Join(e.dir, "bad.yaml")
	os.WriteFile(bad, []byte(corrupt), 0o644)
	cmd := exec.Command(binPath, "serve", "--config", bad)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err = cmd.Run()
	if cmd.ProcessState.ExitCode() != 2 {
		t.Errorf("serve with a corrupted config: exit %d (%v), want 2", cmd.ProcessState.ExitCode(), err)
	}
	if !regexp.MustCompile(`^poolgate serve: \S*bad\.yaml:5: unknown key "max_sesions"\n$`).MatchString(stderr.String()) {
		t.Errorf("stderr %q: want one line with file:line", stderr.String())
	}

	pid := e.start()
	// Garbage in the running daemon's file, then SIGHUP.
	os.WriteFile(e.cfgFile, []byte(corrupt), 0o644)
	syscall.Kill(pid, syscall.SIGHUP)
	refused := waitLog(t, e, "reload refused: config is invalid, the running config stays")
	if msg, _ := refused["error"].(string); !strings.Contains(msg, filepath.Base(e.cfgFile)+":5:") {
		t.Errorf("reload error %q does not name file:line", msg)
	}
	// Still serving on the old config, the hook included: a claim works.
	c := e.client("writer", "after-bad-reload")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	name, err := c.Acquire(ctx)
	if err != nil {
		t.Fatalf("claim after a refused reload: %v", err)
	}
	if err := c.Release(ctx, name); err != nil {
		t.Fatal(err)
	}

	// A valid reload: a new user works at once; a new listen address is
	// refused with a log line and the socket stays.
	newcomer := newKey(t, e.dir, "newcomer")
	e.keys["newcomer"] = newcomer
	next := strings.Replace(string(good), "users:\n", fmt.Sprintf("users:\n  - name: newcomer\n    role: read\n    keys: [%q]\n", newcomer.public), 1)
	next = strings.Replace(next, "listen: \""+e.addr+"\"", "listen: \"127.0.0.1:1\"", 1)
	os.WriteFile(e.cfgFile, []byte(next), 0o644)
	syscall.Kill(pid, syscall.SIGHUP)
	waitLog(t, e, "config reloaded")
	if len(e.logs.find("reload: this setting needs a restart (poolgate serve, or SIGUSR2 for a hand-over); the running value stays")) == 0 {
		t.Error("a changed ssh.listen was not logged as needing a restart")
	}
	if stderr, code, err := e.execRaw("newcomer", "git-upload-pack 'locks.git'"); err != nil || code != 0 {
		t.Errorf("new user after reload: %v, exit %d, %s", err, code, stderr)
	}
	if !alive(pid) {
		t.Fatal("daemon died")
	}
}

func waitLog(t *testing.T, e *env, msg string) map[string]any {
	t.Helper()
	for i := 0; i < 600; i++ {
		if m := e.logs.find(msg); len(m) > 0 {
			return m[len(m)-1]
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no log line %q:\n%s", msg, tail(e.logs.String(), 20))
	return nil
}

var _ = io.Discard

// A hand-over to a process that cannot start (here: the config was broken
// meanwhile) changes nothing: the new process exits, the old one logs the
// failure and goes on serving on the same socket.
func TestFailedHandoverKeepsTheOldProcessServing(t *testing.T) {
	e := newEnv(t)
	e.HTTP = "127.0.0.1:0" // the daemon's own HTTP socket goes along too
	e.writeConfig()
	pid := e.start()
	httpAddr, _ := e.logs.find("listening")[0]["http"].(string)
	healthz := func() error {
		resp, err := http.Get("http://" + httpAddr + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("healthz: %s", resp.Status)
		}
		return nil
	}
	good, _ := os.ReadFile(e.cfgFile)
	os.WriteFile(e.cfgFile, []byte("ssh: [\n"), 0o644)
	syscall.Kill(pid, syscall.SIGUSR2)
	waitLog(t, e, "hand-over failed; this process goes on serving")
	if !alive(pid) {
		t.Fatal("old process gone")
	}
	if err := e.serving(); err != nil {
		t.Fatal(err)
	}
	// Fixed config: the next hand-over works.
	os.WriteFile(e.cfgFile, good, 0o644)
	next := e.handover(pid)
	if next == pid || !e.waitExit(pid, 2*time.Minute) {
		t.Fatalf("hand-over after the fix: new %d, old %d alive %v", next, pid, alive(pid))
	}
	if err := e.serving(); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.logs.find("listening")[1]["http"].(string); got != httpAddr {
		t.Errorf("new process listens for HTTP on %q, want the inherited %q", got, httpAddr)
	}
	if err := healthz(); err != nil {
		t.Errorf("HTTP after the hand-over: %v", err)
	}
}

// Sockets from a systemd socket unit without FileDescriptorName= come
// unnamed (or all with the unit's name): the first is SSH, the second HTTP.
func TestInheritedSocketsWithoutNamesAreTakenInOrder(t *testing.T) {
	e := newEnv(t)
	e.HTTP = "127.0.0.1:1" // must not be used: the inherited socket wins
	e.writeConfig()
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := hl.Addr().String()
	hf, err := hl.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	hl.Close()
	defer hf.Close()
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, binPath, "serve", "--config", e.cfgFile)
	// Maintenance off: this test ends with SIGKILL, which would orphan a
	// start-up repack that then races the temp dir's removal.
	cmd.Env = append(os.Environ(), "HOME="+e.dir, "LISTEN_FDS=2", "LISTEN_FDNAMES=poolgate.socket:poolgate.socket", "POOLGATE_MAINTENANCE=off")
	cmd.ExtraFiles = []*os.File{e.lnFile, hf}
	cmd.Stdout, cmd.Stderr = e.logW, e.logW
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	select {
	case <-e.pids:
	case <-time.After(90 * time.Second):
		t.Fatalf("did not start:\n%s", tail(e.logs.String(), 20))
	}
	m := e.logs.find("listening")[0]
	if m["ssh"] != e.addr || m["http"] != httpAddr || m["inherited"] != true {
		t.Errorf("listening on %v", m)
	}
	if err := e.serving(); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + m["http"].(string) + "/healthz")
	if err != nil {
		t.Fatalf("HTTP on the second inherited socket: %v", err)
	}
	resp.Body.Close()
}
