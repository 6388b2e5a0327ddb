package daemon

import "testing"

func TestKeySessionsCapsOneKeyNotOthers(t *testing.T) {
	var k keySessions
	var rel []func()
	for range 3 {
		r, ok := k.acquire("a", 3)
		if !ok {
			t.Fatal("refused under the cap")
		}
		rel = append(rel, r)
	}
	if _, ok := k.acquire("a", 3); ok {
		t.Fatal("a fourth session of one key admitted over 3")
	}
	if r, ok := k.acquire("b", 3); !ok {
		t.Fatal("another key refused")
	} else {
		r()
	}
	rel[0]()
	if _, ok := k.acquire("a", 3); !ok {
		t.Fatal("slot not given back")
	}
}
