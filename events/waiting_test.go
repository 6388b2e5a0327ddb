package events

import (
	"context"
	"testing"
	"time"

	"github.com/poolgate/poolgate/pushlog"
)

func overLimitRecord(at time.Time, subject string) pushlog.Rejection {
	return pushlog.Rejection{Time: at, User: "ci", Role: "write", Ref: "refs/heads/master", Old: "a", New: "b",
		Verdict: "transient", Violations: []pushlog.Violation{{Rule: "over-limit", Kind: "transient", Subject: subject,
			Pool: "staging", Lock: "env-b", Reason: "2 claimed, max_claimed 1"}}}
}

// A waiter's tries are counted per build; it is gone WaiterGoneAfter after
// its last try, and gone at once when its build's claim lands, even when
// that claim and its last refused try are derived in one sync, claim first.
func TestWaitersAreCountedPerBuildAndDroppedWhenInOrGone(t *testing.T) {
	ctx := context.Background()
	r := newWorkRepo(t)
	r.write("staging/unclaimed/env-a", "a")
	r.write("staging/unclaimed/env-b", "b")
	r.commit(time.Time{}, "init")
	st, _ := Open(t.TempDir(), false)
	defer st.Close()
	d := NewDeriver(st, testRepoCfg(), r.gitDir())
	defer d.Close()

	t0 := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	r.record(pushlog.Rejections, overLimitRecord(t0, "main/p/smoke build 7 claiming: env-b"))
	r.record(pushlog.Rejections, overLimitRecord(t0.Add(10*time.Second), "main/p/smoke build 7 claiming: env-a"))
	r.record(pushlog.Rejections, overLimitRecord(t0.Add(15*time.Second), "main/p/other build 3 claiming: env-b"))
	perm := overLimitRecord(t0.Add(16*time.Second), "main/p/broken build 1 claiming: env-b")
	perm.Verdict, perm.Violations[0].Rule, perm.Violations[0].Kind = "permanent", "claim-missing", "permanent"
	r.record(pushlog.Rejections, perm)
	if _, err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	ws, err := st.Waiters(ctx, "locks", t0.Add(20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := ws["staging"]
	if len(got) != 2 || got[0].Job != "smoke" || got[0].Tries != 2 || !got[0].FirstTry.Equal(t0) ||
		!got[0].LastTry.Equal(t0.Add(10*time.Second)) || got[1].Job != "other" || got[1].Tries != 1 {
		t.Fatalf("waiters %+v", got)
	}
	// Stopped trying: no retry for WaiterGoneAfter.
	if ws, _ := st.Waiters(ctx, "locks", t0.Add(15*time.Second+WaiterGoneAfter+time.Second)); len(ws["staging"]) != 0 {
		t.Fatalf("waiters still shown after they stopped trying: %+v", ws)
	}

	// smoke #7 tries once more, then gets in; both reach one sync, and the
	// deriver reads the claim before the refusal.
	r.record(pushlog.Rejections, overLimitRecord(t0.Add(20*time.Second), "main/p/smoke build 7 claiming: env-b"))
	r.move(t0.Add(30*time.Second), "staging", "env-a", "unclaimed", "claimed", "main/p/smoke build 7 claiming: env-a")
	r.record(pushlog.Pushes, pushlog.Push{Time: t0.Add(30 * time.Second), User: "ci", Role: "write", Ref: "refs/heads/master",
		Commits: []string{r.git(time.Time{}, "rev-parse", "HEAD")}})
	if _, err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	ws, _ = st.Waiters(ctx, "locks", t0.Add(31*time.Second))
	if got := ws["staging"]; len(got) != 1 || got[0].Job != "other" {
		t.Fatalf("after smoke got in, waiters %+v, want only other", got)
	}

	// Re-deriving into a fresh store reaches the same answer.
	st2, _ := Open(t.TempDir(), false)
	defer st2.Close()
	if _, err := NewDeriver(st2, testRepoCfg(), r.gitDir()).Sync(ctx); err != nil {
		t.Fatal(err)
	}
	ws, _ = st2.Waiters(ctx, "locks", t0.Add(31*time.Second))
	if got := ws["staging"]; len(got) != 1 || got[0].Job != "other" {
		t.Fatalf("re-derived waiters %+v, want only other", got)
	}
}
