package web

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// fakeBackend is a unit-test stand-in; the end-to-end tests use the real
// event store behind a real daemon.
type fakeBackend struct{ lastQuery Query }

func (f *fakeBackend) Repos() []Repo {
	return []Repo{{Name: "locks", Branch: "master", Pools: []string{"staging"}}}
}

func (f *fakeBackend) Pools(ctx context.Context, repo string) ([]Pool, error) {
	two, held := 2, int64(750)
	return []Pool{{Name: "staging", MaxClaimed: &two, Claimed: 1, Total: 2, Locks: []Lock{
		{Name: "env-a", State: "claimed", HeldSeconds: &held, Stale: true, HeldBy: &Holder{User: "concourse",
			BuildURL: "javascript:alert(1)", Pipeline: "p", Job: "deploy", Build: "42"}},
		{Name: "<env-b>", State: "unclaimed"},
	}}}, nil
}

func (f *fakeBackend) Events(ctx context.Context, repo string, q Query) ([]Event, error) {
	f.lastQuery = q
	return []Event{{Type: "claimed", Time: time.Now(), Pool: "staging", Lock: "env-a"}}, nil
}

func (f *fakeBackend) Rejections(ctx context.Context, repo string, limit int) ([]Event, error) {
	return []Event{{Type: "rejected", Time: time.Now(), Rule: "claim-missing", Kind: "permanent", Reason: "r"}}, nil
}

func (f *fakeBackend) Webhooks(ctx context.Context) ([]Webhook, error) { return nil, nil }

func get(t *testing.T, h http.Handler, path, token string) (int, string) {
	t.Helper()
	req := httptest.NewRequest("GET", path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

func TestTokenGuardsEverythingButHealthz(t *testing.T) {
	s := New(&fakeBackend{}, "s3cret", http.NotFoundHandler(), zerolog.Nop())
	for _, p := range []string{"/", "/api/v1/repos", "/api/v1/repos/locks/pools", "/api/v1/webhooks", "/metrics"} {
		if code, _ := get(t, s, p, ""); code != http.StatusUnauthorized {
			t.Errorf("%s without token: %d", p, code)
		}
		if code, _ := get(t, s, p, "wrong"); code != http.StatusUnauthorized {
			t.Errorf("%s with a wrong token: %d", p, code)
		}
	}
	if code, _ := get(t, s, "/api/v1/repos", "s3cret"); code != http.StatusOK {
		t.Errorf("with the token: %d", code)
	}
}

func TestUnknownRepoIs404AndBadLimitIs400(t *testing.T) {
	s := New(&fakeBackend{}, "", nil, zerolog.Nop())
	for _, p := range []string{"/api/v1/repos/nope/pools", "/api/v1/repos/nope/events", "/api/v1/repos/nope/rejections"} {
		if code, _ := get(t, s, p, ""); code != http.StatusNotFound {
			t.Errorf("%s: %d", p, code)
		}
	}
	for _, p := range []string{"/api/v1/repos/locks/events?limit=-1", "/api/v1/repos/locks/events?limit=x", "/api/v1/repos/locks/events?type=bogus"} {
		if code, _ := get(t, s, p, ""); code != http.StatusBadRequest {
			t.Errorf("%s: %d", p, code)
		}
	}
}

func TestEventFiltersReachTheBackend(t *testing.T) {
	b := &fakeBackend{}
	s := New(b, "", nil, zerolog.Nop())
	code, body := get(t, s, "/api/v1/repos/locks/events?pool=staging&lock=env-a&type=claimed&limit=5000", "")
	if code != http.StatusOK {
		t.Fatalf("%d %s", code, body)
	}
	if want := (Query{Pool: "staging", Lock: "env-a", Type: "claimed", Limit: maxLimit}); b.lastQuery != want {
		t.Fatalf("query %+v, want %+v", b.lastQuery, want)
	}
	var out struct{ Events []Event }
	if err := json.Unmarshal([]byte(body), &out); err != nil || len(out.Events) != 1 {
		t.Fatalf("body %s: %v", body, err)
	}
}

func TestPageEscapesNamesAndNeverLinksAJavascriptURL(t *testing.T) {
	s := New(&fakeBackend{}, "", nil, zerolog.Nop())
	code, body := get(t, s, "/", "")
	if code != http.StatusOK {
		t.Fatalf("%d", code)
	}
	for _, want := range []string{"p/deploy #42", "12m", "&lt;env-b&gt;", "claim-missing", `class="lock stale"`} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(body, "javascript:") || strings.Contains(body, "<env-b>") {
		t.Error("page carries a hostile name or URL unescaped")
	}
	_, partial := get(t, s, "/?partial=1", "")
	if strings.Contains(partial, "<html") || !strings.Contains(partial, "env-a") {
		t.Error("partial render is not just the content")
	}
}
