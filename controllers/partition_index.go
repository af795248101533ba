// Partition indexes: built in the background for large partition counts,
// dropped once no projection has used them for a while.

package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/pkg/projection"
)

// DefaultPartitionIndexMinPartitions is the smallest partition count for
// which the operator builds a partition index (projection.CreatePartitionIndex).
// Below it, reading through the partition filter costs PostgreSQL little
// more than the index would (BenchmarkPartitionScanCost: at 4 partitions
// the planner keeps the filter even with the index there, and at 16 the
// two are within 15%), while every index costs each append a little and
// takes a scan of the log to build.
const DefaultPartitionIndexMinPartitions = 16

// DefaultPartitionIndexRetention is how long a partition index no
// projection in its database uses is kept before the operator drops it: a
// count an autoscaler or a user comes back to within it needs no rebuild.
const DefaultPartitionIndexRetention = time.Hour

// partitionIndexRetry is how long after a failed build the operator tries
// again, and partitionIndexSweep how often, at most, it looks for unused
// partition indexes in a database.
const (
	partitionIndexRetry = 5 * time.Minute
	partitionIndexSweep = time.Minute
)

// partitionIndexes runs the builds and drops of partition indexes, in the
// background, at most one statement at a time per database: a CREATE
// INDEX CONCURRENTLY waits for every other one on the table anyway.
type partitionIndexes struct {
	mu sync.Mutex
	// builds holds the latest build of each (database, count).
	builds map[indexKey]*indexBuild
	// busy: a build or drop is running in the database.
	busy map[*database]bool
	// unusedSince is when this operator first saw each partition index
	// unused by every projection of its database, and swept when it last
	// looked.
	unusedSince map[indexKey]time.Time
	swept       map[*database]time.Time
}

type indexKey struct {
	db *database
	n  int
}

// indexBuild is one CreatePartitionIndex call and what came of it.
type indexBuild struct {
	started, finished time.Time
	// built: the call built the index (false: it was valid already).
	built bool
	err   error // nil while running and after success
}

// init makes the maps; called with mu held.
func (ix *partitionIndexes) init() {
	if ix.builds == nil {
		ix.builds, ix.busy = map[indexKey]*indexBuild{}, map[*database]bool{}
		ix.unusedSince, ix.swept = map[indexKey]time.Time{}, map[*database]time.Time{}
	}
}

// ensurePartitionIndex makes sure, from the phase after the topology
// switch on, that the partition index for the projection's count exists or
// is being built, and reports where it stands in s.partitionIndex. It
// never waits for a build.
func (r *ProjectionReconciler) ensurePartitionIndex(ctx context.Context, s *state) error {
	if s.degraded != nil || s.stopped() || r.PartitionIndexMinPartitions <= 0 {
		return nil
	}
	// A build goes first; the sweep waits for the next pass.
	defer r.sweepPartitionIndexes(ctx, s)
	n := int(s.desired)
	if n < r.PartitionIndexMinPartitions || n < projection.MinPartitionIndexPartitions {
		return nil
	}
	ix := &r.indexes
	key := indexKey{s.pool.db, n}
	now := time.Now()
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.init()
	delete(ix.unusedSince, key)
	b := ix.builds[key]
	retry := b != nil && !b.finished.IsZero() && b.err != nil && now.Sub(b.finished) >= retryAfter(b.err)
	if (b == nil || retry) && !ix.busy[key.db] {
		b = &indexBuild{started: now}
		ix.builds[key], ix.busy[key.db] = b, true
		logger := log.FromContext(ctx)
		pool, dsn, p := s.pool.pool, s.pool.dsn, s.projection.DeepCopy()
		go func() {
			// Not the reconcile's context: the build outlives the pass.
			// Should the operator stop midway, PostgreSQL leaves an
			// invalid index, which the next build drops and rebuilds.
			built, err := projection.CreatePartitionIndex(context.Background(), pool, n)
			if err != nil {
				err = errors.New(redactErr(err, dsn))
			}
			ix.mu.Lock()
			b.finished, b.built, b.err = time.Now(), built, err
			ix.busy[key.db] = false
			ix.mu.Unlock()
			r.reportPartitionIndex(logger, p, n, b)
		}()
	}
	s.partitionIndex = b.status(n)
	return nil
}

// reportPartitionIndex emits the Event and log line of a finished build
// that built an index or failed: the build ends between reconciles, so
// this is the one report that is not made after a status write.
func (r *ProjectionReconciler) reportPartitionIndex(logger logr.Logger, p *v1alpha1.Projection, n int, b *indexBuild) {
	name := projection.PartitionIndexName(n)
	var eventType, reason, msg string
	switch {
	case b.err != nil:
		eventType, reason = corev1.EventTypeWarning, v1alpha1.ReasonPartitionIndexFailed
		msg = fmt.Sprintf("building partition index %s for %s failed, trying again in %s: %s", name, partitions(n), retryAfter(b.err), b.err)
	case b.built:
		eventType, reason = corev1.EventTypeNormal, v1alpha1.ReasonPartitionIndexReady
		msg = fmt.Sprintf("built partition index %s for %s in %s: each partition reads only its own rows through it",
			name, partitions(n), b.finished.Sub(b.started).Round(time.Millisecond))
	default:
		return // it was there already
	}
	logger.Info(msg, "event", eventType, "reason", reason)
	if r.Recorder != nil {
		r.Recorder.Eventf(p, nil, eventType, reason, "PartitionIndex", "%s", msg)
	}
}

