package worker

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	"github.com/projectionist/projectionist/internal/dbconn"
	"github.com/projectionist/projectionist/pkg/projection"
)

// Config configures a worker. [ParseConfig] fills it from flags and
// environment variables; [Run] fills in the defaults of zero fields.
type Config struct {
	// DatabaseURL is the PostgreSQL connection string, as a URL
	// (postgres://user:password@host:5432/db) or as key=value pairs.
	// Defaults to empty, which lets pgx use the PGHOST, PGPORT, PGUSER,
	// PGPASSWORD, PGDATABASE, ... variables and their defaults; when none
	// of PGHOST, PGHOSTADDR, PGSERVICE and PGDATABASE is set either, Run
	// refuses to start with ErrInvalidConfig ("no database: set
	// DATABASE_URL ..."), as every projectionist subcommand does. The pool
	// gets at least one connection per projection plus two (probes and
	// metrics), and application_name defaults to "projectionist-worker".
	DatabaseURL string
	// Projections names the projections to run, each with its own
	// processor and checkpoint. Defaults to every projection given to Run.
	Projections []string
	// BatchSize is the most events handled in one transaction, between 1
	// and 10000. Defaults to [projection.DefaultBatchSize] (100) when zero.
	BatchSize int
	// PollInterval is how long a caught-up processor waits before looking
	// for new events, unless a notification of a commit wakes it first
	// (see Wakeups). Defaults to [projection.DefaultPollInterval] (100ms)
	// when zero.
	PollInterval time.Duration
	// Wakeups says whether the processors wait for notifications of
	// appends besides polling: [projection.WakeupsPoll] (the default: only
	// poll) or [projection.WakeupsListen] (one listening connection per
	// worker, beside the pool; the database must send notifications,
	// which it does only with projectionist.wakeups = on, see
	// docs/operations.md). ParseConfig takes it from WAKEUPS ("poll" or
	// "listen").
	Wakeups projection.WakeupMode
	// WakeupPollInterval is how long a caught-up processor waits between
	// polls under WakeupsListen while its notifications arrive; it polls
	// at PollInterval while the listening connection is down or the
	// database sends no notifications. Defaults to
	// [projection.DefaultWakeupPollInterval] (10s) when zero.
	WakeupPollInterval time.Duration
	// PartitionKey is this worker's partition. Defaults to 0. ParseConfig
	// takes it from PARTITION_KEY or else from the ordinal suffix of
	// POD_NAME: StatefulSet pod "user-count-3" runs partition 3.
	PartitionKey int
	// TotalPartitions, when not zero, is the partition count the worker
	// switches its projections to when it starts, exactly and only if it
	// differs ([projection.TopologyApply]: separate processes, no
	// operator). Defaults to 0: follow the count recorded in the database,
	// which the operator sets ([projection.TopologyFollow]); a key outside
	// it idles and is not ready until the count grows.
	TotalPartitions int
	// ErrorPolicy says what a failing Handle does. Defaults to
	// [projection.ErrorPolicyStop]: Run returns an error naming the
	// projection, the partition and the event.
	ErrorPolicy projection.ErrorPolicy
	// HTTPAddr is where /healthz, /readyz and /metrics are served.
	// Defaults to ":8080".
	HTTPAddr string
	// ConnectTimeout bounds establishing a database connection (TCP, TLS,
	// authentication), unless DatabaseURL sets connect_timeout. Defaults
	// to 10s.
	ConnectTimeout time.Duration
	// StatementTimeout bounds each of the worker's own round trips to the
	// database (a readiness check, a batch's statements); a database that
	// does not answer within it is reported, and retried, as not
	// responding. Defaults to 10s ([projection.DefaultStatementTimeout]).
	StatementTimeout time.Duration
	// MetricsInterval is how often the worker measures what /metrics
	// reports from the database (each partition's lag in events and
	// seconds, the dead letters, the horizon stall, whether the database
	// answers), so that a scrape only reads the last measurement and costs
	// the database nothing. Defaults to 10s ([DefaultMetricsInterval]).
	// ParseConfig takes it from METRICS_INTERVAL.
	MetricsInterval time.Duration
	// BatchTimeout bounds a whole batch, the projections' Handle calls
	// included, and the schema migration, Setup and a pending reset (a
	// rebuild: the projection's Reset hook). Defaults to 1m
	// ([projection.DefaultBatchTimeout]).
	BatchTimeout time.Duration
	// ShutdownTimeout bounds how long Run takes to return once its
	// context is cancelled. Defaults to 25s, below Kubernetes' default
	// grace period of 30s.
	ShutdownTimeout time.Duration
	// LogLevel is the lowest level the default Logger writes. Defaults to
	// slog.LevelInfo.
	LogLevel slog.Level
	// LogFormat is the default Logger's format. Defaults to LogFormatJSON.
	LogFormat LogFormat
	// Setup, if set, runs once after the schema migration and before the
	// projections start, e.g. to create the projections' read-model
	// tables; while it fails it is retried like a lost database. Defaults
	// to nothing. After it, before the first batch, the worker carries out
	// a pending reset request of each projection
	// ([projection.ApplyPendingReset]): a rebuild asked for with the
	// Projection resource's spec.rebuildToken runs the projection's
	// [projection.Resetter] hook, if it has one.
	Setup func(ctx context.Context, db projection.DBTX) error
	// Logger receives the worker's and its processors' logs. Defaults to a
	// logger on standard error in LogFormat at LogLevel, which masks
	// passwords in connection strings (see [RedactDSN]).
	Logger *slog.Logger
	// Collectors are extra Prometheus collectors /metrics serves beside the
	// worker's own; one that collides with another is a configuration
	// error. Defaults to none.
	Collectors []prometheus.Collector
	// Version is logged when the worker starts and exported as the version
	// label of projectionist_build_info. Defaults to the main module's
	// version in the binary's build information ("(devel)" for a build
	// outside a module version).
	Version string
	// Clock is what the worker and its processors read the time from:
	// when the projections stopped running (the downtime logged when they
	// run again), when the lag was measured
	// (projectionist_lag_sampled_timestamp_seconds), and what
	// [projection.ProcessorConfig.Clock] times. A test sets a fake one
	// and steps it instead of waiting. Defaults to clock.RealClock{}.
	Clock clock.PassiveClock
}

