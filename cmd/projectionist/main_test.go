package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/pkg/demo"
	"github.com/projectionist/projectionist/pkg/projection"
)

// testVersion is what the test binary is built with -X main.version=.
const testVersion = "v9.9.9-test"

// binary is the projectionist binary built by TestMain.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "projectionist-cli-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "projectionist")
	build := exec.Command("go", "build", "-ldflags", "-X main.version="+testVersion, "-o", binary, ".")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building projectionist: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	pgtest.Stop()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

// migratedDatabase creates a database for one test and migrates it with
// the binary's migrate; it returns the DSN and an environment holding it
// in DATABASE_URL.
func migratedDatabase(t *testing.T) (dsn string, env map[string]string) {
	t.Helper()
	dsn = pgtest.NewDatabase(t)
	env = map[string]string{"DATABASE_URL": dsn}
	if r := run(t, env, "migrate"); r.code != 0 {
		t.Fatalf("migrate:\n%s", r)
	}
	return dsn, env
}

// run runs the binary with args and only the environment in env (plus
// PATH and HOME): no DATABASE_URL or PG* variable leaks in from the test's
// own environment.
func run(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("running projectionist %s: %v", strings.Join(args, " "), err)
	}
	return r
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

func TestMigrateTwice(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	r := run(t, map[string]string{"DATABASE_URL": dsn}, "migrate")
	want := "applied 0001_events_and_checkpoints.up.sql\n" +
		"applied 0002_topology.up.sql\n" +
		"applied 0003_dead_letters.up.sql\n" +
		"applied 0004_event_field_limits.up.sql\n" +
		"applied 0005_partition_hash_in_sql.up.sql\n" +
		"applied 0006_topology_manager.up.sql\n" +
		"applied 0007_dead_letter_retry.up.sql\n" +
		"applied 0008_wakeups.up.sql\n" +
		"applied 0009_rebuild.up.sql\n" +
		"applied 0010_event_trace_ids.up.sql\n" +
		"applied 0011_lag_view.up.sql\n" +
		"applied 0012_imports.up.sql\n" +
		"applied 0013_topology_owner.up.sql\n" +
		"applied 0014_checkpoint_scope.up.sql\n" +
		"the schema is at version 14 (0014_checkpoint_scope.up.sql)\n"
	if r.code != 0 || r.stdout != want || r.stderr != "" {
		t.Fatalf("first migrate:\n%s\nwant stdout:\n%s", r, want)
	}

	// Again, with the flag instead of the variable: nothing to apply.
	r = run(t, nil, "migrate", "--database-url", dsn)
	want = "nothing to apply: the schema is at version 14 (0014_checkpoint_scope.up.sql)\n"
	if r.code != 0 || r.stdout != want || r.stderr != "" {
		t.Fatalf("second migrate:\n%s\nwant stdout:\n%s", r, want)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM projectionist_schema_migrations").Scan(&n); err != nil || n != 14 {
		t.Errorf("projectionist_schema_migrations has %d rows (%v), want 14", n, err)
	}
}

