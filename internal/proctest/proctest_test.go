package proctest_test

import (
	"fmt"
	"os"
	"sync"
	"testing"

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
