package demo_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/projectionist/projectionist/internal/loadgen"
	"github.com/projectionist/projectionist/pkg/demo"
	"github.com/projectionist/projectionist/pkg/projection"
	"github.com/projectionist/projectionist/pkg/projection/projectiontest"
)

// BenchmarkDemoProjections measures each demo projection over a generated
// log of 20k events (1,000 users and their orders), one partition in
// batches of 1000, applied one event at a time through Handle
// (handler=event) or a batch at a time through HandleBatch
// (handler=batch). Each iteration starts from scratch (read model emptied,
// checkpoints reset, outside the timer); events/s counts the events in the
// projection's scope.
//
//	go test ./pkg/demo -run '^$' -bench DemoProjections -benchtime 3x -count 3
func BenchmarkDemoProjections(b *testing.B) {
	ctx := context.Background()
	pool := projectiontest.NewPool(b)
	if err := demo.EnsureSchema(ctx, pool); err != nil {
		b.Fatal(err)
	}
	if _, err := loadgen.Generate(ctx, pool, loadgen.Options{Count: 20_000, Aggregates: 1_000, Concurrency: 4}); err != nil {
		b.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "VACUUM (ANALYZE) events"); err != nil {
		b.Fatal(err)
	}
	for _, p := range demo.Projections() {
		var types []string
		if s, ok := p.(projection.ScopedProjection); ok {
			types = s.AggregateTypes()
		}
		inScope, err := demo.CountEvents(ctx, pool, types...)
		if err != nil {
			b.Fatal(err)
		}
		for _, h := range []struct {
			name string
			proj projection.Projection
		}{{"event", perEvent{p}}, {"batch", p}} {
			b.Run(p.Name()+"/handler="+h.name, func(b *testing.B) {
				cfg := projection.DefaultProcessorConfig()
				cfg.BatchSize = 1000
				proc := projection.NewProcessor(pool, nil, cfg)
				for b.Loop() {
					b.StopTimer()
					if err := projection.ResetProjection(ctx, pool, p.Name()); err != nil {
						b.Fatal(err)
					}
					if _, err := pool.Exec(ctx, "TRUNCATE "+pgx.Identifier{readModelTables[p.Name()]}.Sanitize()); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
					if err := proc.CatchUp(ctx, h.proj); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(inScope)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
			})
		}
	}
}
