package web_test

import (
	"fmt"
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
	up := newUpstream(t)

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

	startWaiter(t, s, "staging", "main/p/smoke build 7")
	pollWaiting(t, s, "staging", "showed the waiting build", func(ws []waiterDoc) bool { return len(ws) == 1 })

	pushBadPath(t, s, "staging")

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
	art := artifacts(t)
	for _, w := range []string{"390,1600", "1600,1000"} {
		browse(t, bin, t.TempDir(), "--window-size="+w,
			"--screenshot="+filepath.Join(art, "status-operators-"+strings.Split(w, ",")[0]+".png"), "http://"+s.HTTPAddr+"/?token="+token)
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
