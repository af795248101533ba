// The autoscaler (spec.autoscaling): the partition count chosen from the
// measured lag and throughput, before the topology switch.

package controllers

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/pkg/projection"
)

// Defaults of spec.autoscaling's windows, as the CRD sets them.
const (
	defaultScaleUpWindow   = 30 * time.Second
	defaultScaleDownWindow = 5 * time.Minute
)

// scaleDownHeadroom is how much more than the append rate the partitions
// left after a scale-down must be able to pass.
const scaleDownHeadroom = 1.25

// autoscaleConfig is a Projection's spec.autoscaling with its defaults.
type autoscaleConfig struct {
	min, max   int32
	target     time.Duration
	upWindow   time.Duration
	downWindow time.Duration
}

func autoscaleConfigOf(as *v1alpha1.AutoscalingSpec) autoscaleConfig {
	c := autoscaleConfig{
		min:        max(1, ptr.Deref(as.MinReplicas, 1)),
		max:        as.MaxReplicas,
		target:     time.Duration(ptr.Deref(as.TargetLagSeconds, v1alpha1.DefaultTargetLagSeconds)) * time.Second,
		upWindow:   defaultScaleUpWindow,
		downWindow: defaultScaleDownWindow,
	}
	if w := as.ScaleUpStabilizationWindow; w != nil {
		c.upWindow = max(0, w.Duration)
	}
	if w := as.ScaleDownStabilizationWindow; w != nil {
		c.downWindow = max(0, w.Duration)
	}
	c.max = max(c.max, c.min)
	return c
}

func (c autoscaleConfig) clamp(n int32) int32 { return min(max(n, c.min), c.max) }

// reading is one progress reading, as the autoscaler keeps it.
type reading struct {
	at         time.Time // the database's clock
	head       int64
	lag        int64
	generation int64
	partitions int
	// busy: every partition of the topology had at least a full batch
	// waiting, so that it was fetching batches as fast as it can rather
	// than waiting for events (a partition keeping up with a steady
	// stream always has a few events to pass, and what it passes then is
	// the append rate, not what it could pass); and the reading did not
	// stop at the lag count's limit (beyond which the counts say "at
	// least").
	busy bool
}

// readingOf is the autoscaler's reading of pr, for a projection whose
// batches hold batchSize events.
func readingOf(pr *projection.Progress, batchSize int64) reading {
	rd := reading{at: pr.Now, head: pr.HeadPosition, lag: pr.Lag,
		generation: pr.Topology.Generation, partitions: pr.Topology.TotalPartitions}
	rd.busy = rd.partitions > 0 && len(pr.Partitions) == rd.partitions && !pr.LagAtLeast
	for _, pp := range pr.Partitions {
		if pp.Lag < max(1, batchSize) || pp.Lag >= projection.LagCountLimit {
			rd.busy = false
		}
	}
	return rd
}

// measurement is what the autoscaler knows when it recommends a count.
type measurement struct {
	current    int32   // the count in use
	lagSeconds float64 // age of the oldest event some partition has to pass
	lagEvents  int64
	// appendRate is events appended per second; negative until two
	// readings give it.
	appendRate float64
	// capacity is what one busy partition passes per second; 0 until
	// measured.
	capacity float64
}

