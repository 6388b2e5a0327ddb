package upstream

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-playground/webhooks/v6/github"
	"github.com/rs/zerolog"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/internal/fixture"
	"github.com/poolgate/poolgate/pushlog"
)

const secret = "s3cret-for-tests"

// world is an upstream bare repo (standing in for GitHub), a clone people
// push from, and poolgate's mirror with its watcher behind a real HTTP
// server on loopback.
type world struct {
	t        *testing.T
	upstream string
	work     string
	mirror   string
	watcher  *Watcher
	live     *config.Live // the running config the watcher reads
	cfgText  string
	srv      *httptest.Server
	env      []string
}

func newWorld(t *testing.T, provider string, poll time.Duration) *world {
	t.Helper()
	root := t.TempDir()
	w := &world{t: t, upstream: filepath.Join(root, "up.git"), work: filepath.Join(root, "work"),
		mirror: filepath.Join(root, "data", "repos", "locks.git")}
	w.env = append(os.Environ(), "HOME="+root, "GIT_CONFIG_NOSYSTEM=1", "GIT_AUTHOR_NAME=a", "GIT_AUTHOR_EMAIL=a@x",
		"GIT_COMMITTER_NAME=a", "GIT_COMMITTER_EMAIL=a@x")
	w.run(root, "git", "init", "-q", "--bare", "-b", "master", w.upstream)
	w.run(root, "git", "clone", "-q", w.upstream, w.work)
	for _, f := range []string{"staging/claimed/.gitkeep", "staging/unclaimed/a", "staging/unclaimed/b"} {
		w.write(f)
	}
	w.commitPush("init")

	cfgText := "data_dir: " + filepath.Join(root, "data") + "\nrepos:\n  - name: locks\n    upstream:\n      url: " + w.upstream +
		"\n      provider: " + provider + "\n      secret: " + secret + "\n      poll_interval: " + poll.String() + "\n    pools: [{name: staging, max_claimed: 1}]\n"
	cfg, err := config.Parse(filepath.Join(root, "poolgate.yaml"), []byte(cfgText))
	if err != nil {
		t.Fatal(err)
	}
	w.cfgText, w.live = cfgText, config.NewLive(cfg)
	w.watcher = NewWatcher(w.live, "locks", w.mirror, zerolog.Nop(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.watcher.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	mux := http.NewServeMux()
	mux.Handle("POST /hooks/{provider}/{repo}", &Handler{Watchers: map[string]*Watcher{"locks": w.watcher}, Log: zerolog.Nop()})
	w.srv = httptest.NewServer(mux)
	t.Cleanup(w.srv.Close)
	w.waitMirror(w.upstreamTip()) // the first sync at start
	return w
}

func (w *world) run(dir string, name string, args ...string) string {
	w.t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = w.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		w.t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func (w *world) write(rel string) {
	p := filepath.Join(w.work, rel)
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) commitPush(msg string, pushArgs ...string) {
	w.t.Helper()
	w.run(w.work, "git", "add", "-A")
	w.run(w.work, "git", "commit", "-q", "--allow-empty", "-m", msg)
	w.run(w.work, "git", append([]string{"push", "-q", "origin", "HEAD:master"}, pushArgs...)...)
}

func (w *world) upstreamTip() string { return w.run(w.upstream, "git", "rev-parse", "master") }

func (w *world) mirrorTip() string {
	out, err := exec.Command("git", "-C", w.mirror, "rev-parse", "--verify", "--quiet", "master").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func (w *world) waitMirror(want string) {
	w.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for w.mirrorTip() != want {
		if time.Now().After(deadline) {
			w.t.Fatalf("mirror at %q, want %s", w.mirrorTip(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// post sends a provider's webhook: a body from testdata/webhooks (see
// fixture.PushPayload), or any other value marshalled as JSON.
func (w *world) post(provider string, payload any, sign func(body []byte, h http.Header)) *http.Response {
	w.t.Helper()
	body, ok := payload.([]byte)
	if !ok {
		body, _ = json.Marshal(payload)
	}
	req, _ := http.NewRequest("POST", w.srv.URL+"/hooks/"+provider+"/locks", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	sign(body, req.Header)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// eventually polls cond: records are written right after the fetch that
// moves the mirror, so they may trail its tip by a moment.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func hmacHex(key string, body []byte) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

func githubSigned(key string) func([]byte, http.Header) {
	return func(b []byte, h http.Header) {
		h.Set("X-GitHub-Event", "push")
		h.Set("X-Hub-Signature-256", "sha256="+hmacHex(key, b))
	}
}

// githubPush is GitHub's push body, pushed by pusher.
func githubPush(t *testing.T, pusher string) []byte { return fixture.PushPayload(t, "github", pusher) }

func readJSONL[T any](t *testing.T, path string) []T {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []T
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var v T
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

func TestGitHubPushWebhookFetchesAndRecordsThePusher(t *testing.T) {
	w := newWorld(t, "github", time.Hour)
	w.run(w.work, "git", "mv", "staging/unclaimed/a", "staging/claimed/a")
	w.commitPush("claiming: a")
	if resp := w.post("github", githubPush(t, "alice"), githubSigned(secret)); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("webhook answered %d", resp.StatusCode)
	}
	w.waitMirror(w.upstreamTip())
	var last pushlog.Push
	eventually(t, "the push record", func() bool {
		pushes := readJSONL[pushlog.Push](t, pushlog.At(w.mirror).Path(pushlog.Pushes))
		last = pushes[len(pushes)-1]
		return last.New == w.upstreamTip()
	})
	if last.User != "github:alice" || len(last.Commits) != 1 || last.Commits[0] != w.upstreamTip() {
		t.Fatalf("push record %+v", last)
	}
}

func TestWebhookWithABadSignatureIsRefusedAndFetchesNothing(t *testing.T) {
	w := newWorld(t, "github", time.Hour)
	before := w.mirrorTip()
	w.run(w.work, "git", "mv", "staging/unclaimed/a", "staging/claimed/a")
	w.commitPush("claiming: a")
	for name, sign := range map[string]func([]byte, http.Header){
		"wrong secret": githubSigned("not-the-secret"),
		"unsigned":     func(b []byte, h http.Header) { h.Set("X-GitHub-Event", "push") },
	} {
		if resp := w.post("github", githubPush(t, "mallory"), sign); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s: answered %d, want 401", name, resp.StatusCode)
		}
	}
	time.Sleep(300 * time.Millisecond) // a fetch, had one been triggered, is well under this
	if w.mirrorTip() != before {
		t.Fatal("a forged webhook made the mirror fetch")
	}
}

func TestPingAndUnknownEventsAreAnsweredWithoutAFetch(t *testing.T) {
	w := newWorld(t, "github", time.Hour)
	resp := w.post("github", github.PingPayload{HookID: 1}, func(b []byte, h http.Header) {
		h.Set("X-GitHub-Event", "ping")
		h.Set("X-Hub-Signature-256", "sha256="+hmacHex(secret, b))
	})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("ping: %d", resp.StatusCode)
	}
	resp = w.post("github", map[string]string{"action": "opened"}, func(b []byte, h http.Header) {
		h.Set("X-GitHub-Event", "issues")
	})
	if resp.StatusCode/100 != 2 {
		t.Fatalf("unknown event: %d, want 2xx", resp.StatusCode)
	}
	big := map[string]string{"x": strings.Repeat("x", MaxWebhookBody+1)}
	if resp := w.post("github", big, githubSigned(secret)); resp.StatusCode == http.StatusAccepted {
		t.Fatal("an oversized body was accepted")
	}
}

func TestGitLabAndGiteaPushesAreVerifiedWithTheirOwnSchemes(t *testing.T) {
	t.Run("gitlab", func(t *testing.T) {
		w := newWorld(t, "gitlab", time.Hour)
		w.run(w.work, "git", "mv", "staging/unclaimed/b", "staging/claimed/b")
		w.commitPush("claiming: b")
		p := fixture.PushPayload(t, "gitlab", "bob")
		if resp := w.post("gitlab", p, func(b []byte, h http.Header) {
			h.Set("X-Gitlab-Event", "Push Hook")
			h.Set("X-Gitlab-Token", "wrong")
		}); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong token: %d", resp.StatusCode)
		}
		if resp := w.post("gitlab", p, func(b []byte, h http.Header) {
			h.Set("X-Gitlab-Event", "Push Hook")
			h.Set("X-Gitlab-Token", secret)
		}); resp.StatusCode != http.StatusAccepted {
			t.Fatalf("good token: %d", resp.StatusCode)
		}
		w.waitMirror(w.upstreamTip())
	})
	t.Run("gitea", func(t *testing.T) {
		w := newWorld(t, "gitea", time.Hour)
		w.run(w.work, "git", "mv", "staging/unclaimed/b", "staging/claimed/b")
		w.commitPush("claiming: b")
		p := fixture.PushPayload(t, "gitea", "carol")
		if resp := w.post("gitea", p, func(b []byte, h http.Header) {
			h.Set("X-Gitea-Event", "push")
			h.Set("X-Gitea-Signature", hmacHex("wrong", b))
		}); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong signature: %d", resp.StatusCode)
		}
		if resp := w.post("gitea", p, func(b []byte, h http.Header) {
			h.Set("X-Gitea-Event", "push")
			h.Set("X-Gitea-Signature", hmacHex(secret, b))
		}); resp.StatusCode != http.StatusAccepted {
			t.Fatalf("good signature: %d", resp.StatusCode)
		}
		w.waitMirror(w.upstreamTip())
	})
}

func TestDuplicateNameCommitUpstreamIsRecordedAsAViolation(t *testing.T) {
	w := newWorld(t, "github", time.Hour)
	w.write("staging/claimed/a") // a is also in unclaimed/
	w.commitPush("adding claimed: a")
	w.post("github", githubPush(t, "alice"), githubSigned(secret))
	w.waitMirror(w.upstreamTip())
	var vs []pushlog.UpstreamViolation
	eventually(t, "a violation record", func() bool {
		vs = readJSONL[pushlog.UpstreamViolation](t, pushlog.At(w.mirror).Path(pushlog.Violations))
		return len(vs) > 0
	})
	if len(vs) != 1 || vs[0].Rule != "duplicate-name" || vs[0].Lock != "a" || vs[0].Pool != "staging" || vs[0].Commit != w.upstreamTip() {
		t.Fatalf("violations %+v", vs)
	}
}

func TestPollingAloneCatchesUpWithoutWebhooks(t *testing.T) {
	w := newWorld(t, "github", 200*time.Millisecond)
	w.run(w.work, "git", "mv", "staging/unclaimed/a", "staging/claimed/a")
	w.commitPush("claiming: a")
	w.run(w.work, "git", "mv", "staging/claimed/a", "staging/unclaimed/a")
	w.commitPush("unclaiming: a")
	w.waitMirror(w.upstreamTip())
}

func TestForcePushUpstreamIsReportedAndTheMirrorFollows(t *testing.T) {
	w := newWorld(t, "github", time.Hour)
	w.run(w.work, "git", "mv", "staging/unclaimed/a", "staging/claimed/a")
	w.commitPush("claiming: a")
	w.post("github", githubPush(t, "alice"), githubSigned(secret))
	w.waitMirror(w.upstreamTip())
	lost := w.upstreamTip()

	w.run(w.work, "git", "reset", "-q", "--hard", "HEAD~1")
	w.write("staging/unclaimed/c")
	w.commitPush("re-init the pool", "--force")
	w.post("github", githubPush(t, "mallory"), githubSigned(secret))
	w.waitMirror(w.upstreamTip())
	var rw []pushlog.Rewrite
	eventually(t, "a rewrite record", func() bool {
		rw = readJSONL[pushlog.Rewrite](t, pushlog.At(w.mirror).Path(pushlog.Rewrites))
		return len(rw) > 0
	})
	if len(rw) != 1 || rw[0].Old != lost || rw[0].New != w.upstreamTip() || rw[0].Dropped != 1 || rw[0].User != "github:mallory" {
		t.Fatalf("rewrites %+v", rw)
	}
}

// A merge upstream whose side branch claims a lock that never existed is
// reported: watch mode judges every commit the branch gains, as the hook
// does, not only the first-parent chain.
func TestUpstreamMergeSmugglingAClaimOfAMissingLockIsAViolation(t *testing.T) {
	w := newWorld(t, "github", time.Hour)
	w.run(w.work, "git", "checkout", "-q", "-b", "side")
	w.write("staging/claimed/ghost")
	w.run(w.work, "git", "add", "-A")
	w.run(w.work, "git", "commit", "-q", "-m", "free-form side commit")
	side := w.run(w.work, "git", "rev-parse", "HEAD")
	w.run(w.work, "git", "checkout", "-q", "master")
	w.run(w.work, "git", "merge", "-q", "--no-ff", "-m", "merge side", "side")
	w.run(w.work, "git", "push", "-q", "origin", "HEAD:master")
	w.post("github", githubPush(t, "alice"), githubSigned(secret))
	w.waitMirror(w.upstreamTip())
	var vs []pushlog.UpstreamViolation
	eventually(t, "a violation record", func() bool {
		vs = readJSONL[pushlog.UpstreamViolation](t, pushlog.At(w.mirror).Path(pushlog.Violations))
		return len(vs) > 0
	})
	found := false
	for _, v := range vs {
		if v.Rule == "claim-missing" && v.Lock == "ghost" && v.Pool == "staging" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no claim-missing for the side branch's ghost (side commit %s): %+v", side, vs)
	}
}

// A reload (the daemon storing a new config) reaches the running watcher:
// the inbound webhook is verified with the new secret only, and the new
// poll_interval applies from the next round, without a restart.
func TestReloadedSecretAndPollIntervalReachTheRunningWatcher(t *testing.T) {
	w := newWorld(t, "github", time.Hour)
	text := strings.Replace(strings.Replace(w.cfgText, "secret: "+secret, "secret: new-s3cret", 1),
		"poll_interval: 1h0m0s", "poll_interval: 200ms", 1)
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "poolgate.yaml"), []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	w.live.Store(cfg)

	w.run(w.work, "git", "mv", "staging/unclaimed/a", "staging/claimed/a")
	w.commitPush("claiming: a")
	if resp := w.post("github", githubPush(t, "mallory"), githubSigned(secret)); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("signed with the secret a reload replaced: answered %d, want 401", resp.StatusCode)
	}
	if resp := w.post("github", githubPush(t, "alice"), githubSigned("new-s3cret")); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("signed with the reloaded secret: answered %d, want 202", resp.StatusCode)
	}
	w.waitMirror(w.upstreamTip())
	// No webhook for this one: only the reloaded 200ms poll (the old one
	// was an hour) can bring it.
	w.run(w.work, "git", "mv", "staging/unclaimed/b", "staging/claimed/b")
	w.commitPush("claiming: b")
	w.waitMirror(w.upstreamTip())
}
