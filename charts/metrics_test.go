package charts_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/projectionist/projectionist/controllers"
	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/internal/proctest"
	"github.com/projectionist/projectionist/pkg/projection"
	"github.com/projectionist/projectionist/worker"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// metricName matches the projectionist metrics PromQL names.
var metricName = regexp.MustCompile(`\bprojectionist_[a-z0-9_]*[a-z0-9]\b`)

// TestDashboardAndRulesUseExportedMetrics: every metric the Grafana
// dashboard and the PrometheusRule query is one a running worker serves.
// The names come from a real worker's /metrics (worker.Run against a real
// PostgreSQL, after a batch), so a renamed or removed metric fails here,
// not in a user's empty panel or silent alert. Every query must name at
// least one projectionist metric, so that none escapes the check.
func TestDashboardAndRulesUseExportedMetrics(t *testing.T) {
	exported := workerMetrics(t)
	maps.Copy(exported, operatorMetrics())

	queries := map[string]string{} // where -> PromQL
	var dashboard struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	b, err := os.ReadFile(filepath.Join(chartDir, "files", "dashboards", "projectionist.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dashboard); err != nil {
		t.Fatalf("files/dashboards/projectionist.json: %v", err)
	}
	for _, p := range dashboard.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("dashboard panel %q has no query", p.Title)
		}
		for i, tg := range p.Targets {
			queries["dashboard panel "+p.Title+" target "+string(rune('A'+i))] = tg.Expr
		}
	}
	for _, v := range dashboard.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, ok := v.Query.(map[string]any)
		if !ok {
			t.Fatalf("dashboard variable %s: query %v is not an object", v.Name, v.Query)
		}
		queries["dashboard variable "+v.Name], _ = q["query"].(string)
	}

	var pr prometheusRule
	renderWith(t, "monitoring: {prometheusRule: {enabled: true}}", prometheusOperator).get(t, "PrometheusRule", fullname, &pr)
	for name, ru := range pr.rules() {
		queries["alert "+name] = ru.Expr
	}
	if len(queries) < 10 {
		t.Fatalf("only %d queries found in the dashboard and the rules", len(queries))
	}

	for where, q := range queries {
		names := metricName.FindAllString(q, -1)
		if len(names) == 0 {
			t.Errorf("%s: %q names no projectionist metric", where, q)
		}
		for _, n := range names {
			if !exported[n] {
				t.Errorf("%s: %s is not a metric the worker or the operator serves (%q)", where, n, q)
			}
		}
	}
}

// operatorMetrics are the names of the operator's per-Projection metrics,
// from the descriptors its collector registers.
func operatorMetrics() map[string]bool {
	ch := make(chan *prometheus.Desc, 32)
	controllers.ProjectionMetrics().Describe(ch)
	close(ch)
	names := map[string]bool{}
	for d := range ch {
		if m := descName.FindStringSubmatch(d.String()); m != nil {
			names[m[1]] = true
		}
	}
	return names
}

// descName is a Desc's fully-qualified name, as its String shows it.
var descName = regexp.MustCompile(`fqName: "([a-z0-9_]+)"`)

// workerMetrics runs a worker with one projection against a fresh database
// and returns the names of the samples its /metrics serves, as PromQL sees
// them: a histogram h as h_bucket, h_sum and h_count.
func workerMetrics(t *testing.T) map[string]bool {
	t.Helper()
	dsn := pgtest.NewDatabase(t)
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- worker.Run(ctx, worker.Config{
			DatabaseURL:     dsn,
			HTTPAddr:        addr,
			TotalPartitions: 1,
			Logger:          slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
		}, nopProjection{})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})

	// Ready: migrated and one batch done. Then an event, so that every
	// metric has seen one, and a batch after the one that handled it, so
	// that OnBatch (the histogram) has run for that batch too.
	client := &http.Client{Timeout: 10 * time.Second}
	waitUntil(t, "the worker is ready", func() bool {
		resp, err := client.Get("http://" + addr + worker.PathReadyz)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := projection.NewStore().Append(ctx, pool, "Thing", "thing-1", projection.AnyVersion, projection.Event{EventType: "Happened"}); err != nil {
		t.Fatal(err)
	}
	var samples map[string]float64
	waitUntil(t, "the event handled", func() bool {
		samples = scrape(t, client, "http://"+addr+worker.PathMetrics)
		return samples["projectionist_events_handled_total"] >= 1
	})
	handledBy := samples["projectionist_batches_total"]
	waitUntil(t, "a batch after the one that handled the event, and the sampler's measurements", func() bool {
		samples = scrape(t, client, "http://"+addr+worker.PathMetrics)
		_, sampled := samples["projectionist_lag_seconds"]
		_, up := samples["projectionist_database_up"]
		return samples["projectionist_batches_total"] > handledBy && sampled && up
	})
	names := map[string]bool{}
	for n := range samples {
		names[n] = true
	}
	for _, n := range []string{"projectionist_lag_events", "projectionist_lag_seconds", "projectionist_database_up", "projectionist_batch_duration_seconds_bucket"} {
		if !names[n] {
			t.Fatalf("the worker serves no %s; it serves %v", n, slices.Sorted(maps.Keys(names)))
		}
	}
	return names
}

// scrape returns the samples of a Prometheus text exposition by metric name
// (labels dropped), summed over their label sets.
func scrape(t *testing.T, client *http.Client, url string) map[string]float64 {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v\n%s", url, resp.StatusCode, err, body)
	}
	samples := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		// name[{labels}] value [timestamp]
		end := strings.IndexAny(line, "{ ")
		if end < 0 {
			t.Fatalf("GET %s: sample line %q", url, line)
		}
		name, rest := line[:end], line[end:]
		if strings.HasPrefix(rest, "{") {
			close := strings.LastIndexByte(rest, '}')
			if close < 0 {
				t.Fatalf("GET %s: sample line %q", url, line)
			}
			rest = rest[close+1:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			t.Fatalf("GET %s: sample line %q has no value", url, line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			t.Fatalf("GET %s: sample line %q: %v", url, line, err)
		}
		samples[name] += v
	}
	return samples
}

// nopProjection handles every event by doing nothing.
type nopProjection struct{}

func (nopProjection) Name() string { return "metrics-check" }

func (nopProjection) Handle(context.Context, pgx.Tx, *projection.PersistedEvent) error { return nil }

// freeAddr returns a loopback address with a port nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitUntil polls cond until it holds, failing the test after two minutes
// (a bound against hanging, not a measure of speed).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	proctest.Eventually(t, 2*time.Minute, 50*time.Millisecond, what, proctest.True(cond))
}
