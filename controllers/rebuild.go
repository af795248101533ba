// The declarative rebuild (spec.rebuildToken): stop the workers, request
// the reset in the database, start them again (the first one resets, in
// the user's code: projection.ApplyPendingReset), follow the replay.

package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/controllers/resources"
	"github.com/projectionist/projectionist/pkg/projection"
)

// rebuildState is what a reconcile learns and does about a rebuild under
// way.
type rebuildState struct {
	// status is the new status.rebuild.
	status v1alpha1.RebuildStatus
	// phaseBefore is the phase the status held before this pass, "" for
	// a rebuild this pass started.
	phaseBefore v1alpha1.RebuildPhase
	// stop: the StatefulSet gets 0 replicas.
	stop bool
	// podsLeft is the number of worker pods that still exist (Stopping);
	// -1 when not counted (the database is out of reach).
	podsLeft int
	// waiting is why the rebuild cannot go on (suspended, 0 replicas):
	// the Rebuilding condition's reason, and its message.
	waiting *problem
	// lastError is the Reset hook's last failure (Resetting).
	lastError string
	// eventsProcessed is read while Replaying.
	eventsProcessed *int64
}

// changed reports whether this pass moves the rebuild to another phase.
func (rs *rebuildState) changed() bool { return rs.status.Phase != rs.phaseBefore }

// rebuildActive is the spec.rebuildToken that is not yet rebuilt or
// failed, or "".
func rebuildActive(p *v1alpha1.Projection) string {
	token, prev := p.Spec.RebuildToken, p.Status.Rebuild
	if token == "" || prev != nil && prev.Token == token && (prev.Phase == v1alpha1.RebuildRebuilt || prev.Phase == v1alpha1.RebuildFailed) {
		return ""
	}
	return token
}

// rebuild drives a rebuild asked for with spec.rebuildToken through
// Stopping (the StatefulSet at 0 replicas until no worker pod is left) and
// Resetting (the reset requested in the database, the pods back; the first
// worker to start resets) to Replaying, when the database shows the reset
// done, or Failed, when the workers refused it. Replaying ends in Rebuilt
// in computeStatus, once every partition has passed the head of the
// previous reading (setRebuildStatus). Each step is checked against the
// database, so a pass that read an old status does not go back a step: a
// reset already requested under the token is not stopped for again.
func (r *ProjectionReconciler) rebuild(ctx context.Context, s *state) error {
	p := s.projection
	token := rebuildActive(p)
	if token == "" {
		return nil
	}
	rs := &rebuildState{podsLeft: -1}
	if prev := p.Status.Rebuild; prev != nil && prev.Token == token {
		rs.status, rs.phaseBefore = *prev.DeepCopy(), prev.Phase
	} else {
		rs.status = v1alpha1.RebuildStatus{Token: token, Phase: v1alpha1.RebuildStopping, StartedAt: ptr.To(metav1.Now())}
	}
	s.rebuild = rs
	if rs.status.Phase == v1alpha1.RebuildStopping {
		// Stopping needs no database: the pods go whatever it says.
		rs.stop = true
	}
	switch {
	case s.suspended:
		rs.waiting = &problem{v1alpha1.ReasonSuspended, fmt.Sprintf(
			"rebuild %q waits: spec.suspend is true, and the workers do the reset; it goes on once the Projection is resumed", token)}
		return nil
	case s.projection.Paused():
		rs.waiting = &problem{v1alpha1.ReasonPaused, fmt.Sprintf(
			"rebuild %q waits: replicas is 0, and the workers do the reset; it goes on once replicas is above 0", token)}
		return nil
	case s.degraded != nil || s.slowRead != nil || s.pool.pool == nil:
		return nil // Degraded says why, or a read was slow; the rebuild stays where it is
	}
	name := p.EffectiveProjectionName()
	var reset projection.ResetStatus
	if !r.inDatabase(ctx, s, "reading the reset request", func(ctx context.Context) (err error) {
		reset, err = projection.GetResetStatus(ctx, s.pool.pool, name)
		return err
	}) {
		return nil
	}

	if rs.status.Phase == v1alpha1.RebuildStopping && reset.RequestedToken != token {
		left, err := r.workersLeft(ctx, s)
		if err != nil {
			return err
		}
		rs.podsLeft = left
		if left > 0 {
			return nil
		}
		if !r.inDatabase(ctx, s, "requesting the reset", func(ctx context.Context) error {
			return projection.RequestReset(ctx, s.pool.pool, name, token)
		}) {
			return nil
		}
		reset.RequestedToken = token
	}
	if rs.status.Phase == v1alpha1.RebuildStopping {
		// No worker runs and the reset is requested: start them again.
		rs.status.Phase, rs.stop = v1alpha1.RebuildResetting, false
	}
	if rs.status.Phase == v1alpha1.RebuildResetting {
		switch {
		case reset.Succeeded(token):
			rs.status.Phase = v1alpha1.RebuildReplaying
			rs.status.ResetAt = ptr.To(metav1.NewTime(reset.DoneAt))
			rs.status.EventsReplayed, rs.status.EventsPerSecond, rs.status.ObservedAt = 0, 0, nil
		case reset.Failed(token):
			rs.status.Phase, rs.status.CompletedAt = v1alpha1.RebuildFailed, ptr.To(metav1.Now())
			rs.status.Message = truncate(reset.Error, 2048)
			return nil
		case reset.RequestedToken != token:
			// Requested before, gone from the database since (restored
			// from a backup?): ask again, the workers are running.
			rs.status.Phase, rs.stop = v1alpha1.RebuildStopping, true
			return nil
		default:
			rs.lastError = reset.LastError
			return nil
		}
	}
	if rs.status.Phase == v1alpha1.RebuildReplaying {
		var n int64
		if !r.inDatabase(ctx, s, "reading progress", func(ctx context.Context) (err error) {
			n, err = projection.EventsProcessed(ctx, s.pool.pool, name)
			return err
		}) {
			return nil
		}
		rs.eventsProcessed = &n
	}
	return nil
}

