package projection

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"

	"github.com/jackc/pgx/v5"
)

// Topology is a projection's partition count and its generation, which
// grows by one with every change of the count.
type Topology struct {
	// Projection is the projection's name.
	Projection string
	// Generation numbers the topology; 1 is the first.
	Generation int64
	// TotalPartitions is the partition count of this generation.
	TotalPartitions int
	// ManagedBy says who may change the partition count.
	ManagedBy Manager
	// Owner is the one operator-side owner of an operator-managed
	// topology (the operator records its Projection resource, see
	// [TopologyOptions].Owner), or "" for none.
	Owner string
}

// Manager says who manages a projection's topology: who may change its
// partition count (DESIGN.md rule 8, one owner per topology).
type Manager string

const (
	// ManagerStandalone is a topology that standalone processes manage:
	// any processor with [TopologyApply] (or a caller of [SetTopology])
	// may switch it, the first one started with a new count does. Every
	// topology starts standalone.
	ManagerStandalone Manager = "standalone"
	// ManagerOperator is a topology the Kubernetes operator manages, from
	// the Projection resource's spec.replicas. Only the operator changes
	// it; anyone else who tries gets a [*TopologyManagedError].
	ManagerOperator Manager = "operator"
)

// TopologyManagedError is returned when a standalone caller (a processor
// with [TopologyApply], or [SetTopology]) would change the partition count
// of a topology the operator manages. Nothing was changed.
type TopologyManagedError struct {
	// Projection is the projection's name.
	Projection string
	// ManagedBy is the topology's manager, [ManagerOperator].
	ManagedBy Manager
	// TotalPartitions is the managed partition count.
	TotalPartitions int
	// Requested is the partition count the caller asked for.
	Requested int
}

// Error says what to do instead.
func (e *TopologyManagedError) Error() string {
	return fmt.Sprintf("projection %q runs in %s managed by the %s, refusing to switch it to %d: "+
		"scale the Projection resource instead (kubectl scale projection --replicas=%d), "+
		"or run this processor with TopologyFollow (or TotalPartitions %d)",
		e.Projection, partitions(e.TotalPartitions), e.ManagedBy, e.Requested, e.Requested, e.TotalPartitions)
}

// TopologyOwnedError is returned when a caller with a
// [TopologyOptions].Owner (or of [ClaimTopology]) finds the topology owned
// by someone else: two Projection resources naming one projection in one
// database. Nothing was changed.
type TopologyOwnedError struct {
	// Projection is the projection's name.
	Projection string
	// Owner is the topology's recorded owner.
	Owner string
	// Requester is the owner the caller claimed to be.
	Requester string
}

// Error names the owner.
func (e *TopologyOwnedError) Error() string {
	return fmt.Sprintf("projection %q in this database belongs to %s, not to %s: refusing to change it",
		e.Projection, e.Owner, e.Requester)
}

// TopologyOptions says who calls [SetTopologyAs]. The zero value is a
// standalone caller named by host and process id, logging to
// slog.Default().
type TopologyOptions struct {
	// ManagedBy is who the caller is. Defaults to [ManagerStandalone],
	// which may not change an operator-managed topology. The operator
	// passes [ManagerOperator]: its switch makes (or keeps) the topology
	// operator-managed.
	ManagedBy Manager
	// Switcher names the caller in the switch's WARN line and in the
	// topology row's switched_by. Defaults to "operator" for the operator
	// and "hostname/pid" otherwise.
	Switcher string
	// Logger receives one WARN line per switch. Defaults to
	// slog.Default(), so that no switch goes unnoticed.
	Logger *slog.Logger
	// Owner, when set, names the one owner the topology may have (the
	// operator passes its Projection resource's namespace/name and UID),
	// so that two callers that both manage it cannot switch it back and
	// forth. A topology with no owner is claimed for Owner; one with
	// another owner is left alone, with a [*TopologyOwnedError]. It is
	// released by [ReleaseTopology]. Defaults to "": no owner is checked
	// or recorded. Only with [ManagerOperator].
	Owner string
}

