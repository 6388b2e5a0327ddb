package cluster_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// receiver is a real HTTP server taking webhook deliveries.
type receiver struct {
	url   string
	mu    sync.Mutex
	seen  map[string]int // webhook-id → deliveries
	count int
}

func newReceiver(t testing.TB) *receiver {
	r := &receiver{seen: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.seen[req.Header.Get("webhook-id")]++
		r.count++
		r.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	r.url = srv.URL + "/hook"
	return r
}

func (r *receiver) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count
}

func (r *receiver) ids() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for k, v := range r.seen {
		out[k] = v
	}
	return out
}

// waitFor waits (bounded) until every id in want was delivered and
// returns those that were not.
func (r *receiver) waitFor(want map[string]bool, d time.Duration) []string {
	deadline := time.Now().Add(d)
	for {
		got := r.ids()
		var missing []string
		for id := range want {
			if got[id] == 0 {
				missing = append(missing, id)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			sort.Strings(missing)
			return missing
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// nodeEvent is what the tests read of an event from a node's API.
type nodeEvent struct {
	ID     string `json:"id"`
	Type   string `json:"type"`
	Lock   string `json:"lock"`
	Commit string `json:"commit"`
}

// events are a node's events of the given types (its API).
func (n *node) events(t testing.TB, types ...string) []nodeEvent {
	t.Helper()
	var out []nodeEvent
	for _, typ := range types {
		resp, err := http.Get(fmt.Sprintf("http://%s/api/v1/repos/locks/events?type=%s&limit=10000", n.httpAddr, typ))
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Events []nodeEvent `json:"events"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s: events API: %v", n.name, err)
		}
		out = append(out, body.Events...)
	}
	return out
}

// eventIDs are the ids of a node's events of the given types.
func (n *node) eventIDs(t testing.TB, types ...string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, e := range n.events(t, types...) {
		out[e.ID] = true
	}
	return out
}

func sameKeys(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// eventLines lists a node's events of the given types, one "type lock
// commit" a line (a failing test's explanation).
func (n *node) eventLines(t testing.TB, types ...string) string {
	t.Helper()
	var b strings.Builder
	for _, e := range n.events(t, types...) {
		fmt.Fprintf(&b, "%s %s %s\n", e.Type, e.Lock, e.Commit)
	}
	return b.String()
}

// agreedEventIDs waits up to d for every node to have derived the same
// events of the given types and returns them; past d it fails the test
// with each node's events that another lacks.
func agreedEventIDs(t testing.TB, nodes []*node, d time.Duration, types ...string) map[string]bool {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		sets := make([]map[string]bool, len(nodes))
		agree := true
		for i, n := range nodes {
			sets[i] = n.eventIDs(t, types...)
			agree = agree && sameKeys(sets[0], sets[i])
		}
		if agree {
			return sets[0]
		}
		if time.Now().After(deadline) {
			for i, n := range nodes {
				var only []string
				for id := range sets[i] {
					for j := range sets {
						if !sets[j][id] {
							only = append(only, fmt.Sprintf("%s (not on %s)", id, nodes[j].name))
						}
					}
				}
				t.Errorf("%s: %d events; %d that another node lacks: %v", n.name, len(sets[i]), len(only), only)
			}
			return sets[0]
		}
		time.Sleep(200 * time.Millisecond)
	}
}
