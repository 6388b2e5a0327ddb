package web

import "net/http"

// HandleAPI adds an endpoint of another package (the cluster view) behind
// the same bearer token as the rest of the API. Call before serving.
func (s *Server) HandleAPI(pattern string, h http.Handler) { s.mux.Handle(pattern, s.auth(h)) }
