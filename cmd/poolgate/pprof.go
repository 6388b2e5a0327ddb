package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
)

// EnvPprof, set to a loopback address such as 127.0.0.1:6060, makes
// `poolgate serve` answer Go's pprof endpoints there (/debug/pprof/...), for
// profiling the daemon under load (bench/PROFILE.md). Off by default, and
// never on anything but loopback: profiles show internals.
const EnvPprof = "POOLGATE_PPROF"

func init() {
	addr := os.Getenv(EnvPprof)
	if addr == "" || len(os.Args) < 2 || os.Args[1] != "serve" {
		return
	}
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		fmt.Fprintf(os.Stderr, "poolgate serve: %s=%q ignored: want a loopback address such as 127.0.0.1:6060\n", EnvPprof, addr)
		return
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "poolgate serve: %s: %v\n", EnvPprof, err)
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	go http.Serve(ln, mux)
}
