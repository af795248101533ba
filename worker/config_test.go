package worker

import (
	"errors"
	"flag"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/projectionist/projectionist/pkg/projection"
)

// env returns a getenv over vars.
func env(vars map[string]string) func(string) string {
	return func(name string) string { return vars[name] }
}

func TestParseConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want Config
	}{
		{name: "nothing set", want: Config{}},
		{
			name: "every variable",
			env: map[string]string{
				"DATABASE_URL": "postgres://alice:s3cret@db:5432/app", "PROJECTION": "user_count, revenue",
				"BATCH_SIZE": "500", "POLL_INTERVAL": "250ms", "PARTITION_KEY": "2", "TOTAL_PARTITIONS": "4",
				"ERROR_POLICY": "dead-letter", "HTTP_ADDR": "127.0.0.1:9090", "SHUTDOWN_TIMEOUT": "10s",
				"LOG_LEVEL": "DEBUG", "LOG_FORMAT": "Text", "WAKEUPS": "listen", "WAKEUP_POLL_INTERVAL": "30s",
				"METRICS_INTERVAL": "1m",
			},
			want: Config{
				DatabaseURL: "postgres://alice:s3cret@db:5432/app", Projections: []string{"user_count", "revenue"},
				BatchSize: 500, PollInterval: 250 * time.Millisecond, PartitionKey: 2, TotalPartitions: 4,
				ErrorPolicy: projection.ErrorPolicyDeadLetter, HTTPAddr: "127.0.0.1:9090", ShutdownTimeout: 10 * time.Second,
				LogLevel: slog.LevelDebug, LogFormat: LogFormatText, Wakeups: projection.WakeupsListen, WakeupPollInterval: 30 * time.Second,
				MetricsInterval: time.Minute,
			},
		},
		{
			name: "flags win over variables",
			args: []string{"--batch-size", "20", "-projection=revenue", "--error-policy=skip"},
			env:  map[string]string{"BATCH_SIZE": "abc", "PROJECTION": "user_count", "ERROR_POLICY": "stop"},
			want: Config{BatchSize: 20, Projections: []string{"revenue"}, ErrorPolicy: projection.ErrorPolicySkip},
		},
		{
			name: "an empty flag leaves the variable",
			args: []string{"--batch-size="},
			env:  map[string]string{"BATCH_SIZE": "7"},
			want: Config{BatchSize: 7},
		},
		{
			name: "the operator's subcommand argument, then flags",
			args: []string{Subcommand, "--batch-size=20"},
			want: Config{BatchSize: 20},
		},
		{
			name: "partition key from the pod ordinal",
			env:  map[string]string{"POD_NAME": "user-count-3"},
			want: Config{PartitionKey: 3},
		},
		{
			name: "pod ordinal below the total",
			env:  map[string]string{"POD_NAME": "web-app-0", "TOTAL_PARTITIONS": "1"},
			want: Config{PartitionKey: 0, TotalPartitions: 1},
		},
		{
			name: "PARTITION_KEY wins over POD_NAME",
			env:  map[string]string{"POD_NAME": "user-count-3", "PARTITION_KEY": "1"},
			want: Config{PartitionKey: 1},
		},
		{
			name: "POD_NAME without ordinal is fine with PARTITION_KEY",
			env:  map[string]string{"POD_NAME": "web", "PARTITION_KEY": "0"},
			want: Config{},
		},
		{
			name: "key=value DSN",
			args: []string{"--database-url", "host=db user=alice password='s3 cret' dbname=app"},
			want: Config{DatabaseURL: "host=db user=alice password='s3 cret' dbname=app"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseConfig(tc.args, env(tc.env))
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{env: map[string]string{"PARTITION_KEY": "abc"}, want: `PARTITION_KEY "abc": must be a non-negative integer`},
		{env: map[string]string{"PARTITION_KEY": "-1"}, want: `PARTITION_KEY "-1": must be a non-negative integer`},
		{env: map[string]string{"PARTITION_KEY": "1024"}, want: `PARTITION_KEY "1024": must be below 1024 (the most partitions a projection can have)`},
		{args: []string{"--partition-key", "x"}, want: `--partition-key "x": must be a non-negative integer`},
		{env: map[string]string{"POD_NAME": "web"}, want: `POD_NAME "web": has no ordinal suffix (as in "user-count-3"); set PARTITION_KEY`},
		{env: map[string]string{"POD_NAME": "user-count-"}, want: `POD_NAME "user-count-": has no ordinal suffix (as in "user-count-3"); set PARTITION_KEY`},
		{env: map[string]string{"POD_NAME": "web-5000"}, want: `POD_NAME "web-5000": ordinal 5000 must be below 1024 (the most partitions a projection can have)`},
		{args: []string{"--pod-name=web-99999999999999999999"}, want: `--pod-name "web-99999999999999999999": ordinal 99999999999999999999 must be below 1024 (the most partitions a projection can have)`},
		{env: map[string]string{"TOTAL_PARTITIONS": "0"}, want: `TOTAL_PARTITIONS "0": must be an integer between 1 and 1024`},
		{env: map[string]string{"TOTAL_PARTITIONS": "2000"}, want: `TOTAL_PARTITIONS "2000": must be an integer between 1 and 1024`},
		{env: map[string]string{"TOTAL_PARTITIONS": "2", "PARTITION_KEY": "3"}, want: `PARTITION_KEY "3": must be below TOTAL_PARTITIONS (2)`},
		{env: map[string]string{"TOTAL_PARTITIONS": "2", "POD_NAME": "user-count-3"}, want: `POD_NAME "user-count-3": ordinal 3 must be below TOTAL_PARTITIONS (2)`},
		{args: []string{"--total-partitions=2", "--partition-key=2"}, want: `--partition-key "2": must be below --total-partitions (2)`},
		{env: map[string]string{"BATCH_SIZE": "0"}, want: `BATCH_SIZE "0": must be an integer between 1 and 10000`},
		{env: map[string]string{"BATCH_SIZE": "10001"}, want: `BATCH_SIZE "10001": must be an integer between 1 and 10000`},
		{args: []string{"--batch-size=lots"}, want: `--batch-size "lots": must be an integer between 1 and 10000`},
		{env: map[string]string{"POLL_INTERVAL": "5"}, want: `POLL_INTERVAL "5": must be a positive duration such as 500ms, 2s or 1m`},
		{env: map[string]string{"POLL_INTERVAL": "-1s"}, want: `POLL_INTERVAL "-1s": must be a positive duration such as 500ms, 2s or 1m`},
		{env: map[string]string{"STATEMENT_TIMEOUT": "0s"}, want: `STATEMENT_TIMEOUT "0s": must be a positive duration such as 500ms, 2s or 1m`},
		{args: []string{"--batch-timeout=forever"}, want: `--batch-timeout "forever": must be a positive duration such as 500ms, 2s or 1m`},
		{env: map[string]string{"CONNECT_TIMEOUT": "5"}, want: `CONNECT_TIMEOUT "5": must be a positive duration such as 500ms, 2s or 1m`},
		{env: map[string]string{"SHUTDOWN_TIMEOUT": "soon"}, want: `SHUTDOWN_TIMEOUT "soon": must be a positive duration such as 500ms, 2s or 1m`},
		{env: map[string]string{"ERROR_POLICY": "halt"}, want: `ERROR_POLICY "halt": must be stop, skip or dead-letter`},
		{env: map[string]string{"WAKEUPS": "notify"}, want: `WAKEUPS "notify": must be listen or poll`},
		{args: []string{"--wakeup-poll-interval=0s"}, want: `--wakeup-poll-interval "0s": must be a positive duration such as 500ms, 2s or 1m`},
		{env: map[string]string{"METRICS_INTERVAL": "0"}, want: `METRICS_INTERVAL "0": must be a positive duration such as 500ms, 2s or 1m`},
		{env: map[string]string{"HTTP_ADDR": "8080"}, want: `HTTP_ADDR "8080": must be host:port, such as :8080 or 127.0.0.1:8080`},
		{env: map[string]string{"LOG_LEVEL": "loud"}, want: `LOG_LEVEL "loud": must be debug, info, warn or error`},
		{env: map[string]string{"LOG_FORMAT": "xml"}, want: `LOG_FORMAT "xml": must be json or text`},
		{env: map[string]string{"PROJECTION": "a,,b"}, want: `PROJECTION "a,,b": must be projection names separated by commas`},
		{env: map[string]string{"PROJECTION": "a, b,a"}, want: `PROJECTION "a, b,a": names "a" twice`},
		{
			env:  map[string]string{"DATABASE_URL": "postgres://alice:s3cret@db:notaport/app"},
			want: `DATABASE_URL: invalid database connection string: invalid port: must be a number between 1 and 65535`,
		},
		{
			args: []string{"--database-url", "host=db password=s3cret sslmode=sometimes"},
			want: `--database-url: invalid database connection string: the TLS settings are invalid (sslmode must be disable, allow, prefer, require, verify-ca or verify-full, and the certificate and key files must be readable)`,
		},
		{args: []string{"--nope"}, want: `invalid worker config: flag provided but not defined: -nope`},
		{args: []string{"--batch-size"}, want: `invalid worker config: flag needs an argument: -batch-size`},
		{args: []string{"run"}, want: `invalid worker config: unexpected argument "run"`},
	} {
		t.Run(tc.want, func(t *testing.T) {
			_, err := ParseConfig(tc.args, env(tc.env))
			if err == nil {
				t.Fatal("ParseConfig succeeded")
			}
			if got := err.Error(); got != tc.want {
				t.Errorf("error:\n got %s\nwant %s", got, tc.want)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error %v does not match ErrInvalidConfig", err)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}

func TestParseConfigHelp(t *testing.T) {
	_, err := ParseConfig([]string{"-h"}, env(nil))
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("ParseConfig(-h) = %v, want flag.ErrHelp", err)
	}
	var b strings.Builder
	Usage(&b)
	for _, s := range settings {
		if !strings.Contains(b.String(), "--"+s.flag) || !strings.Contains(b.String(), s.env) {
			t.Errorf("usage does not show --%s and %s:\n%s", s.flag, s.env, b.String())
		}
	}
}

func TestPodOrdinal(t *testing.T) {
	for pod, want := range map[string]int{
		"user-count-0":    0,
		"user-count-3":    3,
		"user-count-1023": 1023,
		"a-b-c-12":        12,
		"x-007":           7,
	} {
		got, err := podOrdinal(pod)
		if err != nil || got != want {
			t.Errorf("podOrdinal(%q) = %d, %v; want %d", pod, got, err, want)
		}
	}
}

// TestContractDefaults: the address the worker listens on by default is the
// contract's port, and the subcommand is accepted only first.
func TestContractDefaults(t *testing.T) {
	if want := ":" + strconv.Itoa(Port); DefaultHTTPAddr != want {
		t.Errorf("DefaultHTTPAddr = %q, want %q (the contract's Port)", DefaultHTTPAddr, want)
	}
	if got := Args(); len(got) != 1 || got[0] != Subcommand {
		t.Errorf("Args() = %q, want [%s]", got, Subcommand)
	}
	_, err := ParseConfig([]string{"--batch-size=20", Subcommand}, func(string) string { return "" })
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), `unexpected argument "worker"`) {
		t.Errorf("ParseConfig(flags, worker) = %v, want an unexpected argument error", err)
	}
}
