package gitproto

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

func pkts(payloads ...string) []byte {
	var b bytes.Buffer
	for _, p := range payloads {
		if p == "" {
			b.WriteString("0000")
			continue
		}
		b.Write(EncodePkt(p))
	}
	return b.Bytes()
}

// receive-pack's output for a push the hook declined: advertisement, the
// hook's stderr on band 2, a keepalive while it ran, then the report.
func declinedPush() (adv, progress, keepalive, report []byte) {
	adv = pkts(strings.Repeat("a", 40)+" refs/heads/master\x00report-status side-band-64k\n", "")
	progress = pkts("\x02poolgate: bad-path: commit abc\n")
	keepalive = pkts("\x01")
	inner := string(pkts("unpack ok\n", "ng refs/heads/master pre-receive hook declined\n", ""))
	report = append(pkts("\x01"+inner), pkts("")...)
	return
}

func TestRefusalWithholdsTheReportAndSendsAnError(t *testing.T) {
	adv, progress, keepalive, report := declinedPush()
	in := bytes.Join([][]byte{adv, progress, keepalive, report}, nil)
	var out bytes.Buffer
	var text bytes.Buffer
	var seen []byte
	res, err := RelayPush(&out, bytes.NewReader(in), &text, func(report []byte) string {
		seen = append(seen, report...)
		return "refused, see above"
	})
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Join([][]byte{adv, progress, keepalive, pkts("\x03refused, see above\n")}, nil)
	if !res.Refused || !res.Sideband || !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("refused=%v, relayed:\n%q\nwant:\n%q", res.Refused, out.Bytes(), want)
	}
	if unpack, _, ng := ReportStatus(seen); unpack != "ok" || len(ng) != 1 {
		t.Errorf("decide saw report %q", seen)
	}
	if text.String() != "poolgate: bad-path: commit abc\n" {
		t.Errorf("band-2 text relayed to progress: %q", text.String())
	}
}

func TestRejectionNotRefusedPassesThrough(t *testing.T) {
	adv, progress, keepalive, report := declinedPush()
	in := bytes.Join([][]byte{adv, progress, keepalive, report}, nil)
	{
		var out bytes.Buffer
		res, err := RelayPush(&out, bytes.NewReader(in), nil, func([]byte) string { return "" })
		if err != nil || res.Refused || !bytes.Equal(out.Bytes(), in) {
			t.Fatalf("refused=%v err=%v, output changed", res.Refused, err)
		}
		_, ok, ng := ReportStatus(res.Report)
		if len(ok) != 0 || len(ng) != 1 || ng[0] != "refs/heads/master pre-receive hook declined" {
			t.Fatalf("report parsed as ok=%q ng=%q", ok, ng)
		}
	}
}

func TestDecideIsCalledOnceAtTheReport(t *testing.T) {
	adv, progress, keepalive, report := declinedPush()
	calls := 0
	in := bytes.Join([][]byte{adv, progress, keepalive, keepalive, report}, nil)
	RelayPush(&bytes.Buffer{}, bytes.NewReader(in), nil, func([]byte) string { calls++; return "" })
	if calls != 1 {
		t.Fatalf("verdict read %d times, want once at the report", calls)
	}
	// A client with nothing to push gets only the advertisement.
	calls = 0
	var out bytes.Buffer
	if _, err := RelayPush(&out, bytes.NewReader(adv), nil, func([]byte) string { calls++; return "refused" }); err != nil || calls != 0 || !bytes.Equal(out.Bytes(), adv) {
		t.Fatalf("no-op push: calls=%d err=%v", calls, err)
	}
}

func TestRefusalWithoutSidebandSendsNoReport(t *testing.T) {
	adv := pkts(strings.Repeat("a", 40)+" refs/heads/master\x00report-status\n", "")
	report := pkts("unpack ok\n", "ng refs/heads/master pre-receive hook declined\n", "")
	var out bytes.Buffer
	res, _ := RelayPush(&out, bytes.NewReader(append(adv, report...)), nil, func([]byte) string { return "refused" })
	if !res.Refused || res.Sideband || !bytes.Equal(out.Bytes(), adv) {
		t.Fatalf("refused=%v out=%q", res.Refused, out.Bytes())
	}
}

// receive-pack carries out a command whose ids are upper case (a raw
// client may send them so); the relay notes it all the same, as git
// prints the ids.
func TestCommandReaderNotesACommandWithUpperCaseIDs(t *testing.T) {
	from, to := strings.Repeat("a", 40), strings.Repeat("b", 40)
	in := pkts(strings.ToUpper(from)+" "+strings.ToUpper(to)+" refs/heads/Master\x00report-status\n",
		strings.Repeat("c", 39)+" "+to+" refs/heads/short\n", "")
	c := NewCommandReader(bytes.NewReader(in))
	if _, err := new(bytes.Buffer).ReadFrom(c); err != nil {
		t.Fatal(err)
	}
	if u := c.Parsed(); len(u) != 1 || u[0].Old != from || u[0].New != to || u[0].Ref != "refs/heads/Master" {
		t.Fatalf("updates %v", u)
	}
}

