package web

import (
	"context"
	"net/http"
)

// HandleAPI adds an endpoint of another package (the cluster view) behind
// the same bearer token as the rest of the API. Call before serving.
func (s *Server) HandleAPI(pattern string, h http.Handler) { s.mux.Handle(pattern, s.auth(h)) }

// ClusterView is the page's cluster section: every node's health as the
// node serving the page reads it from etcd.
type ClusterView struct {
	Node      string // the node serving the page
	Pushes    string // "ok", or why this node cannot take pushes
	EtcdError string
	Nodes     []ClusterNode
}

// ClusterNode is one node in the cluster section.
type ClusterNode struct {
	Name, Address     string
	Reachable, Leader bool
	Behind            []string // repos not at the decided tip
}

// SetCluster makes the page show the cluster section (a cluster node).
// Call before serving.
func (s *Server) SetCluster(f func(context.Context) ClusterView) { s.cluster = f }
