// Package cluster makes poolgate nodes one service (DESIGN §9): each node
// keeps its own repos; the pool branch's tip of each repo is decided in
// etcd by compare-and-set after the pushed objects are on a quorum of
// nodes; every node catches up with the decided tip before it answers a
// fetch; one node at a time delivers webhooks.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/poolgate/poolgate/config"
	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// Timings of the background work.
const (
	// recheckEvery: besides the watch, each repo's tip is compared with
	// etcd this often (a watch can miss events across a reconnect).
	recheckEvery = 2 * time.Second
	// catchUpTimeout bounds how long a fetch waits for this node to catch up
	// before it is refused rather than shown an old tip.
	catchUpTimeout = 5 * time.Second
)

// Options are what a node needs from the daemon.
type Options struct {
	// RepoDir is where the daemon keeps a repo.
	RepoDir func(name string) string
	// Signer is the shared host key.
	Signer gossh.Signer
	// Moved, if set, is told when catching up moved a repo's branch (the
	// events service derives from it).
	Moved func(repo string)
}

// Node is this process's membership in the cluster.
type Node struct {
	cfg  *config.Config
	cl   *config.Cluster
	log  zerolog.Logger
	opts Options
	etcd *clientv3.Client
	keys keys
	git  gitRunner
	dec  *decider
	peer *peerServer

	etcdErr atomic.Pointer[string] // last etcd failure, nil when the last request worked
	etcdOK  atomic.Int64           // when etcd last answered (unix nanoseconds)
	repos   map[string]*repoState
	leader  atomic.Bool
	derived chan struct{} // EventsDerived

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	sessMu        sync.Mutex
	sess          *concurrency.Session
	ledgerLease   clientv3.LeaseID
	ledgerLeaseAt time.Time
}

type repoState struct {
	name, branch, dir string
	wake              chan struct{}
	mu                sync.Mutex
	decided           string // last tip seen in etcd
	ready             bool   // initialised in etcd and caught up once
}

// Start joins the cluster: node-to-node listener, etcd client, the repos'
// decided tips (initialised from this node's repos when etcd has none),
// the watch. It waits up to initWait for this node to be in step, so the
// events service starts from the cluster's history; past it, it goes on
// in the background (a node starts while etcd is down, read-only).
func Start(cfg *config.Config, log zerolog.Logger, opts Options, initWait time.Duration) (*Node, error) {
	cl := cfg.Cluster
	cli, err := newEtcd(cl)
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg: cfg, cl: cl, log: log, opts: opts, etcd: cli,
		keys:    keys{cl.Etcd.Prefix},
		git:     gitRunner{home: cfg.DataDir},
		repos:   map[string]*repoState{},
		derived: make(chan struct{}, 1),
	}
	n.etcdOK.Store(time.Now().UnixNano())
	n.dec = &decider{cl: cl, etcd: cli, signer: opts.Signer, git: n.git, keys: n.keys}
	for _, r := range cfg.Repos {
		if r.Upstream != nil {
			continue // a watched mirror follows its upstream on every node
		}
		n.repos[r.Name] = &repoState{name: r.Name, branch: r.Branch, dir: opts.RepoDir(r.Name), wake: make(chan struct{}, 1)}
	}
	ln, err := listenReusePort(cl.Listen)
	if err != nil {
		cli.Close()
		return nil, fmt.Errorf("cluster: listen %s: %w", cl.Listen, err)
	}
	n.peer = &peerServer{cfg: cfg, signer: opts.Signer, git: n.git, repoDir: opts.RepoDir, log: log, decided: n.readDecided}
	ctx, cancel := context.WithCancel(context.Background())
	n.ctx, n.cancel = ctx, cancel
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.peer.serve(ln); err != nil {
			log.Error().Err(err).Msg("cluster listener failed")
		}
	}()
	ready := make(chan struct{}, len(n.repos))
	for _, rs := range n.repos {
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.follow(ctx, rs, ready) }()
	}
	n.wg.Add(1)
	go func() { defer n.wg.Done(); n.watch(ctx) }()
	n.wg.Add(1)
	go func() { defer n.wg.Done(); n.announce(ctx) }()
	timer := time.NewTimer(initWait)
	defer timer.Stop()
	for range n.repos {
		select {
		case <-ready:
		case <-timer.C:
			log.Warn().Msg("cluster: not in step with etcd yet; serving reads from the local repos meanwhile")
			return n, nil
		}
	}
	return n, nil
}

