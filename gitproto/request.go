package gitproto

import (
	"errors"
	"io"
)

// ReadRequest reads pkt-lines up to and including the flush that ends a
// v2 request, first being the command line already read.
func ReadRequest(r io.Reader, first []byte, limit int) ([]byte, error) {
	req := append([]byte(nil), first...)
	buf := make([]byte, 0, 1024)
	for {
		k, err := ReadPkt(r, buf)
		if err != nil {
			return nil, noEOF(err)
		}
		buf = k.Raw[:0]
		req = append(req, k.Raw...)
		if len(req) > limit {
			return nil, errors.New("request too large")
		}
		if k.Flush {
			return req, nil
		}
	}
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// RequestReader yields one v2 request, pkt-line by pkt-line, and then EOF;
// nothing after the request's flush is read from r.
type RequestReader struct {
	r       io.Reader
	pending []byte
	buf     []byte
	done    bool
	err     error
}

// NewRequestReader yields the request that starts with first, the command
// line already read from r.
func NewRequestReader(r io.Reader, first []byte) *RequestReader {
	return &RequestReader{r: r, pending: first, buf: make([]byte, 0, 1024)}
}

// Done reports whether the request was read up to its flush.
func (q *RequestReader) Done() bool { return q.done }

// Err is why the request ended early, if it did.
func (q *RequestReader) Err() error { return q.err }

func (q *RequestReader) Read(p []byte) (int, error) {
	for len(q.pending) == 0 {
		if q.done || q.err != nil {
			return 0, io.EOF
		}
		k, err := ReadPkt(q.r, q.buf)
		if err != nil {
			// git sees the request end early and fails on its own.
			q.err = noEOF(err)
			return 0, io.EOF
		}
		q.buf = k.Raw[:0]
		q.pending = k.Raw
		if k.Flush {
			q.done = true
		}
	}
	n := copy(p, q.pending)
	q.pending = q.pending[n:]
	return n, nil
}
