package projection_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/pkg/projection"
)

// A zero ProcessorConfig runs: one partition, the default batch size.
func TestZeroProcessorConfigRuns(t *testing.T) {
	ctx := t.Context()
	pool, store := newStore(t, newAppliedTable)
	appendN(t, pool, store, 5, 3, "A")
	p := projection.NewProcessor(pool, store, projection.ProcessorConfig{})
	if err := p.CatchUp(ctx, applyLog{name: "zero"}); err != nil {
		t.Fatalf("CatchUp() = %v", err)
	}
	if n := queryInt(t, pool, "SELECT count(*) FROM applied WHERE projection = 'zero'"); n != 15 {
		t.Fatalf("%d events applied, want 15", n)
	}
	if n := queryInt(t, pool, "SELECT total_partitions FROM projection_topology WHERE projection_name = 'zero'"); n != projection.DefaultTotalPartitions {
		t.Fatalf("topology has %d partitions, want %d", n, projection.DefaultTotalPartitions)
	}
}

// A database that was never migrated says so, and what to run.
func TestMissingSchemaNamesMigrate(t *testing.T) {
	pool := pgtest.NewPool(t) // not migrated
	for _, topology := range []projection.TopologyMode{projection.TopologyApply, projection.TopologyFollow} {
		t.Run(topology.String(), func(t *testing.T) {
			err := projection.NewProcessor(pool, nil, projection.ProcessorConfig{Topology: topology}).Run(t.Context(), namedNoop("p"))
			if !errors.Is(err, projection.ErrNoSchema) {
				t.Fatalf("Run() = %v, want ErrNoSchema", err)
			}
			for _, want := range []string{"projection.Migrate", "projectionist migrate", "projection_"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Run() = %q, want it to mention %q", err, want)
				}
			}
			if !projection.IsRetryable(err) {
				t.Errorf("IsRetryable(%v) = false, want true: someone may migrate", err)
			}
		})
	}
}

// The store and the topology and progress queries say so too.
func TestMissingSchemaOutsideTheProcessor(t *testing.T) {
	ctx := t.Context()
	pool := pgtest.NewPool(t) // not migrated
	store := projection.NewStore()
	calls := map[string]func() error{
		"Append": func() error {
			_, err := store.Append(ctx, pool, "A", "a", projection.NoStream, ev("Happened"))
			return err
		},
		"ReadEvents": func() error { _, err := store.ReadEvents(ctx, pool, projection.Position{}, 10); return err },
		"ReadAggregateStream": func() error {
			_, err := store.ReadAggregateStream(ctx, pool, "A", "a", nil, nil)
			return err
		},
		"GetTopology": func() error { _, err := projection.GetTopology(ctx, pool, "p"); return err },
		"SetTopology": func() error { _, err := projection.SetTopology(ctx, pool, "p", 2); return err },
		"GetProgress": func() error { _, err := projection.GetProgress(ctx, pool, "p"); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, projection.ErrNoSchema) || !strings.Contains(err.Error(), "projection.Migrate") {
			t.Errorf("%s() = %v, want ErrNoSchema naming projection.Migrate", name, err)
		}
	}
}

func TestIsRetryable(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"poison", fmt.Errorf("runner: %w", &projection.HandlerError{Projection: "p", Err: errors.New("bad")}), false},
		{"invalid config", fmt.Errorf("projection %q: %w: BatchSize", "p", projection.ErrInvalidConfig), false},
		{"lost connection", fmt.Errorf("reading events: %w", io.ErrUnexpectedEOF), true},
		{"timeout", &projection.TimeoutError{Op: "reading events", Err: context.DeadlineExceeded}, true},
		{"no schema", projection.ErrNoSchema, true},
	}
	for _, tt := range tests {
		if got := projection.IsRetryable(tt.err); got != tt.want {
			t.Errorf("%s: IsRetryable(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

func TestSuperviseRejectsBadConfig(t *testing.T) {
	ran := false
	err := projection.Supervise(t.Context(), projection.SupervisorConfig{InitialInterval: time.Minute, MaxInterval: time.Second},
		func(context.Context) error { ran = true; return nil })
	if !errors.Is(err, projection.ErrInvalidConfig) || ran {
		t.Fatalf("Supervise() = %v (ran: %v), want ErrInvalidConfig before running", err, ran)
	}
}

// handledWaiter is an OnBatch that closes the channel at(n) returned once
// the processor has handled n events.
type handledWaiter struct {
	mu    sync.Mutex
	waits map[int64]chan struct{}
}

func (h *handledWaiter) at(n int64) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.waits == nil {
		h.waits = map[int64]chan struct{}{}
	}
	if h.waits[n] == nil {
		h.waits[n] = make(chan struct{})
	}
	return h.waits[n]
}

func (h *handledWaiter) onBatch(r projection.BatchResult) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for n, c := range h.waits {
		if r.Stats.EventsHandled >= n {
			close(c)
			delete(h.waits, n)
		}
	}
}

// RunSupervised rides out a database restart: it retries while the
// server is down, and applies every event, each once, after.
// Not parallel: pgtest.Restart stops every test's database.
func TestRunSupervisedRetriesAcrossRestart(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pool, store := newStore(t, newAppliedTable)
	appendN(t, pool, store, 5, 1, "A")

	var handled handledWaiter
	first, second := handled.at(5), handled.at(10)
	p := projection.NewProcessor(pool, store, projection.ProcessorConfig{PollInterval: 10 * time.Millisecond, OnBatch: handled.onBatch})
	retried := make(chan error, 100)
	done := make(chan error, 1)
	go func() {
		done <- p.RunSupervised(ctx, applyLog{name: "supervised"}, projection.SupervisorConfig{
			InitialInterval: 10 * time.Millisecond, MaxInterval: 50 * time.Millisecond,
			OnRetry: func(err error, _ time.Duration) {
				select {
				case retried <- err:
				default:
				}
			},
		})
	}()
	<-first
	pgtest.Restart(t, func() {
		err := <-retried // the processor failed while the server is down, and is retried
		t.Logf("retrying while PostgreSQL is down: %v", err)
	})
	pool.Reset() // the test's own connections died with the server
	appendN(t, pool, store, 5, 1, "B")
	<-second
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("RunSupervised() = %v after cancel, want nil", err)
	}
	if n := queryInt(t, pool, "SELECT count(*) FROM applied WHERE projection = 'supervised'"); n != 10 {
		t.Fatalf("%d events applied, want 10", n)
	}
}

// RunSupervised stops on a poison event under ErrorPolicyStop, without
// retrying it.
func TestRunSupervisedStopsOnPoison(t *testing.T) {
	t.Parallel()
	pool, store := newStore(t, newAppliedTable)
	appendN(t, pool, store, 2, 1, "A")
	bad, err := store.Append(t.Context(), pool, "B", "poison", projection.NoStream, ev("Poison"))
	if err != nil {
		t.Fatal(err)
	}
	retries := 0
	err = projection.NewProcessor(pool, store, projection.ProcessorConfig{}).RunSupervised(t.Context(), applyLog{name: "strict", failOn: "Poison"},
		projection.SupervisorConfig{OnRetry: func(error, time.Duration) { retries++ }})
	var he *projection.HandlerError
	if !errors.As(err, &he) || he.EventID != bad[0].EventID {
		t.Fatalf("RunSupervised() = %v, want a *HandlerError for event %s", err, bad[0].EventID)
	}
	if retries != 0 {
		t.Fatalf("the poison event was retried %d times, want 0", retries)
	}
}
