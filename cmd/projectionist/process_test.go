package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/pkg/demo"
	"github.com/projectionist/projectionist/pkg/projection"
)

var allProjections = []string{"activity_log", "revenue", "user_count"}

// startPair starts two standalone workers, PARTITION_KEY=0..1
// TOTAL_PARTITIONS=2, running every demo projection.
func startPair(t *testing.T, dsn, label string, env map[string]string) []*process {
	t.Helper()
	var ps []*process
	for k := range 2 {
		all := map[string]string{"PARTITION_KEY": strconv.Itoa(k), "TOTAL_PARTITIONS": "2"}
		for name, v := range env {
			all[name] = v
		}
		ps = append(ps, startWorker(t, fmt.Sprintf("worker %d (%s)", k, label), dsn, all))
	}
	return ps
}

// waitApplied waits until activity_log holds at least n rows.
func waitApplied(t *testing.T, pool *pgxpool.Pool, n int64, procs ...*process) {
	t.Helper()
	waitFor(t, time.Minute, fmt.Sprintf("%d events in activity_log", n), func() (bool, error) {
		if err := mustRunning(procs...); err != nil {
			t.Fatal(err)
		}
		got, err := query(pool, "SELECT count(*) FROM activity_log")
		return got >= n, err
	})
}

// PostgreSQL is restarted (fast shutdown, then started again on the same
// port and data) while two workers work through a backlog in small
// batches. While it is down, both report not ready; they reconnect by
// themselves, without exiting, report ready again, and carry on: every
// event is applied exactly once.
func TestPostgresRestart(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	migrate(t, dsn)
	pool := pgtest.OpenPool(t, dsn)
	generate(t, dsn, "--count", "5000", "--aggregates", "200", "--concurrency", "4")

	workers := startPair(t, dsn, "restart", map[string]string{"BATCH_SIZE": "10"})
	addrs := []string{workers[0].httpAddr(t), workers[1].httpAddr(t)}
	for i, addr := range addrs {
		waitFor(t, 30*time.Second, workers[i].name+" to be ready", func() (bool, error) {
			code, body, err := readyz(addr)
			return code == 200, fmt.Errorf("%d %s (%w)", code, body, err)
		})
	}
	waitApplied(t, pool, 500, workers...)

	var downReasons []string
	pgtest.Restart(t, func() {
		applied, _ := query(pool, "SELECT count(*) FROM activity_log") // fails: the server is down
		t.Logf("PostgreSQL stopped (%d events applied before)", applied)
		for i, addr := range addrs {
			waitFor(t, 30*time.Second, workers[i].name+" to report not ready", func() (bool, error) {
				if err := mustRunning(workers...); err != nil {
					t.Fatal(err)
				}
				code, body, err := readyz(addr)
				if err == nil && code == 503 {
					downReasons = append(downReasons, body)
					return true, nil
				}
				return false, fmt.Errorf("%d %s (%w)", code, body, err)
			})
		}
	})
	t.Logf("not ready while PostgreSQL was down: %q", downReasons)
	pool.Reset() // its connections died with the server
	for i, addr := range addrs {
		waitFor(t, time.Minute, workers[i].name+" to be ready again", func() (bool, error) {
			if err := mustRunning(workers...); err != nil {
				t.Fatal(err)
			}
			code, body, err := readyz(addr)
			return code == 200, fmt.Errorf("%d %s (%w)", code, body, err)
		})
	}
	generate(t, dsn, "--count", "500", "--aggregates", "200", "--concurrency", "4")
	waitCaughtUp(t, pool, time.Minute, allProjections, workers...)
	for _, w := range workers {
		w.stop(t, 30*time.Second)
		// One warning when the database went away and one line when it
		// came back, not a line per retry.
		if lost, back := len(w.logLines("projections not running; retrying with backoff")), len(w.logLines("projections running again")); lost != 1 || back != 1 {
			t.Errorf("%s logged %d \"not running\" and %d \"running again\" lines, want 1 and 1:\n%s", w.name, lost, back, w.out.String())
		}
	}
	verifyActivityLog(t, pool)
	verifyRevenue(t, pool)
	verifyUserStats(t, pool)
}

