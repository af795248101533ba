package controllers_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/pkg/projection"
)

// status.deadLetters follows the projection's dead-letter table, down as
// well as up.
func TestDeadLettersInStatus(t *testing.T) {
	ctx := t.Context()
	ns := newNamespace(t)
	dsn := pgtest.NewDatabase(t)
	newSecret(t, ns, "db", map[string]string{"dsn": dsn})
	db := newPool(t, dsn)
	newProjection(t, ns, "parked", "parked", 1)
	eventually(t, 30*time.Second, "the topology", func() error {
		if n, _ := topologyOf(t, db, "parked"); n != 1 {
			return fmt.Errorf("%d partitions", n)
		}
		return nil
	})
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
	eventually(t, 30*time.Second, "a DeadLettersGrew Warning Event", func() error {
		var list eventsv1.EventList
		if err := k8sClient.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range list.Items {
			if e.Reason == "DeadLettersGrew" && e.Type == corev1.EventTypeWarning && e.Regarding.Name == "parked" &&
				strings.Contains(e.Note, "has 2 dead letters") {
				return nil
			}
		}
		return fmt.Errorf("none among %d events", len(list.Items))
	})
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
