package web

import (
	"net"
	"net/http"
	"net/netip"

	"github.com/poolgate/poolgate/operator"
)

// HandleOperator serves the operator actions (operator.Pattern, DESIGN.md
// §10) with a, and turns on the page's release and claim buttons.
//
// Security: with http.token set, the token (header or the page's cookie)
// is required, as for every other path. Without a token only a request
// from this machine (loopback) may act: the read-only page may be open to
// a network, an action must never be. The handler itself requires a JSON
// body, which a cross-site form cannot send.
func (s *Server) HandleOperator(a operator.Actor) {
	s.canAct = true
	h := operator.Handler(a, s.operatorName, func(err error) { s.log.Error().Err(err).Msg("operator action") })
	s.mux.Handle(operator.Pattern, s.auth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.mayAct(r) {
			writeJSON(w, http.StatusForbidden, apiError{Error: "operator actions over HTTP need http.token set, or a request from this machine"})
			return
		}
		h.ServeHTTP(w, r)
	})))
}

// mayAct: past auth, a request may act if a token proved it, or, with no
// token configured, if it comes from loopback.
func (s *Server) mayAct(r *http.Request) bool {
	if !s.canAct {
		return false
	}
	if s.token != "" {
		return true // auth has checked it
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// operatorName is who the audit names: the token says only that the caller
// may act, so a name the caller gives is recorded as its own claim.
func (s *Server) operatorName(_ *http.Request, claimed string) string {
	if claimed != "" {
		return claimed + " (http)"
	}
	return "http"
}