// SIGTERM in the middle of a backlog, with events still being appended:
// the workers exit with status 0 within the shutdown bound (their batches
// in flight roll back), three times over; started again, they carry on
// and every event is applied exactly once.
func TestSigtermMidRun(t *testing.T) {
	const shutdownTimeout = 10 * time.Second
	dsn := pgtest.NewDatabase(t)
	migrate(t, dsn)
	pool := pgtest.OpenPool(t, dsn)
	generate(t, dsn, "--count", "3000", "--aggregates", "200", "--concurrency", "4")
	gen := startProcess(t, "events generate", map[string]string{"DATABASE_URL": dsn},
		"events", "generate", "--count", "3000", "--rate", "1500", "--aggregates", "200", "--concurrency", "2", "--progress", "0")

	env := map[string]string{"BATCH_SIZE": "10", "SHUTDOWN_TIMEOUT": shutdownTimeout.String()}
	var workers []*process
	for round := range 3 {
		workers = startPair(t, dsn, fmt.Sprintf("round %d", round), env)
		before, _ := query(pool, "SELECT count(*) FROM activity_log")
		waitApplied(t, pool, before+300, workers...)
		// Both must be past start-up: a SIGTERM that arrives while the Go
		// runtime is still initialising (before main installs its handler)
		// kills the process, as it would any Go program. Seen once: one
		// worker of a pair had applied 300 events while the other was not
		// yet running main.
		for _, w := range workers {
			waitFor(t, time.Minute, w.name+` logging "worker started"`, func() (bool, error) {
				if err := mustRunning(w); err != nil {
					t.Fatal(err)
				}
				return len(w.logLines("worker started")) == 1, nil
			})
		}
		for _, w := range workers {
			w.signal(t, syscall.SIGTERM)
		}
		for _, w := range workers {
			// The bound: SHUTDOWN_TIMEOUT, and slack for a loaded machine.
			if code := w.wait(t, shutdownTimeout+15*time.Second); code != 0 {
				t.Fatalf("%s exited with %d after SIGTERM, want 0:\n%s", w.name, code, tail(w.out.String(), 25))
			}
			if len(w.logLines("worker stopped")) != 1 {
				t.Errorf("%s did not log \"worker stopped\":\n%s", w.name, tail(w.out.String(), 25))
			}
		}
		applied := scalar(t, pool, "SELECT count(*) FROM activity_log")
		events := scalar(t, pool, "SELECT count(*) FROM events")
		t.Logf("round %d: SIGTERM with %d of %d events applied", round, applied, events)
	}

	workers = startPair(t, dsn, "final", env)
	if code := gen.wait(t, time.Minute); code != 0 {
		t.Fatalf("events generate exited with %d:\n%s", code, gen.out.String())
	}
	waitCaughtUp(t, pool, time.Minute, allProjections, workers...)
	for _, w := range workers {
		w.stop(t, shutdownTimeout+15*time.Second)
	}
	verifyActivityLog(t, pool)
	verifyRevenue(t, pool)
	verifyUserStats(t, pool)
}

// appendPoison appends, between two runs of the generator, a UserCreated
// event whose payload user_count cannot decode (the email is a number),
// and returns it.
func appendPoison(t *testing.T, dsn string, pool *pgxpool.Pool) projection.PersistedEvent {
	t.Helper()
	generate(t, dsn, "--count", "300", "--aggregates", "60", "--concurrency", "4")
	out, err := projection.NewStore().Append(context.Background(), pool, demo.AggregateUser, "user-poison", projection.NoStream,
		projection.Event{EventType: demo.EventUserCreated, Payload: json.RawMessage(`{"email": 42}`)})
	if err != nil {
		t.Fatal(err)
	}
	generate(t, dsn, "--count", "200", "--aggregates", "60", "--concurrency", "4")
	return out[0]
}