// recommend is the count one measurement asks for, and why (the why
// names that count). Above the target lag it adds the partitions that
// pass the backlog within the target while keeping up with the appends
// (or, before the throughput is measured, grows the count in proportion
// to the lag); under half the target it keeps the partitions the append
// rate needs with a quarter to spare, never more than now (or, before the
// throughput is measured, one fewer); in between it keeps the count, so
// that a lag near the target does not flap.
func recommend(c autoscaleConfig, m measurement) (int32, string) {
	target := c.target.Seconds()
	lag := fmt.Sprintf("lag %s", time.Duration(m.lagSeconds*float64(time.Second)).Round(100*time.Millisecond))
	current := partitions(int(m.current))
	var n int32
	var why string
	switch {
	case m.lagSeconds > target && m.capacity > 0:
		need := ceilCount((max(0, m.appendRate) + float64(m.lagEvents)/target) / m.capacity)
		n = max(m.current, need)
		why = fmt.Sprintf("%s is above the target %s: passing %d events within it while %d a second are appended needs %s of %d events a second",
			lag, c.target, m.lagEvents, int64(max(0, m.appendRate)), partitions(int(need)), int64(m.capacity))
		if need < m.current {
			why += fmt.Sprintf("; keeping the %s running, as the count never goes down while the lag is above the target", current)
		}
	case m.lagSeconds > target:
		n = max(m.current+1, ceilCount(float64(m.current)*m.lagSeconds/target))
		why = fmt.Sprintf("%s is above the target %s, and a partition's throughput is not measured yet: %s times %.1f, at least one more: %s",
			lag, c.target, current, m.lagSeconds/target, partitions(int(n)))
	case m.lagSeconds > target/2:
		n = m.current
		why = fmt.Sprintf("%s is within the target %s: keeping %s", lag, c.target, current)
	case m.appendRate == 0 && m.lagEvents == 0:
		n = c.min
		why = fmt.Sprintf("nothing to pass and nothing appended: minReplicas, %s", partitions(int(n)))
	case m.appendRate > 0 && m.capacity > 0:
		need := ceilCount((m.appendRate*scaleDownHeadroom + float64(m.lagEvents)/target) / m.capacity)
		n = min(m.current, need)
		if need < m.current {
			why = fmt.Sprintf("%s is under half the target %s: %d events a second appended need %s of %d events a second, with a quarter to spare",
				lag, c.target, int64(m.appendRate), partitions(int(need)), int64(m.capacity))
		} else {
			// The measured throughput says more are needed, the lag says
			// the running ones keep up: the lag is what the count is for.
			keep := "keep"
			if m.current == 1 {
				keep = "keeps"
			}
			why = fmt.Sprintf("%s is under half the target %s: keeping %s, which %s up with the %d events a second appended "+
				"(at the measured %d events a second a partition they would need %s, with a quarter to spare; partitions are added only above the target)",
				lag, c.target, current, keep, int64(m.appendRate), int64(m.capacity), partitions(int(need)))
		}
	case m.appendRate > 0 && m.current > c.min:
		// No partition has been busy long enough to measure what it
		// passes: try one fewer, and let the lag say whether that was one
		// too many (the windows keep this to one step per window).
		n = m.current - 1
		why = fmt.Sprintf("%s is under half the target %s, and a partition's throughput is not measured yet: one partition fewer, %s",
			lag, c.target, partitions(int(n)))
	case m.appendRate > 0:
		n = m.current
		why = fmt.Sprintf("%s is under half the target %s: keeping %s, minReplicas", lag, c.target, current)
	default:
		n = m.current
		why = fmt.Sprintf("%s is under half the target %s: keeping %s until the append rate is measured",
			lag, c.target, current)
	}
	if clamped := c.clamp(n); clamped != n {
		why += fmt.Sprintf("; spec.autoscaling allows %d to %d: %s", c.min, c.max, partitions(int(clamped)))
		n = clamped
	}
	return n, why
}

func ceilCount(x float64) int32 {
	if x >= v1alpha1.MaxReplicas {
		return v1alpha1.MaxReplicas
	}
	return int32(math.Ceil(x))
}

// autoscaler is one Projection's readings and choices, kept between
// reconciles (the stabilization windows and the throughput need the
// past). An operator that starts over, or takes over as leader, starts
// from status.autoscaling.partitions and watches for a whole window
// before it changes the count. The windows are measured on clock, the
// operator's; rates on the database's.
type autoscaler struct {
	mu    sync.Mutex
	uid   types.UID
	clock clock.PassiveClock
	// partitions is the chosen count; 0 until the first pass.
	partitions int32
	prev       *reading
	capacity   float64
	recs       []recommendation
	// since is when the current watch started (the first reading after
	// the operator started, the projection resumed or a rebuild's reset).
	since time.Time
	// config is spec.autoscaling as last seen, and configuredAt when it
	// was first seen or last changed.
	config       autoscaleConfig
	configuredAt time.Time
	// scaledDownAt is when the autoscaler last removed partitions.
	scaledDownAt time.Time
	// readAt is when the last reading was taken.
	readAt time.Time
}

type recommendation struct {
	at time.Time
	n  int32
}

