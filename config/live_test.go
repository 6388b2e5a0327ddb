package config

import (
	"sync"
	"testing"
)

// Readers running while configs are stored see only whole stored configs
// (under -race: no torn read), every subscriber hears each Store in the
// order it subscribed and before Store returns, and a cancelled one hears
// nothing more.
func TestLiveStoreReachesEverySubscriberBeforeItReturnsAndReadersSeeWholeConfigs(t *testing.T) {
	first := &Config{DataDir: "/first"}
	l := NewLive(first)
	if l.Current() != first {
		t.Fatal("Current is not the config given to NewLive")
	}
	var order []string
	heardA, heardB := 0, 0
	cancelA := l.Subscribe(func(c *Config) { heardA++; order = append(order, "a:"+c.DataDir) })
	l.Subscribe(func(c *Config) { heardB++; order = append(order, "b:"+c.DataDir) })

	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if c := l.Current(); c == nil || c.DataDir == "" {
					t.Error("a reader saw no config or an empty one")
					return
				}
			}
		}()
	}
	second := &Config{DataDir: "/second"}
	l.Store(second)
	if l.Current() != second || heardA != 1 || heardB != 1 {
		t.Fatalf("after Store: current %v, a heard %d, b heard %d", l.Current().DataDir, heardA, heardB)
	}
	cancelA()
	l.Store(&Config{DataDir: "/third"})
	close(stop)
	wg.Wait()
	want := []string{"a:/second", "b:/second", "b:/third"}
	if len(order) != len(want) {
		t.Fatalf("subscribers heard %v, want %v", order, want)
	}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("subscribers heard %v, want %v", order, want)
		}
	}
}
