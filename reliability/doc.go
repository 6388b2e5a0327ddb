// Package reliability holds poolgate's reliability suite: load, restarts,
// crashes, floods and hostile input against the real `poolgate serve`, over
// real ssh and git on loopback. It has no code of its own besides tests.
//
//	go test ./reliability/                                  # CI default, a few minutes
//	POOLGATE_RELIABILITY_LONG=1 go test -timeout 60m ./reliability/   # longer, more clients
//
// Each test prints its figures as "FIGURES name: key=value ..." lines
// (go test -v shows them); RELIABILITY.md records a run.
package reliability