// observe takes a reading and returns the count to run, the
// measurement's recommendation, and why: the recommendation's reason
// followed by what held the count back from it, if anything.
//
// The count goes up to the fewest partitions any recommendation of the
// scale-up window asked for, once the autoscaler has watched for a whole
// scale-up window. It goes down to the most any recommendation of the
// scale-down window asked for, but by at most half (to no fewer than
// ceil(n/2) of n partitions) at a time, and only once a whole scale-down
// window has passed since the watch started, since spec.autoscaling was
// set or last changed, and since the last scale-down: at most one halving
// per window.
func (a *autoscaler) observe(c autoscaleConfig, rd reading, lagSeconds float64) (next, rec int32, why string, m measurement) {
	now := a.clock.Now()
	if a.config != c || a.configuredAt.IsZero() {
		a.config, a.configuredAt = c, now
	}
	m = measurement{current: a.partitions, lagSeconds: lagSeconds, lagEvents: rd.lag, appendRate: -1, capacity: a.capacity}
	if p := a.prev; p != nil && rd.at.After(p.at) {
		dt := rd.at.Sub(p.at).Seconds()
		m.appendRate = max(0, float64(rd.head-p.head)/dt)
		if p.busy && rd.busy && p.generation == rd.generation && p.partitions == rd.partitions {
			// Every partition had a backlog throughout: what they passed
			// is what they can pass.
			if passed := float64(p.lag + (rd.head - p.head) - rd.lag); passed > 0 {
				per := passed / dt / float64(rd.partitions)
				if a.capacity == 0 {
					a.capacity = per
				} else {
					a.capacity = (a.capacity + per) / 2
				}
				m.capacity = a.capacity
			}
		}
	}
	a.prev = &rd
	if a.since.IsZero() {
		a.since = now
	}
	rec, why = recommend(c, m)
	a.recs = append(a.recs, recommendation{now, rec})
	keep := max(c.upWindow, c.downWindow)
	for len(a.recs) > 1 && now.Sub(a.recs[0].at) > keep {
		a.recs = a.recs[1:]
	}
	up, down := rec, rec
	for _, r := range a.recs {
		if now.Sub(r.at) <= c.upWindow {
			up = min(up, r.n)
		}
		if now.Sub(r.at) <= c.downWindow {
			down = max(down, r.n)
		}
	}
	next = a.partitions
	switch {
	case rec > a.partitions && now.Sub(a.since) < c.upWindow:
		why += fmt.Sprintf("; adding partitions waits until the autoscaler has watched the projection for a whole scale-up window (%s)", c.upWindow)
	case up > a.partitions:
		next = up
		if up < rec {
			why += fmt.Sprintf("; %s, the fewest any recommendation of the scale-up window (%s) asked for", partitions(int(up)), c.upWindow)
		}
	case rec > a.partitions:
		why += fmt.Sprintf("; adding partitions waits until every recommendation of the scale-up window (%s) asks for more", c.upWindow)
	case rec >= a.partitions:
	case now.Sub(a.since) < c.downWindow || now.Sub(a.configuredAt) < c.downWindow:
		why += fmt.Sprintf("; removing partitions waits a whole scale-down window (%s) after the autoscaler starts watching or spec.autoscaling changes",
			c.downWindow)
	case !a.scaledDownAt.IsZero() && now.Sub(a.scaledDownAt) < c.downWindow:
		why += fmt.Sprintf("; removing more waits a whole scale-down window (%s) after the last scale-down", c.downWindow)
	case down >= a.partitions:
		why += fmt.Sprintf("; removing partitions waits until every recommendation of the scale-down window (%s) asks for fewer", c.downWindow)
	default:
		next = max(down, halfOf(a.partitions))
		switch {
		case next > down:
			why += fmt.Sprintf("; %s, as a scale-down removes at most half the partitions per scale-down window (%s)",
				partitions(int(next)), c.downWindow)
		case down > rec:
			why += fmt.Sprintf("; %s, the most any recommendation of the scale-down window (%s) asked for", partitions(int(down)), c.downWindow)
		}
		a.scaledDownAt = now
	}
	return next, rec, why, m
}

// autoscaleMessage is status.autoscaling.message: the decision first, so
// that it never reads as a count other than the one chosen, then why.
func autoscaleMessage(from, to int32, why string) string {
	if from == to {
		return fmt.Sprintf("keeping %s: %s", partitions(int(to)), why)
	}
	return fmt.Sprintf("scaling from %d to %s: %s", from, partitions(int(to)), why)
}

// halfOf is the fewest partitions a scale-down from n may leave.
func halfOf(n int32) int32 { return (n + 1) / 2 }

// forget drops the readings: after a pause the throughput and the windows
// start over.
func (a *autoscaler) forget() {
	a.prev, a.recs, a.since = nil, nil, time.Time{}
}

