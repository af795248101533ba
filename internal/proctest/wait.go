package proctest

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// Another process can take it before the caller binds it: callers that
// start a server on it retry with a new port when that happens.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// errNotYet is what a condition of [True] returns while it is false.
var errNotYet = errors.New("not yet")

// True adapts a condition that says yes or no to [Until] and [Eventually].
func True(cond func() bool) func() error {
	return func() error {
		if cond() {
			return nil
		}
		return errNotYet
	}
}

// Until calls cond at once and then every interval until it returns nil,
// and returns nil; or, once timeout has passed, returns cond's last error.
// It is the one polling loop of the tests and the test infrastructure.
func Until(timeout, interval time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(interval)
	}
}

// Eventually is [Until] for a test: it fails tb, saying what it waited for
// and cond's last error, if cond does not hold within timeout.
func Eventually(tb testing.TB, timeout, interval time.Duration, what string, cond func() error) {
	tb.Helper()
	if err := Until(timeout, interval, cond); err != nil {
		if errors.Is(err, errNotYet) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		tb.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
	}
}
