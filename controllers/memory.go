// What the reconciler remembers of each Projection between passes, in one
// typed memory stamped with the Projection's UID.

package controllers

import (
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/projectionist/projectionist/api/v1alpha1"
)

// memory is what the reconciler remembers of one Projection between
// passes. Only the reconcile of that Projection touches it, and
// controller-runtime never runs two of one Projection at once.
type memory struct {
	uid types.UID
	// caughtUp is its CaughtUp condition as this operator first set it
	// True (keepCaughtUpSince); nil before, and from a rebuild on.
	caughtUp *metav1.Condition
	// autoscaler holds its readings and choices under spec.autoscaling;
	// nil without.
	autoscaler *autoscaler
	// slowSince is when its database reads started running out of time
	// while the database answered a ping; zero while they do not
	// (weighSlowReads).
	slowSince time.Time
	// deadLetterAction is the outcome of the last spec.deadLetterAction
	// this operator ran for it (runDeadLetterAction); nil before.
	deadLetterAction *v1alpha1.DeadLetterActionStatus
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
