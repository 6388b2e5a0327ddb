// Package hooks holds poolgate's git hook programs and their installation.
package hooks

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// hookNames are the git hooks Install writes: pre-receive judges a push before
// any ref moves; post-receive, which git runs only for refs it updated,
// records the accepted push once its ref has moved.
var hookNames = []string{"pre-receive", "post-receive"}

// Install writes poolgate's hooks into dir, each running exe. The daemon
// points core.hooksPath at such a directory it owns, so nothing inside a
// repo (which a pusher's objects can never reach anyway) decides what runs.
func Install(dir, exe string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, name := range hookNames {
		script := fmt.Sprintf("#!/bin/sh\nexec %s hook %s\n", shellQuote(exe), name)
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, []byte(script), 0o755); err != nil {
			return err
		}
		// Rename so a push running during an upgrade never sees half a script.
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
