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
	small := ""
	if allowSmall {
		small = SmallProgram(exe)
	}
	for _, name := range hookNames {
		if err := WriteHook(dir, name, small, fmt.Sprintf("#!/bin/sh\nexec %s hook %s\n", ShellQuote(exe), name)); err != nil {
			return err
		}
	}
	return nil
}

// SmallProgram is HookProgram beside exe, or "" when there is none to use
// (or exe is not named poolgate, which the program's fallback runs).
func SmallProgram(exe string) string {
	small := filepath.Join(filepath.Dir(exe), HookProgram)
	fi, err := os.Stat(small)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 || filepath.Base(exe) != "poolgate" {
		return ""
	}
	return small
}

// WriteHook makes dir/name a symlink to small or, with small "", the
// shell script. Written aside and renamed, so a push running during an
// upgrade never sees half a hook.
func WriteHook(dir, name, small, script string) error {
	tmp := filepath.Join(dir, "."+name+".tmp")
	os.Remove(tmp)
	if small != "" {
		if err := os.Symlink(small, tmp); err != nil {
			return err
		}
	} else if err := os.WriteFile(tmp, []byte(script), 0o755); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, name))
}

// ShellQuote quotes s for a hook script.
func ShellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
