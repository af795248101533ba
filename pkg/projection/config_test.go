package projection_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/projectionist/projectionist/pkg/projection"
)

func TestProcessorConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*projection.ProcessorConfig)
		wantMsg string // empty: valid
	}{
		{"default", func(*projection.ProcessorConfig) {}, ""},
		{"batch 1", func(c *projection.ProcessorConfig) { c.BatchSize = 1 }, ""},
		{"batch 10000", func(c *projection.ProcessorConfig) { c.BatchSize = 10000 }, ""},
		{"batch 0 is the default", func(c *projection.ProcessorConfig) { c.BatchSize = 0 }, ""},
		{"batch negative", func(c *projection.ProcessorConfig) { c.BatchSize = -5 }, "BatchSize is -5, must be between 1 and 10000"},
		{"batch 10001", func(c *projection.ProcessorConfig) { c.BatchSize = 10001 }, "BatchSize is 10001, must be between 1 and 10000"},
		{"total 0 is the default", func(c *projection.ProcessorConfig) { c.TotalPartitions = 0 }, ""},
		{"total 0 is 1 partition", func(c *projection.ProcessorConfig) { c.TotalPartitions, c.PartitionKey = 0, 1 }, "PartitionKey is 1, must be in [0, 1) for TotalPartitions 1"},
		{"total negative", func(c *projection.ProcessorConfig) { c.TotalPartitions = -1 }, "TotalPartitions is -1, must be between 1 and 1024"},
		{"total 1025", func(c *projection.ProcessorConfig) { c.TotalPartitions = 1025 }, "TotalPartitions is 1025, must be between 1 and 1024"},
		{"follow ignores total", func(c *projection.ProcessorConfig) {
			c.Topology, c.TotalPartitions, c.PartitionKey = projection.TopologyFollow, 0, 7
		}, ""},
		{"follow key negative", func(c *projection.ProcessorConfig) {
			c.Topology, c.PartitionKey = projection.TopologyFollow, -1
		}, "PartitionKey is -1, must be in [0, 1024)"},
		{"follow poll negative", func(c *projection.ProcessorConfig) {
			c.Topology, c.PollInterval = projection.TopologyFollow, -time.Millisecond
		}, "PollInterval is -1ms, must not be negative"},
		{"unknown topology mode", func(c *projection.ProcessorConfig) { c.Topology = 9 }, "Topology is TopologyMode(9), must be TopologyApply or TopologyFollow"},
		{"key negative", func(c *projection.ProcessorConfig) { c.PartitionKey = -1 }, "PartitionKey is -1, must be in [0, 1) for TotalPartitions 1"},
		{"key = total", func(c *projection.ProcessorConfig) { c.PartitionKey, c.TotalPartitions = 4, 4 }, "PartitionKey is 4, must be in [0, 4) for TotalPartitions 4"},
		{"key last", func(c *projection.ProcessorConfig) { c.PartitionKey, c.TotalPartitions = 3, 4 }, ""},
		{"poll negative", func(c *projection.ProcessorConfig) { c.PollInterval = -time.Second }, "PollInterval is -1s, must not be negative"},
		{"wakeups listen", func(c *projection.ProcessorConfig) { c.Wakeups = projection.WakeupsListen }, ""},
		{"unknown wakeup mode", func(c *projection.ProcessorConfig) { c.Wakeups = 7 }, "Wakeups is WakeupMode(7), must be WakeupsPoll or WakeupsListen"},
		{"wakeup poll 0 is the default", func(c *projection.ProcessorConfig) { c.WakeupPollInterval = 0 }, ""},
		{"wakeup poll negative", func(c *projection.ProcessorConfig) { c.WakeupPollInterval = -time.Second }, "WakeupPollInterval is -1s, must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := projection.DefaultProcessorConfig()
			tt.mutate(&cfg)
			err := cfg.Validate()
			if tt.wantMsg == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, projection.ErrInvalidConfig) {
				t.Fatalf("Validate() = %v, want an ErrInvalidConfig", err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("Validate() = %q, want it to contain %q", err, tt.wantMsg)
			}
		})
	}
}

