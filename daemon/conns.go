package daemon

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"
)

// Admission of SSH connections. A burst waits its turn instead of being
// reset (the stock client fails a build on one failed fetch), and no one
// key can hold the slots every other key needs:
//
//   - ssh.max_sessions slots are held by connections in their handshake and
//     by admitted ones. Past them a new connection waits, before its
//     handshake, up to ssh.queue_timeout.
//   - Once authenticated, a connection is admitted if its key holds fewer
//     than ssh.max_connections_per_key (below max_sessions). Otherwise it
//     gives its slot back and waits for its key's turn (FIFO, up to
//     queue_timeout, at most maxKeyWaiters per key), then takes a slot again.
//   - An admitted connection that opens no session within
//     ssh.session_start_timeout is closed, keepalives or not; one whose
//     sessions move no data for ssh.idle_timeout is closed too. Keepalive
//     requests are not channel traffic and never count as activity.

// maxKeyWaiters bounds the authenticated connections of one key waiting for
// its turn; past it a connection of that key is closed. Far above any
// burst of real builds sharing a key (each asks for its session at once and
// is served in milliseconds), it still bounds what one key's flood costs
// in memory; a flood's sessionless connections go after
// session_start_timeout, waiting or not.
func (s *Server) maxKeyWaiters() int { return 16 * s.cfg.SSH.MaxSessions }

type connStateKey struct{}

// connState follows one connection from accept to close.
type connState struct {
	s      *Server
	c      net.Conn
	remote string

	mu         sync.Mutex
	holdsSlot  bool
	releaseKey func()
	closed     bool

	done       chan struct{} // closed when the connection closes
	admitted   chan struct{} // closed once admitted
	authOnce   sync.Once
	hadSession atomic.Bool
	last       atomic.Int64 // unix nanos of the last channel activity
}

var errQueueTimeout = errors.New("waited too long for a slot")

// takeSlot waits for one of the max_sessions slots.
func (st *connState) takeSlot() error {
	t := time.NewTimer(st.s.conf().SSH.QueueTimeout.D())
	defer t.Stop()
	select {
	case st.s.sessions <- struct{}{}:
	case <-t.C:
		return errQueueTimeout
	case <-st.done:
		return net.ErrClosed
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		<-st.s.sessions
		return net.ErrClosed
	}
	st.holdsSlot = true
	return nil
}

func (st *connState) giveSlot() {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.holdsSlot {
		st.holdsSlot = false
		<-st.s.sessions
	}
}

// admitConn is the ConnCallback: the connection waits for a slot, then
// has ssh.handshake_timeout to authenticate.
func (s *Server) admitConn(ctx ssh.Context, c net.Conn) net.Conn {
	st := &connState{s: s, c: c, remote: c.RemoteAddr().String(), done: make(chan struct{}), admitted: make(chan struct{})}
	start := time.Now()
	if err := st.takeSlot(); err != nil {
		s.log.Warn().Str("remote", st.remote).Int("max_sessions", s.cfg.SSH.MaxSessions).Dur("waited", time.Since(start)).Msg("connection closed: no slot free in ssh.queue_timeout")
		return nil
	}
	if w := time.Since(start); w > 100*time.Millisecond {
		s.log.Debug().Str("remote", st.remote).Dur("waited", w).Msg("connection waited for a slot")
	}
	ctx.SetValue(connStateKey{}, st)
	s.handshakeDeadline(ctx, c)
	return &stateConn{Conn: c, st: st}
}

func connStateOf(ctx ssh.Context) *connState {
	st, _ := ctx.Value(connStateKey{}).(*connState)
	return st
}

// authenticated runs once x/crypto has accepted a key (AuthLogCallback),
// just before the handshake returns: it waits for gliderlabs to attach the
// connection, whose Permissions name the key that signed, then admits it.
func (st *connState) authenticated(ctx ssh.Context) {
	st.authOnce.Do(func() {
		st.watchSessionStart()
		go st.admit(ctx)
	})
}

func (st *connState) admit(ctx ssh.Context) {
	s := st.s
	deadline := time.Now().Add(s.conf().SSH.HandshakeTimeout.D())
	var id identity
	for wait := 100 * time.Microsecond; ; wait = min(2*wait, 20*time.Millisecond) {
		var ok bool
		if id, ok = s.identityOf(ctx); ok {
			break
		}
		if time.Now().After(deadline) {
			// Authenticated, yet no identity (its user removed by a
			// reload meanwhile): never admitted, so closed.
			st.c.Close()
			return
		}
		select {
		case <-st.done:
			return
		case <-time.After(wait):
		}
	}
	lc := s.conf()
	limit := lc.SSH.MaxConnectionsPerKey
	release, waited, err := s.keyConns.acquire(id.key, limit, s.maxKeyWaiters(), lc.SSH.QueueTimeout.D(), st.done, st.giveSlot)
	if err == nil && waited {
		// Its slot went back while it waited for its key's turn.
		if err = st.takeSlot(); err != nil {
			release()
		}
	}
	if err != nil {
		if !errors.Is(err, net.ErrClosed) {
			s.log.Warn().Str("remote", st.remote).Str("user", id.user.Name).Str("key", id.key).Int("max_connections_per_key", limit).
				Str("reason", err.Error()).Msg("connection closed: its key has too many connections")
		}
		st.c.Close()
		return
	}
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		release()
		return
	}
	st.releaseKey = release
	st.mu.Unlock()
	st.touch()
	close(st.admitted)
	st.watchIdle()
}

