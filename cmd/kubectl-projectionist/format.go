package main

import (
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/utils/ptr"

	"github.com/projectionist/projectionist/api/v1alpha1"
)

// conditionOrder is the order status shows conditions in; others follow
// in the order of the status.
var conditionOrder = []string{
	v1alpha1.ConditionReady, v1alpha1.ConditionProgressing, v1alpha1.ConditionDegraded,
	v1alpha1.ConditionStalled, v1alpha1.ConditionCaughtUp,
}

// reading is one observation of a Projection's lag, at the time it was
// read from the API server.
type reading struct {
	at  time.Time
	lag int64
}

// estimateETA says how long the projection needs to catch up, from the
// first and the latest reading of a watch. Status holds no rate, so
// without two readings whose lag fell there is no honest estimate, and it
// says "unknown" and why. The rate is net of events appended meanwhile.
func estimateETA(first, last *reading) string {
	switch {
	case last == nil:
		return "unknown"
	case last.lag == 0:
		return "caught up"
	case first == nil || !last.at.After(first.at):
		return "unknown (one reading so far: --watch measures the rate over several)"
	}
	elapsed := last.at.Sub(first.at)
	fell := first.lag - last.lag
	if fell <= 0 {
		return fmt.Sprintf("unknown (lag not falling: %d -> %d events in %s)", first.lag, last.lag, roundDuration(elapsed))
	}
	rate := float64(fell) / elapsed.Seconds()
	eta := time.Duration(float64(last.lag) / rate * float64(time.Second))
	return fmt.Sprintf("about %s (lag fell %d -> %d events in %s, %.0f events/s)",
		roundDuration(eta), first.lag, last.lag, roundDuration(elapsed), rate)
}

// roundDuration rounds d for people: whole seconds, or tenths below 10s.
func roundDuration(d time.Duration) time.Duration {
	if d < 10*time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Second)
}

// age is kubectl's AGE of t at now ("<unknown>" when t is zero).
func age(t metav1.Time, now time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t.Time))
}

// formatStatus is the status command's report of p read at now, with eta
// from estimateETA.
func formatStatus(p *v1alpha1.Projection, now time.Time, eta string) string {
	var b strings.Builder
	st := &p.Status
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "Name:\t%s\n", p.Name)
	fmt.Fprintf(tw, "Namespace:\t%s\n", p.Namespace)
	fmt.Fprintf(tw, "Projection:\t%s\n", p.EffectiveProjectionName())
	fmt.Fprintf(tw, "Suspended:\t%t\n", p.Suspended())
	desired, autoscaled := p.DesiredPartitions()
	by := ""
	if autoscaled {
		by = " (autoscaled)"
	}
	fmt.Fprintf(tw, "Replicas:\t%d desired%s, %d pods, %d ready\n", desired, by, st.Replicas, st.ReadyReplicas)
	if as := p.Spec.Autoscaling; as != nil {
		line := fmt.Sprintf("%d to %d partitions, target lag %ds", ptr.Deref(as.MinReplicas, 1), as.MaxReplicas,
			ptr.Deref(as.TargetLagSeconds, v1alpha1.DefaultTargetLagSeconds))
		if a := st.Autoscaling; a != nil && a.Message != "" {
			line += ": " + a.Message
		}
		fmt.Fprintf(tw, "Autoscaling:\t%s\n", line)
	}
	fmt.Fprintf(tw, "Partitions:\t%d (topology generation %d)\n", st.Partitions, st.TopologyGeneration)
	if ix := st.PartitionIndex; ix != nil {
		fmt.Fprintf(tw, "Partition index:\t%s %s: %s\n", ix.Name, ix.Phase, ix.Message)
	}
	fmt.Fprintf(tw, "Head position:\t%d\n", st.HeadPosition)
	fmt.Fprintf(tw, "Lag:\t%d events, oldest %s\n", st.Lag, time.Duration(st.LagSeconds)*time.Second)
	fmt.Fprintf(tw, "ETA:\t%s\n", eta)
	if b := st.Rebuild; b != nil {
		line := fmt.Sprintf("%s, token %q", b.Phase, b.Token)
		if b.StartedAt != nil {
			line += ", started " + age(*b.StartedAt, now) + " ago"
		}
		fmt.Fprintf(tw, "Rebuild:\t%s\n", line)
	}
	if st.ObservedGeneration < p.Generation {
		fmt.Fprintf(tw, "Observed:\tgeneration %d of %d: the operator has not yet reported on the latest spec\n", st.ObservedGeneration, p.Generation)
	}
	tw.Flush()

	b.WriteString("\nConditions:\n")
	if len(st.Conditions) == 0 {
		b.WriteString("  none yet: the operator has not reported on this Projection\n")
	} else {
		rows := [][]string{{"TYPE", "STATUS", "REASON", "AGE", "MESSAGE"}}
		for _, c := range sortedConditions(st.Conditions) {
			rows = append(rows, []string{c.Type, string(c.Status), c.Reason, age(c.LastTransitionTime, now), c.Message})
		}
		b.WriteString(table(rows, 0))
	}

	b.WriteString("\nPartitions:\n")
	if len(st.PartitionStatuses) == 0 {
		b.WriteString("  none reported yet\n")
	} else {
		parts := slices.Clone(st.PartitionStatuses)
		slices.SortFunc(parts, func(a, b v1alpha1.PartitionStatus) int { return int(a.Partition) - int(b.Partition) })
		rows := [][]string{{"PARTITION", "POSITION", "LAG"}}
		for _, ps := range parts {
			rows = append(rows, []string{fmt.Sprint(ps.Partition), fmt.Sprint(ps.Position), fmt.Sprint(ps.Lag)})
		}
		b.WriteString(table(rows, tabwriter.AlignRight))
	}
	return b.String()
}

