package controllers_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/pkg/projection"
)

// partitionIndexMin is the suite operator's --partition-index-min-partitions.
const partitionIndexMin = 6

// A Projection at or above the operator's minimum count gets a partition
// index, built in the background and reported in status and an Event, and
// built again if it goes; below that count, the status leaves the index
// out, and the operator drops the index once no projection in the
// database has used it for the retention (1ms here).
func TestPartitionIndexFollowsCount(t *testing.T) {
	ctx := t.Context()
	ns := newNamespace(t)
	db := newMigratedDatabase(t, ns)
	const n = partitionIndexMin + 2
	name := projection.PartitionIndexName(n)
	newProjection(t, ns, "wide", "wide_view", n)

	eventually(t, 60*time.Second, "status.partitionIndex Ready", func() error {
		st := getProjection(t, ns, "wide").Status.PartitionIndex
		switch {
		case st == nil:
			return fmt.Errorf("no status.partitionIndex")
		case st.Name != name || st.Partitions != n || st.Phase != v1alpha1.PartitionIndexReady || st.Since == nil:
			return fmt.Errorf("status.partitionIndex %+v, want %s for %d partitions Ready", st, name, n)
		}
		return nil
	})
	waitForEvent(t, ns, "wide", "Normal", v1alpha1.ReasonPartitionIndexReady, name)
	ixs, err := projection.PartitionIndexes(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if len(ixs) != 1 || ixs[0].Partitions != n || !ixs[0].Valid || !slices.Equal(ixs[0].UsedBy, []string{"wide_view"}) {
		t.Fatalf("partition indexes %+v, want a valid one for %d partitions used by wide_view", ixs, n)
	}

	// Dropped by hand while the Projection still has the count: the
	// operator builds it again.
	if err := projection.DropPartitionIndex(ctx, db, n); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the partition index rebuilt", func() error {
		ixs, err := projection.PartitionIndexes(ctx, db)
		if err != nil {
			return err
		}
		if len(ixs) != 1 || !ixs[0].Valid {
			return fmt.Errorf("partition indexes %+v, want the one for %d partitions valid", ixs, n)
		}
		return nil
	})

	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		p := getProjection(t, ns, "wide")
		p.Spec.Replicas = ptr.To[int32](2)
		return k8sClient.Update(ctx, p)
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the unused partition index dropped", func() error {
		if st := getProjection(t, ns, "wide").Status.PartitionIndex; st != nil {
			return fmt.Errorf("status.partitionIndex %+v at 2 partitions, want none", st)
		}
		ixs, err := projection.PartitionIndexes(ctx, db)
		if err != nil {
			return err
		}
		if len(ixs) != 0 {
			return fmt.Errorf("partition indexes %+v", ixs)
		}
		return nil
	})
}
