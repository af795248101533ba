// What a reconcile reads back for status: progress from the database,
// failures from the worker pods.

package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/controllers/resources"
	"github.com/projectionist/projectionist/pkg/projection"
)

// observeProgress reads checkpoints, head and lag for status. After a
// slow read in this pass it reads nothing (the pass has waited once
// already), and the status keeps its last reading.
func (r *ProjectionReconciler) observeProgress(ctx context.Context, s *state) error {
	if s.pool.pool == nil || s.nameInUse || s.slowRead != nil {
		return nil // another Projection's progress is not this one's; a slow read waits for the next pass
	}
	var progress projection.Progress
	var deadLetters int64
	var samples []projection.DeadLetter
	err := r.dbs.do(ctx, s.pool.db, "reading progress", databaseTimeout, func(ctx context.Context) (err error) {
		if s.progress != nil && s.switched == nil && (s.rebuild == nil || !s.rebuild.changed()) {
			// The autoscaler's reading: neither the topology nor a
			// rebuild has moved since.
			progress = *s.progress
		} else if progress, err = projection.GetProgress(ctx, s.pool.pool, s.projection.EffectiveProjectionName()); err != nil {
			return err
		}
		deadLetters, err = projection.CountDeadLetters(ctx, s.pool.pool, s.projection.EffectiveProjectionName())
		if err != nil || deadLetters == 0 {
			return err
		}
		samples, err = projection.ListDeadLetters(ctx, s.pool.pool, s.projection.EffectiveProjectionName(),
			projection.DeadLetterFilter{Limit: v1alpha1.MaxDeadLetterSamples})
		return err
	})
	if err != nil {
		s.noteFailure(err)
		return nil
	}
	s.progress = &progress
	s.deadLetters, s.deadLettersBefore = &deadLetters, s.projection.Status.DeadLetters
	s.deadLetterSamples = deadLetterSamples(samples, s.pool.dsn)
	return nil
}

// observePods finds the last failure of a worker container, which the
// worker writes (through FallbackToLogsOnError) as its last log line: an
// unknown projection name, a poison event under the Stop policy.
func (r *ProjectionReconciler) observePods(ctx context.Context, s *state) error {
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.InNamespace(s.projection.Namespace),
		client.MatchingLabels(resources.SelectorLabels(s.projection))); err != nil {
		return fmt.Errorf("listing worker pods: %w", err)
	}
	for _, pod := range pods.Items {
		for _, cs := range pod.Status.ContainerStatuses {
			t := cs.LastTerminationState.Terminated
			if t == nil {
				t = cs.State.Terminated
			}
			if t == nil || t.ExitCode == 0 || (cs.Ready && cs.State.Running != nil && cs.RestartCount == 0) {
				continue
			}
			if cs.State.Running != nil && cs.Ready {
				continue // recovered since
			}
			msg := t.Message
			if len(msg) > 512 {
				msg = msg[len(msg)-512:]
			}
			if s.pool.dsn != "" {
				msg = redact(msg, s.pool.dsn)
			}
			s.workerFailure = &problem{v1alpha1.ReasonWorkerFailing,
				fmt.Sprintf("pod %s exited with code %d (restarts: %d): %s", pod.Name, t.ExitCode, cs.RestartCount, msg)}
			return nil
		}
	}
	return nil
}
