package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strings"
)

// genPoolRepo makes a bare repo whose branch master holds pool `pool` with
// four locks and n commits in all: one creating the pool, then claims and
// releases as the stock pool-resource writes them (v1.8 messages, author
// git <git@localhost>, lock files 100755), at most three locks claimed at a
// time. git fast-import writes it in seconds.
func genPoolRepo(ctx context.Context, dir, pool string, n int) error {
	if out, err := exec.CommandContext(ctx, "git", "init", "-q", "--bare", "--initial-branch=master", dir).CombinedOutput(); err != nil {
		return fmt.Errorf("git init: %v: %s", err, out)
	}
	cmd := exec.CommandContext(ctx, "git", "fast-import", "--quiet", "--done")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1")
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return err
	}
	werr := writeHistory(in, pool, n)
	in.Close()
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("git fast-import: %v: %s", err, out)
	}
	return werr
}

func writeHistory(w io.Writer, pool string, n int) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	locks := []string{"lock-0", "lock-1", "lock-2", "lock-3"}
	// Blobs: the empty .gitkeep (mark 1) and one metadata blob per lock.
	fmt.Fprintf(bw, "blob\nmark :1\ndata 0\n\n")
	for i, l := range locks {
		data := fmt.Sprintf("{\"env\":%q}\n", l)
		fmt.Fprintf(bw, "blob\nmark :%d\ndata %d\n%s\n", i+2, len(data), data)
	}
	when := int64(1700000000)
	commit := func(msg string, ops string) {
		when += 60
		fmt.Fprintf(bw, "commit refs/heads/master\nauthor git <git@localhost> %d +0000\ncommitter git <git@localhost> %d +0000\ndata %d\n%s\n%s\n",
			when, when, len(msg), msg, ops)
	}
	var ops strings.Builder
	fmt.Fprintf(&ops, "M 100644 :1 %s/claimed/.gitkeep\nM 100644 :1 %s/unclaimed/.gitkeep\n", pool, pool)
	for i, l := range locks {
		fmt.Fprintf(&ops, "M 100755 :%d %s/unclaimed/%s\n", i+2, pool, l)
	}
	commit("poolgate: create pool "+pool, ops.String())
	claimed := map[string]bool{}
	for i := 1; i < n; i++ {
		var free, held []string
		for _, l := range locks {
			if claimed[l] {
				held = append(held, l)
			} else {
				free = append(free, l)
			}
		}
		build := fmt.Sprintf("https://ci.example.com/teams/main/pipelines/p/jobs/deploy/builds/%d", i)
		var l, from, to, op string
		if len(held) == 0 || (len(held) < 3 && rng.IntN(2) == 0) {
			l, from, to, op = free[rng.IntN(len(free))], "unclaimed", "claimed", "claiming"
			claimed[l] = true
		} else {
			l, from, to, op = held[rng.IntN(len(held))], "claimed", "unclaimed", "unclaiming"
			claimed[l] = false
		}
		mark := 0
		for j, x := range locks {
			if x == l {
				mark = j + 2
			}
		}
		commit(fmt.Sprintf("%s: %s\nBuild URL: %s", op, l, build),
			fmt.Sprintf("D %s/%s/%s\nM 100755 :%d %s/%s/%s\n", pool, from, l, mark, pool, to, l))
	}
	fmt.Fprintf(bw, "done\n")
	return bw.Flush()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
