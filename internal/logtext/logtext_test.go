package logtext

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestClipBoundsAndMarksLongText(t *testing.T) {
	long := strings.Repeat("é", 100<<10) // 2-byte runes: a cut can fall inside one
	for _, n := range []int{199, 200} {
		got := ClipN(long, n)
		body, _, marked := strings.Cut(got, "…[")
		if !marked || len(body) > n || !utf8.ValidString(got) || !strings.HasSuffix(got, "…[204800 bytes]") {
			t.Errorf("ClipN(%d) = %d bytes %q…, marked %v", n, len(got), got[:20], marked)
		}
	}
	if got := Clip("git-upload-pack 'locks.git'"); got != "git-upload-pack 'locks.git'" {
		t.Errorf("short text changed: %q", got)
	}
	if got := Clip("a\xffb"); got != "a\uFFFDb" {
		t.Errorf("invalid UTF-8 kept: %q", got)
	}
	if got := Clip(""); got != "" {
		t.Errorf("empty: %q", got)
	}
}

func TestListBoundsEntriesAndTheirCount(t *testing.T) {
	many := make([]string, 1000)
	for i := range many {
		many[i] = strings.Repeat("r", 1000)
	}
	got := List(many)
	if len(got) != MaxItems+1 || got[MaxItems] != "…[980 more]" {
		t.Fatalf("List of 1000: %d entries, last %q", len(got), got[len(got)-1])
	}
	for _, s := range got[:MaxItems] {
		if len(s) > Max+len("…[1000 bytes]") {
			t.Fatalf("entry of %d bytes", len(s))
		}
	}
	if got := List([]string{"a"}); len(got) != 1 || got[0] != "a" {
		t.Fatalf("short list changed: %q", got)
	}
}
