package daemon

import (
	"net"
	"sync"
	"time"

	"github.com/gliderlabs/ssh"
)

// Limits that protect the server from slow, greedy or hostile clients.
// Each has a config key and a default (config package, SECURITY.md).

// handshakeDeadline cuts a connection that has not finished the SSH
// handshake and public-key authentication within ssh.handshake_timeout.
// Such connections hold a max_sessions slot; without this, a few hundred
// that connect and say nothing would hold every slot for idle_timeout.
func (s *Server) handshakeDeadline(ctx ssh.Context, c net.Conn) {
	d := s.conf().SSH.HandshakeTimeout.D()
	time.AfterFunc(d, func() {
		// gliderlabs sets the connection on the context once the handshake
		// (authentication included) has succeeded.
		if ctx.Value(ssh.ContextKeyConn) == nil {
			s.log.Info().Str("remote", c.RemoteAddr().String()).Dur("handshake_timeout", d).Msg("connection cut: no SSH handshake in time")
			c.Close()
		}
	})
}

// keySessions counts running sessions per client key
// (ssh.max_sessions_per_key), so one key cannot take every slot.
type keySessions struct {
	mu sync.Mutex
	n  map[string]int
}

func (k *keySessions) acquire(key string, max int) (release func(), ok bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.n == nil {
		k.n = map[string]int{}
	}
	if max > 0 && k.n[key] >= max {
		return nil, false
	}
	k.n[key]++
	return func() {
		k.mu.Lock()
		defer k.mu.Unlock()
		if k.n[key]--; k.n[key] <= 0 {
			delete(k.n, key)
		}
	}, true
}