// LogFormat is the format of the default logger.
type LogFormat string

// Log formats.
const (
	LogFormatJSON LogFormat = "json"
	LogFormatText LogFormat = "text"
)

// Defaults.
const (
	DefaultHTTPAddr        = ":8080"
	DefaultShutdownTimeout = 25 * time.Second
	DefaultMetricsInterval = 10 * time.Second
)

// ErrInvalidConfig is matched (with errors.Is) by every configuration
// error: a bad flag or variable, or a projection name Run does not know.
var ErrInvalidConfig = errors.New("invalid worker config")

// ConfigError is a bad flag or environment variable value.
type ConfigError struct {
	// Setting is the flag (--batch-size) or variable (BATCH_SIZE) that held
	// the value.
	Setting string
	// Value is the bad value; empty for DATABASE_URL, which is never
	// shown.
	Value string
	// Problem says what is allowed.
	Problem string
}

// Error reads like `PARTITION_KEY "abc": must be a non-negative integer`.
func (e *ConfigError) Error() string {
	if e.Value == "" {
		return e.Setting + ": " + e.Problem
	}
	return fmt.Sprintf("%s %q: %s", e.Setting, e.Value, e.Problem)
}

// Is makes a ConfigError match [ErrInvalidConfig].
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// setting is one flag and its environment variable.
type setting struct {
	flag, env, arg, usage string
	// parse stores v in c, or says what is allowed. Nil for settings
	// ParseConfig resolves by hand.
	parse func(c *Config, v string) error
}

