package projection

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"time"

	"k8s.io/utils/clock"
)

// Defaults of ProcessorConfig's fields, which a zero value stands for.
// The operator's CRD defaults and package worker use these values.
const (
	DefaultBatchSize          = 100
	DefaultTotalPartitions    = 1
	DefaultPollInterval       = 100 * time.Millisecond
	DefaultWakeupPollInterval = 10 * time.Second
	DefaultStatementTimeout   = 10 * time.Second
	DefaultBatchTimeout       = time.Minute
)

// Bounds on ProcessorConfig.BatchSize.
const (
	MinBatchSize = 1
	MaxBatchSize = 10000
)

// ErrInvalidConfig is matched (with errors.Is) by every configuration error.
var ErrInvalidConfig = errors.New("invalid processor config")

// ProcessorConfig configures a [Processor]. The zero value is a valid
// config: every field's zero value means its default, so set only what you
// need (or start from [DefaultProcessorConfig], which spells the defaults
// out).
type ProcessorConfig struct {
	// BatchSize is the most events handled in one transaction. Larger
	// batches give more throughput and more latency. Between MinBatchSize
	// (1) and MaxBatchSize (10000). Defaults to DefaultBatchSize (100)
	// when zero.
	BatchSize int
	// PartitionKey is this worker's partition, in [0, TotalPartitions).
	// Defaults to 0.
	PartitionKey int
	// TotalPartitions is how many partitions share the projection, between
	// 1 and MaxPartitions. Defaults to DefaultTotalPartitions (1) when
	// zero: a zero-value config with [TopologyApply] runs the projection
	// as one partition, switching a standalone projection recorded with
	// more partitions back to one (at WARN; an operator-managed one is
	// refused with a [*TopologyManagedError]). With [TopologyApply] the
	// processor switches
	// the projection to this count when it starts (exactly: see
	// [SetTopology]); with [TopologyFollow] it is ignored, and so is its
	// zero.
	TotalPartitions int
	// Topology says where the partition count comes from. Defaults to
	// [TopologyApply].
	Topology TopologyMode
	// PartitionStrategy assigns aggregates to partitions. Defaults to
	// [HashPartitionStrategy], which is filtered in SQL.
	PartitionStrategy PartitionStrategy
	// PollInterval is how long the processor waits when it has caught up
	// before looking for new events, unless a notification wakes it first
	// (see Wakeups): under WakeupsListen, the interval it polls at while
	// its listener is down or the database sends no notifications. Must
	// not be negative. Defaults to DefaultPollInterval (100ms) when zero.
	PollInterval time.Duration
	// Wakeups says whether the processor waits for notifications of
	// appends besides polling. Defaults to [WakeupsPoll] (the zero
	// value): it only polls, every PollInterval. [WakeupsListen] needs the
	// database to send notifications, which it does only where a DBA
	// enabled them (projectionist.wakeups = on, see [WakeupsListen]).
	Wakeups WakeupMode
	// WakeupPollInterval is how long a caught-up processor waits between
	// polls under WakeupsListen while its listener is connected and the
	// database sends notifications: a safety net for appends that notify
	// no one (a writer whose session does not have
	// projectionist.wakeups = on, or with triggers disabled by
	// session_replication_role = replica) and for events held
	// back by a transaction that appended nothing. The processor uses the
	// longer of it and PollInterval; while the listener is disconnected,
	// while its session does not see projectionist.wakeups = on, and after
	// such a poll found events that no notification announced (until one
	// finds nothing), it polls at PollInterval. Must not be negative.
	// Defaults to DefaultWakeupPollInterval (10s) when zero.
	WakeupPollInterval time.Duration
	// Listener is the listening connection that wakes the processor
	// under [WakeupsListen]. Give every processor of a process the same
	// one, so that they share one connection (package runner's helpers
	// and package worker do). Defaults to nil: each Run opens a listener
	// of its own, one connection more per processor (CatchUp opens none
	// and polls).
	Listener *Listener
	// ErrorPolicy says what a failing Handle does to the processor.
	// Defaults to [ErrorPolicyStop].
	ErrorPolicy ErrorPolicy
	// StatementTimeout bounds each of the processor's own round trips to
	// the database (taking a connection, locking the topology and the
	// checkpoint, reading events, committing): a server that accepts
	// connections but does not answer (stopped, overloaded, a network
	// blackhole) fails the batch with a [*TimeoutError] instead of
	// hanging it and the topology lock it holds. Must not be negative.
	// Defaults to DefaultStatementTimeout (10s) when zero.
	StatementTimeout time.Duration
	// BatchTimeout bounds a whole batch, the projection's Handle calls
	// included (their ctx carries the deadline). Must not be negative.
	// Defaults to DefaultBatchTimeout (1m) when zero.
	BatchTimeout time.Duration
	// Logger receives one line per state change (start, stop, topology
	// change, idle, a poison event skipped or dead-lettered). Defaults to
	// discarding.
	Logger *slog.Logger
	// OnBatch, if set, is called after every batch that completed (was
	// committed), from the processor's goroutine; keep it fast. Metrics
	// hang off it.
	OnBatch func(BatchResult)
	// Clock is what the processor reads the time from for what it does
	// at most every so often: an idle partition's save of how far it has
	// looked (every second), its look at whether the partition index for
	// its count is valid (every 30 seconds) and for requested dead-letter
	// retries (every second). A test sets a fake one
	// (k8s.io/utils/clock/testing) and steps it instead of waiting. Poll
	// intervals, timeouts and BatchResult.Duration follow the wall clock
	// whatever it is. Defaults to clock.RealClock{}.
	Clock clock.PassiveClock
}

