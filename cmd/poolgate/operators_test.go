package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/poolgate/poolgate/internal/testserver"
)

func TestNoArgumentsIsAUsageErrorOnStderr(t *testing.T) {
	code, out, errOut := runCLI()
	if code != exitUsage || out != "" || !strings.Contains(errOut, "Usage: poolgate COMMAND") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, errOut = runCLI("--help")
	if code != exitOK || errOut != "" || !strings.Contains(out, "Usage: poolgate COMMAND") {
		t.Fatalf("--help: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

var (
	longFlag  = regexp.MustCompile(`--([a-z][a-z-]*)`)
	shortFlag = regexp.MustCompile(`(?m)^\s+-[a-z]`)
)

// Help lists each flag as the synopsis spells it (--flag), and the
// synopsis names only flags that exist.
func TestHelpSpellsEveryFlagAsTheSynopsisDoes(t *testing.T) {
	for name := range commands {
		_, out, _ := runCLI(name, "--help")
		if shortFlag.MatchString(out) {
			t.Errorf("%s --help lists a flag with one dash:\n%s", name, out)
		}
		synopsis, flags, _ := strings.Cut(out, "\nFlags:\n")
		listed := map[string]bool{}
		for _, m := range regexp.MustCompile(`(?m)^  --([a-z-]+)`).FindAllStringSubmatch(flags, -1) {
			listed[m[1]] = true
		}
		for _, m := range longFlag.FindAllStringSubmatch(synopsis, -1) {
			if !listed[m[1]] {
				t.Errorf("%s: the synopsis names --%s, which is not a flag:\n%s", name, m[1], out)
			}
		}
	}
}

func TestCheckOnADirectoryThatIsNotARepoSaysSoInOneLine(t *testing.T) {
	dir := t.TempDir()
	code, out, errOut := runCLI("check", "--repo", dir)
	if code != exitFailed || out != "" || strings.Count(strings.TrimSpace(errOut), "\n") != 0 ||
		!strings.Contains(errOut, dir+" is not a git repository") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// initDataRepo makes data/repos/locks.git with one claimed lock, as the
// daemon would have it.
func initDataRepo(t *testing.T, data string) {
	t.Helper()
	repo := filepath.Join(data, "repos", "locks.git")
	os.MkdirAll(filepath.Join(repo, "demo", "claimed"), 0o755)
	os.WriteFile(filepath.Join(repo, "demo", "claimed", "lock-a"), nil, 0o644)
	gitIn(t, repo, "init", "-q", "-b", "master")
	gitIn(t, repo, "add", "-A")
	gitIn(t, repo, "commit", "-q", "-m", "adding claimed: lock-a")
}

// The reading commands deliver nothing: a config whose webhook URL, HTTP
// token and upstream secret come from unset variables still serves them,
// and history needs no REPO when there is only one.
func TestStatusAndHistoryNeedNoSecretAndHistoryDefaultsToTheOnlyRepo(t *testing.T) {
	data := t.TempDir()
	initDataRepo(t, data)
	cfg := filepath.Join(data, "poolgate.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`data_dir: %s
http:
  token: ${POOLGATE_TEST_UNSET_TOKEN}
repos:
  - name: locks
    pools: [{name: demo}]
webhooks:
  - name: slack
    url: ${POOLGATE_TEST_UNSET_SLACK_URL}
    format: slack
`, data)), 0o644)
	os.Unsetenv("POOLGATE_TEST_UNSET_TOKEN")
	os.Unsetenv("POOLGATE_TEST_UNSET_SLACK_URL")
	code, out, errOut := runCLI("status", "--config", cfg)
	if code != exitOK || !strings.Contains(out, "lock-a") || !strings.Contains(out, "claimed") {
		t.Fatalf("status: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI("history", "--config", cfg)
	if code != exitOK || !strings.Contains(out, "added claimed") {
		t.Fatalf("history without REPO: exit %d\n%s%s", code, out, errOut)
	}
	// Serving still needs them.
	code, _, errOut = runCLI("serve", "--config", cfg)
	if code != exitUsage || !strings.Contains(errOut, "POOLGATE_TEST_UNSET_TOKEN is not set") {
		t.Fatalf("serve with unset secrets: exit %d, %q", code, errOut)
	}
}

func TestHistoryWithSeveralReposAsksForOne(t *testing.T) {
	data := t.TempDir()
	cfg := filepath.Join(data, "poolgate.yaml")
	os.WriteFile(cfg, []byte("data_dir: "+data+"\nrepos:\n  - name: a\n  - name: b\n"), 0o644)
	code, _, errOut := runCLI("history", "--config", cfg)
	if code != exitUsage || !strings.Contains(errOut, "name one") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
		t.Fatalf("exit %d, %q", code, errOut)
	}
}

// A hook-only set-up: a bare repo behind plain git with poolgate's
// pre-receive hook, no daemon and no event store. status and history read
// the repo in place (by --repo, or from inside it), including the hook's
// records: who pushed, and a build waiting over max_claimed.
func TestStatusAndHistoryReadAHookOnlyRepoInPlace(t *testing.T) {
	_, bin := testserver.Build(t)
	root := t.TempDir()
	bare := filepath.Join(root, "locks.git")
	gitIn(t, root, "init", "-q", "--bare", "-b", "master", bare)
	cfg := filepath.Join(root, "poolgate.yaml")
	os.WriteFile(cfg, []byte("repos:\n  - name: locks\n    pools: [{name: staging, max_claimed: 1}]\n"), 0o644)
	hook := fmt.Sprintf("#!/bin/sh\nexec %s hook pre-receive --config %s\n", bin, cfg)
	if err := os.WriteFile(filepath.Join(bare, "hooks", "pre-receive"), []byte(hook), 0o755); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(root, "work")
	gitIn(t, root, "clone", "-q", bare, work)
	push := func(role, msg string, files map[string]string) (string, error) {
		for f, to := range files {
			if to == "" {
				os.MkdirAll(filepath.Join(work, filepath.Dir(f)), 0o755)
				os.WriteFile(filepath.Join(work, f), nil, 0o644)
			} else {
				os.MkdirAll(filepath.Join(work, filepath.Dir(to)), 0o755)
				gitIn(t, work, "mv", f, to)
			}
		}
		gitIn(t, work, "add", "-A")
		gitIn(t, work, "commit", "-q", "-m", msg)
		cmd := exec.Command("git", "push", "-q", "origin", "HEAD:master")
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "POOLGATE_USER=alice", "POOLGATE_ROLE="+role, "GIT_CONFIG_NOSYSTEM=1", "HOME="+root)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// Pools are created by an admin's push here (no daemon to create them).
	if out, err := push("admin", "init", map[string]string{"staging/claimed/.gitkeep": "", "staging/unclaimed/env-a": "", "staging/unclaimed/env-b": ""}); err != nil {
		t.Fatalf("admin push: %v\n%s", err, out)
	}
	if out, err := push("write", "main/p/deploy build 1 claiming: env-a", map[string]string{"staging/unclaimed/env-a": "staging/claimed/env-a"}); err != nil {
		t.Fatalf("claim: %v\n%s", err, out)
	}
	out, err := push("write", "main/p/smoke build 2 claiming: env-b", map[string]string{"staging/unclaimed/env-b": "staging/claimed/env-b"})
	if err == nil || !strings.Contains(out, "over-limit") {
		t.Fatalf("second claim not refused over-limit: %v\n%s", err, out)
	}

	code, out, errOut := runCLI("status", "--config", cfg, "--repo", bare)
	if code != exitOK || !regexp.MustCompile(`env-a\s+claimed`).MatchString(out) || !strings.Contains(out, "p/deploy #1") ||
		!strings.Contains(out, "alice") || !strings.Contains(out, "p/smoke #2") {
		t.Fatalf("status --repo: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI("history", "--repo", bare, "--type", "claimed,rejected")
	if code != exitOK || !strings.Contains(out, "over-limit") || !regexp.MustCompile(`claimed\s+staging\s+env-a\s+alice`).MatchString(out) {
		t.Fatalf("history --repo: exit %d\n%s%s", code, out, errOut)
	}
	// From inside the repo, with no config and no data dir around.
	t.Chdir(bare)
	t.Setenv("POOLGATE_CONFIG", "")
	code, out, errOut = runCLI("status")
	if code != exitOK || !regexp.MustCompile(`env-a\s+claimed`).MatchString(out) {
		t.Fatalf("status inside the repo: exit %d\n%s%s", code, out, errOut)
	}
	if entries, _ := os.ReadDir(bare); len(entries) == 0 {
		t.Fatal("repo emptied")
	}
	if _, err := os.Stat(filepath.Join(bare, "events.db")); err == nil {
		t.Fatal("reading the repo in place left a store inside it")
	}
}

// On a hook-only host the config exists but the daemon's data does not:
// the answer says what to do instead, in one line, creating nothing.
func TestStatusWhereServeNeverRanPointsToRepo(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yaml")
	data := filepath.Join(dir, "data")
	os.WriteFile(cfg, []byte("data_dir: "+data+"\nrepos:\n  - name: locks\n"), 0o644)
	code, _, errOut := runCLI("status", "--config", cfg)
	if code != exitUsage || !strings.Contains(errOut, "--repo DIR") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
		t.Fatalf("exit %d, %q", code, errOut)
	}
	if _, err := os.Stat(data); err == nil {
		t.Fatal("status created the data dir")
	}
}
