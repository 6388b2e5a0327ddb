package web

import (
	_ "embed"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/poolgate/poolgate/events"
	"github.com/poolgate/poolgate/pool"
	"github.com/poolgate/poolgate/webhook"
)

//go:embed page.html
var pageHTML string

//go:embed page.js
var pageJS []byte

var pageTmpl = template.Must(template.New("page").Funcs(template.FuncMap{
	"held":    heldFor,
	"ago":     func(t time.Time, now time.Time) string { return heldFor(int64(now.Sub(t).Seconds())) + " ago" },
	"short":   func(s string) string { return s[:min(len(s), 10)] },
	"holder":  holderText,
	"deref":   func(p *int64) int64 { return *p },
	"deref64": func(p *int) int { return *p },
	"usage":   usage,
	"limit":   limitText,
	"safeURL": safeURL,
	"utc":     func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
	"rfc":     func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"derefT":  func(t *time.Time) time.Time { return *t },
	"clip":    clip,
	"since":   func(t, now time.Time) int64 { return int64(now.Sub(t).Seconds()) },
	"waiterHolder": func(w events.Waiter) *Holder {
		return &Holder{User: w.User, BuildURL: w.BuildURL, Team: w.Team, Pipeline: w.Pipeline, Job: w.Job, Build: w.Build}
	},
}).Parse(pageHTML))

// clip cuts s to n runes: the page shows the start of a lock file, the API
// the first KiB. html/template escapes what is left.
func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}

type poolView struct {
	Pool
	History []Event
}

type repoView struct {
	Repo
	Pools      []poolView
	Rejections []Event
}

type pageData struct {
	Now      time.Time
	Repos    []repoView
	Webhooks []Webhook
	Partial  bool
	CanAct   bool // show release/claim buttons (operator.go)
	Cluster  *ClusterView
}

// page renders the status page; ?partial=1 renders only the part that the
// page's script swaps in when it refreshes, so no full reload is needed.
func (s *Server) page(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	d := pageData{Now: s.now(), Partial: r.URL.Query().Get("partial") == "1", CanAct: s.mayAct(r)}
	for _, repo := range s.backend.Repos() {
		pools, err := s.backend.Pools(ctx, repo.Name)
		if err != nil {
			s.pageFail(w, r, err)
			return
		}
		rv := repoView{Repo: repo}
		for _, p := range pools {
			hist, err := s.backend.Events(ctx, repo.Name, Query{Pool: p.Name, Limit: 8})
			if err != nil {
				s.pageFail(w, r, err)
				return
			}
			rv.Pools = append(rv.Pools, poolView{Pool: p, History: hist})
		}
		rej, err := s.backend.Rejections(ctx, repo.Name, 10)
		if err != nil {
			s.pageFail(w, r, err)
			return
		}
		rv.Rejections = rej
		d.Repos = append(d.Repos, rv)
	}
	hooks, err := s.backend.Webhooks(ctx)
	if err != nil {
		s.pageFail(w, r, err)
		return
	}
	d.Webhooks = hooks
	if s.cluster != nil {
		cv := s.cluster(ctx)
		d.Cluster = &cv
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:")
	name := "page"
	if d.Partial {
		name = "content"
	}
	if err := pageTmpl.ExecuteTemplate(w, name, d); err != nil {
		s.log.Error().Err(err).Msg("rendering status page")
	}
}

// wantsHTML is a browser navigating (Accept: text/html), not a script.
func wantsHTML(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}

// loginPage is the 401 a browser gets: how to log in, in words. It names
// the page's own path, never a token.
func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	w.WriteHeader(http.StatusUnauthorized)
	if err := pageTmpl.ExecuteTemplate(w, "login", "http://"+r.Host+"/"); err != nil {
		s.log.Error().Err(err).Msg("rendering the login page")
	}
}

func (s *Server) pageFail(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Error().Err(err).Str("path", r.URL.Path).Msg("status page")
	http.Error(w, "poolgate: the status page could not be built; see the server log", http.StatusInternalServerError)
}

func servePageJS(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	w.Write(pageJS)
}

// heldFor renders seconds as the Slack messages do ("12m", "2h 5m").
func heldFor(sec int64) string {
	return webhook.Human(time.Duration(max(sec, 0)) * time.Second)
}

// holderText is "p/deploy #42" when the build is known, else the user.
func holderText(h *Holder) string {
	if h == nil {
		return ""
	}
	if l := pool.BuildLabel(h.Pipeline, h.Job, h.Build, ""); l != "" {
		return l
	}
	if h.BuildURL != "" {
		return "build"
	}
	return h.User
}

func limitText(p Pool) string {
	if p.MaxClaimed == nil {
		return fmt.Sprintf("%d of %d claimed", p.Claimed, p.Total)
	}
	return fmt.Sprintf("%d of max %d claimed (%d locks)", p.Claimed, *p.MaxClaimed, p.Total)
}

// safeURL lets only http(s) build links through: a commit message is
// pusher-controlled, and a javascript: URL must not become a link.
func safeURL(u string) template.URL {
	if strings.HasPrefix(u, "https://") || strings.HasPrefix(u, "http://") {
		return template.URL(u)
	}
	return ""
}

// usage is the bar's fill: claimed against the limit when there is one,
// else against the pool's size.
func usage(p Pool) int {
	of := p.Total
	if p.MaxClaimed != nil {
		of = *p.MaxClaimed
	}
	return min(100, 100*p.Claimed/max(of, 1))
}
