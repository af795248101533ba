//go:build !linux

package dbconn

import (
	"syscall"
	"time"
)

// setTCPUserTimeout is Linux only; elsewhere keepalives and the callers'
// deadlines bound the waits.
func setTCPUserTimeout(time.Duration) func(network, address string, c syscall.RawConn) error {
	return nil
}
