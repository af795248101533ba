package projection

import "testing"

// An event notification that names a partition hash wakes only the
// subscriptions whose partition owns it, and those that filter nothing;
// one without a hash wakes all but idle partitions, and the topology and
// retry notifications wake all.
func TestListenerDispatch(t *testing.T) {
	l := NewListener(nil, nil)
	subs := make([]*subscription, 5)
	for k := range subs {
		subs[k] = &subscription{l: l, wake: make(chan struct{}, 1), key: k}
		subs[k].total.Store(3)
		l.subs[subs[k]] = struct{}{}
	}
	subs[3].key = 0
	subs[3].total.Store(0) // not known yet: every notification
	subs[4].key = 3
	subs[4].total.Store(-1) // idle: no event notification
	woken := func() (got []int) {
		for k, s := range subs {
			select {
			case <-s.wake:
				got = append(got, k)
			default:
			}
		}
		return got
	}
	for _, c := range []struct {
		payload string
		want    []int
	}{
		{"e 100 7", []int{1, 3}}, // 7 % 3 == 1
		{"e 101 9", []int{0, 3}},
		{"e 102", []int{0, 1, 2, 3}},
		{"e 103 x", []int{0, 1, 2, 3}},
		{"t", []int{0, 1, 2, 3, 4}},
		{"r", []int{0, 1, 2, 3, 4}},
		{"something new", []int{0, 1, 2, 3, 4}},
	} {
		l.dispatch(c.payload)
		if got := woken(); !equalInts(got, c.want) {
			t.Errorf("dispatch(%q) woke %v, want %v", c.payload, got, c.want)
		}
	}
	if got := subs[1].notified.Load(); got != 103 {
		t.Errorf("partition 1 notified up to transaction %d, want 103", got)
	}
	if got := subs[2].notified.Load(); got != 103 {
		t.Errorf("partition 2 notified up to transaction %d, want 103 (not 100 or 101: not its own)", got)
	}
	if !subs[2].retry.Load() {
		t.Error("retry notification did not set retry")
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
