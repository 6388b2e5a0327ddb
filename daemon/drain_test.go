package daemon_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/daemon"
	"github.com/rs/zerolog"
)

// TestPushPastTheDrainTimeoutLandsNothing: a push still in its hook when
// the drain bound runs out is killed, and nothing of it lands.
func TestPushPastTheDrainTimeoutLandsNothing(t *testing.T) {
	f := newFixture(t)
	cfg, err := config.Load(f.cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	srv, err := daemon.New(cfg, zerolog.New(logs), binPath)
	if err != nil {
		t.Fatal(err)
	}
	srv.DrainTimeout = 500 * time.Millisecond
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	if err := srv.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	marker := f.dir + "/hook-started"
	f.setHook(fmt.Sprintf("#!/bin/sh\ncat >/dev/null\ntouch %s\nsleep 60\nexit 0\n", marker))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln, nil) }()
	s := &server{t: t, f: f, addr: ln.Addr().String(), port: strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)}

	tctx := ctxT(t, 60*time.Second)
	c := s.client("writer", "slow")
	if err := c.Clone(tctx); err != nil {
		t.Fatal(err)
	}
	c.Git(tctx, "mv", "demo/unclaimed/lock-a", "demo/claimed/lock-a")
	c.Git(tctx, "commit", "-m", c.Message("claiming", "lock-a"))
	before := f.bareGit("rev-parse", "master")
	pushed := make(chan error, 1)
	go func() {
		_, err := c.Git(tctx, "push", "origin", "HEAD:master")
		pushed <- err
	}()
	for {
		if _, err := os.Stat(marker); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if err := <-pushed; err == nil {
		t.Fatal("the client was told its killed push succeeded")
	}
	if after := f.bareGit("rev-parse", "master"); after != before {
		t.Fatalf("master moved to %s", after)
	}
	f.bareGit("fsck", "--strict", "--no-dangling")
	if !strings.Contains(logs.String(), "drain timeout") {
		t.Errorf("no drain timeout in the log:\n%s", logs.String())
	}
}
