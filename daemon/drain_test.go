package daemon_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestPushPastTheDrainTimeoutLandsNothing: a push still in its hook when
// the drain bound runs out is killed, and nothing of it lands.
func TestPushPastTheDrainTimeoutLandsNothing(t *testing.T) {
	f := newFixture(t)
	s, stop := f.startInProcess(500 * time.Millisecond)
	marker := f.dir + "/hook-started"
	f.setHook(fmt.Sprintf("#!/bin/sh\ncat >/dev/null\ntouch %s\nsleep 60\nexit 0\n", marker))
	logs := s.logs

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
	if err, ok := s.wait(60 * time.Second); !ok || err != nil {
		t.Fatalf("daemon did not stop cleanly: %v", err)
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
