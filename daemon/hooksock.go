package daemon

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/gitread"
	"github.com/poolgate/poolgate/hooks"
	"github.com/poolgate/poolgate/hooksock"
	"github.com/poolgate/poolgate/poolrepo"
	"github.com/poolgate/poolgate/pushlog"
)

// The pre-receive hook asks the daemon to judge the push (hooksock), and
// the post-receive hook asks it to record what landed: no config load, no
// poolgate start-up and no git process per push. The daemon judges as the
// session that started the push, named by a ticket it put into
// receive-pack's environment, good for one judgement and, once that let the
// push through, one record. On a cluster node the reference-transaction
// hook asks the same way, with the same ticket, for the cluster's decision
// on the ref update (RefDecider), between the two.

// EnvHookSock set to "off" turns the socket off and installs the shell
// script hook, as before it existed (for measuring; the hook then judges in
// its own process).
const EnvHookSock = "POOLGATE_HOOKSOCK"

// HookSocketOff reports EnvHookSock=off (a cluster node's
// reference-transaction hook is then the script too).
func HookSocketOff() bool { return strings.EqualFold(os.Getenv(EnvHookSock), "off") }

// hookTicket is what the daemon knows about one push in flight.
type hookTicket struct {
	secret  []byte
	cfg     *config.Config
	repo    string
	dir     string // the repo's directory
	user    string
	key     string
	role    string
	verdict string // the push's verdict file
	// What the ticket was used for (under hookTickets.mu): judged by
	// pre-receive, which accepted it, the branch update decided in the
	// cluster, and recorded by post-receive.
	judged, accepted, decided, recorded bool
}

// hookTickets are the tickets of pushes in flight, by ticket id.
type hookTickets struct {
	mu sync.Mutex
	m  map[string]*hookTicket
}

// issue registers t and returns the environment that hands its ticket to
// the hook, and a func that withdraws it when the push ends.
func (h *hookTickets) issue(socket string, t *hookTicket) (env []string, withdraw func(), err error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, nil, err
	}
	id, secret := hex.EncodeToString(b[:8]), hex.EncodeToString(b[8:])
	t.secret = []byte(secret)
	h.mu.Lock()
	if h.m == nil {
		h.m = map[string]*hookTicket{}
	}
	h.m[id] = t
	h.mu.Unlock()
	return []string{hooksock.EnvSocket + "=" + socket, hooksock.EnvToken + "=" + id + "." + secret},
		func() { h.take(id) }, nil
}

func (h *hookTickets) take(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.m, id)
}

// redeem returns the ticket for token, spending it for hook: a ticket
// judges one pre-receive run and, only after that run accepted the push,
// records one post-receive run, so a token seen once (in a process
// listing, a log) is worth nothing afterwards, and no record of an
// acceptance can be asked for a push the daemon did not let through. A
// wrong secret leaves the ticket to its push. The cluster's decision is
// asked for only between acceptance and record, and moves the branch at
// most once (decided); git runs the hook once per transaction, and a
// non-atomic push makes one per ref, each of which must be answered.
func (h *hookTickets) redeem(token, hook string) *hookTicket {
	id, secret, ok := strings.Cut(token, ".")
	if !ok {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.m[id]
	if t == nil || subtle.ConstantTimeCompare(t.secret, []byte(secret)) != 1 {
		return nil
	}
	switch hook {
	case "":
		if t.judged {
			return nil
		}
		t.judged = true
	case hooksock.PostReceive:
		if !t.accepted || t.recorded {
			return nil
		}
		t.recorded = true
	case hooksock.RefTransaction:
		if !t.accepted || t.recorded || t.decided {
			return nil
		}
	default:
		return nil
	}
	return t
}

// decide marks t's push as having moved the branch cluster-wide.
func (h *hookTickets) decide(t *hookTicket) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t.decided = true
}

// accept marks t's push as let through by its judgement.
func (h *hookTickets) accept(t *hookTicket) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t.accepted = true
}