// BatchResult describes one completed batch, for [ProcessorConfig.OnBatch].
type BatchResult struct {
	// Duration is the batch's wall time, from taking a connection to the
	// commit.
	Duration time.Duration
	// Fetched, Handled, Skipped are as in [Stats]; Poisoned counts events
	// skipped or dead-lettered by the error policy.
	Fetched, Handled, Skipped, Poisoned int
	// Stats is the processor's Stats after the batch.
	Stats Stats
}

// ErrorPolicy says what happens when a projection's Handle returns an
// error for an event (a poison event). Errors that say the database or the
// context is gone (a lost connection, a cancelled context, a serialization
// failure, an admin shutdown) are never treated as poison: the processor
// stops with them whatever the policy, and nothing is skipped.
type ErrorPolicy int

const (
	// ErrorPolicyStop rolls the batch back and stops the processor with a
	// *HandlerError naming the event. The default: fail fast, never
	// silently.
	ErrorPolicyStop ErrorPolicy = iota
	// ErrorPolicySkip rolls the batch back, then redoes it without the
	// failing event, logging it at Warn and counting it in Stats.
	ErrorPolicySkip
	// ErrorPolicyDeadLetter is ErrorPolicySkip that also records the event
	// and the error in projection_dead_letters, in the batch's
	// transaction.
	ErrorPolicyDeadLetter
)

// String returns "stop", "skip" or "dead-letter".
func (p ErrorPolicy) String() string { return enumString(p, "stop", "skip", "dead-letter") }

// ParseErrorPolicy parses "stop", "skip" or "dead-letter".
func ParseErrorPolicy(s string) (ErrorPolicy, error) {
	return parseEnum("error policy", s, ErrorPolicyStop, ErrorPolicySkip, ErrorPolicyDeadLetter)
}

// WakeupMode says whether a processor listens for notifications of
// appends (see [Listener]) or only polls.
type WakeupMode int

const (
	// WakeupsPoll makes the processor only poll, every PollInterval, as
	// before wakeups existed. The default (the zero value): notifications
	// cost the writers group commit (see [WakeupsListen]), and a pooler in
	// transaction mode (PgBouncer) cannot keep a LISTEN.
	WakeupsPoll WakeupMode = iota
	// WakeupsListen makes a caught-up processor wait for a notification
	// of a commit that appended events for it, or for its poll interval,
	// whichever comes first: new events are handled within milliseconds
	// instead of up to a PollInterval later, and idle partitions send a
	// query every WakeupPollInterval instead of every PollInterval, for
	// one listening connection per process (per [Listener]). Correctness
	// does not depend on it: a lost notification costs latency, never an
	// event.
	//
	// It is opt-in at both ends. The schema's trigger notifies only
	// appends of sessions that see projectionist.wakeups = on (ALTER
	// DATABASE app SET projectionist.wakeups = on, or per role or
	// session), because a notifying commit takes a cluster-wide lock that
	// serialises concurrent commits and defeats group commit: several
	// times fewer durable write transactions per second from concurrent
	// writers (docs/operations.md has figures). When its connection opens,
	// the [Listener] checks the setting as its own session sees it; if it
	// is not on, it logs a warning and its processors poll at
	// PollInterval, as under WakeupsPoll.
	WakeupsListen
)

// String returns "listen" or "poll".
func (m WakeupMode) String() string { return enumString(m, "poll", "listen") }

// ParseWakeupMode parses "listen" or "poll".
func ParseWakeupMode(s string) (WakeupMode, error) {
	return parseEnum("wakeup mode", s, WakeupsListen, WakeupsPoll)
}

// TopologyMode says where a processor's partition count comes from. Either
// way, a running processor follows every later change of the count recorded
// in the database, without restarting.
type TopologyMode int

