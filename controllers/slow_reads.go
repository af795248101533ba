// Slow reads: a read that runs out of time on a database that answers a
// ping (DatabaseSlow) is a slow query, not an unreachable database.

package controllers

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/projectionist/projectionist/api/v1alpha1"
)

// DefaultSlowReadGrace is how long the reads of a Projection's database
// may keep running out of time, while the database answers a ping,
// before the Projection is Degraded with reason DatabaseSlow.
const DefaultSlowReadGrace = time.Minute

// weighSlowReads decides what a slow read of this pass (s.slowRead)
// means. The first passes of a run of slow reads only say so (Degraded
// False with reason DatabaseSlow, the status keeping its last reading):
// one slow query is not an outage. Once the run has lasted SlowReadGrace,
// the slow read becomes the Degraded problem, unless a worker is failing:
// its error (an unknown projection name, a poison event) says more than
// the slow read it may cause. A pass whose reads all finished ends the
// run.
func (r *ProjectionReconciler) weighSlowReads(ctx context.Context, s *state) error {
	p := s.projection
	m := r.memories.of(types.NamespacedName{Namespace: p.Namespace, Name: p.Name}, p.UID)
	if s.slowRead == nil {
		if s.progress != nil {
			m.slowSince = time.Time{}
		}
		return nil
	}
	now := r.clock().Now()
	if m.slowSince.IsZero() {
		m.slowSince = now
	}
	since := m.slowSince.UTC().Format(time.RFC3339)
	persisting := now.Sub(m.slowSince) >= r.slowReadGrace()
	log.FromContext(ctx).Info("database reads slow", "since", since, "graceOver", persisting, "error", s.slowRead.message)
	if persisting && s.degraded == nil && s.workerFailure == nil {
		s.degraded = &problem{v1alpha1.ReasonDatabaseSlow, fmt.Sprintf("%s (reads slow since %s)", s.slowRead.message, since)}
		return nil
	}
	s.slowRead.message = fmt.Sprintf("%s; the status keeps the last reading, and Degraded turns True if reads are still slow %s after %s",
		s.slowRead.message, r.slowReadGrace(), since)
	return nil
}

func (r *ProjectionReconciler) slowReadGrace() time.Duration {
	if r.SlowReadGrace <= 0 {
		return DefaultSlowReadGrace
	}
	return r.SlowReadGrace
}
