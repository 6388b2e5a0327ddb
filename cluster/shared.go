package cluster

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/poolgate/poolgate/events"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// A refused push leaves its record only on the node that refused it, so its
// `rejected` event is derived there alone; every other event is derived by
// every node from the shared history. The refusing node puts each announced
// rejection into etcd (<prefix>/events/<id>, kept sentRetention), and every
// node imports what is there into its own store: the leader delivers it
// promptly whichever node refused the push, and every node's history and
// API list it. Only announced rejections travel (a transient refusal
// repeated within the coalescing window is not delivered anywhere), which
// bounds what etcd holds.

// SharedEventStore is the part of the event store ShareRejections needs.
type SharedEventStore interface {
	After(ctx context.Context, seq int64, limit int) ([]events.Event, error)
	MaxSeq(ctx context.Context) (int64, error)
	Import(ctx context.Context, e events.Event) (bool, error)
}

// sharedEvent is an event as it travels through etcd (Event's JSON form
// is the webhook payload's data, without these).
type sharedEvent struct {
	Type string          `json:"type"`
	Time time.Time       `json:"time"`
	Data json.RawMessage `json:"data"`
}

// EventsDerived tells the node that the events service stored new events
// (it must not block).
func (n *Node) EventsDerived() {
	select {
	case n.derived <- struct{}{}:
	default:
	}
}

// ShareRejections publishes this node's announced rejections to etcd and
// imports every node's into st, calling imported after new ones were
// stored (the dispatcher's wake-up). Runs until ctx ends.
func (n *Node) ShareRejections(ctx context.Context, st SharedEventStore, imported func()) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() { defer wg.Done(); n.importRejections(ctx, st, imported) }()
	cursor, err := st.MaxSeq(ctx)
	if err != nil {
		n.log.Warn().Err(err).Msg("cluster: event store unreadable; rejections are not shared")
		return
	}
	tick := time.NewTicker(recheckEvery)
	defer tick.Stop()
	for {
		cursor = n.publishRejections(ctx, st, cursor)
		select {
		case <-ctx.Done():
			return
		case <-n.derived:
		case <-tick.C:
		}
	}
}

// publishRejections puts the announced rejections after cursor into etcd
// and returns the new cursor; it stops at the first one etcd did not take,
// to try again later.
func (n *Node) publishRejections(ctx context.Context, st SharedEventStore, cursor int64) int64 {
	for {
		evs, err := st.After(ctx, cursor, 100)
		if err != nil || len(evs) == 0 {
			return cursor
		}
		for _, e := range evs {
			if e.Type == events.Rejected && e.Announce {
				if err := n.putEvent(ctx, &e); err != nil {
					n.etcdFailed(err)
					n.log.Warn().Err(err).Str("id", e.ID).Msg("cluster: rejection not shared yet")
					return cursor
				}
			}
			cursor = e.Seq
		}
	}
}

// putEvent writes e under its id unless it is there (an imported event, or
// one published before a restart): its first writer's lease keeps it.
func (n *Node) putEvent(ctx context.Context, e *events.Event) error {
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	b, err := json.Marshal(sharedEvent{Type: e.Type, Time: e.Time, Data: data})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, etcdOpTimeout)
	defer cancel()
	lease, err := n.sentLease(ctx)
	if err != nil {
		return err
	}
	key := n.keys.event(e.ID)
	_, err = n.etcd.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(b), clientv3.WithLease(lease))).Commit()
	return err
}

// importRejections reads every shared event, then follows the watch; on a
// broken watch it reads them all again (an import is idempotent by id).
func (n *Node) importRejections(ctx context.Context, st SharedEventStore, imported func()) {
	for ctx.Err() == nil {
		gctx, cancel := context.WithTimeout(ctx, etcdOpTimeout)
		resp, err := n.etcd.Get(gctx, n.keys.events(), clientv3.WithPrefix())
		cancel()
		if err == nil {
			fresh := false
			for _, kv := range resp.Kvs {
				fresh = n.importEvent(ctx, st, kv.Value) || fresh
			}
			if fresh {
				imported()
			}
			wch := n.etcd.Watch(clientv3.WithRequireLeader(ctx), n.keys.events(), clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
			for wr := range wch {
				if wr.Err() != nil {
					break
				}
				fresh := false
				for _, ev := range wr.Events {
					if ev.Type == clientv3.EventTypePut {
						fresh = n.importEvent(ctx, st, ev.Kv.Value) || fresh
					}
				}
				if fresh {
					imported()
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// importEvent stores one shared event; it reports whether it was new here.
func (n *Node) importEvent(ctx context.Context, st SharedEventStore, raw []byte) bool {
	var se sharedEvent
	var e events.Event
	if json.Unmarshal(raw, &se) != nil || json.Unmarshal(se.Data, &e) != nil || e.ID == "" || se.Type != events.Rejected {
		n.log.Warn().Msg("cluster: unreadable shared event skipped")
		return false
	}
	e.Type, e.Time, e.Announce = se.Type, se.Time, true
	isNew, err := st.Import(ctx, e)
	if err != nil {
		n.log.Warn().Err(err).Str("id", e.ID).Msg("cluster: shared event not stored")
		return false
	}
	if isNew {
		n.log.Info().Str("id", e.ID).Str("repo", e.Repo).Msg("cluster: rejection from another node stored")
	}
	return isNew
}
