package worker

import (
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/pkg/projection"
)

// TestLeastPrivilegeRoles runs the operator's database work and workers
// with the roles of docs/least-privilege.sql, not as a superuser: the
// operator migrates and switches topologies, the workers follow them,
// project every event exactly once into read models in their own schema
// and dead-letter a poison event, and may do nothing more.
func TestLeastPrivilegeRoles(t *testing.T) {
	ctx := t.Context()
	db := pgtest.NewLeastPrivilege(t)
	workerDSN := db.Login(t, "wk", "projectionist_worker")
	if _, err := db.Admin.Exec(ctx, "CREATE SCHEMA wk AUTHORIZATION wk"); err != nil {
		t.Fatal(err)
	}

	// The operator's work: migrate, then (after the grants are run
	// again on the new tables) set the topology and read progress.
	op := pgtest.OpenPool(t, db.Login(t, "op", "projectionist_operator"))
	if _, err := projection.Migrate(ctx, op); err != nil {
		t.Fatalf("migrating as the operator: %v", err)
	}
	db.Grant(t)
	const name = "privileged"
	if _, err := projection.SetTopology(ctx, op, name, 2); err != nil {
		t.Fatalf("setting the topology as the operator: %v", err)
	}

	// The workers' read model, in the worker role's own schema.
	wk := pgtest.OpenPool(t, workerDSN)
	if _, err := wk.Exec(ctx, `CREATE TABLE applied (projection text, event_id uuid, PRIMARY KEY (projection, event_id))`); err != nil {
		t.Fatalf("creating the read model as the worker: %v", err)
	}
	workers := []*running{}
	for key := range 3 {
		workers = append(workers, start(t, Config{DatabaseURL: workerDSN, PartitionKey: key, BatchSize: 10,
			PollInterval: 10 * time.Millisecond, ErrorPolicy: projection.ErrorPolicyDeadLetter}, applyOnce{name: name}))
	}
	mustAppend(t, db.Admin, append(repeat("Happened", 40), "Poison")...)
	waitFor(t, "every event projected or dead-lettered", func() bool {
		return count(t, db.Admin, "SELECT count(*) FROM wk.applied") == 40 && count(t, db.Admin, "SELECT count(*) FROM projection_dead_letters") == 1
	})

	// Scaling while the workers run: the third one takes its partition.
	if _, err := projection.SetTopology(ctx, op, name, 3); err != nil {
		t.Fatalf("switching the topology as the operator: %v", err)
	}
	mustAppend(t, db.Admin, repeat("Happened", 40)...)
	waitFor(t, "every event projected once", func() bool { return count(t, db.Admin, "SELECT count(*) FROM wk.applied") == 80 })
	if _, err := projection.GetProgress(ctx, op, name); err != nil {
		t.Errorf("reading progress as the operator: %v", err)
	}
	if n := count(t, db.Admin, "SELECT count(DISTINCT partition_key) FROM projection_checkpoints WHERE projection_name = $1 AND events_processed > 0", name); n != 3 {
		t.Errorf("%d partitions handled events, want 3", n)
	}
	for _, r := range workers {
		if err := r.stop(t); err != nil {
			t.Errorf("worker: %v", err)
		}
	}

	// A rebuild: the operator requests a reset, and the workers, starting
	// again, carry it out through the Reset hook and
	// projection_complete_reset. The marker row must go with the read
	// model, and applyOnce fails on an event applied twice: 80 rows again
	// means every event was replayed once.
	if err := projection.RequestReset(ctx, op, name, "rebuild-1"); err != nil {
		t.Fatalf("requesting a reset as the operator: %v", err)
	}
	if _, err := db.Admin.Exec(ctx, "INSERT INTO wk.applied VALUES ($1, gen_random_uuid())", name); err != nil {
		t.Fatal(err)
	}
	workers = workers[:0]
	for key := range 3 {
		workers = append(workers, start(t, Config{DatabaseURL: workerDSN, PartitionKey: key, BatchSize: 10,
			PollInterval: 10 * time.Millisecond, ErrorPolicy: projection.ErrorPolicyDeadLetter}, resettable{applyOnce{name: name}}))
	}
	waitFor(t, "the reset carried out and every event replayed", func() bool {
		st, err := projection.GetResetStatus(ctx, op, name)
		return err == nil && st.Succeeded("rebuild-1") && count(t, db.Admin, "SELECT count(*) FROM wk.applied") == 80 &&
			count(t, db.Admin, "SELECT count(*) FROM projection_dead_letters") == 1
	})
	for _, r := range workers {
		if err := r.stop(t); err != nil {
			t.Errorf("worker: %v", err)
		}
	}
	var completed bool
	if err := wk.QueryRow(ctx, "SELECT projection_complete_reset($1, 'unrequested', 'wk', NULL)", name).Scan(&completed); err != nil || completed {
		t.Errorf("completing a reset nobody requested: %v, %v; want false, nil", completed, err)
	}
	if n := count(t, db.Admin, "SELECT count(*) FROM projection_checkpoints WHERE projection_name = $1", name); n != 3 {
		t.Errorf("%d checkpoints after a reset nobody requested, want 3: it must change nothing", n)
	}

	// A role granted before rebuilds existed (the script not run again
	// after the upgrade) still processes: only rebuilds wait.
	if _, err := db.Admin.Exec(ctx, "REVOKE ALL ON projection_resets FROM projectionist_worker"); err != nil {
		t.Fatal(err)
	}
	const older = "granted_before_rebuilds"
	if _, err := projection.SetTopology(ctx, op, older, 1); err != nil {
		t.Fatal(err)
	}
	r := start(t, Config{DatabaseURL: workerDSN, BatchSize: 10, PollInterval: 10 * time.Millisecond,
		ErrorPolicy: projection.ErrorPolicyDeadLetter}, resettable{applyOnce{name: older}})
	waitFor(t, "the worker without grants on projection_resets to project", func() bool {
		return count(t, db.Admin, "SELECT count(*) FROM wk.applied WHERE projection = $1", older) == 80
	})
	if err := r.stop(t); err != nil {
		t.Errorf("worker without grants on projection_resets: %v", err)
	}
	db.Grant(t)

	// The metrics role reads the lag view and nothing else.
	keda := pgtest.OpenPool(t, db.Login(t, "keda", "projectionist_metrics"))
	var lag int64
	if err := keda.QueryRow(ctx, "SELECT coalesce(sum(lag_events), 0) FROM projection_lag WHERE projection_name = $1", name).Scan(&lag); err != nil || lag != 0 {
		t.Errorf("the metrics role reading projection_lag: %d, %v; want 0 (caught up), nil", lag, err)
	}
	var pgErr *pgconn.PgError
	if _, err := keda.Exec(ctx, "SELECT count(*) FROM events"); !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Errorf("the metrics role may read events: %v, want permission denied (42501)", err)
	}

	// And nothing more.
	for what, try := range map[string]func() error{
		"switch a topology": func() error { _, err := projection.SetTopology(ctx, wk, name, 1); return err },
		"append an event": func() error {
			_, err := projection.NewStore().Append(ctx, wk, "Thing", "t-1", projection.AnyVersion, projection.Event{EventType: "Forged"})
			return err
		},
		"create a table in public": func() error { _, err := wk.Exec(ctx, "CREATE TABLE public.intruder (id int)"); return err },
		"delete checkpoints":       func() error { _, err := wk.Exec(ctx, "DELETE FROM projection_checkpoints"); return err },
		"request a reset":          func() error { return projection.RequestReset(ctx, wk, name, "rebuild-2") },
	} {
		var pgErr *pgconn.PgError
		if err := try(); !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			t.Errorf("the worker role may %s: %v, want permission denied (42501)", what, err)
		}
	}
}
