package gitproto

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"sync"

	"github.com/poolgate/poolgate/pool"
)

// CommandReader passes the client's half of a push through unchanged while
// noting the ref update commands at its start, for the log.
type CommandReader struct {
	r       io.Reader
	pending bytes.Buffer
	done    bool
	buf     []byte
	updates []pool.RefUpdate
	caps    []string // the first command's capabilities
	err     error

	mu      sync.Mutex
	result  []pool.RefUpdate // updates, once the command list has ended
	resCaps []string
}

// NewCommandReader reads a push's client half from r.
func NewCommandReader(r io.Reader) *CommandReader { return &CommandReader{r: r} }

// Parsed returns the ref updates, or nil if the command list has not been
// read to its end (the client sent nothing, or went away).
func (c *CommandReader) Parsed() []pool.RefUpdate {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.result
}

func (c *CommandReader) finish() {
	c.done = true
	c.mu.Lock()
	c.result, c.resCaps = c.updates, c.caps
	c.mu.Unlock()
}

// Capabilities returns what the client asked for on its first command, or
// nil before the command list has ended.
func (c *CommandReader) Capabilities() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.resCaps
}

func (c *CommandReader) Read(p []byte) (int, error) {
	for c.pending.Len() == 0 && !c.done {
		k, err := ReadPkt(c.r, c.buf)
		if err != nil {
			if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
				// Not pkt-lines after all: stop looking and let git judge.
				c.err = err
			}
			c.finish()
			break
		}
		c.buf = k.Raw[:0]
		c.pending.Write(k.Raw)
		if k.Control {
			c.finish()
			break
		}
		line := string(k.Payload)
		if i := strings.IndexByte(line, 0); i >= 0 {
			if len(c.updates) == 0 {
				c.caps = strings.Fields(line[i+1:])
			}
			line = line[:i]
		}
		if u, ok := parseCommand(line); ok {
			c.updates = append(c.updates, u)
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
	BandData     = 1
	BandProgress = 2
	BandError    = 3
)

// RelayResult says how a push's output went.
type RelayResult struct {
	Refused  bool   // decide refused the push: the report was withheld
	Sideband bool   // the report came on band 1 (else the refusal is the caller's to say)
	Report   []byte // report-status as the client would have seen it
}

// RelayPush copies receive-pack's stdout to the client, and the text of its
// band 2 (git's and the hook's stderr) to progress as well, if not nil.
// When the report arrives (receive-pack writes it only after the hook has
// run, and after its unpacker's messages), decide is called once with it —
// the report's pkt-lines — and may refuse the push with a message: then the
// report is withheld and, on a side-band session, the message is sent as a
// band-3 error, so git ends the push as an error. A stock pool-resource
// client retries a "[remote rejected]" silently forever, but shows an error
// and gives up (DESIGN.md §2, "Rejection is waiting").
//
// Packets are written to dst in batches: whatever receive-pack has written
// by the time one is relayed goes out with it in one write, and the batch
// is sent as soon as nothing more is waiting, so no packet is held back.
// Each write to an SSH channel is at least one SSH packet, one encryption
// and one system call; a push's advertisement and report are a handful of
// pkt-lines each.
func RelayPush(dst io.Writer, src io.Reader, progress io.Writer, decide func(report []byte) string) (res RelayResult, err error) {
	in := bufio.NewReaderSize(src, relayBuffer)
	out := bufio.NewWriterSize(dst, relayBuffer)
	defer func() {
		if ferr := out.Flush(); err == nil {
			err = ferr
		}
	}()
	// write queues p and sends the batch when receive-pack has nothing
	// more ready.
	write := func(p []byte) error {
		if _, err := out.Write(p); err != nil {
			return err
		}
		if in.Buffered() == 0 {
			return out.Flush()
		}
		return nil
	}
	src = in
	var buf []byte
	// The ref advertisement, up to its flush.
	for {
		k, err := ReadPkt(src, buf)
		if err != nil {
			return res, ignoreEOF(err)
		}
		buf = k.Raw[:0]
		if err := write(k.Raw); err != nil {
			return res, err
		}
		if k.Flush {
			break
		}
	}
	decided := false
	for {
		k, err := ReadPkt(src, buf)
		if err != nil {
			return res, ignoreEOF(err)
		}
		buf = k.Raw[:0]
		if !k.Control && len(k.Payload) > 0 && k.Payload[0] == BandProgress && progress != nil {
			progress.Write(k.Payload[1:])
		}
		if !decided && !k.Control && len(k.Payload) > 0 {
			band := k.Payload[0]
			sideband := isBand(band)
			// A band-1 packet of no data is receive-pack's keepalive, sent
			// while the hook runs: not the report yet.
			if (band == BandData && len(k.Payload) > 1) || !sideband {
				decided = true
				res.Sideband = sideband
				report := k.Raw
				if sideband {
					report = k.Payload[1:]
				}
				if msg := decide(report); msg != "" {
					res.Refused = true
					if sideband {
						if _, err := out.Write(EncodePkt("\x03" + msg + "\n")); err != nil {
							return res, err
						}
					}
					if err := out.Flush(); err != nil {
						return res, err
					}
					// Let receive-pack finish writing into the void.
					_, err := io.Copy(io.Discard, src)
					return res, err
				}
			}
		}
		if decided && !k.Control && len(k.Payload) > 0 && (k.Payload[0] == BandData || !isBand(k.Payload[0])) && len(res.Report) < MaxPkt {
			if isBand(k.Payload[0]) {
				res.Report = append(res.Report, k.Payload[1:]...)
			} else {
				res.Report = append(res.Report, k.Raw...)
			}
		}
		if err := write(k.Raw); err != nil {
			return res, err
		}
	}
}

// RefusalReport is the report-status receive-pack would have written had
// it refused every update with msg ("unpack ok", then "ng REF msg" each),
// framed as the client asked (side-band or not). It is for a receive-pack
// that died without a report after a refusal that must reach the client as
// an ordinary "[remote rejected]" (a cluster node's lost compare-and-set:
// git 2.39 dies when the reference-transaction hook refuses). nil when the
// client asked for no report.
func RefusalReport(updates []pool.RefUpdate, caps []string, msg string) []byte {
	has := func(c string) bool {
		for _, x := range caps {
			if x == c {
				return true
			}
		}
		return false
	}
	if len(updates) == 0 || (!has("report-status") && !has("report-status-v2")) {
		return nil
	}
	msg = strings.Map(func(r rune) rune {
		if r < ' ' {
			return ' '
		}
		return r
	}, msg)
	var body bytes.Buffer
	body.Write(EncodePkt("unpack ok\n"))
	for _, u := range updates {
		body.Write(EncodePkt("ng " + u.Ref + " " + msg + "\n"))
	}
	body.WriteString("0000")
	size := 0
	switch {
	case has("side-band-64k"):
		size = MaxPkt - 5
	case has("side-band"):
		size = 1000 - 5
	default:
		return body.Bytes()
	}
	var out bytes.Buffer
	b := body.Bytes()
	for len(b) > 0 {
		n := min(size, len(b))
		out.Write(EncodePkt("\x01" + string(b[:n])))
		b = b[n:]
	}
	out.WriteString("0000")
	return out.Bytes()
}

// relayBuffer holds a batch of pkt-lines (a whole one at most, 64 KiB).
const relayBuffer = 64 << 10

func isBand(b byte) bool { return b == BandData || b == BandProgress || b == BandError }

func ignoreEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// ReportStatus reads a report-status: the unpack line's status ("ok", or
// git's reason the pack was not stored; "" if the report has none) and the
// ok/ng lines.
func ReportStatus(report []byte) (unpack string, ok []string, ng []string) {
	r := bytes.NewReader(report)
	var buf []byte
	for {
		k, err := ReadPkt(r, buf)
		if err != nil {
			return
		}
		buf = k.Raw[:0]
		line := strings.TrimSuffix(string(k.Payload), "\n")
		switch {
		case strings.HasPrefix(line, "unpack "):
			unpack = line[len("unpack "):]
		case strings.HasPrefix(line, "ok "):
			ok = append(ok, line[3:])
		case strings.HasPrefix(line, "ng "):
			ng = append(ng, line[3:])
		}
	}
}

// parseCommand reads one "OLD NEW REF" command of a pusher. receive-pack
// reads a command's ids in either case (git's hexval), so a command git
// carries out is noted here too, its ids as git prints them (the log line,
// a refusal report's ng lines).
func parseCommand(line string) (pool.RefUpdate, bool) {
	f := strings.Fields(line)
	if len(f) != 3 {
		return pool.RefUpdate{}, false
	}
	u, err := pool.ParseRefUpdate(strings.ToLower(f[0]) + " " + strings.ToLower(f[1]) + " " + f[2])
	return u, err == nil
}
