package upstream

import "time"

// SyncStatus is a watched repo's fetch health: the last successful sync
// and the failures since start (the page and /metrics show them).
type SyncStatus struct {
	LastSync  time.Time
	LastError string // "" when the last fetch worked
	Failures  int64
}

// noteSync records the outcome of one sync.
func (w *Watcher) noteSync(err error, now time.Time) {
	w.statusMu.Lock()
	defer w.statusMu.Unlock()
	if err != nil {
		w.status.Failures++
		w.status.LastError = err.Error()
		return
	}
	w.status.LastSync, w.status.LastError = now, ""
}

// Status is the watcher's fetch health now.
func (w *Watcher) Status() SyncStatus {
	w.statusMu.Lock()
	defer w.statusMu.Unlock()
	return w.status
}

// Status is every watched repo's fetch health; a nil Handler (no watched
// repos) has none.
func (h *Handler) Status() map[string]SyncStatus {
	out := map[string]SyncStatus{}
	if h == nil {
		return out
	}
	for name, w := range h.Watchers {
		out[name] = w.Status()
	}
	return out
}
