package cluster_test

import (
	"io"
	"net"
	"net/http"
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
	for i := range bs {
		addr := bs[(int(p.next.Add(1))+i)%len(bs)]
		var err error
		if b, err = net.DialTimeout("tcp", addr, time.Second); err == nil {
			break
		}
	}
	if b == nil {
		return
	}
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
