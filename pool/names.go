package pool

import "strings"

// IsDot reports whether a directory entry is a dot-file, which is never a
// lock (.gitkeep, .keep, .pending-triggers ...).
func IsDot(name string) bool { return strings.HasPrefix(name, ".") }
