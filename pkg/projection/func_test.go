package projection_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/projectionist/projectionist/pkg/projection"
)

// Func's projection has the name given and hands each event, with its
// context and transaction, to the function, returning what it returns.
// (TestSchemaOfChoice and TestAutoscalingOnLag run such projections through
// processors.)
func TestFunc(t *testing.T) {
	type ctxKey struct{}
	ctx := context.WithValue(context.Background(), ctxKey{}, "batch")
	failed := errors.New("poison")
	var got []string
	p := projection.Func("audit", func(ctx context.Context, tx pgx.Tx, e *projection.PersistedEvent) error {
		got = append(got, ctx.Value(ctxKey{}).(string)+":"+e.AggregateID)
		if e.AggregateID == "bad" {
			return failed
		}
		return nil
	})
	if p.Name() != "audit" {
		t.Errorf("Name() = %q, want audit", p.Name())
	}
	if err := p.Handle(ctx, nil, &projection.PersistedEvent{AggregateID: "a"}); err != nil {
		t.Errorf("Handle(a) = %v", err)
	}
	if err := p.Handle(ctx, nil, &projection.PersistedEvent{AggregateID: "bad"}); !errors.Is(err, failed) {
		t.Errorf("Handle(bad) = %v, want %v", err, failed)
	}
	if len(got) != 2 || got[0] != "batch:a" || got[1] != "batch:bad" {
		t.Errorf("the function saw %q, want [batch:a batch:bad]", got)
	}
	if _, ok := p.(projection.BatchProjection); ok {
		t.Error("a Func projection is a BatchProjection; it has only Handle")
	}
}
