package daemon

import "testing"

func TestWantsV2(t *testing.T) {
	for p, want := range map[string]bool{"version=2": true, "version=1": false, "": false, "foo=bar:version=2": true, "version=20": false} {
		if got := wantsV2(p); got != want {
			t.Errorf("wantsV2(%q) = %v", p, got)
		}
	}
}
