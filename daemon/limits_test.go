package daemon_test

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// Slowloris: a client that connects and never finishes the SSH handshake
// is cut after ssh.handshake_timeout (in-process, under the race detector).
func TestStalledHandshakeIsCut(t *testing.T) {
	f := newFixture(t)
	f.ssh += "  handshake_timeout: 1s\n"
	f.writeConfig()
	s, _ := f.startInProcess(0)
	for _, hello := range []string{"", "SSH-2.0-stall\r\n"} {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(hello))
		c.SetReadDeadline(time.Now().Add(60 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Errorf("stalled handshake (sent %q) not cut by the server: %v", hello, err)
		}
		c.Close()
	}
	if !strings.Contains(s.logs.String(), "connection cut: no SSH handshake in time") {
		t.Error("no log line for the cut")
	}
	// A normal connection after the cuts works, and is not cut once in.
	c := s.dial(t, gossh.PublicKeys(f.keys["reader"].signer))
	time.Sleep(1500 * time.Millisecond)
	if _, _, err := c.SendRequest("keepalive@openssh.com", true, nil); err != nil {
		t.Errorf("an authenticated connection was cut: %v", err)
	}
}

// A push bigger than limits.max_push_bytes is refused as an error (not a
// rejection the stock client would retry forever) and lands nothing.
func TestPushOverMaxPushBytesIsRefused(t *testing.T) {
	f := newFixture(t)
	// The pools YAML ends the file, so a top-level key can follow it.
	f.pools += "\nlimits:\n  max_push_bytes: 300"
	f.writeConfig()
	s, _ := f.startInProcess(0)
	c := s.client("writer", "big")
	ctx := ctxT(t, 2*time.Minute)
	if err := c.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	before := f.bareGit("rev-parse", "master")
	err := c.Add(ctx, "big", []byte(strings.Repeat("incompressible? no, but over 300 bytes anyway ", 40)), false)
	if err == nil {
		t.Fatal("push over max_push_bytes accepted")
	}
	if st := c.Stats(); !strings.Contains(st.LastPush, "max_push_bytes") || strings.Contains(st.LastPush, "[remote rejected]") {
		t.Errorf("push output:\n%s", st.LastPush)
	}
	if f.bareGit("rev-parse", "master") != before {
		t.Error("master moved")
	}
}
