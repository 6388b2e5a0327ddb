//go:build unix

package hooksock

import (
	"io"
	"os"
	"syscall"
	"time"
)

// dial connects to the socket with plain system calls rather than package
// net: net links the cgo resolver, and a dynamically linked hook costs
// about half as much again to start (~2.4 ms of CPU against ~1.6 ms).
func dial(path string, timeout time.Duration) (conn, error) {
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		return nil, err
	}
	syscall.CloseOnExec(fd)
	tv := syscall.NsecToTimeval(timeout.Nanoseconds())
	for _, opt := range []int{syscall.SO_RCVTIMEO, syscall.SO_SNDTIMEO} {
		if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, opt, &tv); err != nil {
			syscall.Close(fd)
			return nil, err
		}
	}
	if err := syscall.Connect(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	return &unixConn{File: os.NewFile(uintptr(fd), path), fd: fd}, nil
}

type unixConn struct {
	*os.File
	fd int
}

func (c *unixConn) CloseWrite() error { return syscall.Shutdown(c.fd, syscall.SHUT_WR) }

var _ io.ReadWriteCloser = (*unixConn)(nil)
