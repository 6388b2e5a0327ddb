package daemon

import (
	"context"
	"net"
	"sync"
	"time"
)

// openConns tracks every SSH connection from accept to close. A restart
// must not cut a client that connected just before the listener closed:
// such a connection is still in its SSH handshake, which gliderlabs' own
// Shutdown does not wait for, and its one git command (pool-resource opens
// a connection per command) must still run. The stock client fails a build
// on one failed fetch.
type openConns struct {
	mu    sync.Mutex
	conns map[*countedConn]struct{}
}

// listener counts each connection as Accept returns it, so none is missed
// between accept and the handler starting.
func (o *openConns) listener(ln net.Listener) net.Listener {
	return &countingListener{Listener: ln, o: o}
}

type countingListener struct {
	net.Listener
	o *openConns
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	cc := &countedConn{Conn: c, o: l.o}
	l.o.mu.Lock()
	if l.o.conns == nil {
		l.o.conns = map[*countedConn]struct{}{}
	}
	l.o.conns[cc] = struct{}{}
	l.o.mu.Unlock()
	return cc, nil
}

type countedConn struct {
	net.Conn
	o    *openConns
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.o.mu.Lock()
		delete(c.o.conns, c)
		c.o.mu.Unlock()
	})
	return c.Conn.Close()
}

// wait returns once every accepted connection has closed, or ctx's error.
// Call after the listener is closed (nothing new is accepted).
func (o *openConns) wait(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		o.mu.Lock()
		n := len(o.conns)
		o.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// closeAll closes whatever is still open (past the drain's bound).
func (o *openConns) closeAll() {
	o.mu.Lock()
	var all []*countedConn
	for c := range o.conns {
		all = append(all, c)
	}
	o.mu.Unlock()
	for _, c := range all {
		c.Close()
	}
}
