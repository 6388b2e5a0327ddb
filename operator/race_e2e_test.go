package operator_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/poolgate/poolgate/internal/poolclient"
	"github.com/poolgate/poolgate/internal/testserver"
)

// Operator releases race stock clients on purpose: every action either
// lands whole as its own commit or is refused, the history never breaks a
// rule, and each release that answered 200 is one operator event.
func TestOperatorReleasesRacingStockClients(t *testing.T) {
	f := testserver.New(t, testserver.Options{Token: token, Pools: "[{name: staging, max_claimed: 2, locks: [env-a, env-b, env-c]}]"})
	s := f.Start()
	const clients, cycles = 4, 2
	var wg sync.WaitGroup
	var taken atomic.Int64 // releases that found the lock taken by an operator
	errc := make(chan error, clients)
	for i := range clients {
		c := s.Client(fmt.Sprintf("c%d", i), "staging", fmt.Sprintf("https://ci.example.com/teams/main/pipelines/p%d/jobs/j/builds/1", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range cycles {
				name, err := c.Acquire(ctx(t))
				if err != nil {
					errc <- err
					return
				}
				time.Sleep(50 * time.Millisecond)
				err = c.Release(ctx(t), name)
				var failed *poolclient.FailedError
				switch {
				case err == nil:
				case errors.Is(err, poolclient.ErrNotClaimed):
					taken.Add(1)
				case errors.As(err, &failed) && strings.Contains(failed.Outputs[0], "[stale-release]"):
					taken.Add(1)
				default:
					errc <- fmt.Errorf("client %s: %w", name, err)
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	ok, conflicts := 0, 0
	base := "http://" + s.HTTPAddr + "/api/v1/repos/locks/pools/staging/locks/"
	for n := 0; n < 200; n++ {
		select {
		case <-done:
			n = 200
			continue
		default:
		}
		for name, l := range locks(t, s) {
			if l.State != "claimed" {
				continue
			}
			code, m := post(t, base+name+"/release", token, map[string]string{"reason": "race test", "commit": l.Commit})
			switch code {
			case http.StatusOK:
				ok++
			case http.StatusConflict:
				conflicts++
			default:
				t.Fatalf("operator release: %d %v", code, m)
			}
		}
		time.Sleep(30 * time.Millisecond)
	}
	<-done
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if ok == 0 {
		t.Fatal("no operator release landed: the race was not exercised")
	}
	// Events are derived just after the last push.
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := 0
		for _, e := range history(t, s, "released") {
			if e.Data.Operator != nil && e.Data.Operator.Reason == "race test" {
				n++
			}
		}
		if n == ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d operator releases answered 200, %d operator events", ok, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if strings.Contains(s.Log(), `"verdict":"failed"`) {
		t.Fatal("a git command failed during the race")
	}
	t.Logf("operator releases: %d done, %d refused as conflicts; client releases that found the lock taken: %d", ok, conflicts, taken.Load())
	checkClean(t, f)
}