func TestEventsGenerate(t *testing.T) {
	dsn, env := migratedDatabase(t)
	r := run(t, env, "events", "generate", "--count", "500", "--aggregates", "50", "--concurrency", "4")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "appended 500 events in ") {
		t.Fatalf("events generate:\n%s", r)
	}
	// The summary's counts are the log's.
	summary := map[string]int64{}
	sc := bufio.NewScanner(strings.NewReader(r.stdout))
	sc.Scan() // the "appended" line
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 2 {
			t.Fatalf("summary line %q", sc.Text())
		}
		n, err := strconv.ParseInt(fields[1], 10, 64)
		if err != nil {
			t.Fatalf("summary line %q: %v", sc.Text(), err)
		}
		summary[fields[0]] = n
	}
	ctx := context.Background()
	pool := pgtest.OpenPool(t, dsn)
	logged := map[string]int64{}
	rows, err := pool.Query(ctx, "SELECT event_type, count(*) FROM events GROUP BY 1")
	if err != nil {
		t.Fatal(err)
	}
	var typ string
	var n, total int64
	if _, err := pgx.ForEachRow(rows, []any{&typ, &n}, func() error { logged[typ] = n; total += n; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, "SELECT coalesce(sum((payload->>'amount_cents')::bigint), 0)::bigint FROM events WHERE event_type = 'OrderPlaced'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	logged["amount_cents"] = n
	for _, k := range []string{"UserCreated", "EmailVerified", "UserDeactivated", "OrderPlaced", "amount_cents"} {
		if summary[k] != logged[k] {
			t.Errorf("%s: summary says %d, the log holds %d", k, summary[k], logged[k])
		}
	}
	if total != 500 || summary["UserCreated"] != 50 {
		t.Errorf("the log holds %d events, %d users created; want 500, 50\n%s", total, summary["UserCreated"], r)
	}
}

// On a log where every one of the --aggregates users exists, has verified
// their email and as many are deactivated as the generator deactivates,
// generate can only append orders: the summary says so, and why, with the
// users' state as the run found it.
func TestEventsGenerateOnExistingUsers(t *testing.T) {
	dsn, env := migratedDatabase(t)
	ctx := t.Context()
	pool := pgtest.OpenPool(t, dsn)
	store := projection.NewStore()
	for id, types := range map[string][]string{
		"user-000000": {demo.EventUserCreated, demo.EventEmailVerified},
		"user-000001": {demo.EventUserCreated, demo.EventEmailVerified, demo.EventUserDeactivated},
	} {
		var evs []projection.Event
		for _, typ := range types {
			evs = append(evs, projection.Event{EventType: typ, Payload: []byte(`{"email":"` + id + `@example.com"}`)})
		}
		if _, err := store.Append(ctx, pool, demo.AggregateUser, id, projection.NoStream, evs...); err != nil {
			t.Fatal(err)
		}
	}
	r := run(t, env, "events", "generate", "--count", "20", "--aggregates", "2", "--progress", "0")
	if r.code != 0 || r.stderr != "" || !strings.HasPrefix(r.stdout, "appended 20 events in ") {
		t.Fatalf("events generate:\n%s", r)
	}
	_, rest, _ := strings.Cut(r.stdout, "\n")
	want := "  UserCreated               0\n" +
		"  EmailVerified             0\n" +
		"  UserDeactivated           0\n" +
		"  OrderPlaced              20\n"
	if !strings.HasPrefix(rest, want) {
		t.Errorf("summary (after the first line):\n%s\nwant it to start with:\n%s", rest, want)
	}
	note := "all 2 users (--aggregates) existed before this run, 2 with a verified email and 1 deactivated " +
		"(the generator deactivates at most 1): none was created and only orders were appended; " +
		"pass --aggregates above 2 to create new users\n"
	if !strings.HasSuffix(r.stdout, note) {
		t.Errorf("stdout:\n%s\nwant it to end with:\n%s", r.stdout, note)
	}
	if n := scalar(t, pool, "SELECT count(*) FROM events WHERE aggregate_type = 'User'"); n != 5 {
		t.Errorf("the log holds %d user events, want the 5 appended before the run", n)
	}
}

// Without the event store's tables, generate fails (exit 1) and says what
// to do.
func TestEventsGenerateBeforeMigrate(t *testing.T) {
	r := run(t, map[string]string{"DATABASE_URL": pgtest.NewDatabase(t)}, "events", "generate", "--count", "10", "--progress", "0")
	if r.code != 1 || !strings.Contains(r.stderr, "run 'projectionist migrate' first") {
		t.Fatalf("generate before migrate:\n%s", r)
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		r := run(t, nil, args...)
		if r.code != 0 || r.stderr != "" ||
			!strings.HasPrefix(r.stdout, "projectionist "+testVersion+"\n") ||
			!strings.Contains(r.stdout, "  module  github.com/projectionist/projectionist ") ||
			!strings.Contains(r.stdout, "  go      go1.") {
			t.Errorf("%v:\n%s", args, r)
		}
	}
}

func TestHelp(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		usage string
	}{
		{[]string{"--help"}, "Usage: projectionist <command> [flags]"},
		{[]string{"-h"}, "Usage: projectionist <command> [flags]"},
		{[]string{"help"}, "Usage: projectionist <command> [flags]"},
		{[]string{"migrate", "--help"}, "Usage: projectionist migrate [flags]"},
		{[]string{"help", "migrate"}, "Usage: projectionist migrate [flags]"},
		{[]string{"migrate", "-h"}, "Usage: projectionist migrate [flags]"},
		{[]string{"events", "--help"}, "Usage: projectionist events <command> [flags]"},
		{[]string{"events", "generate", "--help"}, "Usage: projectionist events generate [flags]"},
		{[]string{"events", "generate", "-h"}, "Usage: projectionist events generate [flags]"},
		{[]string{"version", "--help"}, "Usage: projectionist version"},
		{[]string{"worker", "--help"}, "Usage: projectionist worker"},
	} {
		r := run(t, nil, tc.args...)
		if r.code != 0 || r.stderr != "" || !strings.HasPrefix(r.stdout, tc.usage) {
			t.Errorf("%v: want usage %q on stdout and exit 0, got\n%s", tc.args, tc.usage, r)
		}
		if tc.args[0] != "events" || len(tc.args) > 2 {
			if !strings.Contains(r.stdout, "\nExamples:\n  ") {
				t.Errorf("%v: help has no examples:\n%s", tc.args, r.stdout)
			}
		}
	}
	r := run(t, nil, "events", "generate", "--help")
	for _, flag := range []string{"--count", "--aggregates", "--rate", "--concurrency", "--database-url", "--progress"} {
		if !strings.Contains(r.stdout, "  "+flag+" ") {
			t.Errorf("events generate --help does not document %s:\n%s", flag, r.stdout)
		}
	}
}

