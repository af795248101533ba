package main

// Benchmarks of worker processes: the real binary, run as 1, 2 or 4
// processes (PARTITION_KEY=0..n-1 TOTAL_PARTITIONS=n, the separate-processes
// pattern) over a log of 100k demo events appended beforehand by `events
// generate`, at BATCH_SIZE=1000.
//
//	go test ./cmd/projectionist -run '^$' -bench WorkerProcesses -benchtime 3x
//
// An iteration starts the processes and ends when every projection's
// checkpoints (projection.EventsProcessed) count every event in its scope:
// process start, migration check and topology switch included. Between
// iterations, outside the timer, the processes are stopped and the
// projections reset (checkpoints, topology and read models emptied).
//
// Metrics: events/s is the log's events over the iteration's time;
// MiB-rss is the largest peak resident set (VmHWM) of a worker process,
// read once it has processed everything. The target for one worker at
// batch 1000 is under 40 MiB.

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/internal/proctest"
	"github.com/projectionist/projectionist/pkg/demo"
	"github.com/projectionist/projectionist/pkg/projection"
)

const benchLogEvents = 100_000

var (
	benchLogOnce sync.Once
	benchLogDSN  string
	benchLogErr  error
)

// benchLog returns the DSN of a database holding benchLogEvents demo
// events over 1000 users, appended once per test binary by `events
// generate`, and the demo read models' tables. It lives until TestMain
// stops the server.
func benchLog(b *testing.B) string {
	b.Helper()
	benchLogOnce.Do(func() {
		defer func() {
			if benchLogDSN == "" && benchLogErr == nil {
				benchLogErr = fmt.Errorf("preparing the benchmark log failed")
			}
		}()
		dsn := pgtest.MustDatabase()
		migrate(b, dsn)
		start := time.Now()
		generate(b, dsn, "--count", strconv.Itoa(benchLogEvents), "--aggregates", "1000", "--concurrency", "8")
		b.Logf("appended %d events in %s", benchLogEvents, time.Since(start).Round(time.Millisecond))
		ctx := context.Background()
		pool := pgtest.OpenPool(b, dsn)
		if benchLogErr = demo.EnsureSchema(ctx, pool); benchLogErr != nil {
			return
		}
		if _, benchLogErr = pool.Exec(ctx, "VACUUM ANALYZE events"); benchLogErr != nil {
			return
		}
		benchLogDSN = dsn
	})
	if benchLogErr != nil {
		b.Fatal(benchLogErr)
	}
	return benchLogDSN
}

func BenchmarkWorkerProcesses(b *testing.B) {
	dsn := benchLog(b)
	ctx := context.Background()
	pool := pgtest.OpenPool(b, dsn)
	for _, set := range []struct {
		name        string
		projections []string
	}{
		{"activity_log", []string{"activity_log"}},
		{"all", allProjections},
	} {
		want := inScope(b, pool, set.projections)
		for _, procs := range []int{1, 2, 4} {
			b.Run(fmt.Sprintf("%s/procs=%d", set.name, procs), func(b *testing.B) {
				var elapsed time.Duration
				var rss int64
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					for _, name := range allProjections {
						if err := projection.ResetProjection(ctx, pool, name); err != nil {
							b.Fatal(err)
						}
					}
					if _, err := pool.Exec(ctx, "TRUNCATE activity_log, revenue, user_stats"); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
					began := time.Now()
					var workers []*process
					for k := range procs {
						workers = append(workers, startWorker(b, fmt.Sprintf("worker %d of %d", k, procs), dsn,
							map[string]string{"PARTITION_KEY": strconv.Itoa(k), "TOTAL_PARTITIONS": strconv.Itoa(procs),
								"BATCH_SIZE": "1000", "LOG_LEVEL": "warn"},
							"--projection", strings.Join(set.projections, ",")))
					}
					waitFor(b, 5*time.Minute, fmt.Sprintf("%v events processed", want), func() (bool, error) {
						if err := mustRunning(workers...); err != nil {
							b.Fatal(err)
						}
						got, err := demo.Processed(ctx, pool, set.projections...)
						if err != nil {
							return false, err
						}
						for name, n := range want {
							if got[name] < n {
								return false, nil
							}
						}
						return true, nil
					})
					elapsed += time.Since(began)
					b.StopTimer()
					for _, w := range workers {
						hwm, err := proctest.PeakRSS(w.pid())
						if err != nil {
							b.Fatal(err)
						}
						rss = max(rss, hwm)
					}
					for _, w := range workers {
						w.stop(b, 30*time.Second)
					}
					b.StartTimer()
				}
				b.ReportMetric(float64(benchLogEvents)*float64(b.N)/elapsed.Seconds(), "events/s")
				b.ReportMetric(float64(rss)/(1<<20), "MiB-rss")
			})
		}
	}
}
