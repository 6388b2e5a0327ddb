package webhook

import (
	"strings"
	"testing"

	"github.com/poolgate/poolgate/events"
	"github.com/poolgate/poolgate/pool"
)

func TestSlackLineNamesTheOperatorAndWhy(t *testing.T) {
	held := int64(750)
	e := &events.Event{Type: events.Released, Pool: "staging", Lock: "env-a", HeldSeconds: &held,
		Pusher: &events.Pusher{User: "alice"}, Operator: &pool.Operator{Name: "alice", Reason: "build aborted"}}
	if got := SlackLine(e); !strings.Contains(got, "released after 12m by operator alice (build aborted)") {
		t.Fatalf("slack line: %s", got)
	}
}
