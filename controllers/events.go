// The Events a reconcile emits when a condition changes.

package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/projectionist/projectionist/api/v1alpha1"
)

// emitEvents reports what this reconcile changed, after the status write,
// as Events on the Projection and as operator log lines (one per change).
// Steady state emits nothing; a problem is reported when it appears or
// changes, not on every pass.
func (r *ProjectionReconciler) emitEvents(ctx context.Context, s *state, before []metav1.Condition) {
	p := s.projection
	emit := func(eventType, reason, action, format string, args ...any) {
		r.event(ctx, p, eventType, reason, action, format, args...)
	}
	if e := s.switched; e != nil && e.from == 0 {
		emit(corev1.EventTypeNormal, "TopologySwitched", "SwitchTopology",
			"set up projection %s in %s (topology generation %d)", p.EffectiveProjectionName(), partitions(e.to), e.generation)
	} else if e != nil {
		emit(corev1.EventTypeNormal, "TopologySwitched", "SwitchTopology",
			"switched projection %s from %d to %s (topology generation %d)", p.EffectiveProjectionName(), e.from, partitions(e.to), e.generation)
	}
	if e := s.autoscaled; e != nil {
		emit(corev1.EventTypeNormal, v1alpha1.ReasonAutoscaled, "Autoscale",
			"autoscaler: %d to %s: %s", e.from, partitions(int(e.to)), e.why)
	}
	if rs := s.rebuild; rs != nil && rs.changed() {
		name, b := p.EffectiveProjectionName(), rs.status
		switch {
		case rs.phaseBefore == "":
			emit(corev1.EventTypeNormal, "RebuildStarted", "Rebuild",
				"rebuilding projection %s (token %q): stopping the worker pods before the reset", name, b.Token)
		case b.Phase == v1alpha1.RebuildRebuilt:
			emit(corev1.EventTypeNormal, v1alpha1.ReasonRebuilt, "Rebuild", "%s", b.Message)
		case b.Phase == v1alpha1.RebuildFailed:
			emit(corev1.EventTypeWarning, v1alpha1.ReasonResetNotSupported, "Rebuild", "rebuild %q failed: %s", b.Token, b.Message)
		}
	}
	if a := s.deadLetterAction; a != nil {
		emit(corev1.EventTypeNormal, "DeadLetterAction", string(a.Action), "%s", a.Message)
	}
	if n := s.deadLetters; n != nil && *n > s.deadLettersBefore {
		emit(corev1.EventTypeWarning, "DeadLettersGrew", "DeadLetter",
			"projection %s has %d dead letters (%d before): list them with 'projectionist dead-letters list --projection %s'",
			p.EffectiveProjectionName(), *n, s.deadLettersBefore, p.EffectiveProjectionName())
	}
	key := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
	old := reportedOf(before)
	if v, ok := r.reported.Load(key); ok {
		old = v.(reported)
	}
	now := reportedOf(p.Status.Conditions)
	r.reported.Store(key, now)
	if now.degraded != nil && now.degraded.Status == metav1.ConditionTrue &&
		(old.degraded == nil || old.degraded.Status != metav1.ConditionTrue || old.degraded.Reason != now.degraded.Reason) {
		emit(corev1.EventTypeWarning, now.degraded.Reason, "Reconcile", "%s", now.degraded.Message)
	}
	if now.degraded != nil && now.degraded.Status == metav1.ConditionFalse && old.degraded != nil && old.degraded.Status == metav1.ConditionTrue {
		emit(corev1.EventTypeNormal, "Recovered", "Reconcile", "recovered from %s", old.degraded.Reason)
	}
	if now.stalled != nil && now.stalled.Status == metav1.ConditionTrue && (old.stalled == nil || old.stalled.Status != metav1.ConditionTrue) {
		emit(corev1.EventTypeWarning, now.stalled.Reason, "ObserveProgress", "%s", now.stalled.Message)
	}
	if now.stalled != nil && now.stalled.Status == metav1.ConditionFalse && old.stalled != nil && old.stalled.Status == metav1.ConditionTrue {
		emit(corev1.EventTypeNormal, now.stalled.Reason, "ObserveProgress", "%s", now.stalled.Message)
	}
}

// reported is the part of a status that Events report changes of.
type reported struct{ degraded, stalled *metav1.Condition }

func reportedOf(conditions []metav1.Condition) reported {
	find := func(t string) *metav1.Condition {
		if c := meta.FindStatusCondition(conditions, t); c != nil {
			copied := *c
			return &copied
		}
		return nil
	}
	return reported{degraded: find(v1alpha1.ConditionDegraded), stalled: find(v1alpha1.ConditionStalled)}
}

// event records an Event on p and logs it as an operator log line.
func (r *ProjectionReconciler) event(ctx context.Context, p *v1alpha1.Projection, eventType, reason, action, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	log.FromContext(ctx).Info(msg, "event", eventType, "reason", reason)
	if r.Recorder != nil {
		r.Recorder.Eventf(p, nil, eventType, reason, action, "%s", msg)
	}
}
