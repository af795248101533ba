package main

// The harness of the process tests (process_test.go, rescale_test.go) and
// benchmarks (bench_process_test.go): the binary TestMain built, run as
// child processes that the tests signal, kill and restart, and checks of
// what the read models hold.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/internal/proctest"
	"github.com/projectionist/projectionist/pkg/demo"
	"github.com/projectionist/projectionist/pkg/projection"
)

// process is a running projectionist binary.
type process struct {
	name string
	// key is a worker's PARTITION_KEY, -1 if none; addr its HTTP server's
	// address, once httpAddr has read it.
	key  int
	addr string
	cmd  *exec.Cmd
	out  *proctest.SyncBuffer // stdout and stderr together
	done chan struct{}
	// state is set once done is closed.
	state *os.ProcessState
}

// startProcess starts the binary with args and only env (plus PATH and
// HOME). The process is killed, if still running, when the test ends, and
// killed as well if the test binary dies first (Pdeathsig). When the test
// fails, the tail of its output is logged.
func startProcess(tb testing.TB, name string, env map[string]string, args ...string) *process {
	tb.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &process{name: name, key: -1, cmd: cmd, out: &proctest.SyncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		_ = cmd.Wait() // an exit status is not an error here; see state
		p.state = cmd.ProcessState
		close(p.done)
	}()
	tb.Cleanup(func() {
		if p.running() {
			_ = cmd.Process.Kill()
		}
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			tb.Errorf("%s (pid %d) did not die after SIGKILL", name, cmd.Process.Pid)
		}
		if tb.Failed() {
			tb.Logf("%s (pid %d, %s): last output:\n%s", name, cmd.Process.Pid, p.state, tail(p.out.String(), 25))
		}
	})
	return p
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.SplitAfter(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "")
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *process) signal(tb testing.TB, sig os.Signal) {
	tb.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		tb.Fatalf("signalling %s: %v", p.name, err)
	}
}

// wait waits up to timeout for the process to exit and returns its exit
// code (-1 if a signal killed it). It fails the test if the process is
// still running then.
func (p *process) wait(tb testing.TB, timeout time.Duration) int {
	tb.Helper()
	select {
	case <-p.done:
		return p.state.ExitCode()
	case <-time.After(timeout):
		tb.Fatalf("%s (pid %d) still running after %s:\n%s", p.name, p.pid(), timeout, tail(p.out.String(), 25))
		return 0
	}
}

// kill SIGKILLs the process and waits for it.
func (p *process) kill(tb testing.TB) {
	tb.Helper()
	p.signal(tb, syscall.SIGKILL)
	p.wait(tb, 10*time.Second)
}

// stop SIGTERMs the process and fails the test unless it exits with status
// 0 within timeout.
func (p *process) stop(tb testing.TB, timeout time.Duration) {
	tb.Helper()
	p.signal(tb, syscall.SIGTERM)
	if code := p.wait(tb, timeout); code != 0 {
		tb.Fatalf("%s exited with status %d after SIGTERM, want 0:\n%s", p.name, code, tail(p.out.String(), 25))
	}
}

// logLines returns the process's JSON log records whose msg is msg.
func (p *process) logLines(msg string) []map[string]any {
	var found []map[string]any
	sc := bufio.NewScanner(strings.NewReader(p.out.String()))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == msg {
			found = append(found, rec)
		}
	}
	return found
}

// httpAddr waits for the worker's "worker started" log record and returns
// the address of its HTTP server.
func (p *process) httpAddr(tb testing.TB) string {
	tb.Helper()
	waitFor(tb, 30*time.Second, p.name+" to log its HTTP address", func() (bool, error) {
		if p.lookupAddr() != "" {
			return true, nil
		}
		if !p.running() {
			return false, fmt.Errorf("%s exited with %s", p.name, p.state)
		}
		return false, nil
	})
	return p.addr
}

// lookupAddr returns the address of the worker's HTTP server, or "" if it
// has not logged it yet.
func (p *process) lookupAddr() string {
	if p.addr == "" {
		if recs := p.logLines("worker started"); len(recs) > 0 {
			p.addr, _ = recs[0]["httpAddr"].(string)
		}
	}
	return p.addr
}

