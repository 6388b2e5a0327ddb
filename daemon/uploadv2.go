package daemon

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gliderlabs/ssh"
	"github.com/poolgate/poolgate/gitproto"
	"github.com/poolgate/poolgate/internal/gitexec"
	"github.com/rs/zerolog"
)

// Protocol v2 fetches, served the way git's smart HTTP serves them.
//
// Every waiting pool-resource build fetches every retry_delay, almost
// always with nothing new: the client reads the capability advertisement,
// asks `ls-refs`, sees it has the tip already and hangs up. Starting
// `git upload-pack` for that costs more than everything else of the fetch.
// So the daemon writes git's capability advertisement itself (cached from
// git, per repo, for capsTTL), answers `ls-refs` from the ref files when
// the repo's refs are plain branches, and starts
// `git upload-pack --stateless-rpc` only for a request it does not answer
// itself: `fetch` (the client wants objects), `object-info`, anything
// unknown, and `ls-refs` on repos with tags, symbolic refs other than HEAD,
// hidden refs or another ref storage. Each such request gets its own
// stateless process, exactly as over HTTP. Protocol v0 and v1 clients get
// plain `git upload-pack`, as before.

// EnvV2 set to "off" turns this off: every fetch runs plain git upload-pack.
const EnvV2 = "POOLGATE_V2"

// capsTTL bounds how long a cached capability advertisement and the repo's
// ref settings are trusted (git may be upgraded, the repo's config edited).
const capsTTL = time.Minute

// maxLsRefsRequest bounds an ls-refs request the daemon buffers.
const maxLsRefsRequest = 1 << 20

// wantsV2 reports whether GIT_PROTOCOL asks for protocol version 2.
func wantsV2(protocol string) bool {
	if strings.EqualFold(os.Getenv(EnvV2), "off") {
		return false
	}
	for _, kv := range strings.Split(protocol, ":") {
		if kv == "version=2" {
			return true
		}
	}
	return false
}

// v2Cache holds, per repo directory, what git would advertise.
type v2Cache struct {
	mu sync.Mutex
	m  map[string]*v2Caps
}

type v2Caps struct {
	adv []byte // capability advertisement, exactly as git writes it
	// plain: nothing in the repo's config changes what ls-refs shows
	// (hidden refs, unborn handling, ref storage, object format).
	plain bool
	at    time.Time
}

var v2caches sync.Map // *Server → *v2Cache

func (s *Server) v2cache() *v2Cache {
	c, _ := v2caches.LoadOrStore(s, &v2Cache{m: map[string]*v2Caps{}})
	return c.(*v2Cache)
}

// caps returns the repo's advertisement, asking git at most once per
// capsTTL.
func (c *v2Cache) caps(ctx context.Context, git gitexec.Options) (*v2Caps, error) {
	dir := git.Dir
	c.mu.Lock()
	e := c.m[dir]
	c.mu.Unlock()
	if e != nil && time.Since(e.at) < capsTTL {
		return e, nil
	}
	adv, err := gitexec.Command(ctx, git, "upload-pack", "--advertise-refs", "--stateless-rpc", ".").Output()
	if err != nil {
		return nil, fmt.Errorf("git upload-pack --advertise-refs: %w", err)
	}
	if !bytes.HasPrefix(adv, []byte("000eversion 2\n")) || !bytes.HasSuffix(adv, []byte("0000")) {
		return nil, fmt.Errorf("git upload-pack did not advertise protocol v2: %.40q", adv)
	}
	// Settings that make ls-refs show something other than the plain
	// list of refs: any of them set, and git answers ls-refs itself.
	out, _ := gitexec.Command(ctx, git, "config", "--get-regexp",
		`^(uploadpack\.hiderefs|transfer\.hiderefs|lsrefs\.unborn|extensions\.refstorage|extensions\.objectformat|core\.repositoryformatversion)$`,
	).Output() // exit 1: none set
	plain := true
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line == "" || line == "core.repositoryformatversion 0" {
			continue
		}
		plain = false
	}
	e = &v2Caps{adv: adv, plain: plain, at: time.Now()}
	c.mu.Lock()
	c.m[dir] = e
	c.mu.Unlock()
	return e, nil
}

// v2Stats says how a v2 session was served, for the log.
type v2Stats struct {
	lsRefs    int // ls-refs answered by the daemon
	forwarded int // requests given to git upload-pack --stateless-rpc
}

