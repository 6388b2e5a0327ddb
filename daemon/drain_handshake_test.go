package daemon_test

import (
	"net"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// TestClientInItsHandshakeWhenTheDaemonStopsIsStillServed: a restart
// closes the listener while a client that connected just before is still in
// its SSH handshake. That client's git command must run: the stock
// pool-resource fails a build on one failed fetch. (gliderlabs' Shutdown
// waits only for connections past their handshake.)
func TestClientInItsHandshakeWhenTheDaemonStopsIsStillServed(t *testing.T) {
	f := newFixture(t)
	s, stop := f.startInProcess(0)
	raw, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	// Accepted, not yet through the handshake: now the daemon stops.
	time.Sleep(200 * time.Millisecond)
	stop()
	time.Sleep(200 * time.Millisecond)
	conn, chans, reqs, err := gossh.NewClientConn(raw, s.addr, &gossh.ClientConfig{
		User:            "git",
		Auth:            []gossh.AuthMethod{gossh.PublicKeys(f.keys["reader"].signer)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(),
	})
	if err != nil {
		t.Fatalf("handshake after the stop began: %v", err)
	}
	c := gossh.NewClient(conn, chans, reqs)
	defer c.Close()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	sess.Stdin = strings.NewReader("0000") // no wants: the fetch ends
	out, err := sess.CombinedOutput("git-upload-pack 'locks.git'")
	if err != nil {
		t.Fatalf("git command of a connection accepted before the stop: %v\n%s", err, out)
	}
	c.Close()
	if err, ok := s.wait(60 * time.Second); !ok || err != nil {
		t.Fatalf("daemon did not stop after the last connection: %v", err)
	}
}