func TestBadInput(t *testing.T) {
	testBadInput(t, []badInput{
		{"no command", nil, nil, 2, "Usage: projectionist <command> [flags]"},
		{"unknown command", nil, []string{"frobnicate"}, 2, `projectionist: unknown command "frobnicate"`},
		{"unknown events command", nil, []string{"events", "frobnicate"}, 2, `projectionist events: unknown command "frobnicate"`},
		{"events without command", nil, []string{"events"}, 2, "projectionist events: missing command"},
		{"negative count", nil, []string{"events", "generate", "--count", "-1"}, 2, "projectionist events generate: --count is -1: must be at least 1"},
		{"zero aggregates", nil, []string{"events", "generate", "--aggregates", "0"}, 2, "projectionist events generate: --aggregates is 0: must be at least 1"},
		{"negative rate", nil, []string{"events", "generate", "--rate", "-5"}, 2, "projectionist events generate: --rate is -5: must not be negative"},
		{"too much concurrency", nil, []string{"events", "generate", "--concurrency", "1000"}, 2, "projectionist events generate: --concurrency is 1000: must be between 1 and 256"},
		{"rate not a number", nil, []string{"events", "generate", "--rate", "fast"}, 2, `projectionist events generate: invalid value "fast" for flag -rate`},
		{"metrics certificate for plain HTTP", nil, []string{"operator", "--metrics-secure=false", "--metrics-cert-dir", "/tmp"}, 2, "projectionist operator: --metrics-cert-dir needs --metrics-secure"},
		{"unknown flag", nil, []string{"migrate", "--bogus"}, 2, "projectionist migrate: flag provided but not defined: -bogus"},
		{"extra argument", nil, []string{"migrate", "now"}, 2, `projectionist migrate: unexpected argument "now"`},
		{"migrate without database", nil, []string{"migrate"}, 2, "projectionist migrate: no database: set DATABASE_URL or pass --database-url"},
		{"generate without database", nil, []string{"events", "generate", "--count", "10"}, 2, "projectionist events generate: no database: set DATABASE_URL"},
		{"worker without database", nil, []string{"worker", "--http-addr", "127.0.0.1:0"}, 2, "projectionist worker: invalid worker config: no database: set DATABASE_URL"},
		{"malformed URL", nil, []string{"migrate", "--database-url", "postgres://app:" + secret + "@127.0.0.1:notaport/app"}, 2, "projectionist migrate: --database-url: invalid database connection string: invalid port"},
		{"unreachable server, URL", map[string]string{"DATABASE_URL": "postgres://app:" + secret + "@127.0.0.1:1/app?sslmode=disable"}, []string{"migrate"}, 1, "projectionist migrate: connecting to the database: "},
		{"unreachable server, key=value", nil, []string{"events", "generate", "--database-url", "host=127.0.0.1 port=1 user=app password=" + secret + " sslmode=disable"}, 1, "projectionist events generate: connecting to the database: "},
	})
}

