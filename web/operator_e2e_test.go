package web_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/poolgate/poolgate/internal/testserver"
)

// The page's release button, driven in a real headless Chromium: the
// button asks for a reason and a confirmation first, then the lock is free
// and the operator's release is in the page's history.
func TestStatusPageReleaseButtonConfirmsThenFreesTheLock(t *testing.T) {
	bin := chromium(t)
	f := testserver.New(t, testserver.Options{Token: token, Pools: "[{name: staging, locks: [env-a, env-b]}]"})
	s := f.Start()
	c := s.Client("c1", "staging", buildURL)
	if err := c.Claim(ctx(t), "env-a"); err != nil {
		t.Fatal(err)
	}
	waitState(t, s, "env-a", "claimed")

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin), chromedp.NoSandbox,
		chromedp.UserDataDir(t.TempDir()), chromedp.Flag("disable-quic", true), chromedp.WindowSize(1280, 1000))
	actx, cancel := chromedp.NewExecAllocator(ctx(t), opts...)
	defer cancel()
	bctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	bctx, cancel = context.WithTimeout(bctx, 90*time.Second)
	defer cancel()

	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	row := `tr[data-lock="env-a"]`
	var shot []byte
	// The token arrives once in the URL and becomes the page's cookie,
	// which the button's request then carries.
	err := chromedp.Do(bctx,
		chromedp.Navigate("http://"+s.HTTPAddr+"/?token="+token),
		chromedp.WaitVisible(css(row+`[data-state="claimed"] button.act[data-action="release"]`)),
		chromedp.Click(css(row+` button.act`)),
		chromedp.WaitVisible(css(`tr.confirm-row form.confirm input[name="reason"]`)),
	)
	if err != nil {
		t.Fatalf("opening the confirm step: %v\n%s", err, s.Log())
	}
	// The first click only asks: nothing is released yet.
	time.Sleep(300 * time.Millisecond)
	if st := lockState(t, s, "env-a"); st != "claimed" {
		t.Fatalf("env-a is %s after the first click, before any confirmation", st)
	}
	err = chromedp.Do(bctx,
		chromedp.SendKeys(css(`tr.confirm-row form.confirm input[name="reason"]`), "build 42 aborted, env checked"),
	)
	if err == nil {
		shot, err = chromedp.Run(bctx, chromedp.FullScreenshot(100))
	}
	if err != nil {
		t.Fatalf("typing the reason: %v", err)
	}
	err = chromedp.Do(bctx,
		chromedp.Click(css(`tr.confirm-row form.confirm button.confirm`)),
		chromedp.WaitVisible(css(row+`[data-state="unclaimed"]`)),
		chromedp.WaitVisible(css(`.pool[data-pool="staging"] .timeline .operator`)),
	)
	if err != nil {
		t.Fatalf("confirming the release: %v", err)
	}
	os.WriteFile(filepath.Join(artifacts(t), "status-release-confirm.png"), shot, 0o644)
	// The page swaps its content in every few seconds: read the history
	// again if a swap came between the wait above and the read.
	var hist string
	for i := 0; i < 20; i++ {
		if hist, err = chromedp.Run(bctx, chromedp.Text(css(`.pool[data-pool="staging"] .timeline`))); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(hist, "released env-a") {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if !strings.Contains(hist, "released env-a") || !strings.Contains(hist, "by operator http: build 42 aborted, env checked") {
		t.Fatalf("the page's history does not show the operator's release:\n%s", hist)
	}
	if st := lockState(t, s, "env-a"); st != "unclaimed" {
		t.Fatalf("env-a is %s after the confirmed release", st)
	}
	if shot, err = chromedp.Run(bctx, chromedp.FullScreenshot(100)); err == nil {
		os.WriteFile(filepath.Join(artifacts(t), "status-released-by-operator.png"), shot, 0o644)
	}
}

func lockState(t *testing.T, s *testserver.Server, lock string) string {
	t.Helper()
	var doc poolsDoc
	if code := getJSON(t, "http://"+s.HTTPAddr+"/api/v1/repos/locks/pools", token, &doc); code != http.StatusOK {
		t.Fatalf("pools: %d", code)
	}
	for _, p := range doc.Pools {
		for _, l := range p.Locks {
			if l.Name == lock {
				return l.State
			}
		}
	}
	return ""
}
