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

// HookProgram is the small hook program (cmd/poolgate-hook) looked for
// next to the poolgate binary; without a daemon's ticket it runs
// "poolgate" from its own directory, so it is used only beside a binary of
// that name.
const HookProgram = "poolgate-hook"

// Install writes poolgate's hooks into dir, each running exe. The daemon
// points core.hooksPath at such a directory it owns, so nothing inside a
// repo (which a pusher's objects can never reach anyway) decides what runs.
//
// Where HookProgram sits next to exe, each hook is a symlink to it: git
// starts it directly, with no shell and no start of the whole poolgate
// (the link's name tells it which hook it is).
func Install(dir, exe string) error { return install(dir, exe, true) }

// InstallScript always writes shell scripts running `exe hook NAME` (for
// measuring the hook as it was, POOLGATE_HOOKSOCK=off).
func InstallScript(dir, exe string) error { return install(dir, exe, false) }

func install(dir, exe string, allowSmall bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	small := filepath.Join(filepath.Dir(exe), HookProgram)
	fi, err := os.Stat(small)
	useSmall := allowSmall && err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 && filepath.Base(exe) == "poolgate"
	for _, name := range hookNames {
		tmp := filepath.Join(dir, "."+name+".tmp")
		os.Remove(tmp)
		if useSmall {
			if err := os.Symlink(small, tmp); err != nil {
				return err
			}
		} else {
			script := fmt.Sprintf("#!/bin/sh\nexec %s hook %s\n", shellQuote(exe), name)
			if err := os.WriteFile(tmp, []byte(script), 0o755); err != nil {
				return err
			}
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