// inDatabase runs fn on s's database as what, within databaseTimeout. A
// failure becomes s's Degraded problem (its reason, the password removed),
// or its slow read if fn ran out of time while the database answers a
// ping, and inDatabase reports false: the pass goes on without what fn
// reads.
func (r *ProjectionReconciler) inDatabase(ctx context.Context, s *state, what string, fn func(context.Context) error) bool {
	if err := r.dbs.do(ctx, s.pool.db, what, databaseTimeout, fn); err != nil {
		s.noteFailure(err)
		return false
	}
	return true
}

// workersLeft counts the worker pods that exist, terminating ones
// included (a worker runs until its pod is gone), and counts a StatefulSet
// that has not yet seen, or not yet acted on, its 0 replicas as one more:
// its controller may still create a pod.
func (r *ProjectionReconciler) workersLeft(ctx context.Context, s *state) (int, error) {
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.InNamespace(s.projection.Namespace),
		client.MatchingLabels(resources.SelectorLabels(s.projection))); err != nil {
		return 0, fmt.Errorf("listing worker pods: %w", err)
	}
	left := len(pods.Items)
	if sts := s.statefulSet; sts != nil && left == 0 &&
		(ptr.Deref(sts.Spec.Replicas, 1) != 0 || sts.Status.ObservedGeneration < sts.Generation || sts.Status.Replicas != 0) {
		left = 1
	}
	return left, nil
}

