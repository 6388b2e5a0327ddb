package gitproto

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// Fuzz targets for every parser of client input in this package. CI runs
// each briefly (.ci/run); seeds are the shapes the tests use.

// pkt-lines: never a panic; what is read is exactly what was sent, and a
// data line re-encodes to its own bytes.
func FuzzReadPkt(f *testing.F) {
	f.Add([]byte("0014command=ls-refs\n00010000"))
	f.Add([]byte("0000"))
	f.Add([]byte("zzzz"))
	f.Add([]byte("fff0"))
	f.Add([]byte("0004"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		var buf []byte
		read := 0
		for {
			k, err := ReadPkt(r, buf)
			if err != nil {
				break
			}
			buf = k.Raw[:0]
			if !bytes.Equal(k.Raw, in[read:read+len(k.Raw)]) {
				t.Fatalf("pkt %q is not the input at %d", k.Raw, read)
			}
			read += len(k.Raw)
			// git reads the length in either case of hex.
			if enc := EncodePkt(string(k.Payload)); !k.Control && (!bytes.EqualFold(enc[:4], k.Raw[:4]) || !bytes.Equal(enc[4:], k.Raw[4:])) {
				t.Fatalf("pkt %q does not re-encode to itself", k.Raw)
			}
			if len(k.Raw) > MaxPkt {
				t.Fatalf("pkt of %d bytes", len(k.Raw))
			}
		}
	})
}

// A push's command list: the client's bytes reach git unchanged (a
// prefix of them when they are not pkt-lines), whatever they are.
func FuzzCommandReader(f *testing.F) {
	old, new := strings.Repeat("1", 40), strings.Repeat("2", 40)
	f.Add([]byte(string(EncodePkt(old+" "+new+" refs/heads/master\x00report-status side-band-64k\n")) + "0000PACK\x00\x00\x00\x02"))
	f.Add([]byte("0000"))
	f.Add([]byte("00zz"))
	f.Fuzz(func(t *testing.T, in []byte) {
		c := NewCommandReader(bytes.NewReader(in))
		out, _ := io.ReadAll(c)
		if !bytes.HasPrefix(in, out) {
			t.Fatalf("passed on %q, not a prefix of %q", out, in)
		}
		for _, u := range c.Parsed() {
			if len(u.Old) < 40 || len(u.New) < 40 || u.Ref == "" {
				t.Fatalf("odd update %+v", u)
			}
		}
	})
}

// The pack guard: never a panic, never more forwarded than the byte cap,
// and what is forwarded is the client's bytes, in order. A refusal names
// its config key.
func FuzzGuardPush(f *testing.F) {
	f.Add([]byte("0000PACK\x00\x00\x00\x02\x00\x00\x00\x01\x35\x78\x9c\x03\x00\x00\x00\x00\x01"), int64(1<<20), int64(1<<10), int64(10))
	f.Add([]byte("0000PACK\x00\x00\x00\x02\xff\xff\xff\xff"), int64(100), int64(10), int64(10))
	f.Add([]byte("0000PACK\x00\x00\x00\x02\x00\x00\x00\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"), int64(0), int64(1), int64(0))
	f.Add([]byte("not a push at all"), int64(5), int64(0), int64(0))
	f.Fuzz(func(t *testing.T, in []byte, maxBytes, maxObject, maxObjects int64) {
		var dst bytes.Buffer
		err := GuardPush(&dst, bytes.NewReader(in), PackLimits{MaxBytes: maxBytes, MaxObject: maxObject, MaxObjects: maxObjects})
		if !bytes.HasPrefix(in, dst.Bytes()) {
			t.Fatalf("forwarded bytes are not the client's")
		}
		if maxBytes > 0 && int64(dst.Len()) > maxBytes {
			t.Fatalf("forwarded %d bytes past max_push_bytes %d", dst.Len(), maxBytes)
		}
		var le *LimitError
		if errors.As(err, &le) {
			switch le.Key {
			case "max_push_bytes", "max_object_bytes", "max_push_objects":
			default:
				t.Fatalf("refusal names %q", le.Key)
			}
		} else if err == nil && (maxBytes <= 0 || int64(len(in)) <= maxBytes) && dst.Len() != len(in) {
			t.Fatalf("accepted, but forwarded %d of %d bytes", dst.Len(), len(in))
		}
	})
}

// The protocol v2 request reader and the ls-refs argument parser: never a
// panic; a request ends at its flush and nothing after it is consumed.
func FuzzV2Request(f *testing.F) {
	f.Add([]byte("0014command=ls-refs\n0014agent=git/2.39.5\n0001000csymrefs\n001bref-prefix refs/heads/\n0000"))
	f.Add([]byte("0012command=fetch\n00010009done\n0000" + "0014command=ls-refs\n0000"))
	f.Add([]byte("0014command=ls-refs\n00010001000csymrefs\n0000"))
	f.Add([]byte("0014command=ls-refs\n000100020000"))
	f.Fuzz(func(t *testing.T, in []byte) {
		parseLsRefs(in)
		r := bytes.NewReader(in)
		first, err := ReadPkt(r, nil)
		if err != nil {
			return
		}
		firstRaw := append([]byte(nil), first.Raw...)
		rest := in[len(firstRaw):]
		req, err := ReadRequest(bytes.NewReader(rest), firstRaw, 1<<16)
		if err == nil {
			if !bytes.HasSuffix(req, []byte("0000")) || !bytes.HasPrefix(in, req) {
				t.Fatalf("request %q is not the input up to a flush", req)
			}
			parseLsRefs(req)
		}
		tail := bytes.NewReader(rest)
		q := NewRequestReader(tail, firstRaw)
		got, _ := io.ReadAll(q)
		if !bytes.HasPrefix(in, got) {
			t.Fatalf("request reader yielded %q, not the input", got)
		}
		if q.Done() && len(got)+tail.Len() != len(in) {
			t.Fatalf("request reader consumed past the flush")
		}
	})
}

// RelayPush reads receive-pack's output, not the client's, but a fuzz run
// keeps it honest too: never a panic, never more report kept than a pkt.
func FuzzRelayPush(f *testing.F) {
	adv := string(EncodePkt(strings.Repeat("a", 40)+" refs/heads/master\x00report-status side-band-64k\n")) + "0000"
	f.Add([]byte(adv + string(EncodePkt("\x01"+string(EncodePkt("unpack ok\n"))+"0000")) + "0000"))
	f.Add([]byte(adv + "0005\x01"))
	f.Fuzz(func(t *testing.T, in []byte) {
		res, _ := RelayPush(io.Discard, bytes.NewReader(in), io.Discard, func(report []byte) string {
			ReportStatus(report)
			return ""
		})
		if len(res.Report) > 2*MaxPkt {
			t.Fatalf("report of %d bytes kept", len(res.Report))
		}
	})
}
