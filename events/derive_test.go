package events

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

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/pushlog"
)

// workRepo is a git work tree whose .git plays the served repo.
type workRepo struct {
	t   *testing.T
	dir string
}

func newWorkRepo(t *testing.T) *workRepo {
	return newWorkRepoAt(t, filepath.Join(t.TempDir(), "locks"))
}

func newWorkRepoAt(t *testing.T, dir string) *workRepo {
	r := &workRepo{t: t, dir: dir}
	r.git(time.Time{}, "init", "-q", "-b", "master", r.dir)
	return r
}

func (r *workRepo) git(when time.Time, args ...string) string {
	r.t.Helper()
	cmd := exec.Command("git", args...)
	if args[0] != "init" {
		cmd.Dir = r.dir
	}
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+r.dir,
		"GIT_AUTHOR_NAME=git", "GIT_AUTHOR_EMAIL=git@localhost", "GIT_COMMITTER_NAME=git", "GIT_COMMITTER_EMAIL=git@localhost")
	if !when.IsZero() {
		d := fmt.Sprintf("%d +0000", when.Unix())
		cmd.Env = append(cmd.Env, "GIT_AUTHOR_DATE="+d, "GIT_COMMITTER_DATE="+d)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func (r *workRepo) write(rel, content string) {
	p := filepath.Join(r.dir, rel)
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		r.t.Fatal(err)
	}
}

func (r *workRepo) commit(when time.Time, msg string) string {
	r.git(when, "add", "-A")
	r.git(when, "commit", "-q", "--allow-empty", "-m", msg)
	return r.git(time.Time{}, "rev-parse", "HEAD")
}

func (r *workRepo) move(when time.Time, poolPath, lock, from, to, msg string) string {
	os.MkdirAll(filepath.Join(r.dir, poolPath, to), 0o755)
	r.git(when, "mv", poolPath+"/"+from+"/"+lock, poolPath+"/"+to+"/"+lock)
	return r.commit(when, msg)
}

func (r *workRepo) gitDir() string { return filepath.Join(r.dir, ".git") }

func (r *workRepo) record(file pushlog.Kind, v any) {
	r.t.Helper()
	b, _ := json.Marshal(v)
	p := pushlog.At(r.gitDir()).Path(file)
	os.MkdirAll(filepath.Dir(p), 0o755)
	f, err := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		r.t.Fatal(err)
	}
	f.Write(append(b, '\n'))
	f.Close()
}

func testRepoCfg() *config.Repo {
	return &config.Repo{Name: "locks", Branch: "master", Pools: []config.Pool{
		{Name: "staging", MaxClaimed: 1, StaleAfter: config.Duration(time.Hour)},
	}}
}

func byType(evs []Event) map[string][]Event {
	m := map[string][]Event{}
	for _, e := range evs {
		m[e.Type] = append(m[e.Type], e)
	}
	return m
}