// A poison event through the binary, under each ERROR_POLICY.
func TestPoisonPolicies(t *testing.T) {
	// stop (the default): the worker exits with status 1 and an error
	// naming the projection, the partition, the event's position, id and
	// type; user_count's checkpoint stops right before it. Started again,
	// it fails again on the same event: nothing is skipped silently.
	t.Run("stop", func(t *testing.T) {
		dsn := pgtest.NewDatabase(t)
		migrate(t, dsn)
		pool := pgtest.OpenPool(t, dsn)
		poison := appendPoison(t, dsn, pool)
		want := []string{
			"projectionist worker: ",
			`projection "user_count" partition 0`,
			fmt.Sprintf("at position %d ", poison.GlobalPosition),
			poison.EventID.String(),
			"UserCreated",
			`"user-poison"`,
			"decoding UserCreated",
		}
		for run := range 2 {
			w := startWorker(t, fmt.Sprintf("worker (run %d)", run), dsn,
				map[string]string{"PARTITION_KEY": "0", "TOTAL_PARTITIONS": "1", "BATCH_SIZE": "1"})
			if code := w.wait(t, time.Minute); code != 1 {
				t.Fatalf("%s exited with %d, want 1:\n%s", w.name, code, w.out.String())
			}
			out := w.out.String()
			for _, s := range want {
				if !strings.Contains(out, s) {
					t.Errorf("%s: the error does not say %q:\n%s", w.name, s, tail(out, 5))
				}
			}
		}
		// With batches of one, user_count handled exactly the User events
		// before the poison one.
		before := scalar(t, pool, "SELECT count(*) FROM events WHERE aggregate_type = 'User' AND global_position < $1", poison.GlobalPosition)
		if n, err := projection.EventsProcessed(context.Background(), pool, "user_count"); err != nil || n != before {
			t.Errorf("user_count processed %d events (%v), want the %d User events before the poison one", n, err, before)
		}
		if n := scalar(t, pool, "SELECT count(*) FROM user_stats WHERE user_id = 'user-poison'"); n != 0 {
			t.Error("user_stats holds the poison event's user")
		}
		if n := scalar(t, pool, "SELECT count(*) FROM projection_dead_letters"); n != 0 {
			t.Errorf("%d dead letters under the stop policy", n)
		}
	})

	// skip and dead-letter: the worker logs the event, counts it in
	// /metrics, and carries on; every other event is applied exactly once;
	// dead-letter also records it in projection_dead_letters. Two
	// partitions, so the recorded partition is the owner's.
	for _, policy := range []string{"skip", "dead-letter"} {
		t.Run(policy, func(t *testing.T) {
			dsn := pgtest.NewDatabase(t)
			migrate(t, dsn)
			pool := pgtest.OpenPool(t, dsn)
			poison := appendPoison(t, dsn, pool)
			owner := projection.PartitionOf(poison.AggregateID, 2)
			workers := startPair(t, dsn, policy, map[string]string{"ERROR_POLICY": policy})
			events := waitCaughtUp(t, pool, time.Minute, []string{"activity_log", "revenue"}, workers...)
			users := scalar(t, pool, "SELECT count(*) FROM events WHERE aggregate_type = 'User'")
			waitFor(t, time.Minute, "user_count to handle every User event but the poison one", func() (bool, error) {
				if err := mustRunning(workers...); err != nil {
					t.Fatal(err)
				}
				n, err := projection.EventsProcessed(context.Background(), pool, "user_count")
				if n > users-1 {
					t.Fatalf("user_count processed %d events, want %d (every User event but the poison one)", n, users-1)
				}
				return n == users-1, err
			})
			addr := workers[owner].httpAddr(t)
			if v := metric(t, addr, fmt.Sprintf(`projectionist_events_poisoned_total{partition="%d",policy="%s",projection="user_count"}`, owner, policy)); v != 1 {
				t.Errorf("projectionist_events_poisoned_total = %v, want 1", v)
			}
			set := workers[owner].logLines("projection event set aside by the error policy")
			if len(set) != 1 || set[0]["eventID"] != poison.EventID.String() || set[0]["policy"] != policy {
				t.Errorf("%s logged %v, want one record of event %s set aside by %s", workers[owner].name, set, poison.EventID, policy)
			}
			for _, w := range workers {
				w.stop(t, 30*time.Second)
			}
			verifyActivityLog(t, pool)
			verifyRevenue(t, pool)
			if n := scalar(t, pool, "SELECT count(*) FROM user_stats WHERE user_id = 'user-poison'"); n != 0 {
				t.Error("user_stats holds the poison event's user")
			}
			if n := scalar(t, pool, "SELECT count(*) FROM user_stats"); n != scalar(t, pool, "SELECT count(*) FROM events WHERE event_type = 'UserCreated'")-1 {
				t.Errorf("user_stats holds %d users, want every user created but the poison one", n)
			}
			t.Logf("%d events, %d of them User events", events, users)

			var (
				projectionName, eventType, aggregateID, errText string
				partition                                       int32
				position                                        int64
			)
			rows := scalar(t, pool, "SELECT count(*) FROM projection_dead_letters")
			if policy == "skip" {
				if rows != 0 {
					t.Errorf("%d dead letters under the skip policy, want 0", rows)
				}
				return
			}
			if rows != 1 {
				t.Fatalf("%d dead letters, want 1", rows)
			}
			err := pool.QueryRow(context.Background(), `SELECT projection_name, partition_key, global_position, event_type, aggregate_id, error
				FROM projection_dead_letters WHERE event_id = $1`, poison.EventID).
				Scan(&projectionName, &partition, &position, &eventType, &aggregateID, &errText)
			if err != nil {
				t.Fatalf("the poison event's dead letter: %v", err)
			}
			if projectionName != "user_count" || int(partition) != owner || position != poison.GlobalPosition ||
				eventType != "UserCreated" || aggregateID != "user-poison" || !strings.Contains(errText, "decoding UserCreated") {
				t.Errorf("dead letter: projection %q partition %d position %d %s of %q: %q; want user_count, %d, %d, UserCreated of user-poison, a decoding error",
					projectionName, partition, position, eventType, aggregateID, errText, owner, poison.GlobalPosition)
			}
		})
	}
}

