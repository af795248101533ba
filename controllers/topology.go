// The topology switch in the database, before any pod is added or removed.

package controllers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/projectionist/projectionist/pkg/projection"
)

// switchTopology sets the projection's partition count in the database to
// spec.replicas before any pod is added or removed, so that running
// workers move to the new generation on their next batch. Replicas 0
// pauses the projection: the topology is left as it is.
func (r *ProjectionReconciler) switchTopology(ctx context.Context, s *state) error {
	if s.degraded != nil || s.stopped() {
		return nil
	}
	name := s.projection.EffectiveProjectionName()
	// SetTopologyAs is idempotent and reports the count it found, so
	// there is no read before it; as the operator it also claims the
	// topology, so that no standalone processor changes it behind us.
	// Owner: a topology this switch creates is this Projection's, and one
	// another Projection claimed since claimProjectionName is left alone.
	var c projection.TopologyChange
	var owned *projection.TopologyOwnedError
	err := r.dbs.do(ctx, s.pool.db, "switching the topology", topologyTimeout, func(ctx context.Context) (err error) {
		c, err = projection.SetTopologyAs(ctx, s.pool.pool, name, int(s.desired),
			projection.TopologyOptions{ManagedBy: projection.ManagerOperator, Owner: ownerOf(s.projection),
				Logger: slog.New(logr.ToSlogHandler(log.FromContext(ctx)))})
		if errors.As(err, &owned) {
			return nil
		}
		return err
	})
	if owned != nil {
		s.notOwner(owned)
		return nil
	}
	if err != nil {
		s.degraded = &problem{reasonOf(err),
			fmt.Sprintf("switching projection %s to %d partitions: %s", name, s.desired, redactErr(err, s.pool.dsn))}
		return nil
	}
	if c.Before.TotalPartitions != c.After.TotalPartitions {
		s.switched = &switchEvent{from: c.Before.TotalPartitions, to: c.After.TotalPartitions, generation: c.After.Generation}
	}
	return nil
}
