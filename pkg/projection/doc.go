// Package projection is an event store and a checkpointed, partitioned
// projection processor on PostgreSQL.
//
// # Writing events
//
// [Migrate] creates the schema. [Store.Append] appends events to one
// aggregate's stream with optimistic concurrency ([AnyVersion], [NoStream],
// [ExactVersion]); a lost race is a [*ConcurrencyError] and writes nothing.
// [Store.ReadAggregateStream] reads an aggregate back, optionally from a
// snapshot version.
//
// # Projecting them
//
// A [Projection] has a Name (its checkpoint identity) and a Handle method
// that receives each event together with the batch's transaction. A
// [Processor] runs it: each batch is one transaction that reads events,
// calls Handle for each, and advances the checkpoint, so a crash at any
// point neither loses an event nor applies one twice to a read model in the
// same database. The zero [ProcessorConfig] is valid: every zero field means
// its default.
//
// A [BatchProjection] also has HandleBatch, which receives a batch's events
// in one call, so that it can write them in a few statements (a multi-row
// upsert, an INSERT from unnest, a COPY) instead of one round trip each; the
// error policies still apply to the failing event only. The demo
// projections in the repository (pkg/demo/projections.go) are worked
// examples, tested to leave the same read models as their Handle.
//
// # Failures
//
// [Processor.Run] stops at the first failure. [Processor.RunSupervised]
// (and [Supervise], for any run function, such as a runner's) retries a
// lost connection or an unanswering database with capped exponential
// backoff, and stops only on a poison event under [ErrorPolicyStop] (a
// [*HandlerError]) or a configuration error ([ErrInvalidConfig]):
// [IsRetryable] tells them apart. A database that was never migrated fails
// with [ErrNoSchema].
//
// # Why no event is skipped
//
// Global positions come from an identity column and commit out of order: a
// reader that has seen position 100 can miss position 99, committed a moment
// later by a slower transaction. Every event therefore records its
// transaction's id, and the processor reads only events whose transaction is
// older than every transaction still in flight
// (transaction_id < pg_snapshot_xmin(pg_current_snapshot())), in
// (transaction_id, global_position) order, and checkpoints that pair. An
// event can no longer appear behind the checkpoint. The cost: a long-running
// write transaction holds every reader back until it ends.
//
// # Waking on commit
//
// The schema notifies every append: a statement-level trigger on events
// (migration 0008) calls pg_notify on [WakeupChannel] once per INSERT
// statement, delivered when the appending transaction commits, so appends
// through plain SQL from any language wake processors too. Under
// [WakeupsListen] (the default) a caught-up processor waits for such a
// notification or its poll interval, whichever comes first: a new event is
// handled within milliseconds rather than up to PollInterval later, and
// while notifications arrive an idle partition polls only every
// [ProcessorConfig.WakeupPollInterval] (10s). The notification of a
// one-aggregate append names the aggregate's partition hash, so only the
// partition that owns it wakes. A [Listener] holds the one listening
// connection that all processors given it share; while it is down they
// poll at PollInterval, and when it is back it wakes them all once, since
// notifications sent meanwhile are lost. Correctness never depends on a
// notification: a lost one costs latency, not an event. [WakeupsPoll]
// turns it off (a pooler in transaction mode cannot hold a LISTEN).
//
// # Partitions
//
// Set [ProcessorConfig.PartitionKey] and [ProcessorConfig.TotalPartitions] to
// split a projection across workers. [HashPartitionStrategy] sends an
// aggregate to partition int(fnv32a(aggregateID)) % TotalPartitions, so one
// aggregate's events stay in order in one partition; the hash is stored with
// each event and filtered in SQL, so a worker fetches only its own rows. A
// custom [PartitionStrategy] is evaluated in Go. Package runner runs several
// partitions, or several projections, in one process.
//
// # Rescaling
//
// [SetTopology] changes a projection's partition count exactly, online:
// reusing old per-partition checkpoints under a new count would skip or
// repeat events, so the switch records the old generation's final
// checkpoints as a frontier, starts every new partition at the lowest of
// them, and new partitions skip exactly the events an earlier generation
// applied. Its documentation works through an example. Processors follow a
// switch on their next batch; see [TopologyMode].
//
// # Who manages a topology
//
// Each topology has one manager ([Manager]). A topology the Kubernetes
// operator set ([ManagerOperator]) is changed only by the operator: a
// processor with [TopologyApply], or [SetTopology], asking for another
// count fails with a [*TopologyManagedError] and changes nothing (scale the
// Projection resource instead, or use [TopologyFollow]). A topology that
// standalone processes created ([ManagerStandalone]) keeps the guide's
// pattern: restart the processes with a new count and the first one
// switches it. Every switch is logged at WARN with the old and new count
// and who switched ([TopologyOptions.Switcher]).
//
// An operator-managed topology also has one owner, the Projection resource
// that runs it ([TopologyOptions.Owner], [ClaimTopology]): a second owner
// naming the same projection is refused with a [*TopologyOwnedError] and
// changes nothing, until the owner gives it up with [ReleaseTopology].
//
// The default mode stays [TopologyApply], not "follow if a topology
// exists, create it if not": with follow-if-exists, restarting the
// standalone processes with a new TOTAL_PARTITIONS would silently keep the
// old count, and a process's configured count would silently differ from
// the one it runs under, the same silent outage in the other direction.
// The dangerous case, a library processor overriding the operator, is the
// one the manager record refuses. A processor that should never change the
// count, whatever it is configured with, uses [TopologyFollow].
//
// # Rebuilding a read model
//
// A projection that implements [Resetter] can be rebuilt declaratively:
// [RequestReset] records a request under a token (the operator makes one
// for a Projection's spec.rebuildToken), and every worker calls
// [ApplyPendingReset] when it starts, before it processes. The first one
// runs the projection's Reset hook and deletes its checkpoints, frontier
// and dead letters in one transaction, with the topology locked; the
// others find the request done. The partitions then replay the log from
// the beginning, exactly once. A projection without the hook gets its
// request refused with a [*ResetNotSupportedError], recorded for
// [GetResetStatus], and nothing is changed. [ResetProjection] stays the
// by-hand way: it also deletes the topology.
package projection