var settings = []setting{
	{"database-url", EnvDatabaseURL, "dsn", "PostgreSQL connection string, URL or key=value (default: the PG* variables)", func(c *Config, v string) error {
		if _, err := dbconn.ParseConfig(v, dbconn.Options{}); err != nil {
			return err // says what is wrong without quoting v
		}
		c.DatabaseURL = v
		return nil
	}},
	{"projection", EnvProjection, "names", "comma-separated projections to run, each with its own checkpoint (default: all)", func(c *Config, v string) error {
		seen := map[string]bool{}
		for name := range strings.SplitSeq(v, ",") {
			name = strings.TrimSpace(name)
			if name == "" {
				return errors.New("must be projection names separated by commas")
			}
			if seen[name] {
				return fmt.Errorf("names %q twice", name)
			}
			seen[name] = true
			c.Projections = append(c.Projections, name)
		}
		return nil
	}},
	{"batch-size", EnvBatchSize, "n", "most events per transaction (default " + strconv.Itoa(projection.DefaultBatchSize) + ")", func(c *Config, v string) (err error) {
		c.BatchSize, err = parseInt(v, projection.MinBatchSize, projection.MaxBatchSize)
		return err
	}},
	{"poll-interval", EnvPollInterval, "duration", "wait between polls once caught up (default " + projection.DefaultPollInterval.String() + ")", duration(func(c *Config) *time.Duration { return &c.PollInterval })},
	{"wakeups", "WAKEUPS", "mode", "poll: only poll; listen: also wake on each commit that appends events, which needs projectionist.wakeups = on in the database (default poll)", func(c *Config, v string) error {
		m, err := projection.ParseWakeupMode(v)
		if err != nil {
			return errors.New("must be listen or poll")
		}
		c.Wakeups = m
		return nil
	}},
	{"wakeup-poll-interval", "WAKEUP_POLL_INTERVAL", "duration", "with WAKEUPS=listen, wait between polls once caught up while wakeups arrive (default " + projection.DefaultWakeupPollInterval.String() + ")", duration(func(c *Config) *time.Duration { return &c.WakeupPollInterval })},
	{"partition-key", EnvPartitionKey, "n", "this worker's partition (default: the ordinal of POD_NAME, or 0)", func(c *Config, v string) (err error) {
		c.PartitionKey, err = parseKey(v)
		return err
	}},
	{"total-partitions", EnvTotalPartitions, "n", "switch to this partition count at start (default: follow the database)", func(c *Config, v string) (err error) {
		c.TotalPartitions, err = parseInt(v, 1, projection.MaxPartitions)
		return err
	}},
	{"pod-name", EnvPodName, "name", "StatefulSet pod name; its ordinal suffix is the partition key when PARTITION_KEY is unset", nil},
	{"error-policy", EnvErrorPolicy, "policy", "what a failing Handle does: stop, skip or dead-letter (default " + projection.ErrorPolicyStop.String() + ")", func(c *Config, v string) error {
		p, err := projection.ParseErrorPolicy(v)
		if err != nil {
			return errors.New("must be stop, skip or dead-letter")
		}
		c.ErrorPolicy = p
		return nil
	}},
	{"http-addr", EnvHTTPAddr, "addr", "address of /healthz, /readyz and /metrics (default " + DefaultHTTPAddr + ")", func(c *Config, v string) error {
		if _, _, err := net.SplitHostPort(v); err != nil {
			return errors.New("must be host:port, such as :8080 or 127.0.0.1:8080")
		}
		c.HTTPAddr = v
		return nil
	}},
	{"connect-timeout", "CONNECT_TIMEOUT", "duration", "bound on establishing a database connection (default " + dbconn.DefaultConnectTimeout.String() + ")", duration(func(c *Config) *time.Duration { return &c.ConnectTimeout })},
	{"statement-timeout", "STATEMENT_TIMEOUT", "duration", "bound on each of the worker's own database round trips (default " + projection.DefaultStatementTimeout.String() + ")", duration(func(c *Config) *time.Duration { return &c.StatementTimeout })},
	{"metrics-interval", "METRICS_INTERVAL", "duration", "how often to measure the lag, dead letters, horizon stall and database health that /metrics reports (default " + DefaultMetricsInterval.String() + ")", duration(func(c *Config) *time.Duration { return &c.MetricsInterval })},
	{"batch-timeout", "BATCH_TIMEOUT", "duration", "bound on a whole batch, Handle calls included (default " + projection.DefaultBatchTimeout.String() + ")", duration(func(c *Config) *time.Duration { return &c.BatchTimeout })},
	{"shutdown-timeout", "SHUTDOWN_TIMEOUT", "duration", "bound on a graceful shutdown (default " + DefaultShutdownTimeout.String() + ")", duration(func(c *Config) *time.Duration { return &c.ShutdownTimeout })},
	{"log-level", "LOG_LEVEL", "level", "debug, info, warn or error (default info)", func(c *Config, v string) error {
		if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
			return errors.New("must be debug, info, warn or error")
		}
		return nil
	}},
	{"log-format", EnvLogFormat, "format", "json or text (default " + string(LogFormatJSON) + ")", func(c *Config, v string) error {
		c.LogFormat = LogFormat(strings.ToLower(v))
		if c.LogFormat != LogFormatJSON && c.LogFormat != LogFormatText {
			return errors.New("must be json or text")
		}
		return nil
	}},
}

// duration parses a duration setting into the field of c that field
// returns.
func duration(field func(c *Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) (err error) {
		*field(c), err = parseDuration(v)
		return err
	}
}

