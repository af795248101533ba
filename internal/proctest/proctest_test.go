package proctest_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/projectionist/projectionist/internal/proctest"
)

func TestSyncBufferConcurrentWrites(t *testing.T) {
	var buf proctest.SyncBuffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				fmt.Fprint(&buf, i%10)
			}
		}()
	}
	wg.Wait()
	if got := len(buf.String()); got != 800 {
		t.Errorf("buffer holds %d bytes, want 800", got)
	}
}

func TestPeakRSSOfThisProcess(t *testing.T) {
	rss, err := proctest.PeakRSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if rss < 1<<20 {
		t.Errorf("peak RSS %d bytes, want at least 1 MiB for a Go test binary", rss)
	}
	if _, err := proctest.PeakRSS(-1); err == nil {
		t.Error("PeakRSS(-1) succeeded")
	}
}

func TestUntil(t *testing.T) {
	calls := 0
	if err := proctest.Until(time.Minute, time.Millisecond, func() error {
		if calls++; calls < 3 {
			return fmt.Errorf("call %d", calls)
		}
		return nil
	}); err != nil || calls != 3 {
		t.Errorf("Until: %v after %d calls, want nil after 3", err, calls)
	}
	err := proctest.Until(20*time.Millisecond, time.Millisecond, func() error { return errors.New("never") })
	if err == nil || err.Error() != "never" {
		t.Errorf("Until of a condition that never holds: %v, want its last error", err)
	}
	if err := proctest.Until(time.Minute, time.Millisecond, proctest.True(func() bool { return true })); err != nil {
		t.Errorf("Until(True(true)): %v", err)
	}
}

func TestFreePort(t *testing.T) {
	port, err := proctest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("port %d was not free: %v", port, err)
	}
	l.Close()
}
