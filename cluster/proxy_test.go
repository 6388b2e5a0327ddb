package cluster_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tcpProxy is the test's load balancer and firewall: it spreads
// connections over backends (skipping those whose health check fails, as
// HAProxy would), and can cut every connection on purpose.
type tcpProxy struct {
	ln       net.Listener
	backends func() []string
	next     atomic.Uint64
	mu       sync.Mutex
	conns    map[net.Conn]bool
	cut      bool
	// opened is every connection passed to a backend, kept so a test can
	// tell which of its clients' connections a killed node cut.
	opened []*passed
}

// passed is one connection the proxy passed to a backend.
type passed struct {
	backend    string
	start, end time.Time // end: zero while open
}

// cutBy counts the connections to backend that were open at some moment
// in [from, to): those a backend killed at from and back at to dropped
// (a connection made while it was dead fails to dial and goes elsewhere).
func (p *tcpProxy) cutBy(backend string, from, to time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.opened {
		if c.backend == backend && c.start.Before(to) && (c.end.IsZero() || !c.end.Before(from)) {
			n++
		}
	}
	return n
}

func newProxy(t testing.TB, addr string, backends func() []string) *tcpProxy {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, backends: backends, conns: map[net.Conn]bool{}}
	go p.accept()
	t.Cleanup(func() { ln.Close(); p.setCut(true) })
	return p
}

func (p *tcpProxy) addr() string { return p.ln.Addr().String() }

// setCut drops every connection and refuses new ones while on.
func (p *tcpProxy) setCut(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = on
	if on {
		for c := range p.conns {
			c.Close()
		}
	}
}

// around lists the connections passed on within d of at (a failing
// test's explanation of which backend a client was talking to).
func (p *tcpProxy) around(at time.Time, d time.Duration) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	for _, c := range p.opened {
		if c.start.After(at.Add(d)) || (!c.end.IsZero() && c.end.Before(at.Add(-d))) {
			continue
		}
		end := "open"
		if !c.end.IsZero() {
			end = c.end.Sub(at).String()
		}
		fmt.Fprintf(&b, "  to %s from %s to %s (relative to the error)\n", c.backend, c.start.Sub(at), end)
	}
	return b.String()
}

func (p *tcpProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return false
	}
	p.conns[c] = true
	return true
}

func (p *tcpProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *tcpProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.handle(c)
	}
}

func (p *tcpProxy) handle(c net.Conn) {
	if !p.track(c) {
		c.Close()
		return
	}
	defer p.untrack(c)
	bs := p.backends()
	var b net.Conn
	var addr string
	for i := range bs {
		addr = bs[(int(p.next.Add(1))+i)%len(bs)]
		var err error
		if b, err = net.DialTimeout("tcp", addr, time.Second); err == nil {
			break
		}
	}
	if b == nil {
		return
	}
	rec := &passed{backend: addr, start: time.Now()}
	p.mu.Lock()
	p.opened = append(p.opened, rec)
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		rec.end = time.Now()
		p.mu.Unlock()
	}()
	if !p.track(b) {
		b.Close()
		return
	}
	defer p.untrack(b)
	done := make(chan struct{}, 2)
	go func() { io.Copy(b, c); done <- struct{}{} }()
	go func() { io.Copy(c, b); done <- struct{}{} }()
	<-done
}

// pushHealthy is the subset of nodes whose /healthz/push says ok.
func pushHealthy(nodes []*node) []string {
	cli := http.Client{Timeout: 500 * time.Millisecond}
	var out []string
	for _, n := range nodes {
		resp, err := cli.Get("http://" + n.httpAddr + "/healthz/push")
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			out = append(out, n.sshAddr)
		}
	}
	return out
}
