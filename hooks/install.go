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
	// EnvOperator "1" marks poolgate's own operator action (the operator
	// package sets it on its local push). Security: the daemon's SSH
	// sessions never pass it from a client; a hook-only server's sshd must
	// not accept it either (AcceptEnv).
	EnvOperator = "POOLGATE_OPERATOR"
)

// Verdicts written to POOLGATE_VERDICT_FILE before the hook exits, so the
// daemon knows how to end the push before receive-pack writes its report.
const (
	VerdictPermanent = "permanent"
	VerdictTransient = "transient"
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