// listenHookSocket opens this process's hook socket. Security: the socket
// lives in <data_dir>/run, which is made owner-only (0700), and is itself
// 0600, so only the daemon's own user (which runs git and the hook) can
// connect. Anyone who could connect could ask for judgements and, with a
// stolen ticket, spend another push's; keep both where they are.
func (s *Server) listenHookSocket() (net.Listener, string, error) {
	run := filepath.Join(s.cfg.DataDir, "run")
	if err := os.MkdirAll(run, 0o700); err != nil {
		return nil, "", err
	}
	if err := os.Chmod(run, 0o700); err != nil {
		return nil, "", err
	}
	removeStaleSockets(run)
	path := hooksock.Path(run, os.Getpid())
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, "", err
	}
	// Only the listener removes the file on Close; a hand-over's new
	// process has a socket of its own (hooksock.Path).
	ln.(*net.UnixListener).SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, "", err
	}
	return ln, path, nil
}

// removeStaleSockets removes the sockets of daemons that died without
// closing theirs: no process has the pid in the name any more.
func removeStaleSockets(run string) {
	old, _ := filepath.Glob(filepath.Join(run, "hook-*.sock"))
	for _, p := range old {
		var pid int
		if _, err := fmt.Sscanf(filepath.Base(p), "hook-%d.sock", &pid); err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.Remove(p)
		}
	}
}

// serveHookSocket answers hooks until ln closes.
func (s *Server) serveHookSocket(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Error().Err(err).Msg("hook socket")
			}
			return
		}
		go s.judgeHook(c)
	}
}

// judgeHook judges one push for a hook and answers it. Whatever goes
// wrong, the hook is told to refuse (or, if the connection is gone, it
// refuses on its own).
func (s *Server) judgeHook(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(s.conf().SSH.PushTimeout.D()))
	resp := s.hookAnswer(c)
	b, err := json.Marshal(resp)
	if err == nil {
		_, err = c.Write(b)
	}
	if err != nil {
		s.log.Warn().Err(err).Msg("hook socket: answer not delivered; the push is refused")
	}
}

func (s *Server) hookAnswer(c net.Conn) hooksock.Response {
	raw, err := io.ReadAll(io.LimitReader(c, hooksock.MaxRequest+1))
	if err != nil || len(raw) > hooksock.MaxRequest {
		s.log.Warn().Err(err).Msg("hook socket: unreadable request")
		return hookRefusal("unreadable request")
	}
	var req hooksock.Request
	if err := hooksock.Decode(raw, &req); err != nil {
		s.log.Warn().Err(err).Msg("hook socket: malformed request")
		return hookRefusal("malformed request")
	}
	t := s.hookTickets.redeem(req.Token, req.Hook)
	if t == nil {
		s.log.Warn().Str("hook", req.Hook).Msg("hook socket: unknown or spent ticket, refused")
		return hookRefusal("this push has no valid ticket")
	}
	env := map[string]string{
		pushlog.EnvRepo: t.repo, pushlog.EnvUser: t.user, pushlog.EnvKey: t.key, pushlog.EnvRole: t.role,
		pushlog.EnvVerdictFile: t.verdict,
	}
	var stderr bytes.Buffer
	if req.Hook == hooksock.RefTransaction {
		return s.decideRefs(t, req.Input, env)
	}
	h := &hooks.PreReceive{
		Config: t.cfg,
		// Security: the pusher is the ticket's session, whatever the
		// hook's own environment says.
		Getenv: func(k string) string { return env[k] },
		Stdin:  strings.NewReader(req.Input),
		Stderr: &stderr,
		Dir:    t.dir,
		GitEnv: s.baseEnv(),
		// The objects are read in this process: no git cat-file per push.
		Objects: func() poolrepo.Objects { return gitread.Open(t.dir) },
	}
	if req.Hook == hooksock.PostReceive {
		// The refs have moved and the objects left the quarantine.
		code, err := runJudge((*hooks.PostReceive)(h).Run)
		if err != nil {
			s.log.Error().Err(err).Str("repo", t.repo).Str("user", t.user).Msg("hook socket: recording the push panicked")
			return hooksock.Answer(1, "poolgate: warning: the push landed but could not be recorded: internal error\n")
		}
		s.log.Debug().Str("repo", t.repo).Str("user", t.user).Int("exit", code).Msg("recorded over the hook socket")
		return hooksock.Answer(code, stderr.String())
	}
	if req.Quarantine != "" {
		q, err := quarantineDir(t.dir, req.Quarantine)
		if err != nil {
			s.log.Warn().Err(err).Str("repo", t.repo).Str("user", t.user).Msg("hook socket: bad quarantine")
			return hookRefusal("bad quarantine directory")
		}
		// The daemon reads the pushed objects exactly as the hook would:
		// the quarantine first, the repo's own objects behind it (and any
		// git command, or git's cat-file for an object the in-process
		// reader lacks, is pointed at the same).
		h.GitEnv = append(h.GitEnv, "GIT_QUARANTINE_PATH="+q, "GIT_OBJECT_DIRECTORY="+q,
			"GIT_ALTERNATE_OBJECT_DIRECTORIES="+filepath.Dir(q))
		h.Objects = func() poolrepo.Objects { return gitread.OpenQuarantine(t.dir, q) }
	}
	code, err := runJudge(h.Run)
	if err != nil {
		s.log.Error().Err(err).Str("repo", t.repo).Str("user", t.user).Msg("hook socket: the judge panicked; the push is refused")
		return hookRefusal("internal error")
	}
	if code == 0 {
		s.hookTickets.accept(t)
	}
	s.log.Debug().Str("repo", t.repo).Str("user", t.user).Int("exit", code).Msg("judged over the hook socket")
	return hooksock.Answer(code, stderr.String())
}

