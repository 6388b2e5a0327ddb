package events

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/poolgate/poolgate/pushlog"
)

// stamp is a stat-only fingerprint of what a change outside the daemon
// touches: the branch's loose ref (git writes every ref update there, by a
// rename, so the inode changes; packed-refs changes only when refs are
// packed or deleted, never moving a tip) and the hook's record files
// (appended, so the size changes). Watch mode tells the service itself.
func (d *Deriver) stamp() string {
	var b strings.Builder
	for _, p := range []string{
		filepath.Join(d.dir, "refs", "heads", filepath.FromSlash(d.branch)),
		d.records().Path(pushlog.Pushes),
		d.records().Path(pushlog.Rejections),
	} {
		fi, err := os.Stat(p)
		if err != nil {
			b.WriteString("-;")
			continue
		}
		var ino uint64
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ino = st.Ino
		}
		b.WriteString(strconv.FormatInt(fi.Size(), 10) + "." + strconv.FormatInt(fi.ModTime().UnixNano(), 10) + "." + strconv.FormatUint(ino, 10) + ";")
	}
	return b.String()
}

// Changed reports, by stat alone, whether anything a sync reads changed
// since the last sync began.
func (d *Deriver) Changed() bool {
	s, _ := d.synced.Load().(string)
	return d.stamp() != s
}
