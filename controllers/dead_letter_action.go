// spec.deadLetterAction: retry or discard dead letters through the
// operator, once per token, for users who may patch the Projection but do
// not hold the connection string; and the oldest dead letters in status.

package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/pkg/projection"
)

// runDeadLetterAction runs spec.deadLetterAction when its token is new.
// The library's retry and discard are idempotent per event (a retried
// event is applied once, a discarded one is gone), so an action run again
// because its status was not written only reports the events as no longer
// dead letters. A pass that reads the Projection from a cache that has not
// yet seen the status naming the token (a pass queued while the one that
// ran the action was running) reports the outcome this operator
// remembers instead of running the action again.
func (r *ProjectionReconciler) runDeadLetterAction(ctx context.Context, s *state) error {
	p := s.projection
	a := p.Spec.DeadLetterAction
	if a == nil || p.Status.DeadLetterAction != nil && p.Status.DeadLetterAction.Token == a.Token ||
		s.degraded != nil || s.slowRead != nil || s.pool.pool == nil {
		return nil
	}
	m := r.memories.of(types.NamespacedName{Namespace: p.Namespace, Name: p.Name}, p.UID)
	if done := m.deadLetterAction; done != nil && done.Token == a.Token {
		s.deadLetterAction = done.DeepCopy()
		return nil
	}
	name := p.EffectiveProjectionName()
	out := v1alpha1.DeadLetterActionStatus{Token: a.Token, Action: a.Action}
	one, all := projection.RetryDeadLetter, projection.RetryAllDeadLetters
	verb := "retry requested for"
	if a.Action == v1alpha1.DeadLetterDiscard {
		one, all, verb = projection.DiscardDeadLetter, projection.DiscardAllDeadLetters, "discarded"
	}
	var missing []string
	if !r.inDatabase(ctx, s, "running spec.deadLetterAction", func(ctx context.Context) error {
		out.DeadLetters, missing = 0, nil
		if len(a.EventIDs) == 0 {
			n, err := all(ctx, s.pool.pool, name)
			out.DeadLetters = n
			return err
		}
		for _, v := range a.EventIDs {
			id, err := uuid.Parse(v) // the API server checked the format
			if err != nil {
				missing = append(missing, v)
				continue
			}
			switch err := one(ctx, s.pool.pool, name, id); {
			case err == nil:
				out.DeadLetters++
			case errors.Is(err, projection.ErrDeadLetterNotFound):
				missing = append(missing, v)
			default:
				return err
			}
		}
		return nil
	}) {
		return nil
	}
	scope := "every dead letter"
	if len(a.EventIDs) > 0 {
		scope = fmt.Sprintf("%d of the %d events named", out.DeadLetters, len(a.EventIDs))
	}
	out.Message = fmt.Sprintf("%s %d dead letters of projection %s (%s)", verb, out.DeadLetters, name, scope)
	if len(missing) > 0 {
		out.Message += "; not dead letters of the projection (retried, discarded or never set aside): " + strings.Join(missing, ", ")
	}
	out.Message = truncate(out.Message, 2048)
	out.CompletedAt = ptr.To(metav1.Now())
	s.deadLetterAction = &out
	m.deadLetterAction = out.DeepCopy()
	return nil
}

// deadLetterSamples is what status shows of the oldest dead letters, the
// errors without the connection string's password.
func deadLetterSamples(dls []projection.DeadLetter, dsn string) []v1alpha1.DeadLetterSample {
	var out []v1alpha1.DeadLetterSample
	for _, d := range dls {
		msg, _, _ := strings.Cut(d.Error, "\n")
		out = append(out, v1alpha1.DeadLetterSample{
			EventID: d.EventID.String(), Position: d.Position.GlobalPosition, Partition: int32(d.PartitionKey),
			EventType: d.EventType, Aggregate: d.AggregateType + "/" + d.AggregateID,
			FailedAt: ptr.To(metav1.NewTime(d.FailedAt)), RetryPending: !d.RetryRequestedAt.IsZero(),
			Error: truncate(redactErr(errors.New(msg), dsn), 256),
		})
	}
	return out
}