// Bad worker flags and variables: exit status 2, a message naming the
// flag or variable, the value and what is allowed, and a pointer to
// --help. (TestBadInput covers the other commands.)
func TestWorkerBadInput(t *testing.T) {
	const secret = "s3cretpw"
	dsn := pgtest.NewDatabase(t)
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string // in stderr, after "projectionist worker: "
	}{
		{"batch size zero", map[string]string{"BATCH_SIZE": "0"}, nil, `BATCH_SIZE "0": must be an integer between 1 and 10000`},
		{"batch size too big", nil, []string{"--batch-size", "10001"}, `--batch-size "10001": must be an integer between 1 and 10000`},
		{"batch size not a number", map[string]string{"BATCH_SIZE": "lots"}, nil, `BATCH_SIZE "lots": must be an integer between 1 and 10000`},
		{"negative partition key", map[string]string{"PARTITION_KEY": "-1"}, nil, `PARTITION_KEY "-1": must be a non-negative integer`},
		{"partition key outside total", map[string]string{"PARTITION_KEY": "4", "TOTAL_PARTITIONS": "4"}, nil, `PARTITION_KEY "4": must be below TOTAL_PARTITIONS (4)`},
		{"zero partitions", map[string]string{"TOTAL_PARTITIONS": "0"}, nil, `TOTAL_PARTITIONS "0": must be an integer between 1 and 1024`},
		{"pod name without ordinal", map[string]string{"POD_NAME": "user-count"}, nil, `POD_NAME "user-count": has no ordinal suffix`},
		{"pod ordinal outside total", map[string]string{"POD_NAME": "user-count-3", "TOTAL_PARTITIONS": "2"}, nil, `POD_NAME "user-count-3": ordinal 3 must be below TOTAL_PARTITIONS (2)`},
		{"poll interval", map[string]string{"POLL_INTERVAL": "soon"}, nil, `POLL_INTERVAL "soon": must be a positive duration`},
		{"negative shutdown timeout", nil, []string{"--shutdown-timeout", "-1s"}, `--shutdown-timeout "-1s": must be a positive duration`},
		{"error policy", map[string]string{"ERROR_POLICY": "retry"}, nil, `ERROR_POLICY "retry": must be stop, skip or dead-letter`},
		{"http address", map[string]string{"HTTP_ADDR": "8080"}, nil, `HTTP_ADDR "8080": must be host:port`},
		{"log level", map[string]string{"LOG_LEVEL": "loud"}, nil, `LOG_LEVEL "loud": must be debug, info, warn or error`},
		{"log format", nil, []string{"--log-format", "xml"}, `--log-format "xml": must be json or text`},
		{"empty projection name", map[string]string{"PROJECTION": "revenue,,user_count"}, nil, `PROJECTION "revenue,,user_count": must be projection names separated by commas`},
		{"projection twice", nil, []string{"--projection", "revenue,revenue"}, `--projection "revenue,revenue": names "revenue" twice`},
		{"unknown flag", nil, []string{"--partitions", "3"}, "flag provided but not defined: -partitions"},
		{"extra argument", nil, []string{"now"}, `unexpected argument "now"`},
		{"malformed URL", map[string]string{"DATABASE_URL": "postgres://app:" + secret + "@127.0.0.1:notaport/app"}, nil, `DATABASE_URL: invalid database connection string: invalid port`},
		{"unknown projection", map[string]string{"DATABASE_URL": dsn, "PROJECTION": "user_count,revnue"}, nil, `unknown projection "revnue"; this worker has activity_log, revenue, user_count`},
		// Reported at once, not after waiting for a database that is not there.
		{"unknown projection, no database", map[string]string{"DATABASE_URL": "postgres://app:" + secret + "@127.0.0.1:1/app?sslmode=disable", "PROJECTION": "activity"}, nil,
			`unknown projection "activity"; this worker has activity_log, revenue, user_count`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"HTTP_ADDR": "127.0.0.1:0"}
			for k, v := range tc.env {
				env[k] = v
			}
			p := startProcess(t, "worker", env, append([]string{"worker"}, tc.args...)...)
			code := p.wait(t, 30*time.Second)
			out := p.out.String()
			if code != 2 || !strings.HasPrefix(out, "projectionist worker: ") || !strings.Contains(out, tc.want) ||
				!strings.Contains(out, "Run 'projectionist worker --help' for usage.") {
				t.Errorf("want exit 2 and \"projectionist worker: ...%s\" with a pointer to --help, got exit %d:\n%s", tc.want, code, out)
			}
			if strings.Contains(out, secret) {
				t.Errorf("the password leaked:\n%s", out)
			}
		})
	}
}