func (o TopologyOptions) withDefaults() TopologyOptions {
	if o.ManagedBy == "" {
		o.ManagedBy = ManagerStandalone
	}
	if o.Switcher == "" {
		o.Switcher = defaultSwitcher(o.ManagedBy)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// defaultSwitcher is "operator", or this process's host and pid.
func defaultSwitcher(m Manager) string {
	if m == ManagerOperator {
		return string(ManagerOperator)
	}
	host, err := os.Hostname()
	if err != nil {
		host = "unknown-host"
	}
	return host + "/" + strconv.Itoa(os.Getpid())
}

// TopologyChange is what [SetTopologyAs] did.
type TopologyChange struct {
	// Before is the topology before the call; its Generation is zero if
	// there was none.
	Before Topology
	// After is the topology after the call.
	After Topology
	// Switched is true when the partition count changed (a new
	// generation), false when the call created the first topology or
	// found the count already at n.
	Switched bool
}

// ErrNoTopology is returned by [GetTopology] for a projection that has
// never run and was never given a topology.
var ErrNoTopology = errors.New("projection has no topology")

// GetTopology returns a projection's current topology, or [ErrNoTopology].
func GetTopology(ctx context.Context, db DBTX, projection string) (Topology, error) {
	t := Topology{Projection: projection}
	var n int32
	err := db.QueryRow(ctx, readTopologySQL, projection).Scan(&t.Generation, &n, &t.ManagedBy, &t.Owner)
	if errors.Is(err, pgx.ErrNoRows) {
		return t, fmt.Errorf("projection %q: %w", projection, ErrNoTopology)
	}
	if err != nil {
		return t, noSchema(fmt.Errorf("reading topology of projection %q: %w", projection, err))
	}
	t.TotalPartitions = int(n)
	return t, nil
}

// SetTopology sets a projection's partition count to n, exactly: no event
// is skipped or applied twice across the change, whatever the old and new
// counts, however far apart the old partitions' checkpoints are. It is
// idempotent: with n unchanged it does nothing. Running processors pick up
// the new generation on their next batch, without restarting.
//
// The switch is one transaction. It locks the topology row FOR UPDATE;
// every batch holds that row FOR SHARE, so the switch waits for batches in
// flight and every later batch sees the new generation. It then records the
// old generation's final checkpoint vector c[0..N-1] in the frontier,
// starts every new partition at min(c), and bumps the generation. A
// partition of the new generation skips an event of aggregate a at
// position p if some frontier entry (Ni, ci) has p <= ci[owner of a among
// Ni partitions], because generation i applied it, and applies every other
// event. Frontier entries are dropped once every live checkpoint has passed
// their highest position.
//
// Worked example: 2 -> 3 partitions with p0 at position 1000 and p1 at 500.
// Reusing the old checkpoints would skip events 501..1000 of the aggregates
// that move from p1 to p0. Instead the three new partitions start at 500;
// an aggregate that was in p0 skips events up to 1000 (p0 applied them),
// one that was in p1 skips up to 500, and everything else is applied.
//
// SetTopology is a standalone caller (see [SetTopologyAs]): it refuses to
// change a topology the operator manages, with a [*TopologyManagedError],
// and logs every switch at WARN to slog.Default().
func SetTopology(ctx context.Context, db DBTX, projection string, n int) (Topology, error) {
	c, err := SetTopologyAs(ctx, db, projection, n, TopologyOptions{})
	return c.After, err
}

// SetTopologyAs is [SetTopology] for a caller that says who it is, and
// reports what it did. A standalone caller (the default) may create a
// topology or switch a standalone one, and fails with a
// [*TopologyManagedError], changing nothing, when the topology is
// operator-managed and its count is not n (with the count at n it just
// returns it). The operator ([ManagerOperator]) may switch any topology
// and leaves it operator-managed; with an Owner it also refuses, with a
// [*TopologyOwnedError] and no change, a topology another owner holds.
// Every switch is logged at WARN with the old and new count and the
// switcher, and recorded in the topology row.
func SetTopologyAs(ctx context.Context, db DBTX, projection string, n int, opts TopologyOptions) (TopologyChange, error) {
	if projection == "" {
		return TopologyChange{}, fmt.Errorf("%w: projection name is empty", ErrInvalidConfig)
	}
	if n < 1 || n > MaxPartitions {
		return TopologyChange{}, fmt.Errorf("%w: projection %q: partition count %d must be between 1 and %d", ErrInvalidConfig, projection, n, MaxPartitions)
	}
	opts = opts.withDefaults()
	if opts.ManagedBy != ManagerStandalone && opts.ManagedBy != ManagerOperator {
		return TopologyChange{}, fmt.Errorf("%w: TopologyOptions.ManagedBy is %q, must be %q or %q", ErrInvalidConfig, opts.ManagedBy, ManagerStandalone, ManagerOperator)
	}
	if opts.Owner != "" && opts.ManagedBy != ManagerOperator {
		return TopologyChange{}, fmt.Errorf("%w: TopologyOptions.Owner is set for a %s caller, only %q callers have owners", ErrInvalidConfig, opts.ManagedBy, ManagerOperator)
	}
	var c TopologyChange
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		var err error
		c, err = setTopology(ctx, tx, projection, n, opts)
		return err
	})
	var managed *TopologyManagedError
	if errors.As(err, &managed) {
		return c, managed
	}
	var owned *TopologyOwnedError
	if errors.As(err, &owned) {
		return c, owned
	}
	if err != nil {
		return TopologyChange{}, noSchema(fmt.Errorf("setting topology of projection %q to %s: %w", projection, partitions(n), err))
	}
	if c.Switched {
		opts.Logger.Warn("projection topology switched", "projection", projection,
			"fromPartitions", c.Before.TotalPartitions, "toPartitions", c.After.TotalPartitions,
			"generation", c.After.Generation, "switchedBy", opts.Switcher, "managedBy", c.After.ManagedBy)
	}
	return c, nil
}

