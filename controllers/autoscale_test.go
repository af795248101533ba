package controllers

import (
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/pkg/projection"
)

func TestAutoscaleConfigDefaults(t *testing.T) {
	c := autoscaleConfigOf(&v1alpha1.AutoscalingSpec{MaxReplicas: 8})
	want := autoscaleConfig{min: 1, max: 8, target: v1alpha1.DefaultTargetLagSeconds * time.Second,
		upWindow: defaultScaleUpWindow, downWindow: defaultScaleDownWindow}
	if c != want {
		t.Errorf("defaults %+v, want %+v", c, want)
	}
	c = autoscaleConfigOf(&v1alpha1.AutoscalingSpec{MinReplicas: ptr.To[int32](2), MaxReplicas: 4, TargetLagSeconds: ptr.To[int32](5),
		ScaleUpStabilizationWindow: &metav1.Duration{}, ScaleDownStabilizationWindow: &metav1.Duration{Duration: time.Minute}})
	want = autoscaleConfig{min: 2, max: 4, target: 5 * time.Second, downWindow: time.Minute}
	if c != want {
		t.Errorf("set %+v, want %+v", c, want)
	}
}

func TestRecommend(t *testing.T) {
	c := autoscaleConfig{min: 1, max: 8, target: 2 * time.Second}
	for _, tc := range []struct {
		name string
		m    measurement
		want int32
		why  string
	}{
		{"above the target: the backlog within the target", measurement{current: 1, lagSeconds: 10, lagEvents: 4000, appendRate: 0, capacity: 500},
			4, "passing 4000 events within it while 0 a second are appended needs 4 partitions of 500 events a second"},
		{"above the target: the appends too", measurement{current: 1, lagSeconds: 10, lagEvents: 2000, appendRate: 1000, capacity: 500},
			4, "while 1000 a second are appended"},
		{"above the target: never fewer than now", measurement{current: 6, lagSeconds: 3, lagEvents: 100, appendRate: 0, capacity: 500},
			6, "needs 1 partition of 500 events a second; keeping the 6 partitions running"},
		{"above the target, throughput unknown: in proportion", measurement{current: 2, lagSeconds: 5, lagEvents: 100, appendRate: -1},
			5, "not measured yet: 2 partitions times 2.5, at least one more: 5 partitions"},
		{"above the target, throughput unknown: at least one more", measurement{current: 2, lagSeconds: 2.1, lagEvents: 100, appendRate: -1},
			3, "not measured yet"},
		{"above the target: at most max", measurement{current: 2, lagSeconds: 100, lagEvents: 1e6, appendRate: 0, capacity: 10},
			8, "; spec.autoscaling allows 1 to 8: 8 partitions"},
		{"within the target: kept", measurement{current: 3, lagSeconds: 1.5, lagEvents: 300, appendRate: 100, capacity: 500},
			3, "within the target 2s: keeping 3 partitions"},
		{"idle: min", measurement{current: 4, lagSeconds: 0, lagEvents: 0, appendRate: 0, capacity: 500},
			1, "nothing to pass and nothing appended"},
		{"under half: what the appends need, with headroom", measurement{current: 4, lagSeconds: 0.2, lagEvents: 10, appendRate: 800, capacity: 500},
			3, "800 events a second appended need 3 partitions of 500 events a second"},
		{"under half: never more than now", measurement{current: 2, lagSeconds: 0.2, lagEvents: 10, appendRate: 5000, capacity: 500},
			2, "keeping 2 partitions, which keep up with the 5000 events a second appended"},
		// The reading: the message said "need 3 partitions" while
		// the recommendation was 1.
		{"under half, the measured throughput says more: the count kept, and said so",
			measurement{current: 1, lagSeconds: 0, lagEvents: 0, appendRate: 1268, capacity: 560},
			1, "lag 0s is under half the target 2s: keeping 1 partition, which keeps up with the 1268 events a second appended (at the measured 560 events a second a partition they would need 3 partitions"},
		{"under half, throughput unknown: one fewer", measurement{current: 3, lagSeconds: 0, lagEvents: 0, appendRate: 50},
			2, "not measured yet: one partition fewer"},
		{"under half, throughput unknown, at min: kept", measurement{current: 1, lagSeconds: 0.5, lagEvents: 3, appendRate: 50},
			1, "keeping 1 partition, minReplicas"},
		{"first reading, no rate yet: kept", measurement{current: 3, lagSeconds: 0, lagEvents: 0, appendRate: -1},
			3, "keeping 3 partitions until the append rate is measured"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, why := recommend(c, tc.m)
			if n != tc.want || !strings.Contains(why, tc.why) || !strings.Contains(why, partitions(int(n))) {
				t.Errorf("recommend(%+v) = %d, %q; want %d, naming it and containing %q", tc.m, n, why, tc.want, tc.why)
			}
		})
	}
}

