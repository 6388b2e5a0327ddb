// Package hooks holds poolgate's git hook programs and their installation.
package hooks

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Install writes a pre-receive hook into dir that runs exe. The daemon points
// core.hooksPath at such a directory it owns, so nothing inside a repo (which
// a pusher's objects can never reach anyway) decides what runs.
func Install(dir, exe string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	script := fmt.Sprintf("#!/bin/sh\nexec %s hook pre-receive\n", shellQuote(exe))
	tmp := filepath.Join(dir, ".pre-receive.tmp")
	if err := os.WriteFile(tmp, []byte(script), 0o755); err != nil {
		return err
	}
	// Rename so a push running during an upgrade never sees half a script.
	return os.Rename(tmp, filepath.Join(dir, "pre-receive"))
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
