package cluster

import (
	"context"
	"time"

	"github.com/poolgate/poolgate/events"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// One node at a time delivers webhooks (and so announces stale claims and
// every other event): the winner of an etcd election. Every node derives the
// same events with the same ids from the same history, so the delivery
// state that has to survive a failover is which ids went out: a ledger in
// etcd (<prefix>/webhooks/<target>/sent/<id>, kept sentRetention). A new
// leader delivers from its own cursor, passing over what the ledger lists:
// at-least-once (an event delivered just before the old leader died, and
// not yet in the ledger, goes out again, same id), none lost.

// leaderTTL is how long a dead leader keeps the role before another node
// takes it.
const leaderTTL = 5

// sentRetention bounds the ledger; a node that stays a follower keeps its
// cursor moving over listed events (FollowCursors), so it never needs
// older entries.
const sentRetention = 7 * 24 * time.Hour

// IsLeader reports whether this node delivers webhooks now.
func (n *Node) IsLeader() bool { return n.leader.Load() }

// Lead runs run while this node is the elected leader; run's context ends
// when leadership is lost (the session's lease expired: cut off etcd) or ctx
// ends. Lead returns when ctx ends.
func (n *Node) Lead(ctx context.Context, run func(context.Context)) {
	for ctx.Err() == nil {
		if err := n.leadOnce(ctx, run); err != nil && ctx.Err() == nil {
			n.log.Warn().Err(err).Msg("cluster: election")
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

func (n *Node) leadOnce(ctx context.Context, run func(context.Context)) error {
	gctx, cancel := context.WithTimeout(ctx, etcdOpTimeout)
	lease, err := n.etcd.Grant(gctx, leaderTTL)
	cancel()
	if err != nil {
		return err
	}
	sess, err := concurrency.NewSession(n.etcd, concurrency.WithLease(lease.ID), concurrency.WithContext(ctx))
	if err != nil {
		return err
	}
	defer sess.Close()
	el := concurrency.NewElection(sess, n.keys.election())
	if err := el.Campaign(ctx, n.cl.Node); err != nil {
		return err
	}
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-sess.Done():
		case <-lctx.Done():
		}
		stop()
	}()
	n.leader.Store(true)
	n.log.Info().Msg("cluster: this node delivers webhooks now (leader)")
	run(lctx)
	// run may end early (no webhooks configured): the role is kept until
	// it is lost, or the election would spin.
	<-lctx.Done()
	n.leader.Store(false)
	n.log.Info().Msg("cluster: no longer the leader")
	rctx, cancel := context.WithTimeout(context.Background(), etcdOpTimeout)
	defer cancel()
	el.Resign(rctx)
	return nil
}

// Sent is the webhook.Ledger lookup.
func (n *Node) Sent(ctx context.Context, webhook, id string) bool {
	ctx, cancel := context.WithTimeout(ctx, etcdOpTimeout)
	defer cancel()
	resp, err := n.etcd.Get(ctx, n.keys.sent(webhook, id), clientv3.WithCountOnly())
	return err == nil && resp.Count > 0
}

// Add is the webhook.Ledger record. A failure is logged: the event may go
// out again after a failover, never lost.
func (n *Node) Add(ctx context.Context, webhook string, ids []string) {
	ctx, cancel := context.WithTimeout(ctx, etcdOpTimeout)
	defer cancel()
	lease, err := n.sentLease(ctx)
	if err == nil {
		ops := make([]clientv3.Op, 0, len(ids))
		for _, id := range ids {
			ops = append(ops, clientv3.OpPut(n.keys.sent(webhook, id), n.cl.Node, clientv3.WithLease(lease)))
		}
		_, err = n.etcd.Txn(ctx).Then(ops...).Commit()
	}
	if err != nil {
		n.log.Warn().Err(err).Str("webhook", webhook).Strs("ids", ids).Msg("cluster: delivery not recorded in etcd")
	}
}

// sentLease is a lease for ledger entries, a fresh one each day.
func (n *Node) sentLease(ctx context.Context) (clientv3.LeaseID, error) {
	n.sessMu.Lock()
	defer n.sessMu.Unlock()
	if n.ledgerLease != 0 && time.Since(n.ledgerLeaseAt) < 24*time.Hour {
		return n.ledgerLease, nil
	}
	resp, err := n.etcd.Grant(ctx, int64(sentRetention/time.Second))
	if err != nil {
		return 0, err
	}
	n.ledgerLease, n.ledgerLeaseAt = resp.ID, time.Now()
	return resp.ID, nil
}

// CursorStore is the part of the event store a follower's cursors need.
type CursorStore interface {
	Webhook(ctx context.Context, name string) (events.WebhookState, error)
	SetWebhookSeq(ctx context.Context, name string, seq int64) error
	After(ctx context.Context, seq int64, limit int) ([]events.Event, error)
}

// Dispatcher is what FollowCursors asks of the webhook dispatcher.
type Dispatcher interface {
	Webhooks() []string
	Wants(webhook string, e *events.Event) bool
}

// FollowCursors, on a node that is not the leader, moves each webhook's
// local cursor over the events the leader delivered (listed in the
// ledger), stopping at the first one not listed: when this node leads, it
// starts where delivery stopped. Runs until ctx ends.
func (n *Node) FollowCursors(ctx context.Context, st CursorStore, d Dispatcher) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(recheckEvery):
		}
		if n.IsLeader() {
			continue
		}
		for _, w := range d.Webhooks() {
			state, err := st.Webhook(ctx, w)
			if err != nil || state.Disabled != "" {
				continue
			}
			evs, err := st.After(ctx, state.Seq, 100)
			if err != nil {
				continue
			}
			seq := state.Seq
			for _, e := range evs {
				// Events the webhook does not take are never in the ledger;
				// the leader passes them too.
				if d.Wants(w, &e) && !n.Sent(ctx, w, e.ID) {
					break
				}
				seq = e.Seq
			}
			if seq > state.Seq && !n.IsLeader() {
				st.SetWebhookSeq(ctx, w, seq)
			}
		}
	}
}
