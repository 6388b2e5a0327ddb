// Command poolgate is a git server for Concourse's pool-resource. This file
// only parses arguments and wires packages together.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// Exit codes of DESIGN.md §3.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

// Set at build time with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = "unknown"
)

type command struct {
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

var commands = map[string]command{}

func register(name, summary string, run func([]string, io.Writer, io.Writer) int) {
	commands[name] = command{summary: summary, run: run}
}

func init() {
	register("version", "print version and commit", runVersion)
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		// Nothing asked: a usage error, so the usage goes to stderr.
		usage(stderr)
		return exitUsage
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		return exitOK
	}
	if args[0] == "--version" || args[0] == "-version" {
		args[0] = "version"
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "poolgate: unknown command %q (see poolgate --help)\n", args[0])
		return exitUsage
	}
	return c.run(args[1:], stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "poolgate: a git server for Concourse's pool-resource")
	fmt.Fprintln(w, "\nUsage: poolgate COMMAND [FLAGS]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-18s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'poolgate COMMAND --help' for a command's flags.")
}

// newFlags makes a flag set whose --help prints usage to stdout and whose
// errors are one line on stderr.
func newFlags(name, synopsis string, stdout, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprintf(stdout, "Usage: poolgate %s\n\nFlags:\n", synopsis)
		printFlags(stdout, fs)
	}
	return fs
}

// printFlags lists the flags as the synopses spell them (--name), where
// the flag package's own listing would say -name.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		arg, help := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		switch arg {
		case "":
		case "string":
			line += " VALUE"
		case "int", "uint", "float", "duration":
			line += " N"
		default:
			line += " " + arg
		}
		fmt.Fprintf(w, "%s\n      %s", line, help)
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
			fmt.Fprintf(w, " (default %q)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
}

// parseFlags returns -1 to continue, or the exit code to return. Flags may
// come before or after positional arguments.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) ([]string, int) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, exitOK
			}
			fmt.Fprintf(stderr, "poolgate %s: %v\n", fs.Name(), err)
			return nil, exitUsage
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, -1
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), -1
		}
		pos = append(pos, args[0])
		args = args[1:]
		if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
			continue
		}
	}
}

func runVersion(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("version", "version", stdout, stderr)
	if _, code := parseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	fmt.Fprintf(stdout, "poolgate %s (commit %s)\n", version, commit)
	return exitOK
}
