package config

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
)

// The YAML parser's messages speak of tags and Go types ("cannot unmarshal
// !!str `two` into int"). The person reading a config error is editing a
// file, so each is said again in words; the line stays.

var (
	typeErrRe = regexp.MustCompile("^cannot unmarshal (!!\\w+)(?: `(.*)`)? into (.+)$")
)

// yamlKinds names YAML node tags for people.
var yamlKinds = map[string]string{
	"!!str":       "text",
	"!!int":       "a number",
	"!!float":     "a number",
	"!!bool":      "true or false",
	"!!null":      "nothing",
	"!!map":       "a block of key: value lines",
	"!!seq":       "a list",
	"!!timestamp": "a date",
	"!!binary":    "binary data",
}

// goKinds names the Go types config fields have, for people.
func goKind(t string) string {
	switch {
	case strings.HasPrefix(t, "[]"):
		return "a list (- item lines, or [a, b])"
	case strings.HasPrefix(t, "map["):
		return "a block of key: value lines"
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"), strings.HasPrefix(t, "float"):
		return "a number"
	case t == "bool":
		return "true or false"
	case t == "string":
		return "text"
	case strings.HasPrefix(t, "config."):
		return "a block of key: value lines"
	}
	return t
}

// syntaxWords says what a YAML syntax error usually means in a config.
var syntaxWords = []struct{ frag, words string }{
	{"mapping values are not allowed", "a second ':' on one line: a value holding ': ' must be quoted, or a key is missing its own line"},
	{"did not find expected key", "indentation does not match the lines above (every key of a block must start in the same column)"},
	{"found character that cannot start any token", "a character that cannot start a value here: a tab used for indentation (YAML needs spaces), or an unquoted @, ` or %"},
	{"could not find expected ':'", "a key without ':' after it"},
	{"did not find expected '-' indicator", "a list item without '-' where a list is going on"},
	{"did not find expected ',' or ']'", "a [list] that is not closed with ']'"},
	{"did not find expected ',' or '}'", "a {block} that is not closed with '}'"},
	{"found unexpected end of stream", "the file ends inside a quoted value: a quote is not closed"},
	{"found unknown escape character", "a backslash escape that YAML does not know inside \"double quotes\" (use 'single quotes' for paths and patterns)"},
	{"block sequence entries are not allowed", "a '- item' where a value was expected (put the list on its own lines below the key)"},
}

// yamlWords rewrites one parser message in words. key is the config key
// at the error's line when known.
func yamlWords(msg, key string) string {
	if m := typeErrRe.FindStringSubmatch(msg); m != nil {
		got := yamlKinds[m[1]]
		if got == "" {
			got = m[1]
		}
		if m[2] != "" {
			got = fmt.Sprintf("%s %q", got, m[2])
		}
		want := goKind(m[3])
		if key != "" {
			return fmt.Sprintf("%s must be %s, not %s", key, want, got)
		}
		return fmt.Sprintf("expected %s here, not %s", want, got)
	}
	for _, s := range syntaxWords {
		if strings.Contains(msg, s.frag) {
			return "not valid YAML: " + s.words
		}
	}
	return "not valid YAML: " + msg
}

// keyAtLine is the mapping key on a line of the file ("max_claimed" in
// "    max_claimed: lots"), or "".
func keyAtLine(data []byte, line int) string {
	lines := bytes.Split(data, []byte("\n"))
	if line < 1 || line > len(lines) {
		return ""
	}
	l := strings.TrimSpace(string(lines[line-1]))
	l = strings.TrimSpace(strings.TrimPrefix(l, "- "))
	k, _, ok := strings.Cut(l, ":")
	if !ok || strings.ContainsAny(k, " \t\"'{[") {
		return ""
	}
	return k
}

// lineOfDoubleColon finds the first line whose value holds a second
// "key: value" (the parser reports that error without a line).
func lineOfDoubleColon(data []byte) int {
	for i, l := range bytes.Split(data, []byte("\n")) {
		s := strings.TrimSpace(string(l))
		if strings.HasPrefix(s, "#") {
			continue
		}
		_, v, ok := strings.Cut(strings.TrimPrefix(s, "- "), ": ")
		if ok && !strings.HasPrefix(strings.TrimSpace(v), "\"") && !strings.HasPrefix(strings.TrimSpace(v), "'") &&
			(strings.Contains(v, ": ") || strings.HasSuffix(v, ":")) {
			return i + 1
		}
	}
	return 0
}
