//go:build !unix

package hooksock

import (
	"errors"
	"time"
)

func dial(string, time.Duration) (conn, error) { return nil, errors.New("no unix sockets here") }
