package web_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/poolgate/poolgate/internal/testserver"
)

// What an operator needs from the page, seen in headless Chromium: when a
// claim began (absolute time), the lock file's contents escaped (a lock
// whose content is a script tag shows as text), the builds waiting, a
// watch-mode repo marked as a mirror with its last sync, each refusal's
// rule and reason, and a 401 in words for a browser without the token.
func TestStatusPageShowsSinceContentsWaitersMirrorsAndRulesEscaped(t *testing.T) {
	bin := chromium(t)
	root := t.TempDir()
	up, work := filepath.Join(root, "up.git"), filepath.Join(root, "work")
	gitIn(t, root, "init", "-q", "--bare", "-b", "master", up)
	gitIn(t, root, "clone", "-q", up, work)
	os.MkdirAll(filepath.Join(work, "p", "unclaimed"), 0o755)
	os.WriteFile(filepath.Join(work, "p", "unclaimed", "x"), nil, 0o644)
	gitIn(t, work, "add", "-A")
	gitIn(t, work, "commit", "-q", "-m", "init")
	gitIn(t, work, "push", "-q", "origin", "HEAD:master")

	f := testserver.New(t, testserver.Options{Token: token,
		Pools: "[{name: staging, max_claimed: 1, locks: [env-a, env-b]}]",
		ExtraRepos: fmt.Sprintf(`  - name: mirror
    upstream: {url: %q, provider: github, secret: s3cret, poll_interval: 1h}`, up)})
	s := f.Start()
	const evil = `<script>document.title="pwned"</script>`
	holder := s.Client("holder", "staging", buildURL)
	if err := holder.Add(ctx(t), "env-x", []byte(evil+"\nhost: 10.0.0.7\n"), true); err != nil {
		t.Fatal(err)
	}
	waitState(t, s, "env-x", "claimed")

	stop := make(chan struct{})
	waiter := s.Client("waiter", "staging", "")
	waiter.OldPrefix, waiter.Stop = "main/p/smoke build 7", stop
	done := make(chan error, 1)
	go func() { _, err := waiter.Acquire(ctx(t)); done <- err }()
	defer func() { close(stop); <-done }()
	pollWaiting(t, s, "staging", "showed the waiting build", func(ws []waiterDoc) bool { return len(ws) == 1 })

	// A permanent refusal: a directory inside unclaimed/.
	bad := s.Client("bad", "staging", "")
	os.MkdirAll(filepath.Join(bad.Dir, "staging", "unclaimed", "dir"), 0o755)
	os.WriteFile(filepath.Join(bad.Dir, "staging", "unclaimed", "dir", "f"), nil, 0o644)
	bad.Git(ctx(t), "add", "-A")
	bad.Git(ctx(t), "commit", "-q", "-m", "nested")
	if out, _ := bad.Git(ctx(t), "push", "origin", "HEAD:master"); !strings.Contains(out, "bad-path") {
		t.Fatalf("nested dir not refused by bad-path:\n%s", out)
	}

	var dom string
	for i := 0; i < 30; i++ {
		dom = browse(t, bin, t.TempDir(), "--dump-dom", "http://"+s.HTTPAddr+"/?token="+token)
		if strings.Contains(dom, `class="rejection"`) && strings.Contains(dom, "last sync") && strings.Contains(dom, `class="waiter"`) {
			break
		}
	}
	for _, want := range []struct{ what, text string }{
		{"the script-tag lock content, escaped", `&lt;script&gt;document.title="pwned"&lt;/script&gt;`},
		{"the rest of the lock file", "host: 10.0.0.7"},
		{"the waiting build", `class="waiter"`},
		{"the waiting build's name", "p/smoke #7"},
		{"the mirror mark", `class="state mirror"`},
		{"the mirror's last sync", "last sync"},
		{"the refusal's rule", `<span class="rule">bad-path</span>`},
	} {
		if !strings.Contains(dom, want.text) {
			t.Errorf("page does not show %s (%q)", want.what, want.text)
		}
	}
	if strings.Contains(dom, evil) || strings.Contains(dom, "<title>pwned") {
		t.Error("the lock file's script tag reached the page unescaped")
	}
	if !regexp.MustCompile(`since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC`).MatchString(dom) {
		t.Error("the claim's absolute start time is not on the page")
	}
	if t.Failed() {
		t.Logf("page:\n%s", dom)
	}

	// No token: a browser gets a page that says how to log in.
	login := browse(t, bin, t.TempDir(), "--dump-dom", "http://"+s.HTTPAddr+"/")
	if !strings.Contains(login, "needs the access token") || !strings.Contains(login, "?token=TOKEN") {
		t.Fatalf("401 page for a browser does not say how to log in:\n%s", login)
	}
	// A script still gets JSON.
	if code := getJSON(t, "http://"+s.HTTPAddr+"/api/v1/repos", "", nil); code != 401 {
		t.Fatalf("no token: %d", code)
	}
}
