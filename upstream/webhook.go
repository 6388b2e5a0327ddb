package upstream

import (
	"errors"
	"net/http"

	"github.com/go-playground/webhooks/v6/gitea"
	"github.com/go-playground/webhooks/v6/github"
	"github.com/go-playground/webhooks/v6/gitlab"
	"github.com/rs/zerolog"

	"github.com/poolgate/poolgate/config"
)

// MaxWebhookBody caps an inbound payload. A push payload is a few KiB; the
// cap keeps an unauthenticated sender from making the server buffer more
// (the signature can only be checked after reading the body).
const MaxWebhookBody = 1 << 20

// Handler serves POST /hooks/{provider}/{repo}: a provider's push webhook,
// verified with the repo's secret, triggers a fetch. It answers at once;
// the fetch runs in the watcher.
type Handler struct {
	Watchers map[string]*Watcher // by repo name
	Log      zerolog.Logger
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name, provider := r.PathValue("repo"), r.PathValue("provider")
	wt := h.Watchers[name]
	var up *config.Upstream
	if wt != nil {
		up = wt.repo().Upstream
	}
	if wt == nil || up.Provider != provider {
		http.Error(w, "no watched repo "+name+" for "+provider, http.StatusNotFound)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxWebhookBody)
	log := h.Log.With().Str("repo", name).Str("provider", provider).Logger()
	pusher, ref, ping, err := parse(provider, up.Secret, r)
	switch {
	case errors.Is(err, errIgnored):
		// Other events (issues, releases, …) are no concern of ours; a
		// 2xx keeps the provider from marking the hook as failing.
		w.WriteHeader(http.StatusAccepted)
		w.Write([]byte("ignored\n"))
		return
	case errors.Is(err, errUnauthorized):
		log.Warn().Str("remote", r.RemoteAddr).Msg("inbound webhook with a bad or missing signature refused")
		http.Error(w, "signature verification failed", http.StatusUnauthorized)
		return
	case err != nil:
		log.Warn().Err(err).Msg("inbound webhook not understood")
		http.Error(w, "bad payload", http.StatusBadRequest)
		return
	case ping:
		w.Write([]byte("pong\n"))
		return
	}
	if ref != "refs/heads/"+wt.repo().Branch {
		w.WriteHeader(http.StatusAccepted)
		w.Write([]byte("other branch, ignored\n"))
		return
	}
	wt.Trigger(provider + ":" + pusher)
	log.Info().Str("pusher", pusher).Msg("upstream push announced; fetching")
	w.WriteHeader(http.StatusAccepted)
	w.Write([]byte("fetching\n"))
}

var (
	errIgnored      = errors.New("event ignored")
	errUnauthorized = errors.New("unauthorized")
)

// parse verifies and reads a push (or ping) with the provider's library.
func parse(provider, secret string, r *http.Request) (pusher, ref string, ping bool, err error) {
	var payload any
	switch provider {
	case "github":
		hook, _ := github.New(github.Options.Secret(secret))
		payload, err = hook.Parse(r, github.PushEvent, github.PingEvent)
		switch {
		case errors.Is(err, github.ErrEventNotFound):
			return "", "", false, errIgnored
		case errors.Is(err, github.ErrHMACVerificationFailed), errors.Is(err, github.ErrMissingHubSignatureHeader):
			return "", "", false, errUnauthorized
		}
	case "gitlab":
		hook, _ := gitlab.New(gitlab.Options.Secret(secret))
		payload, err = hook.Parse(r, gitlab.PushEvents)
		switch {
		case errors.Is(err, gitlab.ErrEventNotFound):
			return "", "", false, errIgnored
		case errors.Is(err, gitlab.ErrGitLabTokenVerificationFailed):
			return "", "", false, errUnauthorized
		}
	case "gitea":
		hook, _ := gitea.New(gitea.Options.Secret(secret))
		payload, err = hook.Parse(r, gitea.PushEvent)
		switch {
		case errors.Is(err, gitea.ErrEventNotFound):
			return "", "", false, errIgnored
		case errors.Is(err, gitea.ErrHMACVerificationFailed), errors.Is(err, gitea.ErrMissingGiteaSignatureHeader):
			return "", "", false, errUnauthorized
		}
	}
	if err != nil {
		return "", "", false, err
	}
	switch p := payload.(type) {
	case github.PingPayload:
		return "", "", true, nil
	case github.PushPayload:
		return p.Pusher.Name, p.Ref, false, nil
	case gitlab.PushEventPayload:
		return p.UserUsername, p.Ref, false, nil
	case gitea.PushPayload:
		u := ""
		if p.Pusher != nil {
			u = p.Pusher.UserName
		}
		return u, p.Ref, false, nil
	}
	return "", "", false, errIgnored
}