// autoscaleEvent is a change of the chosen count, for an Event.
type autoscaleEvent struct {
	from, to int32
	why      string
}

// autoscalerOf returns the Projection's autoscaler, a new one for a new
// Projection of the same name.
func (r *ProjectionReconciler) autoscalerOf(key types.NamespacedName, uid types.UID) *autoscaler {
	m := r.memories.of(key, uid)
	if m.autoscaler == nil {
		m.autoscaler = &autoscaler{uid: uid, clock: r.clock()}
	}
	return m.autoscaler
}

// autoscale chooses the partition count of a Projection with
// spec.autoscaling from a progress reading, which later phases reuse. It
// changes nothing while the Projection is paused or suspended, while a
// rebuild stops and resets the workers, or while the operator cannot read
// the database: the count stays the last one chosen.
func (r *ProjectionReconciler) autoscale(ctx context.Context, s *state) error {
	p := s.projection
	key := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
	if p.Spec.Autoscaling == nil {
		r.memories.of(key, p.UID).autoscaler = nil
		return nil
	}
	c := autoscaleConfigOf(p.Spec.Autoscaling)
	a := r.autoscalerOf(key, p.UID)
	a.mu.Lock()
	defer a.mu.Unlock()
	st := &v1alpha1.AutoscalingStatus{}
	if prev := p.Status.Autoscaling; prev != nil {
		st = prev.DeepCopy()
	}
	if a.partitions == 0 {
		// The count chosen before (this operator's or a predecessor's),
		// else the one running, else spec.replicas.
		a.partitions = st.Partitions
		if a.partitions == 0 {
			a.partitions = p.Status.Partitions
		}
		if a.partitions == 0 {
			a.partitions = p.SpecReplicas()
		}
	}
	if n := c.clamp(a.partitions); n != a.partitions {
		s.autoscaled = &autoscaleEvent{from: a.partitions, to: n,
			why: fmt.Sprintf("spec.autoscaling allows %d to %d partitions", c.min, c.max)}
		a.partitions = n
		st.LastScaleTime = ptr.To(metav1.Now())
	}
	s.autoscaling = st
	defer func() {
		st.Partitions = a.partitions
		if !s.stopped() {
			s.desired = a.partitions
		}
	}()
	switch {
	case s.stopped():
		a.forget()
		st.Message = "paused (spec.replicas 0 or spec.suspend): the autoscaler waits, and watches a whole window again when the projection resumes"
		return nil
	case s.degraded != nil || s.pool.pool == nil:
		return nil // Degraded says why; the count stays
	case rebuildActive(p) != "" && (p.Status.Rebuild == nil || p.Status.Rebuild.Token != rebuildActive(p) ||
		p.Status.Rebuild.Phase == v1alpha1.RebuildStopping || p.Status.Rebuild.Phase == v1alpha1.RebuildResetting):
		a.forget()
		st.Message = "a rebuild stops and resets the workers: the autoscaler waits for the replay"
		return nil
	}
	if a.prev != nil && a.clock.Since(a.readAt) < r.StatusInterval/2 {
		// Too soon after the last reading for a rate (a status write
		// brings a reconcile right away): the count stays.
		return nil
	}
	var pr projection.Progress
	if !r.inDatabase(ctx, s, "reading progress", func(ctx context.Context) (err error) {
		pr, err = projection.GetProgress(ctx, s.pool.pool, p.EffectiveProjectionName())
		return err
	}) {
		return nil
	}
	s.progress = &pr
	lagSeconds := 0.0
	if !pr.OldestUnprocessed.IsZero() {
		lagSeconds = max(0, pr.Now.Sub(pr.OldestUnprocessed).Seconds())
	}
	a.readAt = a.clock.Now()
	next, rec, why, m := a.observe(c, readingOf(&pr, int64(ptr.Deref(p.Spec.BatchSize, projection.DefaultBatchSize))), lagSeconds)
	st.Recommendation, st.Message = rec, truncate(autoscaleMessage(a.partitions, next, why), 1024)
	st.EventsAppendedPerSecond = int64(max(0, m.appendRate))
	st.PartitionEventsPerSecond = int64(m.capacity)
	if next != a.partitions {
		s.autoscaled = &autoscaleEvent{from: a.partitions, to: next, why: why}
		a.partitions = next
		st.LastScaleTime = ptr.To(metav1.NewTime(pr.Now))
	}
	return nil
}