// badInput is a command line that must fail: args, run with only env,
// exit with code and write want on stderr.
type badInput struct {
	name string
	env  map[string]string
	args []string
	code int
	want string // in stderr
}

// testBadInput runs each of tests as a subtest: besides the exit code and
// message, a usage error (code 2) of a command points to --help, and no
// output holds secret (the password of redact_test.go).
func testBadInput(t *testing.T, tests []badInput) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, tc.env, tc.args...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("want exit %d and %q on stderr, got\n%s", tc.code, tc.want, r)
			}
			if tc.code == 2 && tc.args != nil && !strings.Contains(r.stderr, "--help") {
				t.Errorf("a usage error should point to --help:\n%s", r)
			}
			if strings.Contains(r.stdout+r.stderr, secret) {
				t.Errorf("the password leaked:\n%s", r)
			}
		})
	}
}

// The stock worker creates the demo tables itself and projects every
// generated event exactly once; SIGTERM stops it with status 0.
func TestWorkerRunsDemoProjections(t *testing.T) {
	dsn, env := migratedDatabase(t)
	if r := run(t, env, "events", "generate", "--count", "300", "--aggregates", "20", "--progress", "0"); r.code != 0 {
		t.Fatalf("events generate:\n%s", r)
	}

	cmd := exec.Command(binary, "worker", "--http-addr", "127.0.0.1:0", "--log-format", "text")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "DATABASE_URL=" + dsn, "PARTITION_KEY=0", "TOTAL_PARTITIONS=1"}
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited //nolint:errcheck // killed: its exit status says nothing
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool := pgtest.OpenPool(t, dsn)
	const caughtUp = `SELECT (SELECT count(*) FROM activity_log a JOIN events e USING (event_id)) = 300
		AND (SELECT sum(total_cents) FROM revenue) = (SELECT sum((payload->>'amount_cents')::bigint) FROM events WHERE event_type = 'OrderPlaced')
		AND (SELECT count(*) FROM user_stats) = (SELECT count(*) FROM events WHERE event_type = 'UserCreated')`
	for {
		var done bool
		err := pool.QueryRow(ctx, caughtUp).Scan(&done)
		if err == nil && done {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("worker exited early (%v):\n%s", err, stderr.String())
		case <-ctx.Done():
			t.Fatalf("worker did not catch up (last check: %v):\n%s", err, stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-exited; err != nil {
		t.Fatalf("worker after SIGTERM: %v\n%s", err, stderr.String())
	}
	var rows int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM activity_log WHERE partition_key = 0 AND total_partitions = 1 AND generation = 1").Scan(&rows); err != nil || rows != 300 {
		t.Errorf("activity_log rows of partition 0/1, generation 1: %d (%v), want 300", rows, err)
	}
}
