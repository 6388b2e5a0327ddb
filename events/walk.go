package events

import (
	"slices"

	"github.com/poolgate/poolgate/gitstore"
)

// commitReader is what the walk reads of a repo.
type commitReader interface {
	Commit(hash string) (*gitstore.Commit, error)
}

// maxMeet bounds the search for where a rewritten history meets the old
// one; past it (unrelated histories) the whole new chain is derived, and
// event ids keep what is already stored from being stored twice.
const maxMeet = 1 << 20

// walk is the branch's first-parent chain from tip back to stop (not
// included; "" walks to the root commit), handed out oldest first, segLen
// commits at a time. It keeps one hash per segment and one segment's
// commits, so its memory does not grow with the history: a first start on
// 200,000 commits holds a few hundred hashes, not the whole chain (which is
// what `git rev-list --reverse` would build).
type walk struct {
	r      commitReader
	segLen int
	// marks[i] is the commit i*segLen steps below tip.
	marks []string
	total int
	next  int // segments handed out so far, counted from the oldest
	// FastForward is false when stop is not on tip's first-parent chain
	// (an admin's forced push): the walk then starts where the two
	// histories meet.
	FastForward bool
}

// newWalk reads the chain once to place its marks. Each commit is read
// twice in all (here and when its segment is handed out): cheaper than
// holding the chain.
func newWalk(r commitReader, tip, stop string, segLen int) (*walk, error) {
	w := &walk{r: r, segLen: segLen, FastForward: true}
	found, err := w.mark(tip, stop)
	if err != nil {
		return nil, err
	}
	if !found {
		w.FastForward = false
		meet, err := meetingPoint(r, tip, stop)
		if err != nil {
			return nil, err
		}
		if _, err := w.mark(tip, meet); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// mark walks from tip to stop, recording every segLen-th commit. It
// reports whether stop was reached ("" is reached at the root).
func (w *walk) mark(tip, stop string) (bool, error) {
	w.marks, w.total = w.marks[:0], 0
	for h := tip; h != stop; w.total++ {
		if w.total%w.segLen == 0 {
			w.marks = append(w.marks, h)
		}
		c, err := w.r.Commit(h)
		if err != nil {
			return false, err
		}
		if len(c.Parents) == 0 {
			w.total++
			return stop == "", nil
		}
		h = c.Parents[0]
	}
	return true, nil
}

// Next returns the next segment, oldest commit first, or nil at the end.
func (w *walk) Next() ([]*gitstore.Commit, error) {
	i := len(w.marks) - 1 - w.next
	if i < 0 {
		return nil, nil
	}
	w.next++
	n := min(w.segLen, w.total-i*w.segLen)
	seg := make([]*gitstore.Commit, 0, n)
	for h := w.marks[i]; len(seg) < n; {
		c, err := w.r.Commit(h)
		if err != nil {
			return nil, err
		}
		seg = append(seg, c)
		if len(c.Parents) > 0 {
			h = c.Parents[0]
		}
	}
	slices.Reverse(seg)
	return seg, nil
}

// Last reports whether the segment handed out last was the newest.
func (w *walk) Last() bool { return w.next >= len(w.marks) }

// meetingPoint finds the newest commit on both first-parent chains by
// stepping down both at once, so it costs the distance to the meeting
// point, not the length of history. "" when they do not meet (or not
// within maxMeet steps).
func meetingPoint(r commitReader, a, b string) (string, error) {
	seenA, seenB := map[string]bool{}, map[string]bool{}
	step := func(h string) (string, error) {
		if h == "" {
			return "", nil
		}
		c, err := r.Commit(h)
		if err != nil || len(c.Parents) == 0 {
			return "", err
		}
		return c.Parents[0], nil
	}
	for i := 0; (a != "" || b != "") && i < maxMeet; i++ {
		if a != "" {
			if seenB[a] {
				return a, nil
			}
			seenA[a] = true
		}
		if b != "" {
			if seenA[b] {
				return b, nil
			}
			seenB[b] = true
		}
		var err error
		if a, err = step(a); err != nil {
			return "", err
		}
		if b, err = step(b); err != nil {
			return "", err
		}
	}
	return "", nil
}