// MaxPartitions bounds a projection's partition count.
const MaxPartitions = 1024

func setTopology(ctx context.Context, tx pgx.Tx, projection string, n int, opts TopologyOptions) (TopologyChange, error) {
	var c TopologyChange
	c.Before = Topology{Projection: projection}
	// Nothing to do is the common case (every standalone worker calls this
	// at start): answer it without the FOR UPDATE lock, which would queue
	// behind, and could be starved by, the batches' FOR SHARE.
	var current int32
	err := tx.QueryRow(ctx, readTopologySQL, projection).Scan(&c.Before.Generation, &current, &c.Before.ManagedBy, &c.Before.Owner)
	if err == nil {
		c.Before.TotalPartitions = int(current)
		if err := checkOwner(projection, c.Before.Owner, opts.Owner); err != nil {
			return c, err
		}
		if int(current) == n && (c.Before.ManagedBy == opts.ManagedBy || opts.ManagedBy == ManagerStandalone) &&
			(opts.Owner == "" || c.Before.Owner == opts.Owner) {
			c.After = c.Before
			return c, nil
		}
	} else if !errors.Is(err, pgx.ErrNoRows) {
		return c, fmt.Errorf("reading topology: %w", err)
	}
	if _, err := tx.Exec(ctx, createTopologySQL, projection, n); err != nil {
		return c, fmt.Errorf("creating topology: %w", err)
	}
	var old int32
	t := Topology{Projection: projection}
	if err := tx.QueryRow(ctx, readTopologyForUpdateSQL, projection).Scan(&t.Generation, &old, &t.ManagedBy, &t.Owner); err != nil {
		return c, fmt.Errorf("locking topology: %w", err)
	}
	t.TotalPartitions = int(old)
	if c.Before.Generation != 0 {
		// Someone may have switched it since the unlocked read: Before
		// is what the lock found. With no row before, it stays zero.
		c.Before = t
	}
	if err := checkOwner(projection, t.Owner, opts.Owner); err != nil {
		return c, err
	}
	if opts.Owner != "" && t.Owner == "" {
		if _, err := tx.Exec(ctx, claimOwnerSQL, projection, opts.Owner); err != nil {
			return c, fmt.Errorf("claiming topology: %w", err)
		}
		t.Owner = opts.Owner
	}
	if t.ManagedBy == ManagerOperator && opts.ManagedBy != ManagerOperator {
		if int(old) == n {
			c.After = t
			return c, nil
		}
		return c, &TopologyManagedError{Projection: projection, ManagedBy: t.ManagedBy, TotalPartitions: int(old), Requested: n}
	}
	if t.ManagedBy != opts.ManagedBy && opts.ManagedBy == ManagerOperator {
		if _, err := tx.Exec(ctx, claimTopologySQL, projection, string(opts.ManagedBy)); err != nil {
			return c, fmt.Errorf("claiming topology: %w", err)
		}
		t.ManagedBy = opts.ManagedBy
	}
	if int(old) == n {
		c.After = t
		return c, nil
	}

	// The old generation's final vector. A partition that never ran has
	// no row and applied nothing: position zero.
	final := make([]Position, old)
	rows, err := tx.Query(ctx, finalCheckpointsSQL, projection)
	if err != nil {
		return c, fmt.Errorf("reading checkpoints: %w", err)
	}
	var key int32
	var pos Position
	_, err = pgx.ForEachRow(rows, []any{&key, &pos.TransactionID, &pos.GlobalPosition}, func() error {
		if int(key) < len(final) {
			final[key] = pos
		}
		return nil
	})
	if err != nil {
		return c, fmt.Errorf("reading checkpoints: %w", err)
	}
	start := final[0]
	for _, c := range final[1:] {
		if c.Less(start) {
			start = c
		}
	}

	batch := &pgx.Batch{}
	for k, c := range final {
		batch.Queue(insertFrontierSQL, projection, t.Generation, int(old), k, c.TransactionID, c.GlobalPosition)
	}
	batch.Queue(addEventsProcessedBeforeSQL, projection)
	batch.Queue(deleteCheckpointsSQL, projection)
	batch.Queue(startCheckpointsSQL, projection, n, t.Generation+1, start.TransactionID, start.GlobalPosition)
	batch.Queue(switchGenerationSQL, projection, t.Generation+1, n, opts.Switcher)
	// Every live checkpoint is now at start: entries whose highest
	// position is at or before it can no longer skip anything.
	batch.Queue(pruneFrontierSQL, projection)
	if err := tx.SendBatch(ctx, batch).Close(); err != nil {
		return c, fmt.Errorf("switching generation: %w", err)
	}
	c.Before = t
	t.Generation++
	t.TotalPartitions = n
	c.After = t
	c.Switched = true
	return c, nil
}

