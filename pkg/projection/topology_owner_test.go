package projection_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/pkg/projection"
)

// topologyRows is every row a switch touches, as text, so that a test can
// say "nothing changed".
func topologyRows(t *testing.T, pool *pgxpool.Pool, name string) []string {
	t.Helper()
	var out []string
	for _, q := range []string{
		"SELECT t::text FROM projection_topology t WHERE projection_name = $1",
		"SELECT c::text FROM projection_checkpoints c WHERE projection_name = $1 ORDER BY partition_key",
		"SELECT f::text FROM projection_frontier f WHERE projection_name = $1 ORDER BY generation, partition_key",
	} {
		rows, err := pool.Query(t.Context(), q, name)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			out = append(out, s)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// A library processor with the default config (TopologyApply, one
// partition) against a topology the operator runs in 4 partitions fails
// with *TopologyManagedError and changes no row; so does SetTopology; a
// processor configured with the managed count, or following, just runs.
func TestOperatorManagedTopologyRefusesStandalone(t *testing.T) {
	ctx := t.Context()
	pool, store := newStore(t, newAppliedTable)
	appendN(t, pool, store, 20, 3, "A")
	c, err := projection.SetTopologyAs(ctx, pool, "managed", 4, projection.TopologyOptions{ManagedBy: projection.ManagerOperator})
	if err != nil {
		t.Fatal(err)
	}
	if c.Switched || c.Before.Generation != 0 || c.After.TotalPartitions != 4 || c.After.ManagedBy != projection.ManagerOperator {
		t.Fatalf("operator creating the topology: %+v, want a first generation of 4, operator-managed, not a switch", c)
	}
	// Partition 0 runs, so there are checkpoints to leave alone.
	cfg := projection.DefaultProcessorConfig()
	cfg.TotalPartitions = 4
	if err := projection.NewProcessor(pool, store, cfg).CatchUp(ctx, applyLog{name: "managed"}); err != nil {
		t.Fatalf("processor with the managed count: %v", err)
	}
	before := topologyRows(t, pool, "managed")

	err = projection.NewProcessor(pool, store, projection.DefaultProcessorConfig()).CatchUp(ctx, applyLog{name: "managed"})
	var me *projection.TopologyManagedError
	if !errors.As(err, &me) {
		t.Fatalf("default processor on an operator-managed topology: %v, want *TopologyManagedError", err)
	}
	want := projection.TopologyManagedError{Projection: "managed", ManagedBy: projection.ManagerOperator, TotalPartitions: 4, Requested: 1}
	if diff := cmp.Diff(want, *me); diff != "" {
		t.Errorf("error fields (-want +got):\n%s", diff)
	}
	for _, hint := range []string{`"managed"`, "4 partitions", "kubectl scale projection", "TopologyFollow"} {
		if !strings.Contains(err.Error(), hint) {
			t.Errorf("error %q does not say %s", err, hint)
		}
	}
	if projection.IsRetryable(err) {
		t.Errorf("IsRetryable(%v) = true: a supervisor would retry what only a config change fixes", err)
	}
	if _, err := projection.SetTopology(ctx, pool, "managed", 2); !errors.As(err, &me) {
		t.Errorf("SetTopology on an operator-managed topology: %v, want *TopologyManagedError", err)
	}
	if diff := cmp.Diff(before, topologyRows(t, pool, "managed")); diff != "" {
		t.Errorf("refused calls changed rows (-before +after):\n%s", diff)
	}

	// Equal counts are no conflict; a follower never switches.
	if topo, err := projection.SetTopology(ctx, pool, "managed", 4); err != nil || topo.ManagedBy != projection.ManagerOperator {
		t.Errorf("standalone SetTopology with the managed count = %+v, %v; want it unchanged and no error", topo, err)
	}
	for key := range 4 {
		cfg := projection.DefaultProcessorConfig()
		cfg.PartitionKey, cfg.Topology = key, projection.TopologyFollow
		if err := projection.NewProcessor(pool, store, cfg).CatchUp(ctx, applyLog{name: "managed", key: key}); err != nil {
			t.Fatalf("follower %d: %v", key, err)
		}
	}
	assertExactlyOnceInOrder(t, pool, "managed")

	// The operator itself switches, and the topology stays its own.
	c, err = projection.SetTopologyAs(ctx, pool, "managed", 2, projection.TopologyOptions{ManagedBy: projection.ManagerOperator})
	if err != nil || !c.Switched || c.Before.TotalPartitions != 4 || c.After.TotalPartitions != 2 || c.After.ManagedBy != projection.ManagerOperator {
		t.Fatalf("operator switch 4 -> 2: %+v, %v", c, err)
	}
	if by := queryString(t, pool, "SELECT switched_by FROM projection_topology WHERE projection_name = 'managed'"); by != "operator" {
		t.Errorf("switched_by = %q, want operator", by)
	}
}

// The operator claims a topology that standalone processes created, even
// when the count does not change; from then on they cannot switch it.
func TestOperatorClaimsStandaloneTopology(t *testing.T) {
	ctx := t.Context()
	pool := newPool(t)
	if _, err := projection.SetTopology(ctx, pool, "claimed", 3); err != nil {
		t.Fatal(err)
	}
	c, err := projection.SetTopologyAs(ctx, pool, "claimed", 3, projection.TopologyOptions{ManagedBy: projection.ManagerOperator})
	if err != nil || c.Switched || c.After.Generation != 1 || c.After.ManagedBy != projection.ManagerOperator {
		t.Fatalf("operator at the same count: %+v, %v; want generation 1, operator-managed, no switch", c, err)
	}
	var me *projection.TopologyManagedError
	if _, err := projection.SetTopology(ctx, pool, "claimed", 1); !errors.As(err, &me) {
		t.Fatalf("standalone after the claim: %v, want *TopologyManagedError", err)
	}
}

// Between standalone processes the guide's pattern stays: the first one
// started with a new count switches, exactly, and says so at WARN with the
// old and new count and who it is.
func TestStandaloneSwitchLogsWarn(t *testing.T) {
	ctx := t.Context()
	pool, store := newStore(t, newAppliedTable)
	appendN(t, pool, store, 30, 4, "A")
	for key := range 2 {
		cfg := projection.DefaultProcessorConfig()
		cfg.BatchSize, cfg.PartitionKey, cfg.TotalPartitions = 7, key, 2
		err := projection.NewProcessor(pool, store, cfg).Run(ctx, stopAfter{applyLog{name: "solo", key: key}, int64(40 + 30*key)})
		var he *projection.HandlerError
		if !errors.As(err, &he) {
			t.Fatalf("partition %d: %v, want it to stop part-way", key, err)
		}
	}
	var logs bytes.Buffer
	for key := range 3 {
		cfg := projection.DefaultProcessorConfig()
		cfg.PartitionKey, cfg.TotalPartitions = key, 3
		cfg.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
		if err := projection.NewProcessor(pool, store, cfg).CatchUp(ctx, applyLog{name: "solo", key: key}); err != nil {
			t.Fatal(err)
		}
	}
	assertExactlyOnceInOrder(t, pool, "solo")

	var warns []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["level"] == "WARN" {
			delete(m, "time")
			warns = append(warns, m)
		}
	}
	switcher := queryString(t, pool, "SELECT switched_by FROM projection_topology WHERE projection_name = 'solo'")
	if !strings.Contains(switcher, "/") {
		t.Errorf("switched_by = %q, want host/pid", switcher)
	}
	want := []map[string]any{{
		"level": "WARN", "msg": "projection topology switched", "projection": "solo", "partition": 0.0,
		"fromPartitions": 2.0, "toPartitions": 3.0, "generation": 2.0, "switchedBy": switcher, "managedBy": "standalone",
	}}
	if diff := cmp.Diff(want, warns); diff != "" {
		t.Errorf("WARN lines (-want +got):\n%s", diff)
	}
	if n := queryInt(t, pool, "SELECT count(*) FROM projection_topology WHERE projection_name = 'solo' AND switched_at IS NOT NULL"); n != 1 {
		t.Errorf("switched_at not recorded")
	}
}

// Migration 0006 on a database that already has topologies (migrated up
// to 0005 and in use): every row keeps its count and generation and
// becomes standalone-managed, and the next run is a no-op.
func TestMigrateTopologyManagerOnPopulatedDatabase(t *testing.T) {
	ctx := t.Context()
	pool := pgtest.NewPool(t)
	ms, err := projection.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Version >= 6 {
			break
		}
		if _, err := pool.Exec(ctx, m.SQL); err != nil {
			t.Fatalf("%s: %v", m.Name, err)
		}
	}
	if _, err := pool.Exec(ctx, `INSERT INTO projection_topology (projection_name, generation, total_partitions)
		VALUES ('a', 1, 1), ('b', 7, 4)`); err != nil {
		t.Fatal(err)
	}
	if _, err := projection.Migrate(ctx, pool); err != nil {
		t.Fatalf("migrating a populated database: %v", err)
	}
	if again, err := projection.Migrate(ctx, pool); err != nil || len(again) != 0 {
		t.Fatalf("second Migrate applied %d (%v), want none", len(again), err)
	}
	var got []projection.Topology
	for _, name := range []string{"a", "b"} {
		topo, err := projection.GetTopology(ctx, pool, name)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, topo)
	}
	want := []projection.Topology{
		{Projection: "a", Generation: 1, TotalPartitions: 1, ManagedBy: projection.ManagerStandalone},
		{Projection: "b", Generation: 7, TotalPartitions: 4, ManagedBy: projection.ManagerStandalone},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("topologies after 0006 (-want +got):\n%s", diff)
	}
	if _, err := pool.Exec(ctx, "UPDATE projection_topology SET managed_by = 'someone' WHERE projection_name = 'a'"); err == nil {
		t.Error("managed_by accepted a value other than operator or standalone")
	}
}

