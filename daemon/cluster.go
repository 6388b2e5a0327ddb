package daemon

import (
	"context"
	"errors"
	"io"
	"slices"

	"github.com/poolgate/poolgate/gitproto"
	"github.com/poolgate/poolgate/pushlog"
	gossh "golang.org/x/crypto/ssh"
)

// Gate, if set, is asked before a git command is served. A cluster node
// (package cluster) catches up with the cluster's decided tip there, takes
// the cluster-wide push lock for a push (inside the repo's own push lock),
// and refuses pushes it cannot have decided. release is called when the
// command ended; the error is shown to the client as one line.
type Gate interface {
	BeforeGit(ctx context.Context, repo string, write bool) (release func(), err error)
}

// SetGate installs the gate; call before Serve.
func (s *Server) SetGate(g Gate) { s.gate = g }

// gateCheck passes without a gate; release is never nil.
func (s *Server) gateCheck(ctx context.Context, repo string, write bool) (release func(), err error) {
	if s.gate == nil {
		return func() {}, nil
	}
	return s.gate.BeforeGit(ctx, repo, write)
}

// errRepoTaken means the repo's push lock was not free before ctx ended.
var errRepoTaken = errors.New("repository busy")

// takeForWrite is the one way into a repo for a write (a push, an
// operator action): its push lock, one writer at a time, so the next
// writer sees the new tip and the loser of a race gets git's own
// non-fast-forward rejection; then, in a cluster, the etcd decision's
// gate. release undoes both; on error nothing is held.
func (s *Server) takeForWrite(ctx context.Context, repo string) (release func(), err error) {
	lock := s.pushLock[repo]
	select {
	case lock <- struct{}{}:
	case <-ctx.Done():
		return nil, errRepoTaken
	}
	done, err := s.gateCheck(ctx, repo, true)
	if err != nil {
		done()
		<-lock
		return nil, err
	}
	return func() { done(); <-lock }, nil
}

// Signer is the host key (after Prepare); cluster nodes authenticate each
// other with it.
func (s *Server) Signer() gossh.Signer { return s.signer }

// HooksDir is the hook directory every served repo's core.hooksPath names.
func (s *Server) HooksDir() string { return s.hooksDir() }

// movedMessage is the ng reason of a push that lost the cluster's
// compare-and-set.
const movedMessage = "the pool moved on another node; fetch and try again"

// reportMoved answers a push whose receive-pack ended without a report
// because the cluster's reference-transaction hook found the branch moved
// on another node (git dies on a prepared-phase refusal): it writes to w
// the report receive-pack would have written for an ordinary rejection, so
// the stock client sees "[remote rejected]" and retries rather than count
// an error. It returns the report's pkt-lines (unframed) and whether it
// wrote one.
func reportMoved(w io.Writer, verdictFile string, cmds *gitproto.CommandReader) ([]byte, bool) {
	v, rules := pushlog.ReadVerdict(verdictFile)
	if v != pushlog.VerdictTransient || !slices.Contains(rules, pushlog.RuleMoved) {
		return nil, false
	}
	rep := gitproto.RefusalReport(cmds.Parsed(), cmds.Capabilities(), movedMessage)
	if rep == nil {
		return nil, false
	}
	if _, err := w.Write(rep); err != nil {
		return nil, false
	}
	return gitproto.RefusalReport(cmds.Parsed(), []string{"report-status"}, movedMessage), true
}