// checkOwner is a [*TopologyOwnedError] when requester (if any) is not the
// topology's owner (if any).
func checkOwner(projection, owner, requester string) error {
	if requester == "" || owner == "" || owner == requester {
		return nil
	}
	return &TopologyOwnedError{Projection: projection, Owner: owner, Requester: requester}
}

// ClaimTopology makes owner the owner of a projection's operator-managed
// topology if it has none, changing nothing else: the partition count and
// generation stay as they are. It is for an owner that does not switch the
// topology now (the operator's paused or suspended Projection), so that
// another owner cannot take the projection over meanwhile. It returns the
// topology, a [*TopologyOwnedError] (changing nothing) when another owner
// holds it, or [ErrNoTopology]. A standalone-managed topology is returned
// unclaimed: the operator claims it when it first switches it, with
// [SetTopologyAs].
func ClaimTopology(ctx context.Context, db DBTX, projection, owner string) (Topology, error) {
	if projection == "" || owner == "" {
		return Topology{}, fmt.Errorf("%w: projection name and owner must not be empty", ErrInvalidConfig)
	}
	t, err := GetTopology(ctx, db, projection)
	if err != nil {
		return t, err
	}
	if err := checkOwner(projection, t.Owner, owner); err != nil || t.Owner == owner || t.ManagedBy != ManagerOperator {
		return t, err
	}
	// Unowned: claim it under the lock, which finds whoever got there
	// first. The lock waits for the batches in flight, once.
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		var n int32
		err := tx.QueryRow(ctx, readTopologyForUpdateSQL, projection).Scan(&t.Generation, &n, &t.ManagedBy, &t.Owner)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("projection %q: %w", projection, ErrNoTopology)
		}
		if err != nil {
			return fmt.Errorf("claiming topology of projection %q: %w", projection, err)
		}
		t.TotalPartitions = int(n)
		if err := checkOwner(projection, t.Owner, owner); err != nil || t.Owner != "" {
			return err
		}
		if _, err := tx.Exec(ctx, claimOwnerSQL, projection, owner); err != nil {
			return fmt.Errorf("claiming topology of projection %q: %w", projection, err)
		}
		t.Owner = owner
		return nil
	})
	var owned *TopologyOwnedError
	if errors.As(err, &owned) || errors.Is(err, ErrNoTopology) {
		return t, err
	}
	return t, noSchema(err)
}

