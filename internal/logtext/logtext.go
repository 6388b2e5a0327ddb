// Package logtext bounds text a client chose before it reaches a log: a
// command line, an environment value, a user or repo name, a path, a
// reason quoting any of them. SECURITY.md promises 200 bytes.
package logtext

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// Max is the most bytes of client text a log field carries.
const Max = 200

// Clip returns s cut to at most Max bytes of valid UTF-8 (invalid bytes
// become U+FFFD); a cut string ends with a mark saying how long it was.
func Clip(s string) string { return ClipN(s, Max) }

// ClipN is Clip with another bound.
func ClipN(s string, n int) string {
	if len(s) <= n && utf8.ValidString(s) {
		return s
	}
	cut := s
	if len(cut) > n {
		cut = cut[:n]
		// Back to a rune boundary, so no character is split.
		for i := len(cut); i > 0 && i > len(cut)-utf8.UTFMax; i-- {
			if utf8.RuneStart(cut[i-1]) {
				if !utf8.FullRuneInString(cut[i-1:]) {
					cut = cut[:i-1]
				}
				break
			}
		}
	}
	cut = strings.ToValidUTF8(cut, "\uFFFD")
	if len(s) <= n {
		return cut
	}
	return cut + "…[" + strconv.Itoa(len(s)) + " bytes]"
}

// MaxItems is the most entries of a client-made list a log field carries.
const MaxItems = 20

// List clips each of the first MaxItems entries; a longer list ends with an
// entry saying how many more there were.
func List(ss []string) []string {
	n := min(len(ss), MaxItems)
	out := make([]string, 0, n+1)
	for _, s := range ss[:n] {
		out = append(out, Clip(s))
	}
	if len(ss) > n {
		out = append(out, "…["+strconv.Itoa(len(ss)-n)+" more]")
	}
	return out
}
