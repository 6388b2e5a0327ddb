package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/pool"
	clientv3 "go.etcd.io/etcd/client/v3"
	gossh "golang.org/x/crypto/ssh"
)

// ErrMoved: the branch's decided tip is no longer the one this push was
// made on; another node won. An ordinary rejection, the client retries.
var ErrMoved = errors.New("the branch moved on another node")

// UnavailableError: the cluster could not decide (etcd unreachable, too few
// nodes to hold the objects). Never a silent rejection: the push fails as
// an error with this reason (DESIGN §9).
type UnavailableError struct{ Reason string }

func (e *UnavailableError) Error() string { return "pushes are unavailable: " + e.Reason }

// replicateTimeout bounds shipping a push's objects to the peers.
const replicateTimeout = 10 * time.Second

// decider moves a branch's decided tip: the objects first, on a quorum of
// nodes, then the compare-and-set in etcd. The caller moves its local ref
// only after decide returned nil.
type decider struct {
	cl     *config.Cluster
	etcd   *clientv3.Client
	signer gossh.Signer
	git    gitRunner
	keys   keys
}

// decide moves repo's branch from old ("" or zeros: not decided yet) to new.
// Before it is called, new and its objects are in this node's object store
// (receive-pack migrated them out of quarantine before the ref update).
func (d *decider) decide(ctx context.Context, dir, repo, branch, old, new string) error {
	if err := d.replicate(ctx, dir, repo, new); err != nil {
		return err
	}
	return d.cas(ctx, d.keys.tip(repo, branch), old, new)
}

// replicate ships new's objects to the peers until a quorum of nodes (this
// one counts) holds them; the others keep receiving while the CAS runs,
// and whoever misses out catches up from the watch.
func (d *decider) replicate(ctx context.Context, dir, repo, new string) error {
	need := d.cl.Quorum() - 1
	if need <= 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, replicateTimeout)
	results := make(chan error, len(d.cl.Peers))
	for _, p := range d.cl.Peers {
		go func() {
			err := sendObjects(ctx, d.git, d.signer, p.Address, dir, repo, new)
			if err != nil {
				err = fmt.Errorf("%s: %w", p.Name, err)
			}
			results <- err
		}()
	}
	acks := 0
	var failed []string
	for range d.cl.Peers {
		err := <-results
		if err == nil {
			acks++
			if acks >= need {
				// The rest finish (or not) on their own; the context ends
				// with this process or after replicateTimeout.
				go func() { time.Sleep(replicateTimeout); cancel() }()
				return nil
			}
			continue
		}
		failed = append(failed, oneLine(err))
	}
	cancel()
	return &UnavailableError{Reason: fmt.Sprintf("the objects reached %d of %d nodes, %d needed (%s)",
		acks+1, d.cl.Nodes(), d.cl.Quorum(), strings.Join(failed, "; "))}
}

// cas sets key from old to new in one etcd transaction. A transaction whose
// outcome is unknown (the request timed out) is read back: if the new value
// is there, it was this push's (tips are commit ids; two pushes never make
// the same commit on top of one tip... and if they did, the content is the
// same).
func (d *decider) cas(ctx context.Context, key, old, new string) error {
	cmp := clientv3.Compare(clientv3.Value(key), "=", old)
	if old == "" || pool.IsZero(old) {
		cmp = clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
	}
	tctx, cancel := context.WithTimeout(ctx, etcdOpTimeout)
	resp, err := d.etcd.Txn(tctx).If(cmp).Then(clientv3.OpPut(key, new)).Commit()
	cancel()
	if err == nil {
		if !resp.Succeeded {
			return ErrMoved
		}
		return nil
	}
	tip, _, rerr := decidedTip(ctx, d.etcd, key)
	switch {
	case rerr != nil:
		return &UnavailableError{Reason: "this node cannot reach etcd (" + oneLine(err) + ")"}
	case tip == new:
		return nil
	case tip != old:
		return ErrMoved
	}
	return &UnavailableError{Reason: "etcd did not confirm the update (" + oneLine(err) + ")"}
}
