// Command poolgate-hook is the pre-receive hook `poolgate serve` installs
// when this program sits next to the poolgate binary: it only carries the
// push to the daemon's hook socket (package hooksock), so a push pays the
// start of a small program instead of poolgate's whole one. git runs it
// directly (the hook is a symlink to it), without a shell.
//
// Run without the daemon's ticket (any other git server), it becomes
// `poolgate hook pre-receive` from the same directory, which judges
// in-process.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/poolgate/poolgate/hooksock"
)

func main() {
	if hooksock.Enabled(os.Getenv) {
		os.Exit(hooksock.Run(os.Getenv, os.Stdin, os.Stderr))
	}
	exe, err := os.Executable()
	if err == nil {
		full := filepath.Join(filepath.Dir(exe), "poolgate")
		err = syscall.Exec(full, []string{full, "hook", "pre-receive"}, os.Environ())
	}
	// Fail closed: no judge, no push.
	fmt.Fprintf(os.Stderr, "poolgate: push refused: the server could not validate it: %v\n", err)
	os.Exit(1)
}