const (
	// TopologyApply makes the processor set the projection's partition
	// count to TotalPartitions when it starts, if it differs, then follow
	// the database: the guide's separate processes, each started with
	// PARTITION_KEY and TOTAL_PARTITIONS. It switches as a standalone
	// caller of [SetTopology]: a topology the operator manages is never
	// changed, the processor stops with a [*TopologyManagedError] instead
	// (unless the count already matches), and every switch is logged at
	// WARN to Logger. The default; see the package documentation for why
	// it is not "follow if a topology exists".
	TopologyApply TopologyMode = iota
	// TopologyFollow makes the processor use the count recorded in the
	// database and never change it: the operator's mode, where the
	// operator calls [SetTopologyAs] as [ManagerOperator]. A partition key at or above the count
	// (or any key, while no topology exists) idles until the count grows.
	TopologyFollow
)

// String returns "apply" or "follow".
func (m TopologyMode) String() string { return enumString(m, "apply", "follow") }

// enumString returns the name of v, a value of an enum type whose values
// 0, 1, ... are named by names in that order, or "Type(v)" for any other
// value: the String of ErrorPolicy, WakeupMode and TopologyMode.
func enumString[T ~int](v T, names ...string) string {
	if v >= 0 && int(v) < len(names) {
		return names[v]
	}
	return fmt.Sprintf("%s(%d)", reflect.TypeFor[T]().Name(), int(v))
}

// parseEnum returns the one of values whose String is s, else an
// [ErrInvalidConfig] that calls the type what and lists the values' names
// in the order given ("must be a, b or c").
func parseEnum[T fmt.Stringer](what, s string, values ...T) (T, error) {
	names := make([]string, len(values))
	for i, v := range values {
		if s == v.String() {
			return v, nil
		}
		names[i] = v.String()
	}
	last := len(names) - 1
	var zero T
	return zero, fmt.Errorf("%w: %s %q: must be %s or %s", ErrInvalidConfig, what, s, strings.Join(names[:last], ", "), names[last])
}

// DefaultProcessorConfig returns a config for a single-partition processor
// with batches of DefaultBatchSize (100): the defaults spelled out. It
// behaves exactly like the zero ProcessorConfig.
func DefaultProcessorConfig() ProcessorConfig {
	return ProcessorConfig{
		BatchSize:          DefaultBatchSize,
		PartitionKey:       0,
		TotalPartitions:    DefaultTotalPartitions,
		PartitionStrategy:  HashPartitionStrategy{},
		PollInterval:       DefaultPollInterval,
		Wakeups:            WakeupsPoll,
		WakeupPollInterval: DefaultWakeupPollInterval,
		StatementTimeout:   DefaultStatementTimeout,
		BatchTimeout:       DefaultBatchTimeout,
		Clock:              clock.RealClock{},
	}
}

// withDefaults fills the fields whose zero value means "default".
func (c ProcessorConfig) withDefaults() ProcessorConfig {
	c.BatchSize = cmp.Or(c.BatchSize, DefaultBatchSize)
	if c.TotalPartitions == 0 && c.Topology == TopologyApply {
		c.TotalPartitions = DefaultTotalPartitions
	}
	if c.PartitionStrategy == nil {
		c.PartitionStrategy = HashPartitionStrategy{}
	}
	c.PollInterval = cmp.Or(c.PollInterval, DefaultPollInterval)
	c.WakeupPollInterval = cmp.Or(c.WakeupPollInterval, DefaultWakeupPollInterval)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.StatementTimeout = cmp.Or(c.StatementTimeout, DefaultStatementTimeout)
	c.BatchTimeout = cmp.Or(c.BatchTimeout, DefaultBatchTimeout)
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
	return c
}

// Validate reports the first problem with the config, once its zero
// fields stand for their defaults, wrapped around [ErrInvalidConfig].
func (c ProcessorConfig) Validate() error {
	c = c.withDefaults()
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
	if c.ErrorPolicy < ErrorPolicyStop || c.ErrorPolicy > ErrorPolicyDeadLetter {
		return fmt.Errorf("%w: ErrorPolicy is %s, must be ErrorPolicyStop, ErrorPolicySkip or ErrorPolicyDeadLetter", ErrInvalidConfig, c.ErrorPolicy)
	}
	if c.PollInterval < 0 {
		return fmt.Errorf("%w: PollInterval is %s, must not be negative", ErrInvalidConfig, c.PollInterval)
	}
	if c.Wakeups != WakeupsListen && c.Wakeups != WakeupsPoll {
		return fmt.Errorf("%w: Wakeups is %s, must be WakeupsPoll or WakeupsListen", ErrInvalidConfig, c.Wakeups)
	}
	if c.WakeupPollInterval < 0 {
		return fmt.Errorf("%w: WakeupPollInterval is %s, must not be negative", ErrInvalidConfig, c.WakeupPollInterval)
	}
	if c.StatementTimeout < 0 {
		return fmt.Errorf("%w: StatementTimeout is %s, must not be negative", ErrInvalidConfig, c.StatementTimeout)
	}
	if c.BatchTimeout < 0 {
		return fmt.Errorf("%w: BatchTimeout is %s, must not be negative", ErrInvalidConfig, c.BatchTimeout)
	}
	return nil
}
