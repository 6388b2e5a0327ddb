package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/gliderlabs/ssh"
	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/pool"
	"github.com/rs/zerolog"
	gossh "golang.org/x/crypto/ssh"
)

// Node-to-node traffic is SSH on cluster.advertise, authenticated both
// ways with the one host key every node holds (DESIGN §9: the nodes share
// it so clients' known_hosts survive a failover). A node accepts only a
// client that proves it holds that key, and a node dials only a server that
// presents it.
//
// Two commands, never a shell:
//
//	objects REPO WANT       the caller sends a pack for WANT; the server
//	                        first answers "tip SHA" (its branch tip) so the
//	                        pack leaves out what it has, then stores the
//	                        objects without moving any ref and answers "ok"
//	pack REPO WANT [HAVE]   the server sends a pack of WANT less HAVE
//	decided REPO            the server answers "decided SHA", the branch's
//	                        tip read from etcd just now, or "unknown" when
//	                        it cannot reach etcd either (a node cut off
//	                        etcd asks before it serves a fetch)
//
// Peer requests are small and rare (one per push per peer, one per catch-up).
const peerDialTimeout = 3 * time.Second

// peerServer answers other nodes.
type peerServer struct {
	cfg     *config.Config
	signer  gossh.Signer
	git     gitRunner
	repoDir func(string) string
	log     zerolog.Logger
	srv     *ssh.Server
	// decided reads a repo's decided tip from etcd (Node.readDecided).
	decided func(ctx context.Context, repo string) (string, error)
}

func (p *peerServer) serve(ln net.Listener) error {
	p.srv = &ssh.Server{
		Handler:     p.handle,
		HostSigners: []ssh.Signer{p.signer},
		Version:     "poolgate-cluster",
		IdleTimeout: time.Minute,
		// Security: the only key accepted is the cluster's shared host key.
		PublicKeyHandler: func(_ ssh.Context, key ssh.PublicKey) bool {
			return ssh.KeysEqual(key, p.signer.PublicKey())
		},
		ChannelHandlers: map[string]ssh.ChannelHandler{"session": ssh.DefaultSessionHandler},
	}
	err := p.srv.Serve(ln)
	if errors.Is(err, ssh.ErrServerClosed) {
		return nil
	}
	return err
}

func (p *peerServer) close() {
	if p.srv != nil {
		p.srv.Close()
	}
}

// request is a parsed peer command.
type request struct {
	verb, repo, want, have string
}

func (p *peerServer) parse(raw string) (request, *config.Repo, error) {
	f := strings.Fields(raw)
	var r request
	switch {
	case len(f) == 3 && f[0] == "objects":
	case (len(f) == 3 || len(f) == 4) && f[0] == "pack":
	case len(f) == 2 && f[0] == "decided":
		f = append(f, pool.ZeroSHA) // no object named; the check below passes
	default:
		return r, nil, fmt.Errorf("unknown peer command")
	}
	r.verb, r.repo, r.want = f[0], f[1], f[2]
	if len(f) == 4 {
		r.have = f[3]
	}
	// Security: the name is checked as a client's is, and against the
	// config, before it becomes a path; the object names are checked before
	// they reach git.
	if !config.ValidRepoName(r.repo) {
		return r, nil, fmt.Errorf("no such repository")
	}
	repo := p.cfg.Repo(r.repo)
	if repo == nil {
		return r, nil, fmt.Errorf("no such repository")
	}
	if !pool.IsObjectID(r.want) || (r.have != "" && !pool.IsObjectID(r.have)) {
		return r, nil, fmt.Errorf("bad object name")
	}
	return r, repo, nil
}

