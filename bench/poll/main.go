// Command poll simulates builds waiting on a pool as cheaply as a client
// can, to measure how many a git server holds (BENCHMARKING.md: real
// `git fetch` clients fill the machine long before the server does). Each
// simulated build polls once per -interval, as the stock pool-resource's
// check does: a fresh SSH connection (curve25519-sha256, an ed25519 key),
// `git-upload-pack` with protocol v2, the capability advertisement,
// `ls-refs` for the branch, hang-up. That is the server's whole work for a
// no-op fetch, for about a millisecond of client CPU (package poller).
//
// It reports the server's CPU share (from its cpuacct cgroup, or from
// /proc/PID/stat fields 14-17), p50/p99 of a poll, polls refused and
// failed, and, with -git-url, stock acquire+release cycles (the real git
// client of internal/poolclient) timed on the idle server first and then
// while the builds wait. Loopback only; bounded by -duration and -timeout.
//
//	go run ./bench/poll -addr 127.0.0.1:2222 -user git -key KEY -repo /locks.git \
//	    -n 1000 -server-pid PID -git-url ssh://git@127.0.0.1:2222/locks.git -pool bench
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/poolgate/poolgate/bench/poller"
)

func main() {
	var o poller.Options
	var jsonOut string
	flag.StringVar(&o.Addr, "addr", "127.0.0.1:2222", "server host:port (loopback only)")
	flag.StringVar(&o.User, "user", "git", "SSH user")
	flag.StringVar(&o.KeyFile, "key", "", "ed25519 private key (OpenSSH format)")
	flag.StringVar(&o.Repo, "repo", "/locks.git", "repo path as the client sends it")
	flag.StringVar(&o.Branch, "branch", "master", "branch the builds wait on")
	flag.IntVar(&o.N, "n", 1000, "waiting builds")
	flag.DurationVar(&o.Interval, "interval", 10*time.Second, "each build polls once per interval")
	flag.DurationVar(&o.Warmup, "warmup", 0, "polling before the measured window (default: one interval)")
	flag.DurationVar(&o.Window, "duration", 30*time.Second, "measured window")
	flag.DurationVar(&o.Timeout, "timeout", 30*time.Second, "one poll's bound")
	flag.IntVar(&o.ServerPID, "server-pid", 0, "server process: CPU from /proc/PID/stat (own + reaped children)")
	flag.StringVar(&o.ServerCgroup, "server-cgroup", "", "server's cgroup-v1 cpuacct dir: CPU of everything in it (preferred)")
	flag.StringVar(&o.GitURL, "git-url", "", "if set, also time stock acquire+release cycles against this URL")
	flag.StringVar(&o.GitSSH, "git-ssh", "", "GIT_SSH_COMMAND for those cycles (default: ssh with -key, the stock client's options)")
	flag.StringVar(&o.Pool, "pool", "bench", "pool of those cycles")
	flag.IntVar(&o.Cycles, "cycles", 3, "acquire+release cycles idle, and again while the builds wait")
	flag.StringVar(&jsonOut, "json", "", "also write the result as JSON here")
	flag.Parse()
	if err := poller.CheckLoopback(o.Addr); err != nil {
		fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.Warmup+o.Window+2*o.Interval+5*time.Minute)
	defer cancel()
	res, err := poller.Run(ctx, o)
	if err != nil {
		fatal(err)
	}
	if jsonOut != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(jsonOut, b, 0o644); err != nil {
			fatal(err)
		}
	}
	fmt.Println(res)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "poll:", err)
	os.Exit(1)
}
