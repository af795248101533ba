package worker

import (
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/projectionist/projectionist/internal/proctest"
	"github.com/projectionist/projectionist/pkg/projection"
)

// A worker started with TOTAL_PARTITIONS=2 whose projection another
// standalone process switches to 3 carries on under 3, stays ready, and
// says so: in the /readyz body, in projectionist_topology_mismatch, and in
// one WARN line however many batches follow.
func TestTopologyMismatchShown(t *testing.T) {
	dsn, pool := newDatabase(t)
	mustAppend(t, pool, repeat("Happened", 10)...)
	var logs proctest.SyncBuffer
	r := start(t, Config{DatabaseURL: dsn, TotalPartitions: 2, PollInterval: 5 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}, applyOnce{name: "mixed"})
	const gauge = `projectionist_topology_mismatch{partition="0",projection="mixed"}`
	waitFor(t, "/readyz to answer ok", func() bool { code, body := get(r.url + "/readyz"); return code == http.StatusOK && body == "ok\n" })
	if v, ok := r.metric(gauge); !ok || v != 0 {
		t.Fatalf("%s = %v (found: %t) before the switch, want 0", gauge, v, ok)
	}

	if _, err := projection.SetTopology(t.Context(), pool, "mixed", 3); err != nil {
		t.Fatal(err)
	}
	want := `ok (warning: projection "mixed" partition 0: configured with TOTAL_PARTITIONS (2) but running under 3 (generation 2): another process switched the topology)` + "\n"
	waitFor(t, "/readyz to warn of the mismatch", func() bool { code, body := get(r.url + "/readyz"); return code == http.StatusOK && body == want })
	if v, ok := r.metric(gauge); !ok || v != 1 {
		t.Errorf("%s = %v (found: %t) after the switch, want 1", gauge, v, ok)
	}
	if v, _ := r.metric(`projectionist_topology_partitions{partition="0",projection="mixed"}`); v != 3 {
		t.Errorf("topology partitions = %v, want 3", v)
	}
	// Many batches later, still one WARN.
	b0, _ := r.metric(`projectionist_batches_total{partition="0",projection="mixed"}`)
	waitFor(t, "ten more batches", func() bool {
		b, _ := r.metric(`projectionist_batches_total{partition="0",projection="mixed"}`)
		return b >= b0+10
	})
	if n := strings.Count(logs.String(), `level=WARN msg="worker running under another partition count than configured"`); n != 1 {
		t.Errorf("%d mismatch WARN lines, want 1; logs:\n%s", n, logs.String())
	}
}

// A standalone worker started with TOTAL_PARTITIONS=1 against a projection
// the operator runs in 3 partitions stops with *TopologyManagedError (not
// retried: only its configuration can fix it), and the topology is as the
// operator left it.
func TestStandaloneWorkerRefusesOperatorTopology(t *testing.T) {
	dsn, pool := newDatabase(t)
	mustAppend(t, pool, repeat("Happened", 5)...)
	if _, err := projection.SetTopologyAs(t.Context(), pool, "owned", 3, projection.TopologyOptions{ManagedBy: projection.ManagerOperator}); err != nil {
		t.Fatal(err)
	}
	r := start(t, Config{DatabaseURL: dsn, TotalPartitions: 1}, applyOnce{name: "owned"})
	err := r.wait(t, "worker did not stop on an operator-managed topology")
	var me *projection.TopologyManagedError
	if !errors.As(err, &me) || me.TotalPartitions != 3 {
		t.Fatalf("Run = %v, want a *TopologyManagedError naming 3 partitions", err)
	}
	top, err := projection.GetTopology(t.Context(), pool, "owned")
	if err != nil || top.Generation != 1 || top.TotalPartitions != 3 || top.ManagedBy != projection.ManagerOperator {
		t.Errorf("topology = %+v (%v), want generation 1 of 3, operator-managed", top, err)
	}
	if got := count(t, pool, "SELECT count(*) FROM applied"); got != 0 {
		t.Errorf("applied rows = %d, want 0", got)
	}
}
