package web

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/events"
	"github.com/rs/zerolog"
)

// Server is the HTTP handler.
type Server struct {
	backend Backend
	token   string
	metrics http.Handler
	log     zerolog.Logger
	now     func() time.Time
	mux     *http.ServeMux
	canAct  bool                              // operator actions are served (operator.go)
	cluster func(context.Context) ClusterView // extend.go; nil: one node
}

// New builds the handler. token "" leaves everything open; metrics may be nil.
func New(b Backend, token string, metrics http.Handler, log zerolog.Logger) *Server {
	s := &Server{backend: b, token: token, metrics: metrics, log: log, now: time.Now, mux: http.NewServeMux()}
	// /healthz is the daemon's (daemon.Server): it knows the disk's state.
	if metrics != nil {
		s.mux.Handle("GET /metrics", s.auth(metrics))
	}
	s.mux.Handle("GET /api/v1/repos", s.auth(http.HandlerFunc(s.apiRepos)))
	s.mux.Handle("GET /api/v1/repos/{repo}/pools", s.auth(s.repoAPI(s.apiPools)))
	s.mux.Handle("GET /api/v1/repos/{repo}/events", s.auth(s.repoAPI(s.apiEvents)))
	s.mux.Handle("GET /api/v1/repos/{repo}/rejections", s.auth(s.repoAPI(s.apiRejections)))
	s.mux.Handle("GET /api/v1/webhooks", s.auth(http.HandlerFunc(s.apiWebhooks)))
	s.mux.Handle("GET /{$}", s.auth(http.HandlerFunc(s.page)))
	s.mux.HandleFunc("GET /static/page.js", servePageJS)
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "no-referrer")
	s.mux.ServeHTTP(w, r)
}

const tokenCookie = "poolgate_token"

// auth requires the bearer token when one is configured. A browser cannot
// send a header on navigation, so /?token=T sets an HttpOnly cookie once and
// redirects to a URL without the token.
func (s *Server) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.token == "" {
			next.ServeHTTP(w, r)
			return
		}
		if t := r.URL.Query().Get("token"); t != "" && r.URL.Path == "/" && s.tokenOK(t) {
			http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: t, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
			http.Redirect(w, r, "/", http.StatusSeeOther)
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			if c, err := r.Cookie(tokenCookie); err == nil {
				got, ok = c.Value, true
			}
		}
		if !ok || !s.tokenOK(got) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="poolgate"`)
			if wantsHTML(r) {
				s.loginPage(w, r)
				return
			}
			writeJSON(w, http.StatusUnauthorized, apiError{Error: "missing or wrong bearer token"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// tokenOK compares in constant time so the token cannot be guessed byte by byte.
func (s *Server) tokenOK(t string) bool {
	return subtle.ConstantTimeCompare([]byte(t), []byte(s.token)) == 1
}

type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// fail maps backend errors to answers: users see a short reason, the log
// gets the detail.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, ErrUnknownRepo) {
		writeJSON(w, http.StatusNotFound, apiError{Error: "no such repo"})
		return
	}
	if errors.Is(err, context.Canceled) {
		return
	}
	s.log.Error().Err(err).Str("path", r.URL.Path).Msg("http")
	writeJSON(w, http.StatusInternalServerError, apiError{Error: "internal error"})
}

func (s *Server) apiRepos(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"repos": s.backend.Repos()})
}

func (s *Server) knownRepo(name string) bool {
	for _, r := range s.backend.Repos() {
		if r.Name == name {
			return true
		}
	}
	return false
}

// repoAPI resolves {repo} and ?limit= for the per-repo endpoints, so each
// answers 404 and 400 the same way.
func (s *Server) repoAPI(h func(w http.ResponseWriter, r *http.Request, repo string, limit int) (any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		repo := r.PathValue("repo")
		if !s.knownRepo(repo) {
			s.fail(w, r, ErrUnknownRepo)
			return
		}
		n, err := limit(r)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{Error: err.Error()})
			return
		}
		v, err := h(w, r, repo, n)
		if errors.Is(err, errBadRequest) {
			writeJSON(w, http.StatusBadRequest, apiError{Error: strings.TrimPrefix(err.Error(), errBadRequest.Error()+": ")})
			return
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, v)
	})
}

var errBadRequest = errors.New("bad request")

func (s *Server) apiPools(w http.ResponseWriter, r *http.Request, repo string, _ int) (any, error) {
	pools, err := s.backend.Pools(r.Context(), repo)
	return map[string]any{"repo": repo, "pools": pools}, err
}

const (
	defaultLimit = 100
	maxLimit     = 1000
)

// limit reads ?limit=, refusing nonsense instead of guessing.
func limit(r *http.Request) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return defaultLimit, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, errors.New("limit must be a positive integer")
	}
	return min(n, maxLimit), nil
}

func (s *Server) apiEvents(w http.ResponseWriter, r *http.Request, repo string, n int) (any, error) {
	q := Query{Pool: r.URL.Query().Get("pool"), Lock: r.URL.Query().Get("lock"), Type: r.URL.Query().Get("type"), Limit: n}
	if q.Type != "" && !knownType(q.Type) {
		return nil, fmt.Errorf("%w: unknown event type %q", errBadRequest, q.Type)
	}
	evs, err := s.backend.Events(r.Context(), repo, q)
	return map[string]any{"repo": repo, "events": nonNil(evs)}, err
}

func knownType(t string) bool {
	return slices.Contains(config.EventTypes, events.TypeOfWebhookType(t))
}

func (s *Server) apiRejections(w http.ResponseWriter, r *http.Request, repo string, n int) (any, error) {
	evs, err := s.backend.Rejections(r.Context(), repo, n)
	return map[string]any{"repo": repo, "rejections": nonNil(evs)}, err
}

func (s *Server) apiWebhooks(w http.ResponseWriter, r *http.Request) {
	hs, err := s.backend.Webhooks(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if hs == nil {
		hs = []Webhook{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"webhooks": hs})
}

func nonNil(evs []Event) []Event {
	if evs == nil {
		return []Event{}
	}
	return evs
}
