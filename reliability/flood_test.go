package reliability

import (
	"context"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// Floods: 200 connections that never finish the SSH handshake and 50 that
// open a session and stall, while a normal client keeps claiming and
// releasing. The client must succeed; its step times are reported, not
// asserted. The stalled handshakes must be cut by ssh.handshake_timeout.
func TestFloodOfStalledHandshakesAndSessionsDoesNotStopAClient(t *testing.T) {
	e := newEnv(t)
	e.SSH = "  handshake_timeout: 5s\n"
	e.writeConfig()
	pid := e.start()
	rssBefore := rssKB(pid)

	// 200 that connect and never send a byte, and more that send a banner
	// and stop half-way through the key exchange.
	var mu sync.Mutex
	var stalled []net.Conn
	for i := 0; i < 200; i++ {
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatalf("flood connection %d: %v", i, err)
		}
		if i%2 == 1 {
			c.Write([]byte("SSH-2.0-flood\r\n"))
		}
		stalled = append(stalled, c)
	}
	t.Cleanup(func() {
		for _, c := range stalled {
			c.Close()
		}
	})
	// 50 authenticated sessions that start upload-pack and never read.
	var sessions []*gossh.Client
	for i := 0; i < 50; i++ {
		c, err := e.dial("flood")
		if err != nil {
			t.Fatalf("stalled session %d: dial: %v", i, err)
		}
		s, err := c.NewSession()
		if err != nil {
			t.Fatalf("stalled session %d: %v", i, err)
		}
		// Stdin held open and never written, stdout never read.
		if _, err := s.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.StdoutPipe(); err != nil {
			t.Fatal(err)
		}
		if err := s.Start("git-upload-pack 'locks.git'"); err != nil {
			t.Fatalf("stalled session %d: %v", i, err)
		}
		sessions = append(sessions, c)
	}
	t.Cleanup(func() {
		for _, c := range sessions {
			c.Close()
		}
	})

	// The normal client, meanwhile.
	c := e.client("writer", "normal")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var times []time.Duration
	start := time.Now()
	if err := c.Clone(ctx); err != nil {
		t.Fatalf("clone during the flood: %v", err)
	}
	times = append(times, time.Since(start))
	cycles := 5
	if long {
		cycles = 50
	}
	for i := 0; i < cycles; i++ {
		st := time.Now()
		name, err := c.Acquire(ctx)
		if err != nil {
			t.Fatalf("acquire %d during the flood: %v", i, err)
		}
		times = append(times, time.Since(st))
		st = time.Now()
		if err := c.Release(ctx, name); err != nil {
			t.Fatalf("release %d during the flood: %v", i, err)
		}
		times = append(times, time.Since(st))
	}
	if st := c.Stats(); st.Unexpected > 0 {
		t.Errorf("%d pushes failed unexpectedly during the flood: %s", st.Unexpected, st.LastPush)
	}

	// Every stalled handshake is cut by the server (liveness, not timing:
	// the bound is only there so a regression fails instead of hanging).
	cut := 0
	var wg sync.WaitGroup
	for _, sc := range stalled {
		wg.Add(1)
		go func(sc net.Conn) {
			defer wg.Done()
			sc.SetReadDeadline(time.Now().Add(2 * time.Minute))
			_, err := io.Copy(io.Discard, sc)
			if err == nil { // EOF: the server closed it
				mu.Lock()
				cut++
				mu.Unlock()
			}
		}(sc)
	}
	wg.Wait()
	if cut != len(stalled) {
		t.Errorf("%d of %d stalled handshakes were cut by the server", cut, len(stalled))
	}
	logged := func() int { return len(e.logs.find("connection cut: no SSH handshake in time")) }
	for i := 0; i < 100 && logged() < len(stalled); i++ {
		time.Sleep(100 * time.Millisecond) // the log pipe is read asynchronously
	}
	if n := logged(); n < len(stalled) {
		t.Errorf("%d handshake timeouts logged, want %d", n, len(stalled))
	}
	if err := e.serving(); err != nil {
		t.Errorf("daemon not serving after the flood: %v", err)
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	var ts []string
	for _, d := range times {
		ts = append(ts, d.Round(time.Millisecond).String())
	}
	figures(t, "flood", "stalled_handshakes", len(stalled), "stalled_sessions", len(sessions), "client_cycles", cycles,
		"client_step_times_sorted", "["+strings.Join(ts, ",")+"]", "handshakes_cut", cut,
		"daemon_rss_kib_before", rssBefore, "daemon_rss_kib_during", rssKB(pid))
}

// A key may run at most ssh.max_sessions_per_key git commands at once; the
// next gets a one-line refusal, and other keys are unaffected.
func TestOneKeyCannotTakeEverySession(t *testing.T) {
	e := newEnv(t)
	e.SSH = "  max_sessions_per_key: 3\n"
	e.writeConfig()
	e.start()
	var clients []*gossh.Client
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for i := 0; i < 3; i++ {
		c, err := e.dial("flood")
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.StdinPipe(); err != nil { // held open: the command waits
			t.Fatal(err)
		}
		if err := s.Start("git-upload-pack 'locks.git'"); err != nil {
			t.Fatal(err)
		}
	}
	// The three sessions above are running once their advertisement is
	// out; wait until the daemon counts them by trying until refused.
	var stderr string
	var code int
	for try := 0; try < 100; try++ {
		var err error
		stderr, code, err = e.execRaw("flood", "git-upload-pack 'locks.git'")
		if err != nil {
			t.Fatal(err)
		}
		if code != 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code != 1 || !strings.Contains(stderr, "too many sessions for this key") {
		t.Fatalf("fourth session of one key: exit %d, %q", code, stderr)
	}
	if err := e.serving(); err != nil {
		t.Errorf("another key is refused too: %v", err)
	}
}
