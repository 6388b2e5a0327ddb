package events

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// LockFile, beside the store, is held by whoever derives into it.
const LockFile = "events.lock"

// ErrDeriving is LockDerivation's answer, without waiting, when another
// process (a running daemon) holds the lock.
var ErrDeriving = errors.New("another process derives into the event store")

// LockDerivation takes the store's derivation lock, so one process derives
// at a time: the daemon for as long as it runs, a CLI command for its
// catch-up only when no daemon runs. Beside a running daemon the CLI reads
// what the daemon has derived and never derives the same history again.
// With wait, it waits until ctx ends; without, it returns ErrDeriving at
// once. The lock is an flock, so it goes with the process that held it.
func LockDerivation(ctx context.Context, dataDir string, wait bool) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(dataDir, LockFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing releases it
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", f.Name(), err)
		}
		if !wait {
			f.Close()
			return nil, ErrDeriving
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