func queryString(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) string {
	t.Helper()
	return pgtest.QueryValue[string](t, pool, sql, args...)
}

// Two operator-side owners of one projection (two Projection resources
// naming it): the first one's Owner is recorded; the second is refused
// with *TopologyOwnedError, whatever count it asks for, and changes no
// row, until the first releases it; then it claims the topology and
// switches it. An unowned operator-managed topology (from before owners
// existed) is adopted by the first owner that claims it.
func TestTopologyOwner(t *testing.T) {
	ctx := t.Context()
	pool, store := newAppliedStore(t, 20, 3, "A")
	const a, b = "default/revenue 1111", "default/revenue-copy 2222"
	op := func(owner string) projection.TopologyOptions {
		return projection.TopologyOptions{ManagedBy: projection.ManagerOperator, Owner: owner}
	}
	c, err := projection.SetTopologyAs(ctx, pool, "revenue", 3, op(a))
	if err != nil || c.After.Owner != a || c.After.TotalPartitions != 3 {
		t.Fatalf("first owner creating the topology: %+v, %v", c, err)
	}
	cfg := projection.DefaultProcessorConfig()
	cfg.Topology = projection.TopologyFollow
	if err := projection.NewProcessor(pool, store, cfg).CatchUp(ctx, applyLog{name: "revenue"}); err != nil {
		t.Fatal(err)
	}
	before := topologyRows(t, pool, "revenue")

	want := projection.TopologyOwnedError{Projection: "revenue", Owner: a, Requester: b}
	for _, n := range []int{2, 3} {
		_, err := projection.SetTopologyAs(ctx, pool, "revenue", n, op(b))
		var owned *projection.TopologyOwnedError
		if !errors.As(err, &owned) {
			t.Fatalf("second owner asking for %d: %v, want *TopologyOwnedError", n, err)
		}
		if diff := cmp.Diff(want, *owned); diff != "" {
			t.Errorf("error fields (-want +got):\n%s", diff)
		}
		if !strings.Contains(err.Error(), a) {
			t.Errorf("error %q does not name the owner %q", err, a)
		}
	}
	var owned *projection.TopologyOwnedError
	if _, err := projection.ClaimTopology(ctx, pool, "revenue", b); !errors.As(err, &owned) {
		t.Errorf("ClaimTopology by the second owner: %v, want *TopologyOwnedError", err)
	}
	if r, err := projection.ReleaseTopology(ctx, pool, "revenue", b, projection.ReleaseOptions{Forget: true}); err != nil || r.Released || r.Owner != a {
		t.Errorf("ReleaseTopology by the second owner = %+v, %v; want nothing released, owner %q", r, err, a)
	}
	if diff := cmp.Diff(before, topologyRows(t, pool, "revenue")); diff != "" {
		t.Fatalf("refused calls changed rows (-before +after):\n%s", diff)
	}
	if topo, err := projection.ClaimTopology(ctx, pool, "revenue", a); err != nil || topo.Owner != a {
		t.Errorf("ClaimTopology by the owner = %+v, %v", topo, err)
	}

	if r, err := projection.ReleaseTopology(ctx, pool, "revenue", a, projection.ReleaseOptions{}); err != nil || !r.Released || r.Owner != a {
		t.Fatalf("ReleaseTopology by the owner = %+v, %v; want released", r, err)
	}
	topo, err := projection.GetTopology(ctx, pool, "revenue")
	if err != nil || topo.Owner != "" || topo.Generation != 1 || topo.TotalPartitions != 3 {
		t.Fatalf("after the release: %+v, %v; want generation 1 of 3 partitions, no owner", topo, err)
	}
	c, err = projection.SetTopologyAs(ctx, pool, "revenue", 2, op(b))
	if err != nil || !c.Switched || c.After.Owner != b || c.After.Generation != 2 {
		t.Fatalf("second owner after the release: %+v, %v; want it to claim and switch", c, err)
	}

	// An unowned operator-managed topology is adopted; with Forget the
	// owner's release deletes every row.
	if _, err := projection.SetTopologyAs(ctx, pool, "legacy", 2, projection.TopologyOptions{ManagedBy: projection.ManagerOperator}); err != nil {
		t.Fatal(err)
	}
	if topo, err := projection.ClaimTopology(ctx, pool, "legacy", a); err != nil || topo.Owner != a || topo.TotalPartitions != 2 {
		t.Fatalf("adopting an unowned topology: %+v, %v", topo, err)
	}
	if err := projection.NewProcessor(pool, store, cfg).CatchUp(ctx, applyLog{name: "legacy"}); err != nil {
		t.Fatal(err)
	}
	r, err := projection.ReleaseTopology(ctx, pool, "legacy", a, projection.ReleaseOptions{Forget: true})
	if err != nil || !r.Released || r.Forgotten.Topology != 1 || r.Forgotten.Checkpoints != 1 {
		t.Fatalf("forgetting release = %+v, %v; want the topology and partition 0's checkpoint deleted", r, err)
	}
	if rows := topologyRows(t, pool, "legacy"); len(rows) != 0 {
		t.Errorf("rows left after a forgetting release: %v", rows)
	}
	if _, err := projection.ClaimTopology(ctx, pool, "legacy", a); !errors.Is(err, projection.ErrNoTopology) {
		t.Errorf("ClaimTopology without a topology: %v, want ErrNoTopology", err)
	}
	if _, err := projection.SetTopologyAs(ctx, pool, "x", 1, projection.TopologyOptions{Owner: a}); !errors.Is(err, projection.ErrInvalidConfig) {
		t.Errorf("a standalone caller with an owner: %v, want ErrInvalidConfig", err)
	}
}
