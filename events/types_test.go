package events

import (
	"slices"
	"testing"

	"github.com/poolgate/poolgate/config"
)

// config.EventTypes is the list webhooks, the API and `poolgate history`
// filter on; the event types are these constants. config cannot import
// events, so this test is what keeps the two from drifting apart.
func TestEveryEventTypeIsOneWebhooksMayFilterOn(t *testing.T) {
	types := []string{Added, Removed, Claimed, Released, Updated, Stale, Rejected, Violated}
	if !slices.Equal(config.EventTypes, types) {
		t.Fatalf("config.EventTypes %q, event types %q", config.EventTypes, types)
	}
}

// A filter may name a type as payloads spell it or bare; both are the type.
func TestWebhookTypeReadsBackAsItsEventType(t *testing.T) {
	for _, typ := range config.EventTypes {
		e := Event{Type: typ}
		if got := TypeOfWebhookType(e.WebhookType()); got != typ {
			t.Errorf("%s: %q reads back as %q", typ, e.WebhookType(), got)
		}
		if got := TypeOfWebhookType(typ); got != typ {
			t.Errorf("bare %q reads as %q", typ, got)
		}
	}
}
