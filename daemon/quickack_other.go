//go:build !linux

package daemon

func setQuickAck(int) {}
