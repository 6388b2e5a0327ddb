package events

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// genHistory writes a bare repo whose master has commits claim/release
// commits over locks locks in pool "staging", as pool-resource writes them,
// with git fast-import (seconds even for 100,000 commits).
func genHistory(tb testing.TB, dir string, locks, commits int) {
	tb.Helper()
	if out, err := exec.Command("git", "init", "-q", "--bare", "-b", "master", dir).CombinedOutput(); err != nil {
		tb.Fatalf("git init: %v\n%s", err, out)
	}
	cmd := exec.Command("git", "fast-import", "--quiet", "--done")
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	in, _ := cmd.StdinPipe()
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriterSize(in, 1<<20)
	fmt.Fprintf(w, "blob\nmark :1\ndata 0\n\n")
	t0 := time.Now().Add(-time.Duration(commits) * time.Minute).Unix()
	commit := func(i int, msg string, ops string) {
		fmt.Fprintf(w, "commit refs/heads/master\ncommitter git <git@localhost> %d +0000\ndata %d\n%s\n%s", t0+int64(i)*60, len(msg), msg, ops)
	}
	var ops bytes.Buffer
	for l := 0; l < locks; l++ {
		fmt.Fprintf(&ops, "M 100755 :1 staging/unclaimed/env-%04d\n", l)
	}
	commit(0, "init", ops.String())
	for i := 1; i <= commits; i++ {
		l := ((i - 1) / 2 * 7919) % locks
		name := fmt.Sprintf("env-%04d", l)
		from, to, verb := "unclaimed", "claimed", "claiming"
		if i%2 == 0 {
			from, to, verb = "claimed", "unclaimed", "unclaiming"
		}
		msg := fmt.Sprintf("%s: %s\nBuild URL: https://ci.example.com/teams/main/pipelines/p/jobs/j/builds/%d", verb, name, i)
		commit(i, msg, fmt.Sprintf("D staging/%s/%s\nM 100755 :1 staging/%s/%s\n", from, name, to, name))
	}
	fmt.Fprintf(w, "done\n")
	w.Flush()
	in.Close()
	if err := cmd.Wait(); err != nil {
		tb.Fatalf("fast-import: %v\n%s", err, stderr.String())
	}
}

// BenchmarkDeriveHistory is a first start on an existing repo: every event
// of a long history derived into an empty store.
//
//	go test ./events -run '^$' -bench DeriveHistory -benchtime 1x
func BenchmarkDeriveHistory(b *testing.B) {
	for _, commits := range []int{1000, 10000} {
		b.Run(fmt.Sprint(commits), func(b *testing.B) {
			dir := filepath.Join(b.TempDir(), "locks.git")
			genHistory(b, dir, 200, commits)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				st, err := Open(b.TempDir(), false)
				if err != nil {
					b.Fatal(err)
				}
				d := NewDeriver(st, testRepoCfg(), dir)
				evs, err := d.Sync(context.Background())
				if err != nil || len(evs) < commits {
					b.Fatalf("%v: %d events", err, len(evs))
				}
				st.Close()
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*commits), "µs/commit")
		})
	}
}

func TestLongHistoryIsDerivedInChunksWithTheSameResult(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "locks.git")
	genHistory(t, dir, 50, 1201) // 1201 commits: the last claim is still held
	st, err := Open(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cfg := testRepoCfg()
	cfg.Pools[0].StaleAfter = 0
	d := NewDeriver(st, cfg, dir)
	evs, err := d.Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 50+1201 {
		t.Fatalf("%d events, want one per lock added and one per commit", len(evs))
	}
	holds, _ := st.Holds(context.Background(), "locks")
	if len(holds) != 1 {
		t.Errorf("%d holds after the history, want the one claim still held", len(holds))
	}
	all, _ := st.Events(context.Background(), Query{Repo: "locks", Types: []string{Released}})
	for _, e := range all {
		if e.HeldSeconds == nil || *e.HeldSeconds != 60 {
			t.Fatalf("release held %v, want 60s (one commit a minute)", e.HeldSeconds)
		}
	}
}
