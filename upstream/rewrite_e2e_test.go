package upstream_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/poolgate/poolgate/internal/testserver"
)

// watched is an upstream bare repo with pool staging (env-a, env-b; its
// config given as YAML), a clone to push from, and a real poolgate watching
// it as repo gh, once its first fetch is derived.
func watched(t *testing.T, staging string) (work string, s *testserver.Server, base string) {
	root := t.TempDir()
	up, work := filepath.Join(root, "up.git"), filepath.Join(root, "work")
	git(t, root, "init", "-q", "--bare", "-b", "master", up)
	git(t, root, "clone", "-q", up, work)
	for _, f := range []string{"staging/claimed/.gitkeep", "staging/unclaimed/env-a", "staging/unclaimed/env-b"} {
		os.MkdirAll(filepath.Dir(filepath.Join(work, f)), 0o755)
		os.WriteFile(filepath.Join(work, f), nil, 0o644)
	}
	commitPush(t, work, "init")
	f := testserver.New(t, testserver.Options{Pools: "[{name: demo, locks: [a]}]", ExtraRepos: fmt.Sprintf(`  - name: gh
    branch: master
    upstream: {url: %q, provider: github, secret: %q, poll_interval: 1h}
    pools: [%s]`, up, hookSecret, staging)})
	s = f.Start()
	base = "http://" + s.HTTPAddr
	// The mirror's first fetch at start takes the pool as it is.
	waitEvent(t, base, func(e apiEvent) bool { return e.Type == "added" && e.Lock == "env-b" })
	return work, s, base
}

// A force push upstream that drops a claim releases the lock: a `released`
// event marked history_rewrite, with how long it was held, not a lock that
// stays held (and goes stale) or shows unclaimed "since" its old claim.
func TestUpstreamForcePushDroppingAClaimYieldsAReleasedEventMarkedAsRewrite(t *testing.T) {
	work, _, base := watched(t, "{name: staging}")
	git(t, work, "mv", "staging/unclaimed/env-a", "staging/claimed/env-a")
	commitPush(t, work, "claiming: env-a")
	signedPush(t, base+"/hooks/github/gh", "alice")
	waitEvent(t, base, func(e apiEvent) bool { return e.Type == "claimed" && e.Lock == "env-a" })

	git(t, work, "reset", "-q", "--hard", "HEAD~1")
	os.WriteFile(filepath.Join(work, "staging/unclaimed/env-c"), nil, 0o644)
	git(t, work, "add", "-A")
	git(t, work, "commit", "-q", "-m", "re-init the pool")
	git(t, work, "push", "-q", "--force", "origin", "HEAD:master")
	signedPush(t, base+"/hooks/github/gh", "mallory")
	rel := waitEvent(t, base, func(e apiEvent) bool { return e.Type == "released" && e.Lock == "env-a" })
	if rel.Data["history_rewrite"] != true || rel.User != "github:mallory" || rel.Data["held_seconds"] == nil || rel.Data["state"] != "unclaimed" {
		t.Errorf("released event: user %q data %v; want history_rewrite, github:mallory, held_seconds, state unclaimed", rel.User, rel.Data)
	}
	waitEvent(t, base, func(e apiEvent) bool { return e.Type == "violation" && e.Rule == "ref" })
	// Adding env-c is an ordinary commit of the new history.
	if e := waitEvent(t, base, func(e apiEvent) bool { return e.Type == "added" && e.Lock == "env-c" }); e.Data["history_rewrite"] != nil {
		t.Errorf("env-c's add is marked as a rewrite: %v", e.Data)
	}
}

// A force push upstream whose new tip has a lock claimed that the old
// history had released announces the claim, marked as a rewrite.
func TestUpstreamForcePushRestoringAClaimYieldsAClaimedEventMarkedAsRewrite(t *testing.T) {
	work, _, base := watched(t, "{name: staging}")
	git(t, work, "mv", "staging/unclaimed/env-a", "staging/claimed/env-a")
	commitPush(t, work, "claiming: env-a")
	git(t, work, "mv", "staging/claimed/env-a", "staging/unclaimed/env-a")
	commitPush(t, work, "unclaiming: env-a")
	signedPush(t, base+"/hooks/github/gh", "alice")
	waitEvent(t, base, func(e apiEvent) bool { return e.Type == "released" && e.Lock == "env-a" })

	git(t, work, "reset", "-q", "--hard", "HEAD~1")
	git(t, work, "push", "-q", "--force", "origin", "HEAD:master")
	signedPush(t, base+"/hooks/github/gh", "mallory")
	c := waitEvent(t, base, func(e apiEvent) bool {
		return e.Type == "claimed" && e.Lock == "env-a" && e.Data["history_rewrite"] == true
	})
	if c.Data["state"] != "claimed" {
		t.Errorf("claimed event: %v", c.Data)
	}
}

// An upstream commit adding a name that already exists (env-b, unclaimed,
// added again under claimed/) is a duplicate-name violation, and no
// `updated` event: nothing about env-b was updated.
func TestUpstreamCommitAddingAnExistingNameIsAViolationNotAnUpdate(t *testing.T) {
	work, _, base := watched(t, "{name: staging}")
	os.WriteFile(filepath.Join(work, "staging/claimed/env-b"), nil, 0o644)
	commitPush(t, work, "adding claimed: env-b")
	signedPush(t, base+"/hooks/github/gh", "bob")
	waitEvent(t, base, func(e apiEvent) bool {
		return e.Type == "violation" && e.Rule == "duplicate-name" && e.Lock == "env-b"
	})
	// Derivation of that commit is done by now (the violation is read in
	// the same sync, after the commits).
	for _, e := range events(t, base) {
		if e.Lock == "env-b" && e.Type != "added" && e.Type != "violation" {
			t.Errorf("env-b has a %q event for a duplicate add: %v", e.Type, e.Data)
		}
	}
}
