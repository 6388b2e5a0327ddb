// Package gitproto is the git wire protocol as poolgate reads and relays
// it: the SSH command line that names a service, pkt-lines, a push's
// command list and report, protocol v2 requests and ls-refs, and the guard
// that reads a pushed pack's headers. Plain io.Reader/io.Writer code: no
// process, no network, no config.
package gitproto

import (
	"fmt"
	"io"
	"strconv"
)

// Pkt is a pkt-line as read off the wire: Raw holds the 4-byte header and
// payload exactly as received, so relaying never re-encodes anything.
type Pkt struct {
	Raw     []byte
	Payload []byte
	Flush   bool // "0000"; delim and response-end count as Control too
	Control bool
}

// MaxPkt is the largest pkt-line git sends or accepts (LARGE_PACKET_MAX).
const MaxPkt = 65520

// ReadPkt reads one pkt-line into buf's storage (grown as needed); the
// result is valid until the next call with the same buf.
func ReadPkt(r io.Reader, buf []byte) (Pkt, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return Pkt{}, err
	}
	n, err := strconv.ParseUint(string(hdr[:]), 16, 16)
	if err != nil {
		return Pkt{}, fmt.Errorf("bad pkt-line header %q", hdr[:])
	}
	if n > MaxPkt {
		return Pkt{}, fmt.Errorf("pkt-line of %d bytes", n)
	}
	if n < 4 {
		return Pkt{Raw: append(buf[:0], hdr[:]...), Flush: n == 0, Control: true}, nil
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n, MaxPkt)
	}
	raw := buf[:n]
	copy(raw, hdr[:])
	if _, err := io.ReadFull(r, raw[4:]); err != nil {
		return Pkt{}, err
	}
	return Pkt{Raw: raw, Payload: raw[4:]}, nil
}

// EncodePkt frames payload as one pkt-line.
func EncodePkt(payload string) []byte {
	return []byte(fmt.Sprintf("%04x%s", len(payload)+4, payload))
}