// startWorker starts `projectionist worker` on dsn with JSON logs and an
// HTTP server on a free loopback port, and env (PARTITION_KEY, ...) added.
func startWorker(tb testing.TB, name, dsn string, env map[string]string, args ...string) *process {
	tb.Helper()
	all := map[string]string{"DATABASE_URL": dsn, "HTTP_ADDR": "127.0.0.1:0", "LOG_FORMAT": "json"}
	for k, v := range env {
		all[k] = v
	}
	p := startProcess(tb, name, all, append([]string{"worker"}, args...)...)
	if k, err := strconv.Atoi(all["PARTITION_KEY"]); err == nil {
		p.key = k
	}
	return p
}

// generate runs `projectionist events generate` to completion and returns
// how many events it appended.
func generate(tb testing.TB, dsn string, args ...string) int {
	tb.Helper()
	p := startProcess(tb, "events generate", map[string]string{"DATABASE_URL": dsn},
		append([]string{"events", "generate", "--progress", "0"}, args...)...)
	if code := p.wait(tb, 2*time.Minute); code != 0 {
		tb.Fatalf("events generate exited with %d:\n%s", code, p.out.String())
	}
	return p.appended(tb)
}

// appended reads the event count from the summary of a finished `events
// generate`.
func (p *process) appended(tb testing.TB) int {
	tb.Helper()
	var n int
	if _, err := fmt.Sscanf(p.out.String(), "appended %d events", &n); err != nil {
		tb.Fatalf("events generate printed no summary (%v):\n%s", err, p.out.String())
	}
	return n
}

// migrate runs `projectionist migrate`.
func migrate(tb testing.TB, dsn string) {
	tb.Helper()
	p := startProcess(tb, "migrate", map[string]string{"DATABASE_URL": dsn}, "migrate")
	if code := p.wait(tb, time.Minute); code != 0 {
		tb.Fatalf("migrate exited with %d:\n%s", code, p.out.String())
	}
}

// readyz returns the status code and body of the worker's /readyz, or an
// error if it does not answer.
func readyz(addr string) (int, string, error) {
	client := http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(body)), err
}

// metrics scrapes the worker's /metrics: the samples by name and labels,
// as exposed, e.g.
// `projectionist_events_poisoned_total{partition="0",policy="skip",projection="user_count"}`.
func metrics(addr string) (map[string]float64, error) {
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	samples := map[string]float64{}
	for line := range strings.Lines(string(body)) {
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(line[i+1:]), 64)
		if err != nil {
			return nil, fmt.Errorf("metric line %q: %w", line, err)
		}
		samples[line[:i]] = v
	}
	return samples, nil
}

// metric returns one sample of the worker's /metrics (see metrics),
// failing the test if there is none.
func metric(tb testing.TB, addr, sample string) float64 {
	tb.Helper()
	samples, err := metrics(addr)
	if err != nil {
		tb.Fatalf("GET /metrics: %v", err)
	}
	v, ok := samples[sample]
	if !ok {
		tb.Fatalf("/metrics has no %s: %v", sample, samples)
	}
	return v
}

// waitFor polls cond every 20ms until it returns true, failing the test if
// it does not within timeout (with cond's last error, if any).
func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	tb.Helper()
	proctest.Eventually(tb, timeout, 20*time.Millisecond, what, func() error {
		ok, err := cond()
		switch {
		case ok:
			return nil
		case err != nil:
			return fmt.Errorf("last error: %w", err)
		}
		return errors.New("not yet")
	})
}

// mustRunning fails the test if a process in procs has exited: a worker
// that dies on its own while the test waits for it would otherwise only
// show as a timeout.
func mustRunning(procs ...*process) error {
	for _, p := range procs {
		if p != nil && !p.running() {
			return fmt.Errorf("%s exited on its own (%s):\n%s", p.name, p.state, tail(p.out.String(), 25))
		}
	}
	return nil
}

// scalar runs a query returning one int64.
func scalar(tb testing.TB, pool *pgxpool.Pool, sql string, args ...any) int64 {
	tb.Helper()
	n, err := query(pool, sql, args...)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// query runs a query returning one int64, for waits that poll a table the
// workers may not have created yet.
func query(pool *pgxpool.Pool, sql string, args ...any) (int64, error) {
	var n int64
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("%s: %w", sql, err)
	}
	return n, nil
}

// scope is what a demo projection reads: all events, or those of one
// aggregate type.
var scope = map[string]string{"activity_log": "", "revenue": demo.AggregateOrder, "user_count": demo.AggregateUser}