// ReleaseOptions says what [ReleaseTopology] does besides releasing.
type ReleaseOptions struct {
	// Forget deletes every row of the projection, as [ForgetProjection]
	// does, instead of only clearing the owner. Defaults to false: the
	// checkpoints, frontier, dead letters and topology stay, so that the
	// next owner resumes where the projection was.
	Forget bool
}

// TopologyRelease is what [ReleaseTopology] did.
type TopologyRelease struct {
	// Released is true when owner held the topology and gave it up;
	// false, with nothing changed, when the projection has no topology,
	// or one without an owner or with another owner.
	Released bool
	// Owner is the owner the topology had ("" for none or no topology).
	Owner string
	// Forgotten counts the rows deleted, with [ReleaseOptions].Forget.
	Forgotten ForgottenRows
}

// ReleaseTopology gives up owner's claim on a projection's topology (see
// [TopologyOptions].Owner), so that another owner may claim it; with
// [ReleaseOptions].Forget it deletes the projection's rows instead, as
// [ForgetProjection] does. It changes nothing when owner does not hold the
// topology. It locks the topology row, so it waits for the batches in
// flight.
func ReleaseTopology(ctx context.Context, db DBTX, projection, owner string, opts ReleaseOptions) (TopologyRelease, error) {
	var r TopologyRelease
	if projection == "" || owner == "" {
		return r, fmt.Errorf("%w: projection name and owner must not be empty", ErrInvalidConfig)
	}
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		r = TopologyRelease{}
		var t Topology
		var n int32
		err := tx.QueryRow(ctx, readTopologyForUpdateSQL, projection).Scan(&t.Generation, &n, &t.ManagedBy, &r.Owner)
		if errors.Is(err, pgx.ErrNoRows) || err == nil && r.Owner != owner {
			return nil
		}
		if err != nil {
			return err
		}
		r.Released = true
		if opts.Forget {
			r.Forgotten, err = forget(ctx, tx, projection)
			return err
		}
		_, err = tx.Exec(ctx, releaseOwnerSQL, projection, owner)
		return err
	})
	if err != nil {
		return TopologyRelease{}, noSchema(fmt.Errorf("releasing projection %q: %w", projection, err))
	}
	return r, nil
}

// EventsProcessed returns how many events a projection has handled, over
// all its partitions and topology generations. With the ErrorPolicySkip or
// ErrorPolicyDeadLetter policies, events set aside are not counted.
func EventsProcessed(ctx context.Context, db DBTX, projection string) (int64, error) {
	var n int64
	err := db.QueryRow(ctx, eventsProcessedSQL, projection).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("counting events processed by projection %q: %w", projection, err)
	}
	return n, nil
}

// ResetProjection deletes a projection's checkpoints, topology, frontier
// and dead letters, so that it starts over from the beginning of the log: the way
// to rebuild a read model (clear the read model in the same transaction).
// A running processor of the projection starts over on its next batch.
// For a rebuild that the workers carry out through the projection's own
// [Resetter] hook, keeping the topology, see [RequestReset].
func ResetProjection(ctx context.Context, db DBTX, projection string) error {
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		// Lock the topology first, as a switch does, so batches in
		// flight finish before the reset and later ones see it.
		if _, err := tx.Exec(ctx, lockTopologySQL, projection); err != nil {
			return err
		}
		// Dead letters go too: the replay meets their events again, and
		// a retry of a leftover one would apply it a second time.
		for _, sql := range []string{deleteCheckpointsSQL, deleteFrontierSQL, discardAllDeadLettersSQL, deleteTopologySQL} {
			if _, err := tx.Exec(ctx, sql, projection); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("resetting projection %q: %w", projection, err)
	}
	return nil
}

// frontierEntry is one earlier generation's final checkpoint vector.
type frontierEntry struct {
	generation int64
	final      []Position
	highest    Position
}

// frontier is the part of a projection's frontier a processor still needs.
type frontier []frontierEntry

