package daemon

import (
	"bytes"
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
		b.Write(encodePkt(p))
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

func TestPermanentVerdictWithholdsTheReportAndSendsAnError(t *testing.T) {
	adv, progress, keepalive, report := declinedPush()
	in := bytes.Join([][]byte{adv, progress, keepalive, report}, nil)
	var out bytes.Buffer
	res, err := relayPush(&out, bytes.NewReader(in), func() string { return "permanent" })
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Join([][]byte{adv, progress, keepalive, pkts("\x03" + refusedMessage + "\n")}, nil)
	if !res.refused || !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("refused=%v, relayed:\n%q\nwant:\n%q", res.refused, out.Bytes(), want)
	}
}

func TestTransientVerdictPassesTheRejectionThrough(t *testing.T) {
	adv, progress, keepalive, report := declinedPush()
	in := bytes.Join([][]byte{adv, progress, keepalive, report}, nil)
	for _, v := range []string{"transient", ""} {
		var out bytes.Buffer
		res, err := relayPush(&out, bytes.NewReader(in), func() string { return v })
		if err != nil || res.refused || !bytes.Equal(out.Bytes(), in) {
			t.Fatalf("verdict %q: refused=%v err=%v, output changed", v, res.refused, err)
		}
		ok, ng := reportStatus(res.report)
		if len(ok) != 0 || len(ng) != 1 || ng[0] != "refs/heads/master pre-receive hook declined" {
			t.Fatalf("report parsed as ok=%q ng=%q", ok, ng)
		}
	}
}

func TestVerdictIsReadOnlyOnceTheHookHasRun(t *testing.T) {
	adv, progress, keepalive, report := declinedPush()
	calls := 0
	in := bytes.Join([][]byte{adv, progress, keepalive, keepalive, report}, nil)
	relayPush(&bytes.Buffer{}, bytes.NewReader(in), func() string { calls++; return "" })
	if calls != 1 {
		t.Fatalf("verdict read %d times, want once at the report", calls)
	}
	// A client with nothing to push gets only the advertisement.
	calls = 0
	var out bytes.Buffer
	if _, err := relayPush(&out, bytes.NewReader(adv), func() string { calls++; return "permanent" }); err != nil || calls != 0 || !bytes.Equal(out.Bytes(), adv) {
		t.Fatalf("no-op push: calls=%d err=%v", calls, err)
	}
}

func TestPermanentVerdictWithoutSidebandSendsNoReport(t *testing.T) {
	adv := pkts(strings.Repeat("a", 40)+" refs/heads/master\x00report-status\n", "")
	report := pkts("unpack ok\n", "ng refs/heads/master pre-receive hook declined\n", "")
	var out bytes.Buffer
	res, _ := relayPush(&out, bytes.NewReader(append(adv, report...)), func() string { return "permanent" })
	if !res.refused || !bytes.Equal(out.Bytes(), adv) {
		t.Fatalf("refused=%v out=%q", res.refused, out.Bytes())
	}
}

func TestCommandReaderPassesBytesThroughAndNotesUpdates(t *testing.T) {
	old, new := strings.Repeat("1", 40), strings.Repeat("2", 40)
	in := append(pkts(old+" "+new+" refs/heads/master\x00report-status side-band-64k\n", ""), []byte("PACK\x00\x00\x00\x02rest")...)
	c := &commandReader{r: bytes.NewReader(in)}
	var out bytes.Buffer
	if _, err := out.ReadFrom(c); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), in) {
		t.Fatalf("stream changed")
	}
	if u := c.parsed(); len(u) != 1 || u[0] != (RefUpdate{Old: old, New: new, Ref: "refs/heads/master"}) {
		t.Fatalf("updates %v", u)
	}
}
