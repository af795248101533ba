package projection_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/projectionist/projectionist/pkg/projection"
)

// keepingProjection keeps a copy of every event it is handed.
type keepingProjection struct{ kept []projection.PersistedEvent }

func (*keepingProjection) Name() string { return "keeping" }

func (p *keepingProjection) Handle(_ context.Context, _ pgx.Tx, e *projection.PersistedEvent) error {
	p.kept = append(p.kept, *e)
	return nil
}

// The processor reuses its scan buffers from batch to batch; events a
// projection keeps must not change when later batches are read, and
// appending to one event's payload must not touch another's.
func TestProcessorEventsOutliveTheirBatch(t *testing.T) {
	ctx := t.Context()
	pool, store := newStore(t)
	var want []projection.Event
	for i := range 300 {
		pad := strings.Repeat("x", i%40)
		if i == 150 {
			pad = strings.Repeat("y", 20000) // larger than any shared buffer
		}
		e := projection.Event{
			EventType: fmt.Sprintf("Type%d", i%3),
			// Compact and with keys out of order: json keeps the bytes.
			Payload:  []byte(fmt.Sprintf(`{"i":%d,"pad":"%s","a":true}`, i, pad)),
			Metadata: []byte(fmt.Sprintf(`{"n":%d}`, i)),
		}
		if _, err := store.Append(ctx, pool, "Thing", fmt.Sprint("t", i%17), projection.AnyVersion, e); err != nil {
			t.Fatal(err)
		}
		want = append(want, e)
	}
	cfg := projection.DefaultProcessorConfig()
	cfg.BatchSize = 7
	proj := &keepingProjection{}
	if err := projection.NewProcessor(pool, store, cfg).CatchUp(ctx, proj); err != nil {
		t.Fatal(err)
	}
	if len(proj.kept) != len(want) {
		t.Fatalf("kept %d events, want %d", len(proj.kept), len(want))
	}
	check := func() {
		t.Helper()
		for i, e := range proj.kept {
			if !bytes.Equal(e.Payload, want[i].Payload) || !bytes.Equal(e.Metadata, want[i].Metadata) || e.EventType != want[i].EventType {
				t.Fatalf("event %d is %s %s %s, want %s %s %s", i, e.EventType, e.Payload, e.Metadata,
					want[i].EventType, want[i].Payload, want[i].Metadata)
			}
		}
	}
	check()
	for i := range proj.kept {
		proj.kept[i].Payload = append(proj.kept[i].Payload, "garbage"...)
		proj.kept[i].Payload = proj.kept[i].Payload[:len(proj.kept[i].Payload)-len("garbage")]
	}
	check()
}