// retryAfter is how long after a failed build the next one starts: soon
// when another session was building the index, later after a failure.
func retryAfter(err error) time.Duration {
	if errors.Is(err, projection.ErrPartitionIndexBuilding) {
		return partitionIndexSweep
	}
	return partitionIndexRetry
}

// status is the Projection's status.partitionIndex for the build b (nil:
// none started yet, another database statement runs first).
func (b *indexBuild) status(n int) *v1alpha1.PartitionIndexStatus {
	st := &v1alpha1.PartitionIndexStatus{Name: projection.PartitionIndexName(n), Partitions: int32(n)}
	switch {
	case b == nil:
		st.Phase = v1alpha1.PartitionIndexBuilding
		st.Message = "waiting for another partition index statement in this database to finish; until the index is built, partitions read through the partition filter"
	case b.finished.IsZero():
		st.Phase, st.Since = v1alpha1.PartitionIndexBuilding, &metav1.Time{Time: b.started.Truncate(time.Second)}
		st.Message = "building with CREATE INDEX CONCURRENTLY; until it is valid, partitions read through the partition filter"
	case b.err == nil:
		st.Phase, st.Since = v1alpha1.PartitionIndexReady, &metav1.Time{Time: b.finished.Truncate(time.Second)}
		st.Message = "valid; each partition reads only its own rows through it"
	default:
		st.Phase, st.Since = v1alpha1.PartitionIndexFailed, &metav1.Time{Time: b.finished.Truncate(time.Second)}
		st.Message = fmt.Sprintf("%s; partitions read through the partition filter, and the operator tries again %s after the failure", b.err, retryAfter(b.err))
	}
	return st
}

// sweepPartitionIndexes drops, in the background, the partition indexes of
// s's database that no projection there has had the count of for
// PartitionIndexRetention, looking at most every partitionIndexSweep (or
// retention, if shorter).
func (r *ProjectionReconciler) sweepPartitionIndexes(ctx context.Context, s *state) {
	retention := r.PartitionIndexRetention
	if retention <= 0 {
		retention = DefaultPartitionIndexRetention
	}
	ix := &r.indexes
	db, now := s.pool.db, time.Now()
	ix.mu.Lock()
	ix.init()
	if ix.busy[db] || now.Sub(ix.swept[db]) < min(partitionIndexSweep, retention) {
		ix.mu.Unlock()
		return
	}
	ix.swept[db], ix.busy[db] = now, true
	ix.mu.Unlock()
	logger := log.FromContext(ctx)
	pool, dsn := s.pool.pool, s.pool.dsn
	go func() {
		defer func() {
			ix.mu.Lock()
			ix.busy[db] = false
			ix.mu.Unlock()
		}()
		lctx, cancel := context.WithTimeout(context.Background(), databaseTimeout)
		all, err := projection.PartitionIndexes(lctx, pool)
		cancel()
		if err != nil {
			logger.Info("listing partition indexes", "error", redactErr(err, dsn))
			return
		}
		ix.mu.Lock()
		for key, b := range ix.builds {
			// Built, but no longer there valid (dropped by hand, say):
			// the next pass that wants it builds it again.
			if key.db == db && !b.finished.IsZero() && b.err == nil &&
				!slices.ContainsFunc(all, func(pi projection.PartitionIndex) bool { return pi.Partitions == key.n && pi.Valid }) {
				delete(ix.builds, key)
			}
		}
		ix.mu.Unlock()
		for _, pi := range all {
			key := indexKey{db, pi.Partitions}
			ix.mu.Lock()
			since, seen := ix.unusedSince[key]
			switch {
			case len(pi.UsedBy) > 0 || pi.Building:
				delete(ix.unusedSince, key)
			case !seen:
				ix.unusedSince[key] = now
			}
			ix.mu.Unlock()
			if len(pi.UsedBy) > 0 || pi.Building || !seen || now.Sub(since) < retention {
				continue
			}
			// DROP INDEX CONCURRENTLY waits for the reads in flight.
			if err := projection.DropPartitionIndex(context.Background(), pool, pi.Partitions); err != nil {
				logger.Info("dropping unused partition index", "index", pi.Name, "error", redactErr(err, dsn))
				continue
			}
			logger.Info("dropped partition index that no projection has used", "index", pi.Name,
				"unusedFor", now.Sub(since).Round(time.Second).String(), "size", pi.SizeBytes)
			ix.mu.Lock()
			delete(ix.unusedSince, key)
			delete(ix.builds, key)
			ix.mu.Unlock()
		}
	}()
}