// setRebuildStatus writes status.rebuild and the Rebuilding condition,
// moving a replay to Rebuilt once every partition has passed every event in
// its scope up to the head of the previous status reading: within two
// status reads (StatusInterval each) of the replay's passing what was
// there, also while other events keep being appended.
func setRebuildStatus(st *v1alpha1.ProjectionStatus, s *state) {
	rs := s.rebuild
	if rs == nil {
		return
	}
	b := &rs.status
	c := metav1.Condition{Type: v1alpha1.ConditionRebuilding, Status: metav1.ConditionTrue, ObservedGeneration: s.projection.Generation}
	if b.Phase == v1alpha1.RebuildReplaying && s.progress != nil && rs.eventsProcessed != nil {
		pr := s.progress
		now := metav1.Now()
		if b.ObservedAt != nil && now.Sub(b.ObservedAt.Time) >= time.Second {
			b.EventsPerSecond = max(0, int64(float64(*rs.eventsProcessed-b.EventsReplayed)/now.Sub(b.ObservedAt.Time).Seconds()))
		}
		if b.ObservedAt == nil || now.Sub(b.ObservedAt.Time) >= time.Second {
			b.EventsReplayed, b.ObservedAt = *rs.eventsProcessed, &now
		}
		// Rebuilt once the replay has passed what was there a reading ago
		// (not lag 0, which steady appends can keep from ever being read);
		// that reading must have been of this replay, so the status this
		// pass started from must say Replaying already.
		if rs.phaseBefore == v1alpha1.RebuildReplaying && pr.PassedHead(caughtUpHead(s)) {
			b.Phase, b.CompletedAt = v1alpha1.RebuildRebuilt, &now
		}
	}
	switch b.Phase {
	case v1alpha1.RebuildStopping:
		c.Reason = v1alpha1.ReasonRebuildStopping
		b.Message = fmt.Sprintf("rebuild %q: stopping the worker pods before the reset", b.Token)
		if rs.podsLeft >= 0 {
			b.Message += fmt.Sprintf(" (%d left)", rs.podsLeft)
		}
	case v1alpha1.RebuildResetting:
		c.Reason = v1alpha1.ReasonRebuildResetting
		b.Message = fmt.Sprintf("rebuild %q: reset requested; the first worker to start resets the read model and the checkpoints", b.Token)
		if rs.lastError != "" {
			b.Message += "; its Reset hook failed, and the workers retry: " + truncate(redact(rs.lastError, s.pool.dsn), 1024)
		}
	case v1alpha1.RebuildReplaying:
		c.Reason = v1alpha1.ReasonRebuildReplaying
		b.Message = replayMessage(b, s.progress)
	case v1alpha1.RebuildRebuilt:
		c.Status, c.Reason = metav1.ConditionFalse, v1alpha1.ReasonRebuilt
		b.Message = fmt.Sprintf("rebuild %q done: %d events replayed, caught up with the log's head", b.Token, b.EventsReplayed)
		if s.progress != nil {
			b.Message = fmt.Sprintf("rebuild %q done: %d events replayed, caught up with the log's head at position %d",
				b.Token, b.EventsReplayed, caughtUpHead(s))
		}
	case v1alpha1.RebuildFailed:
		c.Status, c.Reason = metav1.ConditionFalse, v1alpha1.ReasonResetNotSupported
	}
	c.Message = b.Message
	if rs.waiting != nil {
		c.Reason, c.Message = rs.waiting.reason, rs.waiting.message
	}
	st.Rebuild = b
	meta.SetStatusCondition(&st.Conditions, c)
}

// replayMessage is the replay's progress: the furthest-behind partition's
// position, the head, the lag, the rate and, at that rate, the time left.
func replayMessage(b *v1alpha1.RebuildStatus, pr *projection.Progress) string {
	if pr == nil {
		return fmt.Sprintf("rebuild %q: replaying the log", b.Token)
	}
	var position int64
	for i, pp := range pr.Partitions {
		if i == 0 || pp.Position < position {
			position = pp.Position
		}
	}
	msg := fmt.Sprintf("rebuild %q: replaying: position %d of head %d, lag %d, %d events replayed",
		b.Token, position, pr.HeadPosition, pr.Lag, b.EventsReplayed)
	if b.EventsPerSecond > 0 {
		eta := time.Duration(float64(pr.Lag) / float64(b.EventsPerSecond) * float64(time.Second)).Round(time.Second)
		msg += fmt.Sprintf(", %d events/s, ETA %s", b.EventsPerSecond, eta)
	}
	return msg
}

// rebuildUnderway reports whether a rebuild has started and not yet
// reached Rebuilt or Failed: CaughtUp is False meanwhile.
func rebuildUnderway(s *state) bool {
	if s.rebuild == nil {
		return false
	}
	switch s.rebuild.status.Phase {
	case v1alpha1.RebuildRebuilt, v1alpha1.RebuildFailed:
		return false
	}
	return true
}

// truncate cuts msg to at most n bytes.
func truncate(msg string, n int) string {
	if len(msg) <= n {
		return msg
	}
	return msg[:n-3] + "..."
}