// The zero ProcessorConfig is DefaultProcessorConfig: every zero field
// takes its default.
func TestZeroProcessorConfigIsDefault(t *testing.T) {
	got := projection.NewProcessor(nil, nil, projection.ProcessorConfig{}).Config()
	want := projection.NewProcessor(nil, nil, projection.DefaultProcessorConfig()).Config()
	got.Logger, want.Logger = nil, nil // each a discarding logger of its own
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("zero config with defaults differs from DefaultProcessorConfig (-want +got):\n%s", diff)
	}
	if err := (projection.ProcessorConfig{}).Validate(); err != nil {
		t.Fatalf("ProcessorConfig{}.Validate() = %v, want nil", err)
	}
}

// The modes' names, which flags, variables and logs spell, what a value
// outside a mode's range prints, and ParseWakeupMode's round trip and error
// (TestParseErrorPolicy has ParseErrorPolicy's).
func TestModeNames(t *testing.T) {
	got := []string{
		projection.ErrorPolicyStop.String(), projection.ErrorPolicySkip.String(), projection.ErrorPolicyDeadLetter.String(), projection.ErrorPolicy(3).String(),
		projection.WakeupsPoll.String(), projection.WakeupsListen.String(), projection.WakeupMode(-1).String(),
		projection.TopologyApply.String(), projection.TopologyFollow.String(), projection.TopologyMode(2).String(),
	}
	want := []string{
		"stop", "skip", "dead-letter", "ErrorPolicy(3)",
		"poll", "listen", "WakeupMode(-1)",
		"apply", "follow", "TopologyMode(2)",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("mode names (-want +got):\n%s", diff)
	}
	for _, m := range []projection.WakeupMode{projection.WakeupsPoll, projection.WakeupsListen} {
		if got, err := projection.ParseWakeupMode(m.String()); err != nil || got != m {
			t.Errorf("ParseWakeupMode(%q) = %v, %v", m, got, err)
		}
	}
	if _, err := projection.ParseWakeupMode("notify"); !errors.Is(err, projection.ErrInvalidConfig) ||
		!strings.Contains(err.Error(), `wakeup mode "notify": must be listen or poll`) {
		t.Errorf("ParseWakeupMode(notify) = %v", err)
	}
}

type namedNoop string

func (n namedNoop) Name() string                                                   { return string(n) }
func (namedNoop) Handle(context.Context, pgx.Tx, *projection.PersistedEvent) error { return nil }

// Run refuses bad input before touching the database: nothing is created.
func TestRunRejectsBadInput(t *testing.T) {
	ctx := t.Context()
	pool := newPool(t)
	bad := projection.DefaultProcessorConfig()
	bad.BatchSize = projection.MaxBatchSize + 1
	tests := []struct {
		name    string
		proc    *projection.Processor
		proj    projection.Projection
		wantMsg string
	}{
		{"nil projection", projection.NewProcessor(pool, nil, projection.DefaultProcessorConfig()), nil, "projection is nil"},
		{"empty name", projection.NewProcessor(pool, nil, projection.DefaultProcessorConfig()), namedNoop(""), "has an empty Name()"},
		{"nil pool", projection.NewProcessor(nil, nil, projection.DefaultProcessorConfig()), namedNoop("p"), "pool is nil"},
		{"bad config", projection.NewProcessor(pool, nil, bad), namedNoop("p"), `projection "p": invalid processor config: BatchSize is 10001`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.proc.Run(ctx, tt.proj)
			if !errors.Is(err, projection.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("Run() = %v, want ErrInvalidConfig containing %q", err, tt.wantMsg)
			}
		})
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM projection_checkpoints").Scan(&n); err != nil || n != 0 {
		t.Fatalf("checkpoints after rejected runs: %d (%v), want 0", n, err)
	}
}
