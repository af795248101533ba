package projection

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Bounds on ProcessorConfig.BatchSize.
const (
	MinBatchSize = 1
	MaxBatchSize = 10000
)

// ErrInvalidConfig is matched (with errors.Is) by every configuration error.
var ErrInvalidConfig = errors.New("invalid processor config")

// ProcessorConfig configures a [Processor]. Start from
// [DefaultProcessorConfig] and change what you need.
type ProcessorConfig struct {
	// BatchSize is the most events handled in one transaction. Larger
	// batches give more throughput and more latency. Must be between 1 and
	// 10000. Defaults to 100.
	BatchSize int
	// PartitionKey is this worker's partition, in [0, TotalPartitions).
	// Defaults to 0.
	PartitionKey int
	// TotalPartitions is how many partitions share the projection, between
	// 1 and MaxPartitions. Defaults to 1. With [TopologyApply] the processor
	// switches the projection to this count when it starts (exactly: see
	// [SetTopology]); with [TopologyFollow] it is ignored.
	TotalPartitions int
	// Topology says where the partition count comes from. Defaults to
	// [TopologyApply].
	Topology TopologyMode
	// PartitionStrategy assigns aggregates to partitions. Defaults to
	// [HashPartitionStrategy], which is filtered in SQL.
	PartitionStrategy PartitionStrategy
	// PollInterval is how long the processor waits when it has caught up
	// before looking for new events. Must not be negative. Defaults to
	// 100ms when zero.
	PollInterval time.Duration
	// Logger receives one line per state change (start, stop). Defaults to
	// discarding.
	Logger *slog.Logger
}

// TopologyMode says where a processor's partition count comes from. Either
// way, a running processor follows every later change of the count recorded
// in the database, without restarting.
type TopologyMode int

const (
	// TopologyApply makes the processor set the projection's partition
	// count to TotalPartitions when it starts, if it differs, then follow
	// the database: the guide's separate processes, each started with
	// PARTITION_KEY and TOTAL_PARTITIONS.
	TopologyApply TopologyMode = iota
	// TopologyFollow makes the processor use the count recorded in the
	// database and never change it: the operator's mode, where the
	// operator calls SetTopology. A partition key at or above the count
	// (or any key, while no topology exists) idles until the count grows.
	TopologyFollow
)

// String returns "apply" or "follow".
func (m TopologyMode) String() string {
	switch m {
	case TopologyApply:
		return "apply"
	case TopologyFollow:
		return "follow"
	}
	return fmt.Sprintf("TopologyMode(%d)", int(m))
}

// DefaultProcessorConfig returns a config for a single-partition processor
// with batches of 100.
func DefaultProcessorConfig() ProcessorConfig {
	return ProcessorConfig{
		BatchSize:         100,
		PartitionKey:      0,
		TotalPartitions:   1,
		PartitionStrategy: HashPartitionStrategy{},
		PollInterval:      100 * time.Millisecond,
	}
}

// withDefaults fills the fields whose zero value means "default".
func (c ProcessorConfig) withDefaults() ProcessorConfig {
	if c.PartitionStrategy == nil {
		c.PartitionStrategy = HashPartitionStrategy{}
	}
	if c.PollInterval == 0 {
		c.PollInterval = 100 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports the first problem with the config, wrapped around
// [ErrInvalidConfig].
func (c ProcessorConfig) Validate() error {
	if c.BatchSize < MinBatchSize || c.BatchSize > MaxBatchSize {
		return fmt.Errorf("%w: BatchSize is %d, must be between %d and %d", ErrInvalidConfig, c.BatchSize, MinBatchSize, MaxBatchSize)
	}
	switch c.Topology {
	case TopologyApply:
		if c.TotalPartitions < 1 || c.TotalPartitions > MaxPartitions {
			return fmt.Errorf("%w: TotalPartitions is %d, must be between 1 and %d", ErrInvalidConfig, c.TotalPartitions, MaxPartitions)
		}
		if c.PartitionKey < 0 || c.PartitionKey >= c.TotalPartitions {
			return fmt.Errorf("%w: PartitionKey is %d, must be in [0, %d) for TotalPartitions %d", ErrInvalidConfig, c.PartitionKey, c.TotalPartitions, c.TotalPartitions)
		}
	case TopologyFollow:
		if c.PartitionKey < 0 || c.PartitionKey >= MaxPartitions {
			return fmt.Errorf("%w: PartitionKey is %d, must be in [0, %d)", ErrInvalidConfig, c.PartitionKey, MaxPartitions)
		}
	default:
		return fmt.Errorf("%w: Topology is %s, must be TopologyApply or TopologyFollow", ErrInvalidConfig, c.Topology)
	}
	if c.PollInterval < 0 {
		return fmt.Errorf("%w: PollInterval is %s, must not be negative", ErrInvalidConfig, c.PollInterval)
	}
	return nil
}
