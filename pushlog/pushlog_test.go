package pushlog

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// A crash mid-append leaves a torn line; the next append continues on the
// same line. Readers must still see every intact record, and a line still
// being written must wait for the next read.
func TestTornLineAfterCrashStillReadsNextRecord(t *testing.T) {
	log := At(t.TempDir())
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := log.Append(Pushes, Push{Time: t0, User: "a", Commits: []string{"c1"}}); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(log.Path(Pushes), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"time":"2026-01-02T03:04:05Z","user":"torn`)
	f.Close()
	lines, off, err := log.Read(Pushes, 0)
	if err != nil || len(lines) != 1 {
		t.Fatalf("before the next append: %d lines, err %v; want the 1 complete line", len(lines), err)
	}
	if err := log.Append(Pushes, Push{Time: t0, User: "b", Commits: []string{"c2"}}); err != nil {
		t.Fatal(err)
	}
	lines, next, err := log.Read(Pushes, off)
	if err != nil || len(lines) != 1 {
		t.Fatalf("after: %d lines, err %v", len(lines), err)
	}
	var p Push
	if !Decode(lines[0], &p) || p.User != "b" || !slices.Equal(p.Commits, []string{"c2"}) {
		t.Fatalf("torn line + record decoded as %+v", p)
	}
	if again, _, _ := log.Read(Pushes, next); len(again) != 0 {
		t.Fatalf("read past the end gave %d lines", len(again))
	}
	// Truncated by an operator: read from the start again.
	os.WriteFile(log.Path(Pushes), nil, 0o644)
	log.Append(Pushes, Push{User: "c"})
	if lines, _, _ := log.Read(Pushes, next); len(lines) != 1 {
		t.Fatalf("after truncation: %d lines, want 1", len(lines))
	}
}

func TestVerdictRoundTrip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "verdict")
	if v, rules := ReadVerdict(p); v != "" || rules != nil {
		t.Fatalf("missing file read as %q %v", v, rules)
	}
	if err := WriteVerdict(p, VerdictPermanent, []string{"claim-missing", "bad-name"}); err != nil {
		t.Fatal(err)
	}
	if v, rules := ReadVerdict(p); v != VerdictPermanent || !slices.Equal(rules, []string{"claim-missing", "bad-name"}) {
		t.Fatalf("read %q %v", v, rules)
	}
	WriteVerdict(p, VerdictAccepted, nil)
	if v, rules := ReadVerdict(p); v != VerdictAccepted || rules != nil {
		t.Fatalf("read %q %v", v, rules)
	}
}