// The windows: a count goes up only once every reading of the scale-up
// window asked for more, down only once every reading of the scale-down
// window asked for less, and neither before the autoscaler has watched for
// a whole window; a lag swinging around the target moves nothing.
func TestAutoscalerWindows(t *testing.T) {
	c := autoscaleConfig{min: 1, max: 8, target: 10 * time.Second, upWindow: 20 * time.Second, downWindow: 60 * time.Second}
	t0 := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakePassiveClock(t0)
	a := &autoscaler{partitions: 2, clock: clk}
	head := int64(0)
	step := func(sec int, lagSeconds float64, lag int64, appended int64) int32 {
		t.Helper()
		head += appended
		clk.SetTime(t0.Add(time.Duration(sec) * time.Second))
		next, _, why, _ := a.observe(c, reading{at: clk.Now(), head: head, lag: lag, partitions: 2, generation: 1}, lagSeconds)
		if next != a.partitions {
			t.Logf("t=%ds: %d -> %d (%s)", sec, a.partitions, next, why)
		}
		a.partitions = next
		return next
	}
	// Lag swinging across the target: the unmeasured throughput asks for
	// more on the high readings only, and the window takes the fewest.
	for sec := 0; sec <= 100; sec += 5 {
		lagSeconds := 4.0
		if sec%10 == 5 {
			lagSeconds = 11
		}
		if n := step(sec, lagSeconds, 100, 50); n != 2 {
			t.Fatalf("t=%ds: %d partitions while the lag swings around the target, want 2 kept", sec, n)
		}
	}
	// Above the target for the whole window: up, once the window is full.
	for sec := 105; sec < 125; sec += 5 {
		if n := step(sec, 30, 1000, 50); n != 2 {
			t.Fatalf("t=%ds: %d partitions before the scale-up window is full, want 2", sec, n)
		}
	}
	if n := step(125, 30, 1000, 50); n <= 2 {
		t.Fatalf("after 20s above the target: %d partitions, want more than 2", n)
	}
	up := a.partitions
	// Idle: down only after a whole scale-down window of idle readings.
	for sec := 130; sec < 190; sec += 5 {
		if n := step(sec, 0, 0, 0); n != up {
			t.Fatalf("t=%ds: %d partitions within the scale-down window, want %d", sec, n, up)
		}
	}
	for sec := 190; sec < 200; sec += 5 {
		step(sec, 0, 0, 0)
	}
	if want := halfOf(up); a.partitions != want {
		t.Errorf("after a whole window idle: %d partitions, want half of %d, %d", a.partitions, up, want)
	}

	// A new watch (an operator that started over) waits a whole window
	// before it scales up, even with the lag far above the target.
	a = &autoscaler{partitions: 1, clock: clk}
	for sec := 0; sec < 20; sec += 5 {
		if n := step(sec, 60, 5000, 100); n != 1 {
			t.Fatalf("new watch, t=%ds: %d partitions, want 1 until it has watched for the scale-up window", sec, n)
		}
	}
	if n := step(20, 60, 5000, 100); n == 1 {
		t.Errorf("new watch after the window: still 1 partition")
	}
}

// Throughput is measured only while every partition has a backlog, and
// not across a topology change.
func TestAutoscalerMeasuresThroughput(t *testing.T) {
	c := autoscaleConfig{min: 1, max: 8, target: 2 * time.Second}
	t0 := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	a := &autoscaler{partitions: 2, clock: clocktesting.NewFakePassiveClock(t0)}
	at := func(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }
	a.observe(c, reading{at: at(0), head: 10_000, lag: 6000, partitions: 2, generation: 1, busy: true}, 5)
	// 10s later: 2000 appended, lag down to 4000: 4000 passed by 2
	// partitions in 10s, 200 a second each.
	_, _, _, m := a.observe(c, reading{at: at(10), head: 12_000, lag: 4000, partitions: 2, generation: 1, busy: true}, 5)
	if m.capacity != 200 || m.appendRate != 200 {
		t.Fatalf("capacity %v, append rate %v; want 200, 200", m.capacity, m.appendRate)
	}
	// A topology change in between: no measurement.
	_, _, _, m = a.observe(c, reading{at: at(20), head: 12_000, lag: 100, partitions: 3, generation: 2, busy: true}, 5)
	if m.capacity != 200 {
		t.Errorf("capacity %v after a topology change, want 200 kept", m.capacity)
	}
	// Not every partition busy: no measurement.
	a.observe(c, reading{at: at(30), head: 12_000, lag: 0, partitions: 3, generation: 2}, 0)
	_, _, _, m = a.observe(c, reading{at: at(40), head: 12_000, lag: 0, partitions: 3, generation: 2}, 0)
	if m.capacity != 200 || m.appendRate != 0 {
		t.Errorf("idle: capacity %v, append rate %v; want 200, 0", m.capacity, m.appendRate)
	}
}

