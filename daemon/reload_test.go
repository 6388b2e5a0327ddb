package daemon_test

import (
	"context"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/daemon"
	"github.com/rs/zerolog"
	gossh "golang.org/x/crypto/ssh"
)

// TestReloadWhileServingSwapsUsersAtomically: SIGHUP's Reload runs while
// sessions authenticate and run git (in-process, under the race detector).
// A user in both configs is never refused; a user added by a reload can log
// in right after it; an invalid file changes nothing.
func TestReloadWhileServingSwapsUsersAtomically(t *testing.T) {
	f := newFixture(t)
	f.writeConfig()
	base, err := os.ReadFile(f.cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	newcomer := newKey(t, f.dir, "newcomer")
	withNewcomer := strings.Replace(string(base), "users:\n", "users:\n  - name: newcomer\n    role: read\n    keys: ["+strconv.Quote(newcomer.public)+"]\n", 1)

	cfg, err := config.Load(f.cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	srv, err := daemon.New(cfg, zerolog.New(logs), binPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	if err := srv.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, nil) }()
	defer func() {
		stop()
		<-done
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	}()
	s := &server{t: t, f: f, addr: ln.Addr().String(), port: strconv.Itoa(ln.Addr().(*net.TCPAddr).Port), logs: logs}

	var wg sync.WaitGroup
	stopLoad := make(chan struct{})
	var failed sync.Map
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stopLoad:
					return
				default:
				}
				if out, code, err := s.execOut(f.keys["reader"].signer, "git-upload-pack 'locks.git'"); err != nil || code != 0 {
					failed.Store(i, out)
				}
			}
		}()
	}
	for i := range 20 {
		content := base
		switch i % 3 {
		case 1:
			content = []byte(withNewcomer)
		case 2:
			content = []byte("users: [\n") // invalid: refused, the running config stays
		}
		if err := os.WriteFile(f.cfgFile, content, 0o644); err != nil {
			t.Fatal(err)
		}
		err := srv.Reload()
		if (i%3 == 2) != (err != nil) {
			t.Errorf("reload %d: %v", i, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stopLoad)
	wg.Wait()
	failed.Range(func(k, v any) bool {
		t.Errorf("a user present in every config was refused during reloads: %v", v)
		return false
	})
	// The last good reload (i=19, 19%3==1) added the newcomer.
	c, err := gossh.Dial("tcp", s.addr, &gossh.ClientConfig{User: "git",
		Auth:            []gossh.AuthMethod{gossh.PublicKeys(newcomer.signer)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(), Timeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("user added by reload cannot log in: %v", err)
	}
	c.Close()
	os.WriteFile(f.cfgFile, base, 0o644)
	if err := srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := gossh.Dial("tcp", s.addr, &gossh.ClientConfig{User: "git",
		Auth:            []gossh.AuthMethod{gossh.PublicKeys(newcomer.signer)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(), Timeout: 30 * time.Second}); err == nil {
		t.Fatal("user removed by reload can still log in")
	}
}