// RefDecider is the gate of a cluster node (package cluster): it decides
// a push's ref update cluster-wide, as the reference-transaction hook's
// prepared phase (0 lets git move the ref). It writes the push's verdict
// file (getenv names it) as the hook process would.
type RefDecider interface {
	RefTransaction(cfg *config.Config, getenv func(string) string, stdin io.Reader, stderr io.Writer, dir string) int
}

// decideRefs answers a reference-transaction hook: the decision in this
// process, with the node's etcd client. Fail closed: no decider, no
// decision, no ref update.
func (s *Server) decideRefs(t *hookTicket, input string, env map[string]string) hooksock.Response {
	d, ok := s.gate.(RefDecider)
	if !ok {
		if t.cfg.Cluster == nil {
			return hooksock.Answer(0, "") // a hook left from a cluster configuration
		}
		s.log.Error().Str("repo", t.repo).Msg("hook socket: a cluster push but no cluster decider; the push is refused")
		return hookRefusal("no cluster decision")
	}
	var stderr bytes.Buffer
	code, err := runJudge(func() int {
		return d.RefTransaction(t.cfg, func(k string) string { return env[k] }, strings.NewReader(input), &stderr, t.dir)
	})
	if err != nil {
		s.log.Error().Err(err).Str("repo", t.repo).Str("user", t.user).Msg("hook socket: the cluster decision panicked; the push is refused")
		_ = pushlog.WriteVerdict(t.verdict, pushlog.VerdictPermanent, nil)
		return hookRefusal("internal error")
	}
	if code == 0 && strings.TrimSpace(input) != "" {
		s.hookTickets.decide(t)
	}
	s.log.Debug().Str("repo", t.repo).Str("user", t.user).Int("exit", code).Msg("decided over the hook socket")
	return hooksock.Answer(code, stderr.String())
}

// runJudge runs the judge, turning a panic into an error: a hook process
// that crashed refused one push, and judging in the daemon must not make
// the same bug take the whole server down.
func runJudge(run func() int) (code int, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return run(), nil
}

func hookRefusal(why string) hooksock.Response {
	return hooksock.Answer(1, "poolgate: push refused: the server could not validate it: "+why+"\n")
}

// quarantineDir checks that q is a directory directly inside repo's
// objects directory, where receive-pack makes its quarantine, and returns
// it cleaned. Compared as files, not strings: git names the quarantine
// from its working directory, which may spell the path differently.
func quarantineDir(repo, q string) (string, error) {
	q = filepath.Clean(q)
	if !filepath.IsAbs(q) {
		return "", fmt.Errorf("quarantine %q is not absolute", q)
	}
	want, err := os.Stat(filepath.Join(repo, "objects"))
	if err != nil {
		return "", err
	}
	parent, err := os.Stat(filepath.Dir(q))
	if err != nil {
		return "", err
	}
	fi, err := os.Lstat(q)
	if err != nil {
		return "", err
	}
	if !os.SameFile(want, parent) || !fi.IsDir() {
		return "", fmt.Errorf("quarantine %q is not inside the repo's objects", q)
	}
	return q, nil
}
