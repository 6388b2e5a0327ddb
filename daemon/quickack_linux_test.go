package daemon

import (
	"io"
	"net"
	"syscall"
	"testing"
)

// An accepted connection is wrapped so that it asks the kernel for
// immediate ACKs again after every read, and still carries data both ways.
// (Unwrapped, a socket reports TCP_QUICKACK 0 from the second exchange on:
// after a reply the kernel switches to delayed ACKs.)
func TestQuickAckIsSetAfterEveryRead(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	raw, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	server := quickAck(raw)
	defer server.Close()
	q, ok := server.(*quickAckConn)
	if !ok {
		t.Fatalf("quickAck returned %T", server)
	}
	quick := func() int {
		v := -1
		q.rc.Control(func(fd uintptr) { v, _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK) })
		return v
	}
	for i := 0; i < 3; i++ {
		if _, err := client.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(server, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("read %q, %v", buf, err)
		}
		if v := quick(); v != 1 {
			t.Fatalf("TCP_QUICKACK after read %d = %d, want 1", i, v)
		}
		if _, err := server.Write([]byte("pong")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(client, buf); err != nil || string(buf) != "pong" {
			t.Fatalf("client read %q, %v", buf, err)
		}
	}
}