func (p *peerServer) handle(sess ssh.Session) {
	r, repo, err := p.parse(sess.RawCommand())
	if err != nil {
		fmt.Fprintf(sess.Stderr(), "poolgate: %v\n", err)
		sess.Exit(1)
		return
	}
	ctx := sess.Context()
	dir := p.repoDir(r.repo)
	log := p.log.With().Str("peer_cmd", r.verb).Str("repo", r.repo).Str("want", r.want).Logger()
	switch r.verb {
	case "decided":
		tip, err := p.decided(ctx, r.repo)
		if err != nil || tip == "" {
			fmt.Fprintln(sess, "unknown")
		} else {
			fmt.Fprintf(sess, "decided %s\n", tip)
		}
		sess.Exit(0)
	case "objects":
		tip, err := p.git.tip(ctx, dir, repo.Branch)
		if err != nil || tip == "" {
			tip = pool.ZeroSHA
		}
		fmt.Fprintf(sess, "tip %s\n", tip)
		if err := p.git.unpack(ctx, dir, r.want, sess); err != nil {
			log.Warn().Err(err).Msg("objects from a peer refused")
			fmt.Fprintf(sess, "error %s\n", oneLine(err))
			sess.Exit(1)
			return
		}
		fmt.Fprintln(sess, "ok")
		sess.Exit(0)
	case "pack":
		have := r.have
		if have != "" && !p.git.hasCommit(ctx, dir, have) {
			have = ""
		}
		if err := p.git.pack(ctx, dir, r.want, have, sess); err != nil {
			log.Warn().Err(err).Msg("pack for a peer failed")
			fmt.Fprintf(sess.Stderr(), "poolgate: %s\n", oneLine(err))
			sess.Exit(1)
			return
		}
		sess.Exit(0)
	}
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", " ") }

// dialPeer opens an SSH connection to another node.
func dialPeer(ctx context.Context, addr string, signer gossh.Signer) (*gossh.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, peerDialTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	conn, chans, reqs, err := gossh.NewClientConn(c, addr, &gossh.ClientConfig{
		User: "poolgate",
		Auth: []gossh.AuthMethod{gossh.PublicKeys(signer)},
		// Security: a peer must present the cluster's own key.
		HostKeyCallback: gossh.FixedHostKey(signer.PublicKey()),
	})
	if err != nil {
		c.Close()
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return gossh.NewClient(conn, chans, reqs), nil
}

// sendObjects gives a peer the objects of want; nil once the peer has
// them all, synced, without any of its refs moved.
func sendObjects(ctx context.Context, g gitRunner, signer gossh.Signer, addr, dir, repo, want string) error {
	ps, err := openPeer(ctx, signer, addr, "objects "+repo+" "+want)
	if err != nil {
		return err
	}
	defer ps.close()
	in, out, stderr, sess := ps.in, ps.out, ps.stderr, ps.sess
	br := bufio.NewReader(out)
	line, err := br.ReadString('\n')
	if err != nil {
		return fmt.Errorf("peer: %v %s", err, strings.TrimSpace(stderr.String()))
	}
	peerTip, ok := strings.CutPrefix(strings.TrimSpace(line), "tip ")
	if !ok || !pool.IsObjectID(peerTip) {
		return fmt.Errorf("peer: unexpected answer %q", line)
	}
	have := ""
	// The peer holds everything its tip reaches; leave that out when this
	// node knows the commit (else the pack could not be made).
	if peerTip != "" && !pool.IsZero(peerTip) && g.hasCommit(ctx, dir, peerTip) {
		have = peerTip
	}
	perr := g.pack(ctx, dir, want, have, in)
	in.Close()
	if perr != nil {
		return perr
	}
	line, _ = br.ReadString('\n')
	werr := sess.Wait()
	if strings.TrimSpace(line) != "ok" {
		return fmt.Errorf("peer: %s %s", strings.TrimSpace(line), strings.TrimSpace(stderr.String()))
	}
	return werr
}

// fetchObjects gets the objects of want from a peer into the repo at dir;
// have is this node's tip ("" for none).
func fetchObjects(ctx context.Context, g gitRunner, signer gossh.Signer, addr, dir, repo, want, have string) error {
	cmd := "pack " + repo + " " + want
	if have != "" {
		cmd += " " + have
	}
	ps, err := openPeer(ctx, signer, addr, cmd)
	if err != nil {
		return err
	}
	defer ps.close()
	ps.in.Close()
	out, stderr, sess := ps.out, ps.stderr, ps.sess
	uerr := g.unpack(ctx, dir, want, out)
	io.Copy(io.Discard, out)
	werr := sess.Wait()
	if werr != nil {
		return fmt.Errorf("peer: %v %s", werr, strings.TrimSpace(stderr.String()))
	}
	return uerr
}

// peerSession is one command running on a peer.
type peerSession struct {
	cli    *gossh.Client
	sess   *gossh.Session
	in     io.WriteCloser
	out    io.Reader
	stderr *strings.Builder
	stop   func() bool
}

// openPeer dials a peer and starts cmd there; ctx's end cuts the connection.
func openPeer(ctx context.Context, signer gossh.Signer, addr, cmd string) (*peerSession, error) {
	cli, err := dialPeer(ctx, addr, signer)
	if err != nil {
		return nil, err
	}
	ps := &peerSession{cli: cli, stderr: new(strings.Builder)}
	ps.stop = context.AfterFunc(ctx, func() { cli.Close() })
	fail := func(err error) (*peerSession, error) { ps.close(); return nil, err }
	if ps.sess, err = cli.NewSession(); err != nil {
		return fail(err)
	}
	if ps.in, err = ps.sess.StdinPipe(); err != nil {
		return fail(err)
	}
	if ps.out, err = ps.sess.StdoutPipe(); err != nil {
		return fail(err)
	}
	ps.sess.Stderr = ps.stderr
	if err := ps.sess.Start(cmd); err != nil {
		return fail(err)
	}
	return ps, nil
}

func (ps *peerSession) close() {
	ps.stop()
	if ps.sess != nil {
		ps.sess.Close()
	}
	ps.cli.Close()
}

// askDecided asks a peer for a repo's decided tip: "" when the peer cannot
// reach etcd either; an error when the peer did not answer.
func askDecided(ctx context.Context, signer gossh.Signer, addr, repo string) (string, error) {
	ps, err := openPeer(ctx, signer, addr, "decided "+repo)
	if err != nil {
		return "", err
	}
	defer ps.close()
	ps.in.Close()
	line, err := bufio.NewReader(ps.out).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("peer: %v %s", err, strings.TrimSpace(ps.stderr.String()))
	}
	line = strings.TrimSpace(line)
	if line == "unknown" {
		return "", nil
	}
	tip, ok := strings.CutPrefix(line, "decided ")
	if !ok || !pool.IsObjectID(tip) {
		return "", fmt.Errorf("peer: unexpected answer %q", line)
	}
	return tip, nil
}
