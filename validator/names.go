package validator

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/poolgate/poolgate/pool"
)

// The name checks: of lock names (rule bad-name) and of pool paths in a
// config, which are made of the same kind of names.

// MaxNameBytes is the longest lock name accepted (the common filesystem limit).
const MaxNameBytes = 255

// CheckName reports why name cannot be a lock name, or nil. Names reach shell
// scripts, log lines and Slack messages, so control characters are refused
// outright rather than escaped at every use.
func CheckName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty name")
	case len(name) > MaxNameBytes:
		return fmt.Errorf("name is %d bytes, over %d", len(name), MaxNameBytes)
	case !utf8.ValidString(name):
		return fmt.Errorf("name is not valid UTF-8")
	case strings.ContainsRune(name, '/'):
		return fmt.Errorf("name contains '/'")
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			if r == '\n' {
				return fmt.Errorf("name contains a newline")
			}
			return fmt.Errorf("name contains control character %U", r)
		}
	}
	return nil
}

// CheckPoolPath reports why p cannot name a pool in a config, or nil.
func CheckPoolPath(p string) error {
	if p == "" {
		return fmt.Errorf("empty pool name")
	}
	if strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") {
		return fmt.Errorf("pool %q must be a relative path without leading or trailing '/'", p)
	}
	for _, c := range strings.Split(p, "/") {
		if c == "" || c == "." || c == ".." {
			return fmt.Errorf("pool %q has an empty, '.' or '..' component", p)
		}
		if pool.IsDot(c) {
			return fmt.Errorf("pool %q has a component starting with '.'", p)
		}
		if c == pool.Claimed || c == pool.Unclaimed {
			return fmt.Errorf("pool %q has a component named %q", p, c)
		}
		if err := CheckName(c); err != nil {
			return fmt.Errorf("pool %q: %v", p, err)
		}
	}
	return nil
}
