package gitexec

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// alive reports whether pid runs (a zombie waiting to be reaped has ended).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) STATE ...: comm may hold spaces, the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sleeper returns git args that start a shell which starts `sleep` and
// writes its pid to pidFile: git → sh → sleep.
func sleeper(pidFile string) []string {
	return []string{"-c", "alias.sleeper=!f() { sleep 300 & echo $! >" + pidFile + "; wait; }; f", "sleeper"}
}

func readPid(t *testing.T, pidFile string) int {
	t.Helper()
	var pid int
	waitFor(t, "the sleeping child's pid", func() bool {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	})
	return pid
}

func TestCancelKillsGitAndTheChildItStarted(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := Command(ctx, Options{Dir: dir}, sleeper(pidFile)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := readPid(t, pidFile)
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	cancel()
	err := cmd.Wait()
	if _, ok := ExitCode(err); ok {
		t.Fatalf("git cancelled: Wait says it exited by itself: %v", err)
	}
	waitFor(t, "the grandchild sleep to be killed with git's group", func() bool { return !alive(pid) })
}

func TestTimeoutKillsTheGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := Command(ctx, Options{Dir: dir}, sleeper(pidFile)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := readPid(t, pidFile)
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	// The deadline passes once the child is known to run: no timing guess.
	tctx, tcancel := context.WithDeadline(ctx, time.Now())
	defer tcancel()
	stop := context.AfterFunc(tctx, cancel)
	defer stop()
	cmd.Wait()
	waitFor(t, "the grandchild sleep to be killed on the timeout", func() bool { return !alive(pid) })
}

func TestWaitReturnsWhenAGrandchildKeepsThePipeOpen(t *testing.T) {
	if testing.Short() {
		t.Skip("waits WaitDelay")
	}
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	// git exits at once; the sleep it left behind holds stdout open.
	cmd := Command(context.Background(), Options{Dir: dir},
		"-c", "alias.leave=!f() { sleep 300 & echo $! >"+pidFile+"; }; f", "leave")
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := readPid(t, pidFile)
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	if err := cmd.Wait(); !errors.Is(err, exec.ErrWaitDelay) {
		t.Fatalf("Wait = %v, want exec.ErrWaitDelay", err)
	}
}

func TestEnvironmentLetsInOnlyWhatIsNamed(t *testing.T) {
	t.Setenv("POOLGATE_TEST_SECRET", "s3cret")
	t.Setenv("GIT_DIR", "/elsewhere")
	t.Setenv("GIT_CONFIG_GLOBAL", "/elsewhere/config")
	t.Setenv("GIT_OBJECT_DIRECTORY", "/quarantine")
	dir := t.TempDir()
	cmd := Command(context.Background(), Options{
		Dir: dir, Home: "/data", Inherit: []string{"GIT_OBJECT_DIRECTORY", "NOT_SET_ANYWHERE"}, Env: []string{"EXTRA=1"},
	}, "-c", "alias.env=!env", "env")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, kv := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		k, v, _ := strings.Cut(kv, "=")
		got[k] = v
	}
	for k, want := range map[string]string{
		"HOME": "/data", "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C", "GIT_OBJECT_DIRECTORY": "/quarantine", "EXTRA": "1",
	} {
		if got[k] != want {
			t.Errorf("%s=%q, want %q", k, got[k], want)
		}
	}
	for _, k := range []string{"POOLGATE_TEST_SECRET", "GIT_DIR", "GIT_CONFIG_GLOBAL", "NOT_SET_ANYWHERE"} {
		if v, ok := got[k]; ok {
			t.Errorf("%s=%q leaked into git's environment", k, v)
		}
	}
}

func TestExitCode(t *testing.T) {
	dir := t.TempDir()
	err := Command(context.Background(), Options{Dir: dir}, "-c", "alias.three=!exit 3", "three").Run()
	if code, ok := ExitCode(err); code != 3 || !ok {
		t.Fatalf("ExitCode = %d, %v; want 3, true", code, ok)
	}
	if code, ok := ExitCode(nil); code != 0 || !ok {
		t.Fatalf("ExitCode(nil) = %d, %v", code, ok)
	}
}