// inScope counts the events now in the log in each named projection's
// scope.
func inScope(tb testing.TB, pool *pgxpool.Pool, names []string) map[string]int64 {
	tb.Helper()
	want := map[string]int64{}
	for _, name := range names {
		var err error
		if scope[name] == "" {
			want[name], err = demo.CountEvents(context.Background(), pool)
		} else {
			want[name], err = demo.CountEvents(context.Background(), pool, scope[name])
		}
		if err != nil {
			tb.Fatal(err)
		}
	}
	return want
}

// waitCaughtUp waits until each named projection has handled every event
// in its scope now in the log (by its checkpoints: projection.EventsProcessed),
// failing the test at once if a worker in workers exits, or when timeout
// passes. It returns the number of events in the log. Call it once the
// appenders are done.
//
// Skipped events would otherwise only show as a timeout: once every
// partition of each projection's topology has read the whole log (see
// skipped) and the counts are still short, it fails at once.
func waitCaughtUp(tb testing.TB, pool *pgxpool.Pool, timeout time.Duration, names []string, workers ...*process) int64 {
	tb.Helper()
	ctx := context.Background()
	// Lag measured before now may predate the last appends.
	since := time.Now()
	want := inScope(tb, pool, names)
	var got map[string]int64
	waitFor(tb, timeout, fmt.Sprintf("projections to catch up with %v events", want), func() (bool, error) {
		if err := mustRunning(workers...); err != nil {
			tb.Fatal(err)
		}
		var err error
		if got, err = demo.Processed(ctx, pool, names...); err != nil {
			return false, err
		}
		for _, name := range names {
			if got[name] > want[name] {
				tb.Fatalf("projection %s processed %d events, more than the %d in its scope", name, got[name], want[name])
			}
			if got[name] < want[name] {
				if err := skipped(pool, names, got, since, workers); err != nil {
					tb.Fatalf("want %v events processed: %v", want, err)
				}
				return false, fmt.Errorf("processed %v", got)
			}
		}
		return true, nil
	})
	return scalar(tb, pool, "SELECT count(*) FROM events")
}

// skipped returns an error if the projections, having processed only
// processed events, never will process more: every partition of each
// projection's current topology is run by a worker in workers whose
// /metrics say that its last batch was of the current generation and that
// no event of its partition lies beyond its read position (lag 0, as
// measured after since: the worker measures the lag every
// METRICS_INTERVAL), and the counts have not moved since. It returns nil
// when it cannot tell.
func skipped(pool *pgxpool.Pool, names []string, processed map[string]int64, since time.Time, workers []*process) error {
	ctx := context.Background()
	byKey := map[int]*process{}
	for _, w := range workers {
		if w.key >= 0 && w.running() {
			byKey[w.key] = w
		}
	}
	var gens []string
	for _, name := range names {
		top, err := projection.GetTopology(ctx, pool, name)
		if err != nil {
			return nil
		}
		for k := range top.TotalPartitions {
			w := byKey[k]
			if w == nil || w.lookupAddr() == "" {
				return nil
			}
			samples, err := metrics(w.addr)
			if err != nil {
				return nil
			}
			labels := fmt.Sprintf(`{partition="%d",projection="%s"}`, k, name)
			gen, ok1 := samples["projectionist_topology_generation"+labels]
			lag, ok2 := samples["projectionist_lag_events"+labels]
			at, ok3 := samples["projectionist_lag_sampled_timestamp_seconds"+labels]
			if !ok1 || !ok2 || !ok3 || int64(gen) != top.Generation || lag != 0 || at < float64(since.UnixNano())/1e9 {
				return nil // still working
			}
		}
		gens = append(gens, fmt.Sprintf("%s generation %d (%d partitions)", name, top.Generation, top.TotalPartitions))
	}
	again, err := demo.Processed(ctx, pool, names...)
	if err != nil || !maps.Equal(again, processed) {
		return nil // moved on since
	}
	return fmt.Errorf("every partition of %s has read the whole log, yet only %v events were processed: events were skipped",
		strings.Join(gens, ", "), processed)
}

