package projection

import "hash/fnv"

// PartitionStrategy decides which partition processes an aggregate's events.
// Every event of one aggregate must go to the same partition, or that
// aggregate's events would be applied out of order.
type PartitionStrategy interface {
	// ShouldProcess reports whether the worker with partitionKey, out of
	// totalPartitions, processes events of aggregateID.
	ShouldProcess(aggregateID string, partitionKey, totalPartitions int) bool
}

// HashPartitionStrategy assigns an aggregate to partition
// int(fnv32a(aggregateID)) % totalPartitions. It is the default. The
// processor recognises it and filters in SQL on the hash stored with each
// event, so a worker fetches only its own partition's rows; any other
// strategy is evaluated in Go on every event in scope.
type HashPartitionStrategy struct{}

// ShouldProcess implements [PartitionStrategy].
func (HashPartitionStrategy) ShouldProcess(aggregateID string, partitionKey, totalPartitions int) bool {
	return PartitionOf(aggregateID, totalPartitions) == partitionKey
}

// PartitionOf returns the partition [HashPartitionStrategy] assigns an
// aggregate to: int(fnv32a(aggregateID)) % totalPartitions, or 0 when
// totalPartitions is less than 2.
func PartitionOf(aggregateID string, totalPartitions int) int {
	if totalPartitions <= 1 {
		return 0
	}
	return int(PartitionHash(aggregateID)) % totalPartitions
}

// PartitionHash returns the 32-bit FNV-1a hash of an aggregate id, the value
// stored with every event and used by [HashPartitionStrategy].
func PartitionHash(aggregateID string) uint32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(aggregateID))
	return h.Sum32()
}

// isHashStrategy reports whether s is the built-in hash strategy, which
// the processor evaluates in SQL.
func isHashStrategy(s PartitionStrategy) bool {
	switch s.(type) {
	case HashPartitionStrategy, *HashPartitionStrategy:
		return true
	}
	return false
}
