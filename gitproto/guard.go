package gitproto

import (
	"bufio"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
)

// PackLimits bound what one push may send.
type PackLimits struct {
	MaxBytes   int64 // everything the client sends: commands, options, pack
	MaxObject  int64 // the inflated size of any one object
	MaxObjects int64 // objects in the pack
}

// LimitError is a push refused by a size limit. It is permanent: the push
// would be refused the same way on every retry.
type LimitError struct {
	Key string // the config key
	Msg string
}

func (e *LimitError) Error() string { return fmt.Sprintf("%s (limits.%s)", e.Msg, e.Key) }

// GuardPush copies the client's half of a push (the ref commands, push
// options, then the pack) into receive-pack's stdin, reading the pack's
// headers as they pass: the object count from the pack header and each
// object's inflated size from its own header (or, for a delta, from the
// start of its delta data), so a push over a limit is stopped at the first
// header that shows it, long before git would have inflated a 1 GiB blob.
// It returns a *LimitError on a refusal, nil when the client's input ended,
// or the copy's error. Bytes are forwarded before they are parsed; refusing
// means git's stdin is closed early and no ref moves.
func GuardPush(dst io.Writer, src io.Reader, lim PackLimits) error {
	if lim.MaxBytes <= 0 {
		lim.MaxBytes = 1<<63 - 1
	}
	cr := &capReader{r: src, left: lim.MaxBytes}
	br := bufio.NewReaderSize(io.TeeReader(cr, dst), 64<<10)
	err := scanPush(br, lim)
	if err == nil {
		// The pack's trailer, and anything after it, goes through as is.
		_, err = io.Copy(io.Discard, br)
	}
	if cr.over {
		return &LimitError{Key: "max_push_bytes", Msg: fmt.Sprintf("push larger than %d bytes", lim.MaxBytes)}
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		// The client went away or sent a malformed stream: git judges it.
		return nil
	}
	var le *LimitError
	if errors.As(err, &le) {
		return err
	}
	if err != nil {
		// Not a pack we understand: let git judge it, still byte-capped.
		_, err = io.Copy(io.Discard, br)
		if cr.over {
			return &LimitError{Key: "max_push_bytes", Msg: fmt.Sprintf("push larger than %d bytes", lim.MaxBytes)}
		}
		if errors.Is(err, io.EOF) {
			err = nil
		}
	}
	return err
}

// errNotPack: the stream is not what a push looks like; git gets to say so.
var errNotPack = errors.New("not a pack stream")

func scanPush(br *bufio.Reader, lim PackLimits) error {
	// Ref commands, then (with push-options) a second pkt-line list.
	for section := 0; ; section++ {
		hdr, err := br.Peek(4)
		if err != nil {
			return err
		}
		if string(hdr) == "PACK" {
			break
		}
		if section > 1 {
			return errNotPack
		}
		var buf []byte
		for {
			k, err := ReadPkt(br, buf)
			if err != nil {
				return err
			}
			buf = k.Raw[:0]
			if k.Flush {
				break
			}
		}
	}
	var hdr [12]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return err
	}
	count := int64(be32(hdr[8:]))
	if v := be32(hdr[4:]); v != 2 && v != 3 {
		return errNotPack
	}
	if lim.MaxObjects > 0 && count > lim.MaxObjects {
		return &LimitError{Key: "max_push_objects", Msg: fmt.Sprintf("push of %d objects, more than %d", count, lim.MaxObjects)}
	}
	for i := int64(0); i < count; i++ {
		typ, size, err := objectHeader(br)
		if err != nil {
			return err
		}
		delta := false
		switch typ {
		case 1, 2, 3, 4: // commit, tree, blob, tag
		case 6: // ofs-delta: a negative offset
			delta = true
			for {
				b, err := br.ReadByte()
				if err != nil {
					return err
				}
				if b&0x80 == 0 {
					break
				}
			}
		case 7: // ref-delta: the base's id (SHA-1)
			delta = true
			if _, err := br.Discard(20); err != nil {
				return err
			}
		default:
			return errNotPack
		}
		if !delta && lim.MaxObject > 0 && size > lim.MaxObject {
			return &LimitError{Key: "max_object_bytes", Msg: fmt.Sprintf("object of %d bytes, more than %d", size, lim.MaxObject)}
		}
		zr, err := zlib.NewReader(br)
		if err != nil {
			return errNotPack
		}
		// Inflate no more than the header declares (git refuses a
		// mismatch); a zlib bomb cannot make this loop work harder.
		data := bufio.NewReader(io.LimitReader(zr, size+1))
		if delta {
			if _, err := varint(data); err != nil { // base size
				return errNotPack
			}
			result, err := varint(data)
			if err != nil {
				return errNotPack
			}
			if lim.MaxObject > 0 && result > lim.MaxObject {
				return &LimitError{Key: "max_object_bytes", Msg: fmt.Sprintf("object of %d bytes (a delta), more than %d", result, lim.MaxObject)}
			}
		}
		n, err := io.Copy(io.Discard, data)
		if err != nil {
			return errNotPack
		}
		_ = n
		zr.Close()
	}
	return nil
}

func be32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// objectHeader reads a pack object's type and inflated size.
func objectHeader(br *bufio.Reader) (typ int, size int64, err error) {
	b, err := br.ReadByte()
	if err != nil {
		return 0, 0, err
	}
	typ = int(b>>4) & 7
	size = int64(b & 0x0f)
	shift := 4
	for b&0x80 != 0 {
		if b, err = br.ReadByte(); err != nil {
			return 0, 0, err
		}
		if shift > 56 {
			return 0, 0, errNotPack
		}
		size |= int64(b&0x7f) << shift
		shift += 7
	}
	return typ, size, nil
}

// varint reads a delta header size (little-endian base-128).
func varint(r io.ByteReader) (int64, error) {
	var v int64
	for shift := 0; shift < 63; shift += 7 {
		b, err := r.ReadByte()
		if err != nil {
			return 0, err
		}
		v |= int64(b&0x7f) << shift
		if b&0x80 == 0 {
			return v, nil
		}
	}
	return 0, errNotPack
}

// capReader stops reading after left bytes.
type capReader struct {
	r    io.Reader
	left int64
	over bool
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		// Exactly at the cap: over only if the client has more to send.
		var b [1]byte
		n, err := c.r.Read(b[:])
		if n > 0 {
			c.over = true
			return 0, io.EOF
		}
		return 0, err
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}
