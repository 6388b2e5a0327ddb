// Package pool is the domain model of a pool-resource lock repository:
// pools, locks and their states, the operations between two trees, and the
// commit messages pool-resource writes. It does no I/O: trees come in
// through the TreeReader interface.
package pool

// Directory names pool-resource uses inside a pool.
const (
	Claimed   = "claimed"
	Unclaimed = "unclaimed"
)