func TestClaimAndReleaseCarryPusherBuildCountsAndHeldTime(t *testing.T) {
	ctx := context.Background()
	r := newWorkRepo(t)
	t0 := time.Now().Add(-30 * time.Minute).Truncate(time.Second).UTC()
	r.write("staging/unclaimed/env-a", "a")
	r.write("staging/unclaimed/env-b", "b")
	r.commit(t0, "init")
	claim := r.move(t0.Add(time.Minute), "staging", "env-a", "unclaimed", "claimed",
		"claiming: env-a\nBuild URL: https://ci.example.com/teams/main/pipelines/p/jobs/deploy/builds/42")
	pushT := t0.Add(61 * time.Second)
	r.record(pushlog.Pushes, pushlog.Push{Time: pushT, User: "concourse", Key: "SHA256:abc", Role: "write", Ref: "refs/heads/master", Commits: []string{claim}})

	st, err := Open(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	d := NewDeriver(st, testRepoCfg(), r.gitDir())
	defer d.Close()
	evs, err := d.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m := byType(evs)
	if len(m[Added]) != 2 || len(m[Claimed]) != 1 || len(evs) != 3 {
		t.Fatalf("events: %+v", evs)
	}
	c := m[Claimed][0]
	if c.Pusher == nil || c.Pusher.User != "concourse" || c.Pusher.Key != "SHA256:abc" || !c.Time.Equal(pushT) {
		t.Errorf("pusher/time: %+v %v", c.Pusher, c.Time)
	}
	if c.Team != "main" || c.Pipeline != "p" || c.Job != "deploy" || c.Build != "42" || c.Claimed != 1 || c.MaxClaimed == nil || *c.MaxClaimed != 1 {
		t.Errorf("claimed event: %+v", c)
	}
	if c.Message != "claiming: env-a" || c.Author.Name != "git" || c.Commit != claim || c.HeldSeconds != nil {
		t.Errorf("claimed event: %+v", c)
	}

	// The release's push record is missing: committer time is used.
	rel := r.move(t0.Add(61*time.Second+90*time.Second), "staging", "env-a", "claimed", "unclaimed", "unclaiming: env-a\nBuild URL: ")
	evs, err = d.Sync(ctx)
	if err != nil || len(evs) != 1 || evs[0].Type != Released {
		t.Fatalf("release: %v %+v", err, evs)
	}
	if e := evs[0]; e.HeldSeconds == nil || *e.HeldSeconds != 90 || e.Pusher != nil || e.ClaimCommit != claim || e.Commit != rel || e.Claimed != 0 {
		t.Errorf("released event: %+v held=%v", e, e.HeldSeconds)
	}
	if evs, _ := d.Sync(ctx); len(evs) != 0 {
		t.Errorf("second sync derived again: %+v", evs)
	}

	// A fresh store derives the same ids: a crash cannot duplicate or rename.
	st2, _ := Open(t.TempDir(), false)
	defer st2.Close()
	d2 := NewDeriver(st2, testRepoCfg(), r.gitDir())
	defer d2.Close()
	again, err := d2.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	all, _ := st.Events(ctx, Query{Repo: "locks"})
	if len(again) != len(all) {
		t.Fatalf("re-derived %d events, stored %d", len(again), len(all))
	}
	for i := range again {
		if again[i].ID != all[len(all)-1-i].ID {
			t.Errorf("event %d: id %s, first time %s", i, again[i].ID, all[len(all)-1-i].ID)
		}
	}
}

func TestTransientRejectionsAreRecordedAllAndAnnouncedOncePerWindow(t *testing.T) {
	ctx := context.Background()
	r := newWorkRepo(t)
	r.write("staging/unclaimed/env-a", "a")
	r.commit(time.Time{}, "init")
	st, _ := Open(t.TempDir(), false)
	defer st.Close()
	t0 := time.Now().UTC()
	over := func(at time.Time, user string) pushlog.Rejection {
		return pushlog.Rejection{Time: at, User: user, Key: "SHA256:k", Role: "write", Ref: "refs/heads/master", Old: "a", New: "b",
			Verdict: "transient", Violations: []pushlog.Violation{{Rule: "over-limit", Kind: "transient", Commit: "c1", Subject: "claiming: env-a",
				Pool: "staging", Lock: "env-a", Reason: "2 claimed, max_claimed 1"}}}
	}
	r.record(pushlog.Rejections, over(t0, "ci"))
	r.record(pushlog.Rejections, over(t0.Add(10*time.Second), "ci"))
	r.record(pushlog.Rejections, over(t0.Add(20*time.Second), "other"))
	r.record(pushlog.Rejections, over(t0.Add(11*time.Minute), "ci"))
	perm := over(t0.Add(12*time.Minute), "ci")
	perm.Verdict, perm.Violations[0].Rule, perm.Violations[0].Kind = "permanent", "claim-missing", "permanent"
	r.record(pushlog.Rejections, perm)
	// A line being written (no newline yet) waits for the next sync.
	f, _ := os.OpenFile(pushlog.At(r.gitDir()).Path(pushlog.Rejections), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"time":"`)
	f.Close()

	d := NewDeriver(st, testRepoCfg(), r.gitDir())
	defer d.Close()
	if _, err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	rej, _ := st.Rejections(ctx, "locks", 0)
	if len(rej) != 5 {
		t.Fatalf("want 5 rejections recorded, got %d", len(rej))
	}
	var announced []string
	for i := len(rej) - 1; i >= 0; i-- {
		if rej[i].Announce {
			announced = append(announced, rej[i].Pusher.User+"/"+rej[i].Rule)
		}
	}
	want := "ci/over-limit other/over-limit ci/over-limit ci/claim-missing"
	if strings.Join(announced, " ") != want {
		t.Errorf("announced %v, want %s", announced, want)
	}
	if e := rej[0]; e.Kind != "permanent" || e.Reason == "" || e.Commit != "c1" || e.Pool != "staging" {
		t.Errorf("rejected event: %+v", e)
	}
}

func TestStaleClaimRaisesOneEventAcrossRestarts(t *testing.T) {
	ctx := context.Background()
	r := newWorkRepo(t)
	t0 := time.Now().Add(-2 * time.Hour).UTC()
	r.write("staging/unclaimed/env-a", "a")
	r.commit(t0, "init")
	r.move(t0, "staging", "env-a", "unclaimed", "claimed", "claiming: env-a")

	st, _ := Open(t.TempDir(), false)
	defer st.Close()
	stale := func() int {
		d := NewDeriver(st, testRepoCfg(), r.gitDir())
		defer d.Close()
		if _, err := d.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		evs, _ := st.Events(ctx, Query{Repo: "locks", Types: []string{Stale}})
		return len(evs)
	}
	if n := stale(); n != 1 {
		t.Fatalf("%d stale events, want 1", n)
	}
	if n := stale(); n != 1 {
		t.Fatalf("after a restart: %d stale events, want 1", n)
	}
	evs, _ := st.Events(ctx, Query{Repo: "locks", Types: []string{Stale}})
	if e := evs[0]; e.HeldSeconds == nil || *e.HeldSeconds < 7100 || e.Lock != "env-a" {
		t.Errorf("stale event: %+v", e)
	}
}

func TestForcedPushThatDropsAClaimDropsItsHoldAndPoolsShowTheTip(t *testing.T) {
	ctx := context.Background()
	data := t.TempDir()
	r := newWorkRepoAt(t, filepath.Join(data, "repos", "locks.git"))
	r.write("staging/unclaimed/env-a", "a")
	r.write("staging/unclaimed/env-b", "b")
	base := r.commit(time.Time{}, "init")
	r.move(time.Time{}, "staging", "env-a", "unclaimed", "claimed", "claiming: env-a")
	cfg := &config.Config{DataDir: data, Repos: []config.Repo{*testRepoCfg()}}
	cfg.Repos[0].Pools = append(cfg.Repos[0].Pools, config.Pool{Name: "empty"})
	st, _ := Open(t.TempDir(), false)
	defer st.Close()
	d := NewDeriver(st, &cfg.Repos[0], r.gitDir())
	defer d.Close()
	if _, err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// An admin rewinds the branch past the claim and claims env-b instead:
	// env-b's claim, and env-a's release that no commit made, marked so.
	r.git(time.Time{}, "reset", "-q", "--hard", base)
	r.move(time.Time{}, "staging", "env-b", "unclaimed", "claimed", "claiming: env-b")
	evs, err := d.Sync(ctx)
	if err != nil || len(evs) != 2 || evs[0].Lock != "env-b" || evs[0].Type != Claimed || evs[0].HistoryRewrite ||
		evs[1].Lock != "env-a" || evs[1].Type != Released || !evs[1].HistoryRewrite || evs[1].HeldSeconds == nil {
		t.Fatalf("after the forced push: %v %+v", err, evs)
	}
	holds, _ := st.Holds(ctx, "locks")
	if len(holds) != 1 || holds[0].Lock != "env-b" {
		t.Errorf("holds %+v, want env-b only", holds)
	}
	pools, err := Pools(ctx, st, cfg, "locks", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(pools) != 2 || pools[0].Pool != "empty" || pools[0].Total != 0 || pools[1].Claimed != 1 || pools[1].Total != 2 {
		t.Fatalf("pools: %+v", pools)
	}
	a, b := pools[1].Locks[0], pools[1].Locks[1]
	if a.State != "unclaimed" || a.By != nil || b.State != "claimed" || b.HeldSeconds == nil || *pools[1].MaxClaimed != 1 || *pools[1].StaleAfterSeconds != 3600 {
		t.Errorf("locks: %+v %+v", a, b)
	}
}

func TestHistoryFromBeforeTheStoreIsRecordedButNotAnnounced(t *testing.T) {
	ctx := context.Background()
	r := newWorkRepo(t)
	old := time.Now().Add(-48 * time.Hour)
	r.write("staging/unclaimed/env-a", "a")
	r.commit(old, "init")
	r.move(old, "staging", "env-a", "unclaimed", "claimed", "claiming: env-a")
	st, _ := Open(t.TempDir(), false)
	defer st.Close()
	d := NewDeriver(st, testRepoCfg(), r.gitDir())
	defer d.Close()
	evs, err := d.Sync(ctx)
	if err != nil || len(evs) != 3 { // added, claimed, and stale long ago
		t.Fatalf("%v %+v", err, evs)
	}
	for _, e := range evs {
		if e.Announce {
			t.Errorf("%s from two days before the store was announced", e.Type)
		}
	}
	r.move(time.Now().Add(time.Second), "staging", "env-a", "claimed", "unclaimed", "unclaiming: env-a")
	evs, _ = d.Sync(ctx)
	if len(evs) != 1 || !evs[0].Announce || evs[0].HeldSeconds == nil {
		t.Errorf("a new release: %+v", evs)
	}
}

func TestACursorWhoseCommitWasCollectedIsDerivedAgainFromTheRoot(t *testing.T) {
	ctx := context.Background()
	data := t.TempDir()
	r := newWorkRepoAt(t, filepath.Join(data, "repos", "locks.git"))
	r.write("staging/unclaimed/env-a", "a")
	base := r.commit(time.Time{}, "init")
	r.move(time.Time{}, "staging", "env-a", "unclaimed", "claimed", "claiming: env-a")
	cfg := &config.Config{DataDir: data, Repos: []config.Repo{*testRepoCfg()}}
	st, _ := Open(t.TempDir(), false)
	defer st.Close()
	d := NewDeriver(st, &cfg.Repos[0], r.gitDir())
	defer d.Close()
	if _, err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// An admin drops the claim, the dropped commit is collected (the
	// reader has the old pack open), and a new lock is added.
	r.git(time.Time{}, "reset", "-q", "--hard", base)
	r.git(time.Time{}, "reflog", "expire", "--expire=now", "--all")
	r.git(time.Time{}, "gc", "-q", "--prune=now")
	r.write("staging/unclaimed/env-b", "b")
	r.commit(time.Time{}, "adding unclaimed: env-b")
	evs, err := d.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m := byType(evs)
	if len(m[Added]) == 0 || m[Added][len(m[Added])-1].Lock != "env-b" || len(m[Released]) != 1 || !m[Released][0].HistoryRewrite {
		t.Fatalf("after the collected rewrite: %+v", evs)
	}
	pools, err := Pools(ctx, st, cfg, "locks", time.Now())
	if err != nil || len(pools) != 1 || pools[0].Claimed != 0 || pools[0].Total != 2 {
		t.Fatalf("pools: %v %+v", err, pools)
	}
	if holds, _ := st.Holds(ctx, "locks"); len(holds) != 0 {
		t.Fatalf("holds %+v, want none", holds)
	}
}
