package web

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/poolgate/poolgate/operator"
	"github.com/rs/zerolog"
)

// recordingActor is a unit-test stand-in for the daemon: it only notes
// what it was asked. The end-to-end tests act on a real daemon.
type recordingActor struct{ got []operator.Action }

func (a *recordingActor) Operate(_ context.Context, act operator.Action) (operator.Result, error) {
	a.got = append(a.got, act)
	return operator.Result{Commit: strings.Repeat("a", 40)}, nil
}

func postAction(h http.Handler, remote, token, contentType, body string) int {
	req := httptest.NewRequest("POST", "/api/v1/repos/locks/pools/team-a%2Fstaging/locks/env-a/release", strings.NewReader(body))
	req.RemoteAddr = remote
	req.Header.Set("Content-Type", contentType)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code
}

// Without http.token the page may be open to a network; an action must
// not be: only this machine may act then.
func TestOperatorActionFromTheNetworkWithoutATokenIsRefused(t *testing.T) {
	a := &recordingActor{}
	s := New(&fakeBackend{}, "", nil, zerolog.Nop())
	s.HandleOperator(a)
	body := `{"reason": "stuck"}`
	if code := postAction(s, "10.1.2.3:5555", "", "application/json", body); code != http.StatusForbidden {
		t.Fatalf("from the network without a token: %d, want 403", code)
	}
	if _, page := get(t, s, "/", ""); strings.Contains(page, `class="act"`) {
		t.Fatal("the page offers action buttons to a viewer that may not act")
	}
	if len(a.got) != 0 {
		t.Fatalf("acted: %+v", a.got)
	}
	if code := postAction(s, "127.0.0.1:5555", "", "application/json", body); code != http.StatusOK {
		t.Fatalf("from loopback: %d, want 200", code)
	}
	if len(a.got) != 1 || a.got[0].Pool != "team-a/staging" || a.got[0].Operator != "http" || a.got[0].Verb != operator.Release {
		t.Fatalf("action: %+v", a.got)
	}
}

// A cross-site form can post to a loopback port from the operator's own
// browser, but not with a JSON content type.
func TestOperatorActionAsACrossSiteFormPostIsRefused(t *testing.T) {
	a := &recordingActor{}
	s := New(&fakeBackend{}, "", nil, zerolog.Nop())
	s.HandleOperator(a)
	if code := postAction(s, "127.0.0.1:5555", "", "application/x-www-form-urlencoded", `{"reason": "x"}`); code != http.StatusUnsupportedMediaType {
		t.Fatalf("form post: %d, want 415", code)
	}
	if code := postAction(s, "127.0.0.1:5555", "", "text/plain", `{"reason": "x"}`); code != http.StatusUnsupportedMediaType {
		t.Fatalf("text/plain post: %d, want 415", code)
	}
	if len(a.got) != 0 {
		t.Fatalf("acted: %+v", a.got)
	}
}

func TestOperatorActionNeedsTheTokenWhenOneIsSet(t *testing.T) {
	a := &recordingActor{}
	s := New(&fakeBackend{}, "sekrit", nil, zerolog.Nop())
	s.HandleOperator(a)
	if code := postAction(s, "127.0.0.1:5555", "", "application/json", `{"reason": "x"}`); code != http.StatusUnauthorized {
		t.Fatalf("loopback without the token: %d, want 401", code)
	}
	if code := postAction(s, "10.1.2.3:5555", "sekrit", "application/json", `{"reason": "x"}`); code != http.StatusOK {
		t.Fatalf("with the token: %d, want 200", code)
	}
	if _, page := get(t, s, "/", "sekrit"); !strings.Contains(page, `class="act"`) {
		t.Fatal("the page offers no action buttons to a viewer with the token")
	}
}
