// Package hooks holds poolgate's git hook programs and their installation.
package hooks

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Environment variables the hook reads. The daemon sets them for every git
// command it runs; other git servers can map their own (see README).
const (
	EnvConfig      = "POOLGATE_CONFIG"
	EnvRepo        = "POOLGATE_REPO"
	EnvUser        = "POOLGATE_USER"
	EnvRole        = "POOLGATE_ROLE"
	EnvKey         = "POOLGATE_KEY"
	EnvVerdictFile = "POOLGATE_VERDICT_FILE"
)

// Verdicts written to POOLGATE_VERDICT_FILE before the hook exits, so the
// daemon knows how to end the push before receive-pack writes its report.
const (
	VerdictPermanent = "permanent"
	VerdictTransient = "transient"
)

// HookProgram is the small hook program (cmd/poolgate-hook) looked for
// next to the poolgate binary; without a daemon's ticket it runs
// "poolgate" from its own directory, so it is used only beside a binary of
// that name.
const HookProgram = "poolgate-hook"

// Install writes a pre-receive hook into dir that runs exe. The daemon points
// core.hooksPath at such a directory it owns, so nothing inside a repo (which
// a pusher's objects can never reach anyway) decides what runs.
//
// Where HookProgram sits next to exe, the hook is a symlink to it: git
// starts it directly, with no shell and no start of the whole poolgate.
func Install(dir, exe string) error { return install(dir, exe, true) }

// InstallScript always writes the shell script running `exe hook
// pre-receive` (for measuring the hook as it was, POOLGATE_HOOKSOCK=off).
func InstallScript(dir, exe string) error { return install(dir, exe, false) }

func install(dir, exe string, allowSmall bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp := filepath.Join(dir, ".pre-receive.tmp")
	os.Remove(tmp)
	small := filepath.Join(filepath.Dir(exe), HookProgram)
	if fi, err := os.Stat(small); allowSmall && err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 && filepath.Base(exe) == "poolgate" {
		if err := os.Symlink(small, tmp); err != nil {
			return err
		}
	} else {
		script := fmt.Sprintf("#!/bin/sh\nexec %s hook pre-receive\n", shellQuote(exe))
		if err := os.WriteFile(tmp, []byte(script), 0o755); err != nil {
			return err
		}
	}
	// Rename so a push running during an upgrade never sees half a script.
	return os.Rename(tmp, filepath.Join(dir, "pre-receive"))
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
