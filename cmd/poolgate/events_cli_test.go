package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/events"
)

func TestHistoryAndStatusUsageErrorsExitTwoWithOneLine(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(cfg, []byte("data_dir: "+filepath.Dir(cfg)+"\nrepos:\n  - name: locks\n"), 0o644)
	for _, args := range [][]string{
		{"history"},
		{"history", "--config", cfg, "locks", "--type", "grabbed"},
		{"history", "--config", cfg, "locks", "--since", "last tuesday"},
		{"history", "--config", cfg, "nosuch"},
		{"status", "--config", cfg, "nosuch"},
		{"status", "--config", cfg + ".missing"},
		{"status", "--config", cfg, "locks", "extra"},
	} {
		code, _, errOut := runCLI(args...)
		if code != exitUsage || strings.Count(strings.TrimSpace(errOut), "\n") != 0 || errOut == "" {
			t.Errorf("%v: exit %d, stderr %q; want 2 and one line", args, code, errOut)
		}
	}
}

func TestSinceTakesATimeADateOrAnAge(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"2h":                   now.Add(-2 * time.Hour),
		"2026-11-27":           time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC),
		"2026-11-27T10:30:00Z": time.Date(2026, 11, 27, 10, 30, 0, 0, time.UTC),
	} {
		if got, err := parseSince(in, now); err != nil || !got.Equal(want) {
			t.Errorf("%q: %v %v, want %v", in, got, err, want)
		}
	}
}

// Without a daemon the commands derive what they show themselves.
func TestStatusAndHistoryWorkOnADataDirWithNoDaemon(t *testing.T) {
	cfg := claimedDataDir(t)
	code, out, errOut := runCLI("history", "--config", cfg, "locks", "--lock", "lock-a")
	rows := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(rows) != 3 || !strings.Contains(rows[1], "claimed") || !strings.Contains(rows[1], "p/deploy #42") || !strings.Contains(rows[2], "added") {
		t.Fatalf("history: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI("status", "--config", cfg, "--json")
	var locks []struct {
		Lock, State string
		BuildURL    string `json:"build_url"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &locks) != nil || len(locks) != 1 || locks[0].State != "claimed" ||
		!strings.HasSuffix(locks[0].BuildURL, "/builds/42") {
		t.Fatalf("status --json: exit %d\n%s%s", code, out, errOut)
	}
}

// Beside a running daemon (it holds the derivation lock) the commands read
// what it has derived and derive nothing themselves: here it has derived
// nothing yet, and they say so.
func TestStatusAndHistoryBesideADerivingDaemonNeverDeriveAgain(t *testing.T) {
	cfg := claimedDataDir(t)
	unlock, err := events.LockDerivation(context.Background(), filepath.Dir(cfg), false)
	if err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI("history", "--config", cfg, "locks")
	if code != 0 || strings.Contains(out, "claimed") || !strings.Contains(errOut, "still deriving locks's history") {
		t.Fatalf("history beside the daemon: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI("status", "--config", cfg, "--json")
	if code != 0 || strings.Contains(out, "claimed") || !strings.Contains(errOut, "still deriving") {
		t.Fatalf("status beside the daemon: exit %d\n%s%s", code, out, errOut)
	}
	unlock() // the daemon stopped: the commands catch up themselves
	code, out, errOut = runCLI("history", "--config", cfg, "locks")
	if code != 0 || !strings.Contains(out, "claimed") || errOut != "" {
		t.Fatalf("history with no daemon: exit %d\n%s%s", code, out, errOut)
	}
}

// claimedDataDir is a data dir with repo locks (pool demo: lock-a added,
// then claimed) and no store yet; it returns the config file.
func claimedDataDir(t *testing.T) string {
	data := t.TempDir()
	repo := filepath.Join(data, "repos", "locks.git")
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+data, "GIT_AUTHOR_NAME=git", "GIT_AUTHOR_EMAIL=git@localhost",
			"GIT_COMMITTER_NAME=git", "GIT_COMMITTER_EMAIL=git@localhost")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	os.MkdirAll(filepath.Join(repo, "demo", "unclaimed"), 0o755)
	os.MkdirAll(filepath.Join(repo, "demo", "claimed"), 0o755)
	os.WriteFile(filepath.Join(repo, "demo", "unclaimed", "lock-a"), nil, 0o644)
	git("init", "-q", "-b", "master")
	git("add", "-A")
	git("commit", "-q", "-m", "init")
	git("mv", "demo/unclaimed/lock-a", "demo/claimed/lock-a")
	git("commit", "-q", "-m", "claiming: lock-a\nBuild URL: https://ci.example.com/teams/main/pipelines/p/jobs/deploy/builds/42")
	cfg := filepath.Join(data, "poolgate.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("data_dir: %s\nrepos:\n  - name: locks\n    pools:\n      - name: demo\n        max_claimed: 1\n", data)), 0o644)
	return cfg
}
