package daemon

import (
	"testing"
	"time"
)

// One key's connections past its limit wait in order and get their turn as
// others close; a waiter that times out or goes away takes no turn.
func TestKeyConnsQueueInOrderAndTimeOut(t *testing.T) {
	var k keyConns
	never := make(chan struct{})
	yielded := 0
	yield := func() { yielded++ }
	r1, waited, err := k.acquire("k", 1, 10, time.Minute, never, yield)
	if err != nil || waited {
		t.Fatalf("first: waited %v, err %v", waited, err)
	}
	if _, _, err := k.acquire("other", 1, 10, time.Minute, never, yield); err != nil {
		t.Fatalf("another key is not held up: %v", err)
	}
	order := make(chan int, 2)
	for i := 1; i <= 2; i++ {
		go func() {
			r, _, err := k.acquire("k", 1, 10, time.Minute, never, func() {})
			if err != nil {
				t.Error(err)
				return
			}
			order <- i
			r()
		}()
		// The second waiter queues behind the first.
		for deadline := time.Now().Add(10 * time.Second); ; {
			k.mu.Lock()
			n := len(k.m["k"].waiters)
			k.mu.Unlock()
			if n == i || time.Now().After(deadline) {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	r1()
	if a, b := <-order, <-order; a != 1 || b != 2 {
		t.Fatalf("turns went %d, %d", a, b)
	}
	// Past its timeout, or gone, a waiter leaves the queue.
	r, _, _ := k.acquire("k", 1, 10, time.Minute, never, yield)
	if _, waited, err := k.acquire("k", 1, 10, 10*time.Millisecond, never, yield); err == nil || !waited {
		t.Fatalf("a waiter past queue_timeout: waited %v, err %v", waited, err)
	}
	gone := make(chan struct{})
	close(gone)
	if _, _, err := k.acquire("k", 1, 10, time.Minute, gone, yield); err == nil {
		t.Fatal("a closed connection took a turn")
	}
	if _, _, err := k.acquire("k", 1, 0, time.Minute, never, yield); err == nil {
		t.Fatal("a waiter past maxWaiters was queued")
	}
	r()
	k.mu.Lock()
	q := k.m["k"]
	k.mu.Unlock()
	if q != nil {
		t.Fatalf("key still counted after its last connection: %+v", q)
	}
	if yielded != 2 {
		t.Fatalf("yield called %d times, want once per wait", yielded)
	}
}
