// Command poolgate-hook is the pre-receive and post-receive hook, and on a
// cluster node the reference-transaction hook, that `poolgate serve`
// installs when this program sits next to the poolgate binary: it only
// carries the push to the daemon's hook socket (package hooksock), so a
// push pays the start of a small program instead of poolgate's whole one,
// three times. git runs it directly (each hook is a symlink to it, and the
// link's name says which hook it is), without a shell.
//
// Run without the daemon's ticket (any other git server), it becomes
// `poolgate hook NAME` (`poolgate cluster-hook reference-transaction
// PHASE`) from the same directory, which works in-process.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/poolgate/poolgate/hooksock"
)

func main() {
	// git starts a hook by its path, so argv[0] is the link's name. Any
	// other name (the program run by hand) is the pre-receive hook.
	hook := hooksock.PreReceive
	switch filepath.Base(os.Args[0]) {
	case hooksock.PostReceive:
		hook = hooksock.PostReceive
	case hooksock.RefTransaction:
		hook = hooksock.RefTransaction
		// git runs it for every ref transaction, in three phases; the
		// one to decide costs a socket round trip, the rest nothing.
		if !hooksock.RefTransactionDecides(os.Args[1:], os.Getenv) {
			os.Exit(0)
		}
	}
	if hooksock.Enabled(os.Getenv) {
		os.Exit(hooksock.Run(hook, os.Getenv, os.Stdin, os.Stderr))
	}
	exe, err := os.Executable()
	if err == nil {
		full := filepath.Join(filepath.Dir(exe), "poolgate")
		argv := []string{full, "hook", hook}
		if hook == hooksock.RefTransaction {
			argv = append([]string{full, "cluster-hook", hook}, os.Args[1:]...)
		}
		err = syscall.Exec(full, argv, os.Environ())
	}
	if hook == hooksock.PostReceive {
		fmt.Fprintf(os.Stderr, "poolgate: warning: the push landed but could not be recorded: %v\n", err)
		os.Exit(1)
	}
	// Fail closed: no judge, no push (and no decision, no ref update).
	fmt.Fprintf(os.Stderr, "poolgate: push refused: the server could not validate it: %v\n", err)
	os.Exit(1)
}
