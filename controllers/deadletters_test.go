package controllers_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/pkg/projection"
)

// status.deadLetters follows the projection's dead-letter table, down as
// well as up.
func TestDeadLettersInStatus(t *testing.T) {
	ctx := t.Context()
	ns := newNamespace(t)
	db := newDatabase(t, ns)
	newProjectionWithTopology(t, ns, db, "parked", "parked", 1)
	evs, err := projection.NewStore().Append(ctx, db, "Order", "o-1", projection.AnyVersion,
		projection.Event{EventType: "OrderPlaced"}, projection.Event{EventType: "OrderPlaced"})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if _, err := db.Exec(ctx, `INSERT INTO projection_dead_letters
			(projection_name, event_id, partition_key, global_position, transaction_id, aggregate_type, aggregate_id, event_type, error)
			VALUES ('parked', $1, 0, $2, $3, $4, $5, $6, 'bad')`,
			e.EventID, e.GlobalPosition, e.TransactionID, e.AggregateType, e.AggregateID, e.EventType); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "status.deadLetters 2", func() error {
		if n := getProjection(t, ns, "parked").Status.DeadLetters; n != 2 {
			return fmt.Errorf("status.deadLetters %d", n)
		}
		return nil
	})
	waitForEvent(t, ns, "parked", corev1.EventTypeWarning, "DeadLettersGrew", "has 2 dead letters")
	if err := projection.DiscardDeadLetter(ctx, db, "parked", evs[0].EventID); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "status.deadLetters 1", func() error {
		if n := getProjection(t, ns, "parked").Status.DeadLetters; n != 1 {
			return fmt.Errorf("status.deadLetters %d", n)
		}
		return nil
	})
}

// spec.deadLetterAction: the operator discards and retries dead letters
// once per token, reports each outcome in status.deadLetterAction (naming
// event ids that are not dead letters) and an Event, and shows the oldest
// dead letters in status.deadLetterSamples, retry pending or not. The API
// server refuses an action that is not Retry or Discard and an event id
// that is not a UUID.
func TestDeadLetterAction(t *testing.T) {
	ctx := t.Context()
	ns := newNamespace(t)
	db := newDatabase(t, ns)
	p := newProjectionWithTopology(t, ns, db, "parked", "parked", 1)
	evs, err := projection.NewStore().Append(ctx, db, "Order", "o-1", projection.AnyVersion,
		projection.Event{EventType: "OrderPlaced"}, projection.Event{EventType: "OrderPaid"}, projection.Event{EventType: "OrderShipped"})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if _, err := db.Exec(ctx, `INSERT INTO projection_dead_letters
			(projection_name, event_id, partition_key, global_position, transaction_id, aggregate_type, aggregate_id, event_type, error)
			VALUES ('parked', $1, 0, $2, $3, $4, $5, $6, 'amount missing'||chr(10)||'second line')`,
			e.EventID, e.GlobalPosition, e.TransactionID, e.AggregateType, e.AggregateID, e.EventType); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "3 dead letters in status, with samples", func() error {
		st := getProjection(t, ns, "parked").Status
		if st.DeadLetters != 3 || len(st.DeadLetterSamples) != 3 {
			return fmt.Errorf("status.deadLetters %d, %d samples", st.DeadLetters, len(st.DeadLetterSamples))
		}
		want := v1alpha1.DeadLetterSample{EventID: evs[0].EventID.String(), Position: evs[0].GlobalPosition, EventType: "OrderPlaced",
			Aggregate: "Order/o-1", Error: "amount missing"}
		got := st.DeadLetterSamples[0]
		got.FailedAt = nil
		if got != want {
			return fmt.Errorf("first sample %+v, want %+v", got, want)
		}
		return nil
	})

	// The operator writes status while the test writes spec: a conflict is
	// retried, so only the API server's validation can fail an action.
	act := func(a *v1alpha1.DeadLetterAction) error {
		return updateSpec(t, ns, p.Name, func(s *v1alpha1.ProjectionSpec) { s.DeadLetterAction = a })
	}
	for _, bad := range []*v1alpha1.DeadLetterAction{
		{Token: "x", Action: "Replay"},
		{Token: "x", Action: v1alpha1.DeadLetterRetry, EventIDs: []string{"not-a-uuid"}},
		{Token: "", Action: v1alpha1.DeadLetterRetry},
	} {
		if err := act(bad); !apierrors.IsInvalid(err) {
			t.Errorf("spec.deadLetterAction %+v: %v, want Invalid", bad, err)
		}
	}

	unknown := "00000000-0000-4000-8000-000000000000"
	if err := act(&v1alpha1.DeadLetterAction{Token: "t1", Action: v1alpha1.DeadLetterDiscard,
		EventIDs: []string{evs[0].EventID.String(), unknown}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the discard done", func() error {
		st := getProjection(t, ns, "parked").Status
		a := st.DeadLetterAction
		if a == nil || a.Token != "t1" || a.DeadLetters != 1 || !strings.Contains(a.Message, "not dead letters of the projection") ||
			!strings.Contains(a.Message, unknown) || st.DeadLetters != 2 || len(st.DeadLetterSamples) != 2 ||
			st.DeadLetterSamples[0].EventID != evs[1].EventID.String() {
			return fmt.Errorf("status.deadLetterAction %+v, %d dead letters, samples %+v", a, st.DeadLetters, st.DeadLetterSamples)
		}
		return nil
	})

	if err := act(&v1alpha1.DeadLetterAction{Token: "t2", Action: v1alpha1.DeadLetterRetry}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the retry requested for both", func() error {
		st := getProjection(t, ns, "parked").Status
		a := st.DeadLetterAction
		if a == nil || a.Token != "t2" || a.Action != v1alpha1.DeadLetterRetry || a.DeadLetters != 2 || len(st.DeadLetterSamples) != 2 ||
			!st.DeadLetterSamples[0].RetryPending || !st.DeadLetterSamples[1].RetryPending {
			return fmt.Errorf("status.deadLetterAction %+v, samples %+v", a, st.DeadLetterSamples)
		}
		return nil
	})
	dls, err := projection.ListDeadLetters(ctx, db, "parked", projection.DeadLetterFilter{})
	if err != nil || len(dls) != 2 || dls[0].RetryRequestedAt.IsZero() || dls[1].RetryRequestedAt.IsZero() {
		t.Errorf("dead letters after the retry action: %+v (%v), want 2 with a retry requested", dls, err)
	}
	eventually(t, 30*time.Second, "a DeadLetterAction Event for each", func() error {
		var list eventsv1.EventList
		if err := k8sClient.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, e := range list.Items {
			if e.Reason == "DeadLetterAction" && e.Regarding.Name == "parked" {
				seen[e.Action] = true
			}
		}
		if !seen["Retry"] || !seen["Discard"] {
			return fmt.Errorf("DeadLetterAction Events for %v", seen)
		}
		return nil
	})
}
