package daemon

import (
	"net"
	"os"
	"strings"
	"syscall"
)

// EnvQuickAck set to "off" leaves accepted connections' ACKs to the
// kernel's defaults (for measuring what quickAck is worth).
const EnvQuickAck = "POOLGATE_QUICKACK"

// quickAck wraps an accepted TCP connection so that the kernel acknowledges
// what the client sends at once instead of delaying the ACK (up to 40 ms on
// Linux) in the hope of piggybacking it on a reply.
//
// Why: OpenSSH's client does not set TCP_NODELAY on a non-interactive
// session, so when it writes two messages back to back without a reply in
// between — KEXINIT then KEX_ECDH_INIT, NEWKEYS then SERVICE_REQUEST — Nagle
// holds the second until the first is acknowledged, and the server, with
// nothing to send, delays that ACK. Each such pair stalls a connection for
// ~40 ms of idle time; a no-op fetch had two of them (strace, bench/PROFILE.md).
// TCP_QUICKACK is not sticky, so it is set again after every read.
func quickAck(c net.Conn) net.Conn {
	if strings.EqualFold(os.Getenv(EnvQuickAck), "off") {
		return c
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	q := &quickAckConn{TCPConn: tc, rc: rc}
	q.set()
	return q
}

type quickAckConn struct {
	*net.TCPConn
	rc syscall.RawConn
}

func (c *quickAckConn) Read(p []byte) (int, error) {
	n, err := c.TCPConn.Read(p)
	c.set()
	return n, err
}

func (c *quickAckConn) set() {
	c.rc.Control(func(fd uintptr) { setQuickAck(int(fd)) })
}

// quickAckListener applies quickAck to every connection it accepts.
func quickAckListener(l net.Listener) net.Listener { return quickAckLn{l} }

type quickAckLn struct{ net.Listener }

func (l quickAckLn) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return quickAck(c), nil
}
