// Slow reads: a read that runs out of time on a database that answers a
// ping (DatabaseSlow) is a slow query, not an unreachable database.

package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/projectionist/projectionist/api/v1alpha1"
)

// DefaultSlowReadGrace is how long the reads of a Projection's database
// may keep running out of time, while the database answers a ping,
// before the Projection is Degraded with reason DatabaseSlow.
const DefaultSlowReadGrace = time.Minute

// memory is what the reconciler remembers of one Projection between
// passes. Only the reconcile of that Projection touches it, and
// controller-runtime never runs two of one Projection at once.
type memory struct {
	uid types.UID
	// slowSince is when its database reads started running out of time
	// while the database answered a ping; zero while they do not.
	slowSince time.Time
}

// memories holds the memory of each Projection, by namespace/name.
type memories struct {
	mu sync.Mutex
	m  map[types.NamespacedName]*memory
}

// of returns the memory of the Projection key with uid, a new one for a
// new Projection of the same name.
func (ms *memories) of(key types.NamespacedName, uid types.UID) *memory {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if ms.m == nil {
		ms.m = map[types.NamespacedName]*memory{}
	}
	m := ms.m[key]
	if m == nil || m.uid != uid {
		m = &memory{uid: uid}
		ms.m[key] = m
	}
	return m
}

// forget drops the memory of a Projection that is gone.
func (ms *memories) forget(key types.NamespacedName) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	delete(ms.m, key)
}

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