// errNoV2 means the daemon cannot speak v2 for this repo right now; the
// caller serves the session with plain git upload-pack instead. Returned
// only before anything was written to the client.
var errNoV2 = errors.New("protocol v2 not available")

// serveUploadV2 serves one protocol v2 upload-pack session and returns its
// exit status.
func (s *Server) serveUploadV2(ctx context.Context, sess ssh.Session, git gitexec.Options) (int, v2Stats, error) {
	var st v2Stats
	dir := git.Dir
	caps, err := s.v2cache().caps(ctx, git)
	if err != nil {
		return 0, st, fmt.Errorf("%w: %v", errNoV2, err)
	}
	if _, err := sess.Write(caps.adv); err != nil {
		return 1, st, err
	}
	r := bufio.NewReaderSize(sess, 64<<10)
	// Request lines are short: one small buffer serves them all (gitproto.ReadPkt
	// allocates a whole maximum-size packet whenever the buffer is short).
	line := make([]byte, 0, 1024)
	for {
		first, err := gitproto.ReadPkt(r, line)
		if errors.Is(err, io.EOF) {
			return 0, st, nil // the client hung up between requests
		}
		if err != nil {
			return s.v2ProtocolError(sess, st, err)
		}
		if first.Flush {
			return 0, st, nil // a flush instead of a request ends the session
		}
		if first.Control {
			return s.v2ProtocolError(sess, st, errors.New("expected a command"))
		}
		if string(first.Payload) == "command=ls-refs\n" || string(first.Payload) == "command=ls-refs" {
			req, err := gitproto.ReadRequest(r, first.Raw, maxLsRefsRequest)
			if err != nil {
				return s.v2ProtocolError(sess, st, err)
			}
			if caps.plain {
				if resp, ok := gitproto.LsRefs(dir, req); ok {
					if _, err := sess.Write(resp); err != nil {
						return 1, st, err
					}
					st.lsRefs++
					continue
				}
			}
			st.forwarded++
			if code, err := s.statelessUploadPack(ctx, sess, git, bytes.NewReader(req)); code != 0 || err != nil {
				return code, st, err
			}
			continue
		}
		// Anything else streams to a stateless upload-pack up to the
		// request's flush; git judges it.
		req := gitproto.NewRequestReader(r, first.Raw)
		st.forwarded++
		code, err := s.statelessUploadPack(ctx, sess, git, req)
		if code != 0 || err != nil {
			return code, st, err
		}
		if req.Err() != nil {
			return s.v2ProtocolError(sess, st, req.Err())
		}
		if !req.Done() {
			// git answered without reading the whole request: the stream
			// is out of step, end the session.
			return s.v2ProtocolError(sess, st, errors.New("request not consumed"))
		}
	}
}

func (s *Server) v2ProtocolError(sess ssh.Session, st v2Stats, err error) (int, v2Stats, error) {
	tell(sess.Stderr(), errProtocol(err))
	return 128, st, err
}

// statelessUploadPack runs `git upload-pack --stateless-rpc` for one
// request and copies its answer to the client.
func (s *Server) statelessUploadPack(ctx context.Context, sess ssh.Session, git gitexec.Options, req io.Reader) (int, error) {
	cmd := gitexec.Command(ctx, git, "upload-pack", "--stateless-rpc", ".")
	cmd.Stdin = req
	cmd.Stdout = sess
	cmd.Stderr = sess.Stderr()
	err := cmd.Run()
	if code, ok := gitexec.ExitCode(err); ok {
		return code, nil
	}
	return 1, err
}

// tryUploadV2 serves an upload-pack session in protocol v2 when the client
// asked for it; ok is false when the caller must run plain git upload-pack.
func (s *Server) tryUploadV2(run *gitRun) (code int, ok bool) {
	if run.svc != UploadPack || !wantsV2(run.protocol) {
		return 0, false
	}
	code, st, err := s.serveUploadV2(run.ctx, run.sess, run.git)
	if errors.Is(err, errNoV2) {
		run.event(s, zerolog.WarnLevel).Err(err).Msg("protocol v2 served by plain git upload-pack")
		return 0, false
	}
	e := s.record(run, gitOutcome{code: code}).Int("ls_refs", st.lsRefs).Int("git_runs", st.forwarded)
	if err != nil {
		e = e.AnErr("v2", err)
	}
	e.Msg("git")
	return code, true
}
