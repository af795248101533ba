//go:build e2e

package e2e_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/projectionist/projectionist/internal/proctest"
)

// projectionist runs the host-side projectionist binary against the run's
// database (DATABASE_URL in its environment, not on its command line) and
// returns its output.
func projectionist(t *testing.T, db *database, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cfg.bin, args...)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+db.hostURL)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("projectionist %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// generator is `projectionist events generate` running in the background.
type generator struct {
	cmd  *exec.Cmd
	out  proctest.SyncBuffer
	done chan struct{}
	err  error
}

// startGenerator starts `projectionist events generate ARGS`; stop ends it.
// The test's cleanup stops it if the test does not.
func startGenerator(t *testing.T, db *database, args ...string) *generator {
	t.Helper()
	g := &generator{done: make(chan struct{})}
	g.cmd = exec.Command(cfg.bin, append([]string{"events", "generate", "--progress", "5s"}, args...)...)
	g.cmd.Env = append(os.Environ(), "DATABASE_URL="+db.hostURL)
	g.cmd.Stdout, g.cmd.Stderr = &g.out, &g.out
	if err := g.cmd.Start(); err != nil {
		t.Fatalf("starting events generate: %v", err)
	}
	t.Logf("started projectionist events generate %s (pid %d)", strings.Join(args, " "), g.cmd.Process.Pid)
	go func() {
		g.err = g.cmd.Wait()
		close(g.done)
	}()
	t.Cleanup(func() {
		select {
		case <-g.done:
		default:
			_ = g.cmd.Process.Kill() // fails only if it has just exited, and then done closes
			<-g.done
		}
	})
	return g
}

// running says whether the generator is still appending.
func (g *generator) running() bool {
	select {
	case <-g.done:
		return false
	default:
		return true
	}
}

// stop interrupts the generator as Ctrl-C would (every append is atomic,
// so the log holds whole appends only) and logs its output.
func (g *generator) stop(t *testing.T) {
	t.Helper()
	if !g.running() {
		t.Fatalf("events generate ended before it was stopped (%v):\n%s", g.err, g.out.String())
	}
	_ = g.cmd.Process.Signal(syscall.SIGINT) // fails only if it has just exited, which the output below shows
	select {
	case <-g.done:
	case <-time.After(30 * time.Second):
		_ = g.cmd.Process.Kill() // as in the cleanup
		<-g.done
		t.Fatalf("events generate did not stop within 30s of SIGINT:\n%s", g.out.String())
	}
	out := g.out.String()
	// Interrupted, it exits 1 saying so; anything else is a failure.
	if g.err != nil && !strings.Contains(out, "interrupted after") {
		t.Fatalf("events generate failed: %v\n%s", g.err, out)
	}
	t.Logf("events generate stopped:\n%s", out)
}

// waitForEvents waits until n more events than now are in the log: events
// are arriving. arriving, when not nil, ends the wait with its error once
// whatever appends them has stopped.
func waitForEvents(t *testing.T, db *database, n int64, arriving func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	from, err := db.headPosition(ctx)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, fmt.Sprintf("%d more events in the log", n), 2*time.Minute, func(ctx context.Context) error {
		if arriving != nil {
			if err := arriving(); err != nil {
				return err
			}
		}
		head, err := db.headPosition(ctx)
		if err != nil {
			return err
		}
		if head < from+n {
			return fmt.Errorf("head position %d, waiting for %d", head, from+n)
		}
		return nil
	})
}

// arriving is an error once events generate has ended.
func (g *generator) arriving() error {
	if !g.running() {
		return fmt.Errorf("events generate ended: %v\n%s", g.err, g.out.String())
	}
	return nil
}