// table lays rows out in columns two spaces apart, indented by two
// spaces, with no trailing blanks.
func table(rows [][]string, flags uint) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', flags)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t")+"\t")
	}
	tw.Flush()
	var out strings.Builder
	for line := range strings.Lines(b.String()) {
		out.WriteString("  " + strings.TrimRight(line, " \n") + "\n")
	}
	return out.String()
}

// sortedConditions returns conditions in conditionOrder, then the rest.
func sortedConditions(conds []metav1.Condition) []metav1.Condition {
	out := make([]metav1.Condition, 0, len(conds))
	for _, t := range conditionOrder {
		if c := meta.FindStatusCondition(conds, t); c != nil {
			out = append(out, *c)
		}
	}
	for _, c := range conds {
		if !slices.Contains(conditionOrder, c.Type) {
			out = append(out, c)
		}
	}
	return out
}

// formatList is the list command's table of items, read at now, with a
// NAMESPACE column when allNamespaces.
func formatList(items []v1alpha1.Projection, now time.Time, allNamespaces bool) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 3, ' ', 0)
	if allNamespaces {
		fmt.Fprint(tw, "NAMESPACE\t")
	}
	fmt.Fprintln(tw, "NAME\tREADY\tSTATUS\tPARTITIONS\tLAG\tSUSPENDED\tAGE")
	for i := range items {
		p := &items[i]
		ready, reason := "Unknown", ""
		if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady); c != nil {
			ready, reason = string(c.Status), c.Reason
		}
		if allNamespaces {
			fmt.Fprintf(tw, "%s\t", p.Namespace)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%t\t%s\n", p.Name, ready, reason, p.Status.Partitions, p.Status.Lag,
			p.Suspended(), age(p.CreationTimestamp, now))
	}
	tw.Flush()
	return b.String()
}

// formatDeadLetters lays out status.deadLetterSamples.
func formatDeadLetters(p *v1alpha1.Projection, now time.Time) string {
	st := &p.Status
	if st.DeadLetters == 0 {
		return fmt.Sprintf("projection %q has no dead letters\n", p.Name)
	}
	rows := [][]string{{"POSITION", "PARTITION", "EVENT ID", "TYPE", "AGGREGATE", "FAILED", "RETRY", "ERROR"}}
	for _, d := range st.DeadLetterSamples {
		failed, retry := "", "-"
		if d.FailedAt != nil {
			failed = age(*d.FailedAt, now) + " ago"
		}
		if d.RetryPending {
			retry = "pending"
		}
		rows = append(rows, []string{fmt.Sprint(d.Position), fmt.Sprint(d.Partition), d.EventID, d.EventType, d.Aggregate, failed, retry, d.Error})
	}
	s := fmt.Sprintf("projection %q has %d dead letters", p.Name, st.DeadLetters)
	if int64(len(st.DeadLetterSamples)) < st.DeadLetters {
		s += fmt.Sprintf("; the oldest %d:", len(st.DeadLetterSamples))
	}
	return s + "\n" + table(rows, 0)
}