func TestCommandReaderPassesBytesThroughAndNotesUpdates(t *testing.T) {
	old, new := strings.Repeat("1", 40), strings.Repeat("2", 40)
	in := append(pkts(old+" "+new+" refs/heads/master\x00report-status side-band-64k\n", ""), []byte("PACK\x00\x00\x00\x02rest")...)
	c := NewCommandReader(bytes.NewReader(in))
	var out bytes.Buffer
	if _, err := out.ReadFrom(c); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), in) {
		t.Fatalf("stream changed")
	}
	if u := c.Parsed(); len(u) != 1 || u[0].Old != old || u[0].New != new || u[0].Ref != "refs/heads/master" {
		t.Fatalf("updates %v", u)
	}
}

func TestRefusalReportIsGitsOwnNgReportInTheClientsFraming(t *testing.T) {
	from, to := strings.Repeat("1", 40), strings.Repeat("2", 40)
	in := pkts(from+" "+to+" refs/heads/master\x00report-status side-band-64k agent=git/2.39\n", "")
	c := NewCommandReader(bytes.NewReader(in))
	if _, err := new(bytes.Buffer).ReadFrom(c); err != nil {
		t.Fatal(err)
	}
	if caps := c.Capabilities(); strings.Join(caps, " ") != "report-status side-band-64k agent=git/2.39" {
		t.Fatalf("capabilities %q", caps)
	}
	_, _, _, want := declinedPush()
	if got := RefusalReport(c.Parsed(), c.Capabilities(), "pre-receive hook declined"); !bytes.Equal(got, want) {
		t.Fatalf("side-band report\n got %q\nwant %q", got, want)
	}
	plain := RefusalReport(c.Parsed(), []string{"report-status"}, "the pool\nmoved")
	unpack, ok, ng := ReportStatus(plain)
	if unpack != "ok" || len(ok) != 0 || len(ng) != 1 || ng[0] != "refs/heads/master the pool moved" {
		t.Fatalf("plain report %q: unpack %q ok %q ng %q", plain, unpack, ok, ng)
	}
	if r := RefusalReport(c.Parsed(), []string{"side-band-64k"}, "x"); r != nil {
		t.Fatalf("a client that asked for no report got %q", r)
	}
}

// countingWriter records each write separately.
type countingWriter struct {
	writes [][]byte
	wrote  chan struct{}
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.writes = append(c.writes, append([]byte(nil), p...))
	if c.wrote != nil {
		c.wrote <- struct{}{}
	}
	return len(p), nil
}

// TestRelayPushBatchesWhatIsReadyAndHoldsNothingBack: pkt-lines that
// receive-pack has written by the time they are relayed go out in one
// write (one SSH packet, not one per pkt-line); a packet with nothing
// after it yet is sent at once, not held for a batch (the client waits
// for the advertisement before it sends the pack).
func TestRelayPushBatchesWhatIsReadyAndHoldsNothingBack(t *testing.T) {
	adv, progress, keepalive, report := declinedPush()
	all := bytes.Join([][]byte{adv, progress, keepalive, report}, nil)
	var w countingWriter
	if _, err := RelayPush(&w, bytes.NewReader(all), nil, func([]byte) string { return "" }); err != nil {
		t.Fatal(err)
	}
	if len(w.writes) != 1 || !bytes.Equal(w.writes[0], all) {
		t.Fatalf("%d writes for a stream that was all ready, want 1 with it all: %q", len(w.writes), w.writes)
	}

	pr, pw := io.Pipe()
	sent := &countingWriter{wrote: make(chan struct{}, 16)}
	done := make(chan error, 1)
	go func() {
		_, err := RelayPush(sent, pr, nil, func([]byte) string { return "" })
		done <- err
	}()
	pw.Write(adv)
	<-sent.wrote // the advertisement alone, before anything else is written
	if len(sent.writes) != 1 || !bytes.Equal(sent.writes[0], adv) {
		t.Fatalf("advertisement relayed as %q, want %q", sent.writes, adv)
	}
	pw.Write(keepalive)
	<-sent.wrote // a keepalive while the hook runs goes out on its own
	pw.Write(bytes.Join([][]byte{progress, report}, nil))
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, want := bytes.Join(sent.writes, nil), bytes.Join([][]byte{adv, keepalive, progress, report}, nil); !bytes.Equal(got, want) {
		t.Fatalf("relayed %q, want %q", got, want)
	}
}