// Close leaves the cluster.
func (n *Node) Close() {
	n.cancel()
	n.peer.close()
	n.wg.Wait()
	n.etcd.Close()
}

func (n *Node) etcdFailed(err error) {
	if err == nil {
		n.etcdErr.Store(nil)
		n.etcdOK.Store(time.Now().UnixNano())
		return
	}
	s := oneLine(err)
	n.etcdErr.Store(&s)
}

// follow keeps one repo in step with its decided tip: first the tip's
// initialisation, then a catch-up whenever the watch or the recheck says.
func (n *Node) follow(ctx context.Context, rs *repoState, ready chan<- struct{}) {
	log := n.log.With().Str("repo", rs.name).Logger()
	signalled := false
	tick := time.NewTicker(recheckEvery)
	defer tick.Stop()
	for {
		err := n.step(ctx, rs)
		if err == nil && !signalled {
			signalled = true
			ready <- struct{}{}
		}
		if err != nil && ctx.Err() == nil {
			log.Warn().Err(err).Msg("cluster: repo not in step")
		}
		select {
		case <-ctx.Done():
			return
		case <-rs.wake:
		case <-tick.C:
		}
	}
}

// step reads the decided tip and brings this node to it; when etcd has no
// tip yet, or is behind this node's own start-up commits (a pool declared
// since), this node proposes its tip through the same decision a push takes.
func (n *Node) step(ctx context.Context, rs *repoState) error {
	key := n.keys.tip(rs.name, rs.branch)
	for range 3 {
		decided, found, err := decidedTip(ctx, n.etcd, key)
		n.etcdFailed(err)
		if err != nil {
			return err
		}
		local, err := n.git.tip(ctx, rs.dir, rs.branch)
		if err != nil {
			return err
		}
		var propose string
		switch {
		case !found && local != "":
			propose = local
		case found && local != "" && local != decided && n.git.isAncestor(ctx, rs.dir, decided, local):
			// Only the daemon's own start-up commits (ensurePool) move a
			// local ref without a decision; they are proposed, not lost.
			propose = local
		}
		if propose != "" {
			// Under the cluster push lock like a push, so a proposal never
			// makes a concurrent push lose its compare-and-set.
			unlock, err := n.lockRepo(ctx, rs)
			if err != nil {
				return err
			}
			err = n.dec.decide(ctx, rs.dir, rs.name, rs.branch, decided, propose)
			unlock()
			if errors.Is(err, ErrMoved) {
				continue
			}
			if err != nil {
				return err
			}
			n.log.Info().Str("repo", rs.name).Str("tip", propose).Msg("cluster: proposed this node's tip")
			decided = propose
		}
		if !found && propose == "" {
			return errors.New("no tip decided yet and no local branch to propose")
		}
		if err := n.catchUp(ctx, rs, decided); err != nil {
			return err
		}
		rs.mu.Lock()
		rs.decided, rs.ready = decided, true
		rs.mu.Unlock()
		return nil
	}
	return errors.New("tip kept moving")
}