// watchSessionStart closes the connection if it has not opened a session
// within session_start_timeout of authenticating: admitted or still waiting
// for its key's turn, a connection that never asks for anything goes.
func (st *connState) watchSessionStart() {
	d := st.s.conf().SSH.SessionStartTimeout.D()
	time.AfterFunc(d, func() {
		if st.hadSession.Load() || st.isClosed() {
			return
		}
		st.s.log.Info().Str("remote", st.remote).Dur("session_start_timeout", d).Msg("connection closed: no session opened in time")
		st.c.Close()
	})
}

// watchIdle closes the connection once its channels have moved nothing for
// idle_timeout.
func (st *connState) watchIdle() {
	idle := st.s.cfg.SSH.IdleTimeout.D()
	var mu sync.Mutex // orders the assignment of t before its first use
	var t *time.Timer
	mu.Lock()
	defer mu.Unlock()
	t = time.AfterFunc(idle, func() {
		if st.isClosed() {
			return
		}
		since := time.Since(time.Unix(0, st.last.Load()))
		if since >= idle {
			st.s.log.Info().Str("remote", st.remote).Dur("idle_timeout", idle).Msg("connection closed: idle")
			st.c.Close()
			return
		}
		mu.Lock()
		defer mu.Unlock()
		t.Reset(idle - since)
	})
}

func (st *connState) isClosed() bool {
	select {
	case <-st.done:
		return true
	default:
		return false
	}
}

func (st *connState) touch() { st.last.Store(time.Now().UnixNano()) }

// closeState gives back the slot and the key's turn, once.
func (st *connState) closeState() {
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return
	}
	st.closed = true
	close(st.done)
	rk := st.releaseKey
	st.mu.Unlock()
	st.giveSlot()
	if rk != nil {
		rk()
	}
}

type stateConn struct {
	net.Conn
	st *connState
}

func (c *stateConn) Close() error {
	err := c.Conn.Close()
	c.st.closeState()
	return err
}

// sessionChannel opens a session once the connection is admitted, and
// counts it as channel activity.
func (s *Server) sessionChannel(srv *ssh.Server, conn *gossh.ServerConn, ch gossh.NewChannel, ctx ssh.Context) {
	st := connStateOf(ctx)
	if st == nil {
		ch.Reject(gossh.ResourceShortage, "poolgate: connection not admitted")
		return
	}
	// Asked for: the connection is no longer sessionless, even while it
	// waits for its key's turn.
	st.hadSession.Store(true)
	select {
	case <-st.admitted:
	case <-st.done:
		return
	}
	st.touch()
	defer st.touch()
	ssh.DefaultSessionHandler(srv, conn, ch, ctx)
}

// activeSession notes every byte a session moves as activity, so
// idle_timeout counts channel traffic and nothing else.
type activeSession struct {
	ssh.Session
	st *connState
}

func (a activeSession) Read(p []byte) (int, error) {
	n, err := a.Session.Read(p)
	a.st.touch()
	return n, err
}

func (a activeSession) Write(p []byte) (int, error) {
	a.st.touch()
	return a.Session.Write(p)
}

func (a activeSession) Stderr() io.ReadWriter { return activeRW{a.Session.Stderr(), a.st} }

type activeRW struct {
	io.ReadWriter
	st *connState
}

func (a activeRW) Write(p []byte) (int, error) {
	a.st.touch()
	return a.ReadWriter.Write(p)
}

// keyQueue counts one key's admitted connections and queues the rest.
type keyConns struct {
	mu sync.Mutex
	m  map[string]*keyQueue
}

type keyQueue struct {
	n       int
	waiters []chan struct{}
}

// acquire takes one of key's limit turns, waiting (FIFO) up to timeout
// behind at most maxWaiters others; before waiting it calls yield (the
// waiter gives back its max_sessions slot). waited says it did wait.
func (k *keyConns) acquire(key string, limit, maxWaiters int, timeout time.Duration, done <-chan struct{}, yield func()) (release func(), waited bool, err error) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyQueue{}
	}
	q := k.m[key]
	if q == nil {
		q = &keyQueue{}
		k.m[key] = q
	}
	release = func() { k.release(key) }
	if q.n < limit && len(q.waiters) == 0 {
		q.n++
		k.mu.Unlock()
		return release, false, nil
	}
	if len(q.waiters) >= maxWaiters {
		k.mu.Unlock()
		return nil, false, errors.New("too many connections of this key waiting")
	}
	turn := make(chan struct{})
	q.waiters = append(q.waiters, turn)
	k.mu.Unlock()
	yield()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-turn:
		return release, true, nil
	case <-t.C:
		err = errQueueTimeout
	case <-done:
		err = net.ErrClosed
	}
	k.mu.Lock()
	for i, w := range q.waiters {
		if w == turn {
			q.waiters = append(q.waiters[:i], q.waiters[i+1:]...)
			k.mu.Unlock()
			return nil, true, err
		}
	}
	k.mu.Unlock()
	// The turn was handed over just as the wait ended: pass it on.
	release()
	return nil, true, err
}

func (k *keyConns) release(key string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	q := k.m[key]
	if len(q.waiters) > 0 {
		// The turn passes straight to the next in line: n stays.
		close(q.waiters[0])
		q.waiters = q.waiters[1:]
		return
	}
	if q.n--; q.n <= 0 {
		delete(k.m, key)
	}
}