// A partition is busy only with a full batch waiting: one keeping up with
// a steady stream has a few events to pass at any reading, and measuring
// it would take the append rate for its throughput.
func TestReadingBusy(t *testing.T) {
	progress := func(lags ...int64) *projection.Progress {
		pr := &projection.Progress{Topology: projection.Topology{TotalPartitions: len(lags), Generation: 1}}
		for k, l := range lags {
			pr.Partitions = append(pr.Partitions, projection.PartitionProgress{PartitionKey: k, Lag: l})
			pr.Lag += l
		}
		return pr
	}
	for _, tc := range []struct {
		name string
		pr   *projection.Progress
		want bool
	}{
		{"every partition a batch behind", progress(100, 250, 4000), true},
		{"one keeping up with a few events", progress(100, 3, 4000), false},
		{"one caught up", progress(500, 0), false},
		{"one beyond the count's limit", progress(500, projection.LagCountLimit), false},
		{"a reading that stopped at the count's limit", func() *projection.Progress {
			pr := progress(500, 600)
			pr.LagAtLeast = true
			return pr
		}(), false},
		{"no topology", progress(), false},
	} {
		if got := readingOf(tc.pr, 100).busy; got != tc.want {
			t.Errorf("%s: busy %t, want %t", tc.name, got, tc.want)
		}
	}
}