// ParseConfig reads a worker's configuration from command-line flags (args,
// without the program name) and environment variables (getenv, usually
// os.Getenv). A flag wins over its variable; an empty value counts as
// unset. Every error matches [ErrInvalidConfig] and, for a bad value, is a
// [*ConfigError] naming the flag or variable, the value and what is
// allowed. -h or --help returns [flag.ErrHelp]; see [Usage]. A first
// argument of [Subcommand] ("worker", which the operator passes to every
// worker image) is skipped.
func ParseConfig(args []string, getenv func(string) string) (Config, error) {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned, usage is Usage's
	flags := map[string]*string{}
	for _, s := range settings {
		flags[s.env] = fs.String(s.flag, "", s.usage)
	}
	// The operator starts every worker image with the stock binary's
	// subcommand (see [Args]); a worker program takes it as a no-op.
	if len(args) > 0 && args[0] == Subcommand {
		args = args[1:]
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return Config{}, err
		}
		return Config{}, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("%w: unexpected argument %q", ErrInvalidConfig, fs.Arg(0))
	}
	// lookup returns where a setting's value comes from, and the value.
	lookup := func(s setting) (string, string) {
		if v := *flags[s.env]; v != "" {
			return "--" + s.flag, v
		}
		return s.env, getenv(s.env)
	}

	var c Config
	found := map[string]value{} // by variable name
	for _, s := range settings {
		src, v := lookup(s)
		if v == "" {
			continue
		}
		found[s.env] = value{src, v}
		if s.parse == nil {
			continue
		}
		if err := s.parse(&c, v); err != nil {
			if s.env == EnvDatabaseURL {
				v = "" // never shown: it may hold a password
			}
			return Config{}, &ConfigError{Setting: src, Value: v, Problem: err.Error()}
		}
	}

	key, keyIs := found[EnvPartitionKey], ""
	if pod, ok := found[EnvPodName]; ok && key.value == "" {
		ordinal, err := podOrdinal(pod.value)
		if err != nil {
			return Config{}, &ConfigError{Setting: pod.source, Value: pod.value, Problem: err.Error()}
		}
		c.PartitionKey, key, keyIs = ordinal, pod, fmt.Sprintf("ordinal %d ", ordinal)
	}
	if total, ok := found[EnvTotalPartitions]; ok && c.PartitionKey >= c.TotalPartitions {
		return Config{}, &ConfigError{Setting: key.source, Value: key.value,
			Problem: fmt.Sprintf("%smust be below %s (%d)", keyIs, total.source, c.TotalPartitions)}
	}
	return c, nil
}

// value is a setting's value and the flag or variable it came from.
type value struct{ source, value string }

// Usage writes the worker's flags and variables to w.
func Usage(w io.Writer) {
	fmt.Fprint(w, "Flags (each can also be set by the environment variable after it; a flag wins):\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, s := range settings {
		fmt.Fprintf(tw, "  --%s %s\t%s\t%s\n", s.flag, s.arg, s.env, s.usage)
	}
	tw.Flush()
}

// ordinalSuffix is a StatefulSet pod's ordinal: "user-count-3" -> 3.
var ordinalSuffix = regexp.MustCompile(`-([0-9]+)$`)

func podOrdinal(pod string) (int, error) {
	m := ordinalSuffix.FindStringSubmatch(pod)
	if m == nil {
		return 0, errors.New(`has no ordinal suffix (as in "user-count-3"); set PARTITION_KEY`)
	}
	n, err := strconv.Atoi(m[1])
	if err != nil || n >= projection.MaxPartitions {
		return 0, fmt.Errorf("ordinal %s must be below %d (the most partitions a projection can have)", m[1], projection.MaxPartitions)
	}
	return n, nil
}

func parseKey(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, errors.New("must be a non-negative integer")
	}
	if n >= projection.MaxPartitions {
		return 0, fmt.Errorf("must be below %d (the most partitions a projection can have)", projection.MaxPartitions)
	}
	return n, nil
}

func parseInt(v string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("must be an integer between %d and %d", lo, hi)
	}
	return n, nil
}

func parseDuration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, errors.New("must be a positive duration such as 500ms, 2s or 1m")
	}
	return d, nil
}

// withDefaults fills the fields whose zero value means "default"
// (cmp.Or: the first value that is not zero).
func (c Config) withDefaults() Config {
	c.BatchSize = cmp.Or(c.BatchSize, projection.DefaultBatchSize)
	c.PollInterval = cmp.Or(c.PollInterval, projection.DefaultPollInterval)
	c.WakeupPollInterval = cmp.Or(c.WakeupPollInterval, projection.DefaultWakeupPollInterval)
	c.HTTPAddr = cmp.Or(c.HTTPAddr, DefaultHTTPAddr)
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, DefaultShutdownTimeout)
	c.ConnectTimeout = cmp.Or(c.ConnectTimeout, dbconn.DefaultConnectTimeout)
	c.StatementTimeout = cmp.Or(c.StatementTimeout, projection.DefaultStatementTimeout)
	c.BatchTimeout = cmp.Or(c.BatchTimeout, projection.DefaultBatchTimeout)
	c.MetricsInterval = cmp.Or(c.MetricsInterval, DefaultMetricsInterval)
	c.LogFormat = cmp.Or(c.LogFormat, LogFormatJSON)
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
	if c.Version == "" {
		c.Version = "(devel)"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
			c.Version = bi.Main.Version
		}
	}
	return c
}
