package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/poolgate/poolgate/pushlog"
)

// A pkt-line as read off the wire: raw holds the 4-byte header and payload
// exactly as received, so relaying never re-encodes anything.
type pkt struct {
	raw     []byte
	payload []byte
	flush   bool // "0000"; delim and response-end count as control too
	control bool
}

const maxPkt = 65520

// readPkt reads one pkt-line into buf's storage (grown as needed); the
// result is valid until the next call with the same buf.
func readPkt(r io.Reader, buf []byte) (pkt, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return pkt{}, err
	}
	n, err := strconv.ParseUint(string(hdr[:]), 16, 16)
	if err != nil {
		return pkt{}, fmt.Errorf("bad pkt-line header %q", hdr[:])
	}
	if n > maxPkt {
		return pkt{}, fmt.Errorf("pkt-line of %d bytes", n)
	}
	if n < 4 {
		return pkt{raw: append(buf[:0], hdr[:]...), flush: n == 0, control: true}, nil
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n, maxPkt)
	}
	raw := buf[:n]
	copy(raw, hdr[:])
	if _, err := io.ReadFull(r, raw[4:]); err != nil {
		return pkt{}, err
	}
	return pkt{raw: raw, payload: raw[4:]}, nil
}

func encodePkt(payload string) []byte {
	return []byte(fmt.Sprintf("%04x%s", len(payload)+4, payload))
}

// RefUpdate is one "OLD NEW REF" command a pusher sent.
type RefUpdate struct {
	Old, New, Ref string
}

func (u RefUpdate) String() string { return fmt.Sprintf("%s %.12s→%.12s", u.Ref, u.Old, u.New) }

// commandReader passes the client's half of a push through unchanged while
// noting the ref update commands at its start, for the log.
type commandReader struct {
	r       io.Reader
	pending bytes.Buffer
	done    bool
	buf     []byte
	updates []RefUpdate
	err     error

	mu     sync.Mutex
	result []RefUpdate // updates, once the command list has ended
}

// parsed returns the ref updates, or nil if the command list has not been
// read to its end (the client sent nothing, or went away).
func (c *commandReader) parsed() []RefUpdate {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.result
}

func (c *commandReader) finish() {
	c.done = true
	c.mu.Lock()
	c.result = c.updates
	c.mu.Unlock()
}

func (c *commandReader) Read(p []byte) (int, error) {
	for c.pending.Len() == 0 && !c.done {
		k, err := readPkt(c.r, c.buf)
		if err != nil {
			if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
				// Not pkt-lines after all: stop looking and let git judge.
				c.err = err
			}
			c.finish()
			break
		}
		c.buf = k.raw[:0]
		c.pending.Write(k.raw)
		if k.control {
			c.finish()
			break
		}
		line := string(k.payload)
		if i := strings.IndexByte(line, 0); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 3 && len(f[0]) >= 40 && len(f[1]) >= 40 {
			c.updates = append(c.updates, RefUpdate{Old: f[0], New: f[1], Ref: f[2]})
		}
	}
	if c.pending.Len() > 0 {
		return c.pending.Read(p)
	}
	if c.err != nil {
		return 0, c.err
	}
	return c.r.Read(p)
}

// Side-band channels (gitprotocol-pack(5)).
const (
	bandData     = 1
	bandProgress = 2
	bandError    = 3
)

// relayResult says how a push's output went.
type relayResult struct {
	refused bool   // a permanent verdict: the report was withheld
	report  []byte // report-status as the client would have seen it
}

// refusedMessage ends a permanently refused push. The hook's own reasons
// were already relayed as "remote:" lines above it.
const refusedMessage = "poolgate: push refused, see the messages above"

// relayPush copies receive-pack's stdout to the client. Once the hook has
// run (receive-pack writes the report only after it), verdict tells whether
// the hook judged the push permanently wrong; if so the report is withheld
// and the session ends with an error instead: a stock pool-resource client
// retries a "[remote rejected]" silently forever, but shows an error and
// gives up (DESIGN.md §2, "Rejection is waiting").
func relayPush(dst io.Writer, src io.Reader, verdict func() string) (relayResult, error) {
	var res relayResult
	var buf []byte
	// The ref advertisement, up to its flush.
	for {
		k, err := readPkt(src, buf)
		if err != nil {
			return res, ignoreEOF(err)
		}
		buf = k.raw[:0]
		if _, err := dst.Write(k.raw); err != nil {
			return res, err
		}
		if k.flush {
			break
		}
	}
	decided := false
	for {
		k, err := readPkt(src, buf)
		if err != nil {
			return res, ignoreEOF(err)
		}
		buf = k.raw[:0]
		if !decided && !k.control && len(k.payload) > 0 {
			band := k.payload[0]
			sideband := band == bandData || band == bandProgress || band == bandError
			// A band-1 packet of no data is receive-pack's keepalive, sent
			// while the hook runs: not the report yet.
			isReport := (band == bandData && len(k.payload) > 1) || !sideband
			if isReport {
				decided = true
				if verdict() == pushlog.VerdictPermanent {
					res.refused = true
					if sideband {
						if _, err := dst.Write(encodePkt("\x03" + refusedMessage + "\n")); err != nil {
							return res, err
						}
					}
					// Let receive-pack finish writing into the void.
					_, err := io.Copy(io.Discard, src)
					return res, err
				}
			}
		}
		if decided && !k.control && len(k.payload) > 0 && (k.payload[0] == bandData || !isBand(k.payload[0])) && len(res.report) < maxPkt {
			if isBand(k.payload[0]) {
				res.report = append(res.report, k.payload[1:]...)
			} else {
				res.report = append(res.report, k.raw...)
			}
		}
		if _, err := dst.Write(k.raw); err != nil {
			return res, err
		}
	}
}

func isBand(b byte) bool { return b == bandData || b == bandProgress || b == bandError }

func ignoreEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// reportStatus reads the ok/ng lines of a report-status for the log.
func reportStatus(report []byte) (ok []string, ng []string) {
	r := bytes.NewReader(report)
	var buf []byte
	for {
		k, err := readPkt(r, buf)
		if err != nil {
			return
		}
		buf = k.raw[:0]
		line := strings.TrimSuffix(string(k.payload), "\n")
		switch {
		case strings.HasPrefix(line, "ok "):
			ok = append(ok, line[3:])
		case strings.HasPrefix(line, "ng "):
			ng = append(ng, line[3:])
		}
	}
}