// The scale-down's bounds, as a table of passes on a fake clock: a
// scale-down removes at most half the partitions per scale-down window,
// none before a whole window after autoscaling is enabled or its spec
// changes, and the status message names the count chosen and what held
// it back from the recommendation.
func TestAutoscalerScaleDownBounds(t *testing.T) {
	window := autoscaleConfig{min: 1, max: 8, target: 5 * time.Second, upWindow: 30 * time.Second, downWindow: 5 * time.Minute}
	shorter := window
	shorter.downWindow = time.Minute
	type pass struct {
		at time.Duration // since autoscaling was enabled
		// appended is the events appended since the last pass, lag and
		// lagSeconds the events left to pass and the oldest one's age.
		appended, lag int64
		lagSeconds    float64
		// config, when set, is a new spec.autoscaling from this pass on.
		config *autoscaleConfig
		want   int32
		// message is in status.autoscaling.message.
		message string
	}
	idle := func(at time.Duration, want int32, message string) pass {
		return pass{at: at, want: want, message: message}
	}
	// steady is 100 events a second appended over 10 s, passed as they
	// come (never a full batch waiting: the throughput stays unmeasured,
	// so each reading asks for one partition fewer).
	steady := func(at time.Duration, want int32, message string) pass {
		return pass{at: at, appended: 1000, lag: 3, want: want, message: message}
	}
	// The first reading has no append rate yet, and asks for the count
	// in use.
	const first = "lag 0s is under half the target 5s: keeping %s until the append rate is measured"
	for _, tc := range []struct {
		name   string
		from   int32
		passes []pass
	}{{
		name: "6 idle: halved once per window, not 6 -> 1 in one step", from: 6,
		passes: []pass{
			idle(0, 6, "keeping 6 partitions: "+fmt.Sprintf(first, "6 partitions")),
			idle(10*time.Second, 6, "keeping 6 partitions: nothing to pass and nothing appended: minReplicas, 1 partition; "+
				"removing partitions waits a whole scale-down window (5m0s) after the autoscaler starts watching or spec.autoscaling changes"),
			idle(4*time.Minute+50*time.Second, 6, "keeping 6 partitions: nothing to pass"),
			// The first reading's 6 is still within the window.
			idle(5*time.Minute, 6, "keeping 6 partitions: nothing to pass and nothing appended: minReplicas, 1 partition; "+
				"removing partitions waits until every recommendation of the scale-down window (5m0s) asks for fewer"),
			idle(5*time.Minute+10*time.Second, 3, "scaling from 6 to 3 partitions: nothing to pass and nothing appended: minReplicas, 1 partition; "+
				"3 partitions, as a scale-down removes at most half the partitions per scale-down window (5m0s)"),
			idle(5*time.Minute+20*time.Second, 3, "keeping 3 partitions: nothing to pass and nothing appended: minReplicas, 1 partition; "+
				"removing more waits a whole scale-down window (5m0s) after the last scale-down"),
			idle(10*time.Minute, 3, "removing more waits a whole scale-down window (5m0s) after the last scale-down"),
			idle(10*time.Minute+10*time.Second, 2, "scaling from 3 to 2 partitions: nothing to pass and nothing appended: minReplicas, 1 partition; "+
				"2 partitions, as a scale-down removes at most half"),
			idle(15*time.Minute+10*time.Second, 1, "scaling from 2 to 1 partition: nothing to pass and nothing appended: minReplicas, 1 partition"),
			idle(20*time.Minute, 1, "keeping 1 partition: nothing to pass and nothing appended: minReplicas, 1 partition"),
		},
	}, {
		name: "enabled at 2 under steady load: no scale-down before a whole window", from: 2,
		passes: []pass{
			steady(0, 2, "keeping 2 partitions: "+fmt.Sprintf(first, "2 partitions")),
			steady(10*time.Second, 2, "keeping 2 partitions: lag 0s is under half the target 5s, and a partition's throughput is not measured yet: "+
				"one partition fewer, 1 partition; removing partitions waits a whole scale-down window (5m0s)"),
			steady(20*time.Second, 2, "removing partitions waits a whole scale-down window (5m0s)"),
			steady(4*time.Minute+50*time.Second, 2, "removing partitions waits a whole scale-down window (5m0s)"),
			steady(5*time.Minute, 2, "removing partitions waits until every recommendation of the scale-down window (5m0s) asks for fewer"),
			steady(5*time.Minute+10*time.Second, 1, "scaling from 2 to 1 partition: lag 0s is under half the target 5s, "+
				"and a partition's throughput is not measured yet: one partition fewer, 1 partition"),
		},
	}, {
		name: "a changed spec.autoscaling: a whole window of the new spec again", from: 4,
		passes: []pass{
			idle(0, 4, "keeping 4 partitions: "+fmt.Sprintf(first, "4 partitions")),
			idle(10*time.Second, 4, "removing partitions waits a whole scale-down window (5m0s)"),
			{at: 4 * time.Minute, config: &shorter, want: 4, message: "keeping 4 partitions: nothing to pass and nothing appended: minReplicas, 1 partition; " +
				"removing partitions waits a whole scale-down window (1m0s) after the autoscaler starts watching or spec.autoscaling changes"},
			idle(4*time.Minute+50*time.Second, 4, "removing partitions waits a whole scale-down window (1m0s)"),
			idle(5*time.Minute, 2, "scaling from 4 to 2 partitions: nothing to pass and nothing appended: minReplicas, 1 partition; 2 partitions, as a scale-down removes at most half"),
			idle(5*time.Minute+50*time.Second, 2, "keeping 2 partitions: nothing to pass and nothing appended: minReplicas, 1 partition; "+
				"removing more waits a whole scale-down window (1m0s) after the last scale-down"),
			idle(6*time.Minute, 1, "scaling from 2 to 1 partition"),
		},
	}, {
		name: "a reading asking for more within the window holds the scale-down; then the most any asked for", from: 4,
		passes: []pass{
			idle(0, 4, "keeping 4 partitions"),
			idle(10*time.Second, 4, "keeping 4 partitions"),
			{at: 2 * time.Minute, appended: 1000, lag: 500, lagSeconds: 4, want: 4, message: "keeping 4 partitions: lag 4s is within the target 5s: keeping 4 partitions"},
			steady(3*time.Minute, 4, "keeping 4 partitions: lag 0s is under half the target 5s, and a partition's throughput is not measured yet: one partition fewer, 3 partitions"),
			idle(5*time.Minute+10*time.Second, 4, "keeping 4 partitions: nothing to pass and nothing appended: minReplicas, 1 partition; "+
				"removing partitions waits until every recommendation of the scale-down window (5m0s) asks for fewer"),
			idle(7*time.Minute+10*time.Second, 3, "scaling from 4 to 3 partitions: nothing to pass and nothing appended: minReplicas, 1 partition; "+
				"3 partitions, the most any recommendation of the scale-down window (5m0s) asked for"),
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t0 := time.Date(2026, 12, 8, 1, 0, 0, 0, time.UTC)
			clk := clocktesting.NewFakePassiveClock(t0)
			a := &autoscaler{partitions: tc.from, clock: clk}
			c, head := window, int64(0)
			for _, p := range tc.passes {
				if p.config != nil {
					c = *p.config
				}
				clk.SetTime(t0.Add(p.at))
				head += p.appended
				next, rec, why, _ := a.observe(c, reading{at: clk.Now(), head: head, lag: p.lag, partitions: int(a.partitions), generation: 1}, p.lagSeconds)
				msg := autoscaleMessage(a.partitions, next, why)
				a.partitions = next
				if next != p.want || !strings.Contains(msg, p.message) {
					t.Errorf("at %s: %d partitions (recommendation %d), message %q; want %d, containing %q", p.at, next, rec, msg, p.want, p.message)
				}
				// The message leads with the count chosen.
				if lead := "keeping " + partitions(int(next)) + ":"; !strings.HasPrefix(msg, lead) && !strings.Contains(msg, " to "+partitions(int(next))+":") {
					t.Errorf("at %s: message %q does not lead with the %d partitions chosen", p.at, msg, next)
				}
			}
		})
	}
}
