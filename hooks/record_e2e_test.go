package hooks_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/poolgate/poolgate/pushlog"
)

// pushRecords reads the records of kind k in the bare repo.
func (r *poolRepo) pushRecords(k pushlog.Kind) []pushlog.Push {
	r.t.Helper()
	lines, _, err := pushlog.At(r.bare).Read(k, 0)
	if err != nil {
		r.t.Fatal(err)
	}
	var out []pushlog.Push
	for _, l := range lines {
		var p pushlog.Push
		if !pushlog.Decode(l, &p) {
			r.t.Fatalf("undecodable %s line %s", k, l)
		}
		out = append(out, p)
	}
	return out
}

// A push the validator lets through whose ref update then fails (here the
// branch is locked by another writer's .lock file, as a full disk or a lost
// race would fail it) must not be recorded as accepted: only pending. Once
// the ref can move, the same push is recorded as accepted, with its commit.
// Plain git with the installed hooks: the hook-only set-up.
func TestPushWhoseRefUpdateFailsIsNotRecordedAsAccepted(t *testing.T) {
	r := newPoolRepo(t, defaultConfig)
	r.git("mv", "staging/unclaimed/a", "staging/claimed/a")
	r.commit("claiming: a")
	claim := r.git("rev-parse", "HEAD")
	before := r.tip()
	accepted := len(r.pushRecords(pushlog.Pushes))

	lock := filepath.Join(r.bare, "refs", "heads", "master.lock")
	if err := os.WriteFile(lock, []byte(before+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := r.push("write", "origin", "HEAD:master")
	if err == nil {
		t.Fatalf("push landed through a held ref lock:\n%s", out)
	}
	if !strings.Contains(out, "failed to update ref") && !strings.Contains(out, "cannot lock ref") {
		t.Fatalf("push failed for another reason than the ref update:\n%s", out)
	}
	if r.tip() != before {
		t.Fatalf("branch moved")
	}
	for _, p := range r.pushRecords(pushlog.Pushes)[accepted:] {
		t.Fatalf("a push whose ref did not move was recorded as accepted: %+v", p)
	}
	pending := r.pushRecords(pushlog.Pending)
	if len(pending) == 0 || !slices.Contains(pending[len(pending)-1].Commits, claim) {
		t.Fatalf("no pending record naming %s: %+v", claim, pending)
	}

	os.Remove(lock)
	r.lands("write")
	got := r.pushRecords(pushlog.Pushes)[accepted:]
	if len(got) != 1 || got[0].New != claim || !slices.Equal(got[0].Commits, []string{claim}) || got[0].User != "tester" || got[0].Role != "write" {
		t.Fatalf("accepted records after the push landed: %+v, want one for %s by tester", got, claim)
	}
}