// catchUp moves this node's branch to tip, fetching the objects from a peer
// when this node was not among those that received them. Local commits that
// were never decided (a start-up commit that lost to another node's) are
// dropped: no client was ever told they landed.
func (n *Node) catchUp(ctx context.Context, rs *repoState, tip string) error {
	for attempt := 0; ; attempt++ {
		local, err := n.git.tip(ctx, rs.dir, rs.branch)
		if err != nil {
			return err
		}
		if local == tip {
			return nil
		}
		if !n.git.connected(ctx, rs.dir, tip) {
			if err := n.fetch(ctx, rs, tip, local); err != nil {
				return err
			}
		}
		// With the old value: a push of this node moving the ref at the
		// same time (after its own decision) makes this fail, and the loop
		// looks again.
		err = n.git.setTip(ctx, rs.dir, rs.branch, tip, local, "poolgate: cluster catch-up")
		if err == nil {
			if local != "" && !n.git.isAncestor(ctx, rs.dir, local, tip) {
				n.log.Warn().Str("repo", rs.name).Str("dropped", local).Str("tip", tip).Msg("cluster: local commit never decided, replaced by the cluster's tip")
			} else {
				n.log.Debug().Str("repo", rs.name).Str("from", local).Str("tip", tip).Msg("cluster: caught up")
			}
			if n.opts.Moved != nil {
				n.opts.Moved(rs.name)
			}
			return nil
		}
		if attempt >= 20 || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// fetch gets tip's objects from the first peer that has them, in random
// order so a node back from the dead does not always load the same peer.
func (n *Node) fetch(ctx context.Context, rs *repoState, tip, have string) error {
	var errs []error
	for _, i := range rand.Perm(len(n.cl.Peers)) {
		p := n.cl.Peers[i]
		err := fetchObjects(ctx, n.git, n.opts.Signer, p.Address, rs.dir, rs.name, tip, have)
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", p.Name, err))
	}
	return fmt.Errorf("no peer gave %s: %w", tip, errors.Join(errs...))
}

// watch wakes a repo's follower when its decided tip changes.
func (n *Node) watch(ctx context.Context) {
	for ctx.Err() == nil {
		wch := n.etcd.Watch(clientv3.WithRequireLeader(ctx), n.keys.repos(), clientv3.WithPrefix())
		for resp := range wch {
			if err := resp.Err(); err != nil {
				n.etcdFailed(err)
				break
			}
			for _, ev := range resp.Events {
				if rs := n.repos[n.keys.repoOfTipKey(string(ev.Kv.Key))]; rs != nil {
					select {
					case rs.wake <- struct{}{}:
					default:
					}
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// ErrCatchingUp refuses a fetch rather than show a tip older than the
// cluster's.
var ErrCatchingUp = errors.New("this node is catching up with the cluster; try again")

// BeforeGit runs before the daemon serves a git command on repo: a node
// behind the decided tip catches up first, so a client told "ok" by one node
// never fetches an older tip from another. A read with etcd unreachable asks
// the other nodes for the decided tip (decidedByPeers): served at it, or
// from the local repo when etcd is down for every node (DESIGN §9: fetches
// still served), refused when this node is cut off from the cluster.
//
// A push (write) first takes the repo's cluster-wide lock in etcd, held
// until the returned release is called: pushes on different nodes are
// serialized like pushes on one node, so receive-pack advertises the
// decided tip and a client with a stale view gets git's own ordinary
// rejection. The compare-and-set stays the safety: a lock lost with its
// lease (a partition) can never let two tips be decided. With etcd
// unreachable the push is refused as an error.
func (n *Node) BeforeGit(ctx context.Context, repo string, write bool) (release func(), err error) {
	release = func() {}
	rs := n.repos[repo]
	if rs == nil {
		return release, nil
	}
	if write {
		unlock, err := n.lockRepo(ctx, rs)
		if err != nil {
			n.etcdFailed(err)
			n.log.Warn().Err(err).Str("repo", repo).Msg("cluster: push lock not taken")
			return release, &UnavailableError{Reason: "this node cannot reach etcd"}
		}
		release = unlock
	}
	decided, found, err := decidedTip(ctx, n.etcd, n.keys.tip(rs.name, rs.branch))
	n.etcdFailed(err)
	if err != nil {
		n.log.Warn().Err(err).Str("repo", repo).Bool("push", write).Msg("cluster: etcd unreachable")
		if write {
			return release, &UnavailableError{Reason: "this node cannot reach etcd"}
		}
		tip, err := n.decidedByPeers(ctx, rs)
		if err != nil {
			n.log.Warn().Err(err).Str("repo", repo).Msg("cluster: fetch refused, this node may be behind")
			return release, err
		}
		if tip == "" {
			return release, nil // no node can move the tip now: the local one is current
		}
		decided, found = tip, true
	}
	if !found {
		if write {
			return release, &UnavailableError{Reason: "the cluster has not decided this repo's tip yet"}
		}
		return release, nil
	}
	cctx, cancel := context.WithTimeout(ctx, catchUpTimeout)
	defer cancel()
	if err := n.catchUp(cctx, rs, decided); err != nil {
		n.log.Warn().Err(err).Str("repo", repo).Msg("cluster: cannot catch up before serving")
		return release, ErrCatchingUp
	}
	return release, nil
}

// cutOffGrace is how long a node that reaches neither etcd nor every
// other node still serves fetches from its own repos: the push locks'
// lease (lockSessionTTL) — past it, another node may have moved the tip.
const cutOffGrace = 5 * time.Second

// peerAnswerTimeout bounds a peer's etcd read for a "decided" question.
const peerAnswerTimeout = 2 * time.Second

// CutOffError refuses a fetch on a node that may be behind the cluster:
// it has lost etcd, and not every other node answered.
type CutOffError struct{ For time.Duration }

func (e *CutOffError) Error() string {
	return fmt.Sprintf("this node has been cut off from the cluster for %s and may be behind it; try again (another node)", e.For.Round(time.Second))
}

// decidedByPeers is the read path when etcd does not answer this node:
// the other nodes are asked for the decided tip (each reads etcd). A tip
// one of them read is this fetch's; when every node answered that it
// cannot reach etcd either, no node can move the tip, and "" says the
// local one is current (DESIGN §9: fetches still served while etcd is
// down). When nobody knew and some node did not answer, that node may be
// moving the tip: the local repo is served only for cutOffGrace after etcd
// last answered, then the fetch is refused, so a client never reads a
// history older than one another node acknowledged (a stock release would
// find its own claim missing and fail).
func (n *Node) decidedByPeers(ctx context.Context, rs *repoState) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, peerDialTimeout+peerAnswerTimeout)
	defer cancel()
	type answer struct {
		tip string
		err error
	}
	answers := make(chan answer, len(n.cl.Peers))
	for _, p := range n.cl.Peers {
		go func() {
			tip, err := askDecided(ctx, n.opts.Signer, p.Address, rs.name)
			answers <- answer{tip, err}
		}()
	}
	silent := 0
	for range n.cl.Peers {
		a := <-answers
		switch {
		case a.err != nil:
			silent++
		case a.tip != "":
			return a.tip, nil
		}
	}
	if silent == 0 {
		return "", nil
	}
	if cut := time.Since(time.Unix(0, n.etcdOK.Load())); cut > cutOffGrace {
		return "", &CutOffError{For: cut}
	}
	return "", nil
}

// readDecided is a peer's "decided" question: the tip read from etcd now.
func (n *Node) readDecided(ctx context.Context, repo string) (string, error) {
	rs := n.repos[repo]
	if rs == nil {
		return "", errors.New("not a replicated repo")
	}
	if n.etcdErr.Load() != nil {
		// Known cut off too: say so at once rather than time out, so the
		// asker can tell "etcd is down for everyone" from a silent node.
		return "", nil
	}
	ctx, cancel := context.WithTimeout(ctx, peerAnswerTimeout)
	defer cancel()
	tip, found, err := decidedTip(ctx, n.etcd, n.keys.tip(rs.name, rs.branch))
	n.etcdFailed(err)
	if err != nil || !found {
		return "", err
	}
	return tip, nil
}

// lockSessionTTL is how long a push lock outlives a node that stopped
// renewing it (killed, cut off from etcd).
const lockSessionTTL = 5

// lockWait bounds the wait for the push lock.
const lockWait = 20 * time.Second

// lockRepo takes repo's cluster-wide push lock.
func (n *Node) lockRepo(ctx context.Context, rs *repoState) (func(), error) {
	// Bounded: a push waits for others' pushes, not for a lost etcd. While
	// this node's last etcd request failed, a push waits no longer than
	// one request: pushes queued on a node cut off etcd (each behind the
	// repo's local lock) fail in seconds, not lockWait each.
	wait := lockWait
	if n.etcdErr.Load() != nil {
		wait = etcdOpTimeout
	}
	lctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var m *concurrency.Mutex
	for try := 0; ; try++ {
		sess, err := n.session(lctx)
		if err != nil {
			return nil, err
		}
		m = concurrency.NewMutex(sess, n.keys.lock(rs.name))
		err = m.Lock(lctx)
		if err == nil {
			break
		}
		if try > 0 || lctx.Err() != nil {
			return nil, err
		}
		// The session's lease may have ended while etcd was out of reach
		// (its keep-alive only notices later): once more on a new one.
		n.dropSession(sess)
	}
	return func() {
		uctx, cancel := context.WithTimeout(context.Background(), etcdOpTimeout)
		defer cancel()
		// A failed unlock is a lock that expires with the session's lease.
		_ = m.Unlock(uctx)
	}, nil
}

// dropSession forgets s, so the next push takes a new session.
func (n *Node) dropSession(s *concurrency.Session) {
	n.sessMu.Lock()
	defer n.sessMu.Unlock()
	if n.sess == s {
		n.sess = nil
		s.Orphan()
	}
}

// session is the node's etcd session (a lease kept alive), renewed after
// it expired.
func (n *Node) session(ctx context.Context) (*concurrency.Session, error) {
	n.sessMu.Lock()
	defer n.sessMu.Unlock()
	if n.sess != nil {
		select {
		case <-n.sess.Done():
			n.sess = nil
		default:
			return n.sess, nil
		}
	}
	// The lease is granted here, bounded: NewSession would wait for etcd
	// as long as its context lives.
	gctx, cancel := context.WithTimeout(ctx, etcdOpTimeout)
	defer cancel()
	lease, err := n.etcd.Grant(gctx, lockSessionTTL)
	if err != nil {
		return nil, err
	}
	s, err := concurrency.NewSession(n.etcd, concurrency.WithLease(lease.ID), concurrency.WithContext(n.ctx))
	if err != nil {
		return nil, err
	}
	n.sess = s
	return s, nil
}

// signerFromFile reads the shared key (for tools outside the daemon).
func signerFromFile(path string) (gossh.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return gossh.ParsePrivateKey(b)
}

// PushHealth is nil when this node can take pushes: etcd answered its last
// request and every repo is in step with its decided tip. Reads are served
// either way (/healthz says so); this is what a load balancer in front of
// the nodes checks before sending pushes.
func (n *Node) PushHealth() error {
	if e := n.etcdErr.Load(); e != nil {
		return &UnavailableError{Reason: "etcd unreachable: " + *e}
	}
	for _, rs := range n.repos {
		rs.mu.Lock()
		ready := rs.ready
		rs.mu.Unlock()
		if !ready {
			return &UnavailableError{Reason: "repo " + rs.name + " not in step with the cluster yet"}
		}
	}
	return nil
}

// ServeHTTP answers GET /healthz/push: 200 "ok" or 503 with the reason.
func (n *Node) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err := n.PushHealth(); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, err)
		return
	}
	fmt.Fprintln(w, "ok")
}

// listenReusePort binds the node-to-node port with SO_REUSEPORT: during a
// hand-over (SIGUSR2) the successor binds it while its predecessor drains,
// so the port never goes dark and the successor does not fail to start.
// Both answer peers meanwhile; their requests are idempotent.
func listenReusePort(addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	return lc.Listen(context.Background(), "tcp", addr)
}