func loadFrontier(ctx context.Context, tx pgx.Tx, projection string) (frontier, error) {
	rows, err := tx.Query(ctx, loadFrontierSQL, projection)
	if err != nil {
		return nil, err
	}
	var f frontier
	var gen int64
	var total, key int32
	var pos Position
	_, err = pgx.ForEachRow(rows, []any{&gen, &total, &key, &pos.TransactionID, &pos.GlobalPosition}, func() error {
		if len(f) == 0 || f[len(f)-1].generation != gen {
			f = append(f, frontierEntry{generation: gen, final: make([]Position, total)})
		}
		e := &f[len(f)-1]
		if int(key) < len(e.final) {
			e.final[key] = pos
		}
		if e.highest.Less(pos) {
			e.highest = pos
		}
		return nil
	})
	return f, err
}

// applied reports whether an earlier generation applied e: whether e is at
// or before the final checkpoint of the partition that owned its aggregate.
func (f frontier) applied(e *PersistedEvent, strategy PartitionStrategy) bool {
	pos := e.Position()
	for i := range f {
		entry := &f[i]
		if entry.highest.Less(pos) {
			continue
		}
		owner := ownerOf(e.AggregateID, len(entry.final), strategy)
		if owner >= 0 && !entry.final[owner].Less(pos) {
			return true
		}
	}
	return false
}

// without returns f less the entries whose highest position is at or
// before pos: they cannot skip anything after it.
func (f frontier) without(pos Position) frontier {
	kept := f[:0]
	for _, e := range f {
		if pos.Less(e.highest) {
			kept = append(kept, e)
		}
	}
	return kept
}

// ownerOf returns the partition that processes aggregateID among total
// partitions, or -1 if a custom strategy assigns it to none.
func ownerOf(aggregateID string, total int, strategy PartitionStrategy) int {
	if isHashStrategy(strategy) {
		return PartitionOf(aggregateID, total)
	}
	for k := range total {
		if strategy.ShouldProcess(aggregateID, k, total) {
			return k
		}
	}
	return -1
}

// partitions is "1 partition" or "n partitions", for messages.
func partitions(n int) string {
	if n == 1 {
		return "1 partition"
	}
	return fmt.Sprintf("%d partitions", n)
}

// ForgottenRows counts the rows [ForgetProjection] deleted, per table.
type ForgottenRows struct {
	Checkpoints, Frontier, DeadLetters, Topology, Resets int64
}

// Total is the number of rows deleted.
func (f ForgottenRows) Total() int64 {
	return f.Checkpoints + f.Frontier + f.DeadLetters + f.Topology + f.Resets
}

// ForgetProjection deletes every row projectionist keeps for a projection
// that is gone for good: its checkpoints, frontier, dead letters, topology
// and reset requests, in one transaction. It is for after the projection's
// workers are stopped for good (e.g. its Projection resource deleted after
// a blue/green cut-over: deleting the resource leaves these rows, so that
// a Projection recreated under the same name resumes). A worker still
// running would start over from the beginning of the log. The read model's
// own tables are the projection's: drop them yourself.
func ForgetProjection(ctx context.Context, db DBTX, projection string) (ForgottenRows, error) {
	var f ForgottenRows
	if projection == "" {
		return f, fmt.Errorf("%w: projection name is empty", ErrInvalidConfig)
	}
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, lockTopologySQL, projection); err != nil {
			return err
		}
		var err error
		f, err = forget(ctx, tx, projection)
		return err
	})
	if err != nil {
		return ForgottenRows{}, noSchema(fmt.Errorf("forgetting projection %q: %w", projection, err))
	}
	return f, nil
}

// forget deletes a projection's rows in tx, which holds its topology.
func forget(ctx context.Context, tx pgx.Tx, projection string) (ForgottenRows, error) {
	var f ForgottenRows
	for _, d := range []struct {
		sql string
		n   *int64
	}{
		{deleteCheckpointsSQL, &f.Checkpoints}, {deleteFrontierSQL, &f.Frontier},
		{discardAllDeadLettersSQL, &f.DeadLetters}, {deleteResetsSQL, &f.Resets}, {deleteTopologySQL, &f.Topology},
	} {
		tag, err := tx.Exec(ctx, d.sql, projection)
		if err != nil {
			return ForgottenRows{}, err
		}
		*d.n = tag.RowsAffected()
	}
	return f, nil
}
