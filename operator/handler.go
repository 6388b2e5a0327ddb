package operator

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
)

// Actor performs actions: the daemon (Server.Operate).
type Actor interface {
	Operate(ctx context.Context, a Action) (Result, error)
}

// Pattern is the API path of an action (DESIGN.md §10). A nested pool is
// one escaped segment: team-a%2Fstaging.
const Pattern = "POST /api/v1/repos/{repo}/pools/{pool}/locks/{lock}/{action}"

// Request is the body of an action request.
type Request struct {
	Reason string `json:"reason"`
	// Commit is the commit the operator saw (the lock's or the tip); the
	// action is refused (409) if the lock changed after it. Optional.
	Commit string `json:"commit,omitempty"`
	// Operator is a name the caller gives itself on the HTTP API (the
	// token says only that the caller may act, not who it is); recorded
	// as "NAME (http)". The socket ignores it: the OS says who connects.
	Operator string `json:"operator,omitempty"`
}

// Response answers a done action.
type Response struct {
	Repo   string `json:"repo"`
	Pool   string `json:"pool"`
	Lock   string `json:"lock"`
	Action string `json:"action"`
	Result
}

// ErrorResponse answers a refused one.
type ErrorResponse struct {
	Error string   `json:"error"`
	Rules []string `json:"rules,omitempty"`
}

// Handler serves Pattern. who names the operator of a request; it returns
// "" to refuse the request as unauthenticated (401).
func Handler(a Actor, who func(r *http.Request, claimed string) string, onErr func(error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Security: a JSON content type is what keeps a cross-site form
		// post (which cannot set it without a CORS preflight) out.
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
			writeJSON(w, http.StatusUnsupportedMediaType, ErrorResponse{Error: "send the request as Content-Type: application/json"})
			return
		}
		var req Request
		dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, ErrorResponse{Error: "the body must be JSON {\"reason\": \"...\", \"commit\": \"...\"}"})
			return
		}
		name := who(r, req.Operator)
		if name == "" {
			writeJSON(w, http.StatusUnauthorized, ErrorResponse{Error: "not allowed to act"})
			return
		}
		act := Action{Repo: r.PathValue("repo"), Pool: r.PathValue("pool"), Lock: r.PathValue("lock"),
			Verb: Verb(r.PathValue("action")), Reason: req.Reason, Commit: req.Commit, Operator: name}
		res, err := a.Operate(r.Context(), act)
		if err != nil {
			if ref, ok := AsRefusal(err); ok {
				writeJSON(w, statusOf(ref.Code), ErrorResponse{Error: ref.Msg, Rules: ref.Rules})
				return
			}
			if !errors.Is(err, context.Canceled) && onErr != nil {
				onErr(err)
			}
			writeJSON(w, http.StatusInternalServerError, ErrorResponse{Error: "internal error"})
			return
		}
		writeJSON(w, http.StatusOK, Response{Repo: act.Repo, Pool: act.Pool, Lock: act.Lock, Action: string(act.Verb), Result: res})
	})
}

func statusOf(c Code) int {
	switch c {
	case Invalid:
		return http.StatusBadRequest
	case NotFound:
		return http.StatusNotFound
	case Conflict, Rejected:
		return http.StatusConflict
	case Busy:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