// verifyActivityLog checks the exactly-once oracle: activity_log holds each
// event of the log once (the same events, by id, position, aggregate and
// version), each aggregate's events were applied in version order (by seq,
// the order of the inserts), and each by the partition that owns the
// aggregate under the topology it was applied with.
func verifyActivityLog(tb testing.TB, pool *pgxpool.Pool) {
	tb.Helper()
	events := scalar(tb, pool, "SELECT count(*) FROM events")
	logged := scalar(tb, pool, "SELECT count(*) FROM activity_log")
	if events == 0 || logged != events {
		tb.Errorf("activity_log holds %d rows, the log %d events", logged, events)
	}
	if n := scalar(tb, pool, `SELECT count(*) FROM events e WHERE NOT EXISTS (SELECT 1 FROM activity_log a
		WHERE a.event_id = e.event_id AND a.global_position = e.global_position AND a.aggregate_type = e.aggregate_type
		  AND a.aggregate_id = e.aggregate_id AND a.aggregate_version = e.aggregate_version AND a.event_type = e.event_type)`); n != 0 {
		tb.Errorf("%d events of the log are missing from activity_log (lost)", n)
	}
	if n := scalar(tb, pool, `SELECT count(*) FROM activity_log a WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = a.event_id)`); n != 0 {
		tb.Errorf("activity_log holds %d rows of no event", n)
	}
	// Applied in version order: the k-th row of an aggregate, by seq, is
	// its version k (the versions of a stream are 1, 2, 3, ...).
	if n := scalar(tb, pool, `SELECT count(*) FROM (
		SELECT aggregate_version, row_number() OVER (PARTITION BY aggregate_type, aggregate_id ORDER BY seq) AS k
		FROM activity_log) AS applied WHERE aggregate_version <> k`); n != 0 {
		tb.Errorf("%d activity_log rows were applied out of their aggregate's version order", n)
	}
	if n := scalar(tb, pool, `SELECT count(*) FROM activity_log a JOIN events e USING (event_id)
		WHERE a.partition_key IS NULL OR a.total_partitions IS NULL OR a.generation IS NULL
		   OR e.partition_hash % a.total_partitions <> a.partition_key`); n != 0 {
		tb.Errorf("%d activity_log rows were applied by a partition that does not own the aggregate", n)
	}
}

// verifyRevenue checks that revenue counted every OrderPlaced of the log
// once: its total is the sum of their amount_cents.
func verifyRevenue(tb testing.TB, pool *pgxpool.Pool) {
	tb.Helper()
	var orders, total, wantOrders, wantTotal int64
	ctx := context.Background()
	if err := pool.QueryRow(ctx, demo.RevenueTotalSQL).Scan(&orders, &total); err != nil {
		tb.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*), coalesce(sum((payload->>'amount_cents')::bigint), 0)::bigint
		FROM events WHERE event_type = 'OrderPlaced'`).Scan(&wantOrders, &wantTotal); err != nil {
		tb.Fatal(err)
	}
	if wantOrders == 0 || orders != wantOrders || total != wantTotal {
		tb.Errorf("revenue: %d orders, %d cents; the log: %d orders, %d cents", orders, total, wantOrders, wantTotal)
	}
}

// verifyUserStats checks user_count's read model: a row per user created,
// inactive exactly for the users deactivated.
func verifyUserStats(tb testing.TB, pool *pgxpool.Pool) {
	tb.Helper()
	if n := scalar(tb, pool, `SELECT count(*) FROM (
		SELECT aggregate_id FROM events WHERE event_type = 'UserCreated'
		EXCEPT ALL SELECT user_id FROM user_stats) AS missing`); n != 0 {
		tb.Errorf("user_stats misses %d users created", n)
	}
	if n := scalar(tb, pool, `SELECT count(*) FROM (
		SELECT user_id FROM user_stats EXCEPT ALL
		SELECT aggregate_id FROM events WHERE event_type = 'UserCreated') AS extra`); n != 0 {
		tb.Errorf("user_stats holds %d users never created", n)
	}
	inactive := scalar(tb, pool, "SELECT count(*) FROM user_stats WHERE NOT active")
	deactivated := scalar(tb, pool, "SELECT count(DISTINCT aggregate_id) FROM events WHERE event_type = 'UserDeactivated'")
	if inactive != deactivated {
		tb.Errorf("user_stats has %d inactive users, the log deactivated %d", inactive, deactivated)
	}
}

// setTopology switches each projection to n partitions, as the operator
// does.
func setTopology(tb testing.TB, pool *pgxpool.Pool, n int, names ...string) {
	tb.Helper()
	for _, name := range names {
		if _, err := projection.SetTopology(context.Background(), pool, name, n); err != nil {
			tb.Fatal(err)
		}
	}
}

func topology(tb testing.TB, pool *pgxpool.Pool, name string) projection.Topology {
	tb.Helper()
	top, err := projection.GetTopology(context.Background(), pool, name)
	if err != nil {
		tb.Fatal(err)
	}
	return top
}
