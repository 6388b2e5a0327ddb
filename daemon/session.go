package daemon

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gliderlabs/ssh"
	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/gitproto"
	"github.com/poolgate/poolgate/internal/gitexec"
	"github.com/poolgate/poolgate/internal/logtext"
	"github.com/poolgate/poolgate/pushlog"
	"github.com/rs/zerolog"
)

// handleSession serves one exec request. Everything that is not one of the
// three git services gets one line on stderr and exit status 1.
func (s *Server) handleSession(sess ssh.Session) {
	if st := connStateOf(sess.Context()); st != nil {
		sess = activeSession{Session: sess, st: st}
	}
	s.Metrics.SessionOpened()
	defer s.Metrics.SessionClosed()
	req, ok := s.authorize(sess)
	if !ok {
		return
	}
	max := req.lc.SSH.MaxSessionsPerKey
	release, ok := s.perKey.acquire(req.id.key, max)
	if !ok {
		s.refuse(sess, &req.id, req.raw, errKeySessions(max))
		return
	}
	defer release()
	sess.Exit(s.serveGit(req))
}

// gitRequest is an authorized git session: who asks for which service on
// which repo, under the config of the moment it was asked.
type gitRequest struct {
	sess ssh.Session
	raw  string // the command as the client sent it, for the log
	id   identity
	role config.Role
	svc  Service
	repo *config.Repo
	lc   *liveConfig
}

// authorize is the first stage: it decides whether sess may run its
// command at all, and refuses it (one line, exit 1) when not.
func (s *Server) authorize(sess ssh.Session) (*gitRequest, bool) {
	id, ok := s.identityOf(sess.Context())
	if !ok {
		// Unreachable with public-key auth on; kept so that a change in
		// the auth set-up can never serve an anonymous session.
		s.refuse(sess, nil, sess.RawCommand(), errAuthRequired)
		return nil, false
	}
	if ssh.AgentRequested(sess) {
		// pool-resource's forward_agent asks for this; no agent channel
		// is ever opened, so it is ignored and the session goes on.
		s.log.Debug().Str("user", id.user.Name).Msg("agent forwarding requested, ignored")
	}
	if _, _, isPty := sess.Pty(); isPty {
		s.refuse(sess, &id, sess.RawCommand(), errInteractive)
		return nil, false
	}
	raw := sess.RawCommand()
	if raw == "" {
		s.refuse(sess, &id, "shell", errNoShell(id.user.Name))
		return nil, false
	}
	svc, path, err := gitproto.ParseCommand(raw)
	if err != nil {
		s.refuse(sess, &id, raw, err)
		return nil, false
	}
	lc := s.conf()
	name, err := repoName(lc.Config, path)
	if err != nil {
		s.refuse(sess, &id, raw, errNoRepo(err, path))
		return nil, false
	}
	repo := lc.Repo(name)
	if repo.Upstream != nil && svc.Writes() {
		s.refuse(sess, &id, raw, errMirror(name))
		return nil, false
	}
	role := lc.RoleFor(id.user.Name, repo)
	need := config.RoleRead
	if svc.Writes() {
		need = config.RoleWrite
	}
	if role < need {
		s.refuse(sess, &id, raw, errRole(id.user.Name, role, svc.Writes(), name))
		return nil, false
	}
	return &gitRequest{sess: sess, raw: raw, id: id, role: role, svc: svc, repo: repo, lc: lc}, true
}

// refuse ends a session with a one-line message; the detail goes to the log.
func (s *Server) refuse(sess ssh.Session, id *identity, what string, err error) {
	// Security: the client chose the command and most of msg (a path it
	// sent): logged, but never at any length.
	ev := s.log.Warn().Str("remote", sess.RemoteAddr().String()).Str("command", logtext.Clip(what))
	if id != nil {
		ev = ev.Str("user", id.user.Name).Str("key", id.key)
	}
	ev.Str("reason", logtext.Clip(err.Error())).Msg("refused")
	tell(sess.Stderr(), err)
	sess.Exit(1)
}

var gitProtocolRe = regexp.MustCompile(`^[A-Za-z0-9=:.,_-]{1,64}$`)

// gitRun is one git service being served: the request, and what the
// stages after authorize add to it.
type gitRun struct {
	*gitRequest
	ctx      context.Context // the session's; a push's is bounded by push_timeout
	start    time.Time
	protocol string          // GIT_PROTOCOL as the client sent it, "" if none
	git      gitexec.Options // how git runs: in the repo, with the hook's environment
	verdict  string          // a push's verdict file, written by the hook
}

// event starts a log event about the run, with who, what and where.
func (r *gitRun) event(s *Server, level zerolog.Level) *zerolog.Event {
	return s.log.WithLevel(level).Str("user", r.id.user.Name).Str("key", r.id.key).Str("repo", r.repo.Name).
		Str("service", string(r.svc)).Str("remote", r.sess.RemoteAddr().String())
}

// serveGit runs the system git for one authorized service and returns its
// exit status: prepare, take the repo (a push) or pass the cluster's gate
// (a fetch), run git and relay, record.
func (s *Server) serveGit(req *gitRequest) int {
	if !s.begin() {
		tell(req.sess.Stderr(), errStopping)
		return 1
	}
	defer s.inflight.Done()
	run := s.prepare(req)
	if req.svc.Writes() {
		return s.servePush(run)
	}
	return s.serveFetch(run)
}

// servePush serves a receive-pack, bounded by push_timeout: take the repo,
// run git and relay through the pack guard, record the verdict.
func (s *Server) servePush(run *gitRun) int {
	ctx, cancel := context.WithTimeout(run.ctx, run.lc.SSH.PushTimeout.D())
	defer cancel()
	run.ctx = ctx
	release, err := s.takeRepo(run)
	if err != nil {
		tell(run.sess.Stderr(), err)
		return 1
	}
	defer release()
	out := s.runGit(run)
	s.recordPush(run, out)
	return out.code
}

// prepare builds git's environment for the run: the hook's contract
// (pushlog's names), the config's ${NAME}s, and the client's GIT_PROTOCOL.
func (s *Server) prepare(req *gitRequest) *gitRun {
	env := []string{
		pushlog.EnvConfig + "=" + req.lc.hookFile,
		pushlog.EnvRepo + "=" + req.repo.Name,
		pushlog.EnvUser + "=" + req.id.user.Name,
		pushlog.EnvRole + "=" + req.role.String(),
		pushlog.EnvKey + "=" + req.id.key,
	}
	// The hook reads the same config, ${NAME}s included.
	env = append(env, req.lc.env...)
	protocol := ""
	for _, kv := range req.sess.Environ() {
		// GIT_PROTOCOL only (protocol v2 for fetches); other env requests
		// are ignored, as git-shell behind OpenSSH would.
		if v, ok := strings.CutPrefix(kv, "GIT_PROTOCOL="); ok && gitProtocolRe.MatchString(v) {
			env = append(env, kv)
			protocol = v
		}
	}
	// "." with the repo as working directory: nothing the client sent is
	// ever an argument to git.
	return &gitRun{gitRequest: req, ctx: req.sess.Context(), start: time.Now(), protocol: protocol,
		git: s.gitOptions(s.cfg.RepoDir(req.repo.Name), env...)}
}

// serveFetch serves a read (upload-pack, upload-archive): the cluster's
// gate, then protocol v2 by the daemon itself or plain git.
func (s *Server) serveFetch(run *gitRun) int {
	release, err := s.gateCheck(run.ctx, run.repo.Name, false)
	release()
	if err != nil {
		tell(run.sess.Stderr(), errCluster(err))
		return 1
	}
	if code, ok := s.tryUploadV2(run); ok {
		return code
	}
	out := s.runGit(run)
	s.record(run, out).Msg("git")
	return out.code
}

// takeRepo is a push's hold on its repo for the whole receive-pack
// (takeForWrite), and the verdict file and hook ticket that go with it.
// The error is the client's refusal; the detail is logged here. release
// undoes all of it.
func (s *Server) takeRepo(run *gitRun) (release func(), err error) {
	unlock, err := s.takeForWrite(run.ctx, run.repo.Name)
	switch {
	case errors.Is(err, errRepoTaken):
		run.event(s, zerolog.WarnLevel).Dur("waited", time.Since(run.start)).Msg("push gave up waiting for the repo")
		return nil, errRepoBusy
	case err != nil:
		run.event(s, zerolog.WarnLevel).Err(err).Msg("push refused by the cluster")
		return nil, errCluster(err)
	}
	tmp, err := os.MkdirTemp("", "poolgate-push-")
	if err != nil {
		unlock()
		run.event(s, zerolog.ErrorLevel).Err(err).Msg("temp dir")
		return nil, errInternal
	}
	release = func() { os.RemoveAll(tmp); unlock() }
	run.verdict = filepath.Join(tmp, "verdict")
	run.git.Env = append(run.git.Env, pushlog.EnvVerdictFile+"="+run.verdict)
	if s.hookSocket != "" {
		tenv, withdraw, err := s.hookTickets.issue(s.hookSocket, &hookTicket{cfg: run.lc.Config, repo: run.repo.Name,
			dir: run.git.Dir, user: run.id.user.Name, key: run.id.key, role: run.role.String(), verdict: run.verdict})
		if err != nil {
			release()
			run.event(s, zerolog.ErrorLevel).Err(err).Msg("cannot run git")
			return nil, errInternal
		}
		release = func() { withdraw(); os.RemoveAll(tmp); unlock() }
		run.git.Env = append(run.git.Env, tenv...)
	}
	return release, nil
}

// gitOutcome is how a run of git ended.
type gitOutcome struct {
	code     int
	relayErr error // the relay to or from the client failed
	// A push's only:
	cmds    *gitproto.CommandReader // the ref updates the client sent
	res     gitproto.RelayResult
	failure *storeFailure        // why receive-pack did not store the push
	limit   *gitproto.LimitError // the push went over a limit
}

// runGit starts git for the run and relays between it and the client
// until it ends; git is killed (its whole group, the hook included) when
// the run's context ends.
func (s *Server) runGit(run *gitRun) gitOutcome {
	var out gitOutcome
	sess, push := run.sess, run.svc == ReceivePack
	cmd := gitexec.Command(run.ctx, run.git, run.svc.Subcommand(), ".")
	var killed atomic.Bool
	kill := cmd.Cancel
	cmd.Cancel = func() error { killed.Store(true); return kill() }
	cmd.Stderr = sess.Stderr()
	// What git printed, for telling why a push was not stored.
	printed := &gitTail{}
	if push {
		cmd.Stderr = io.MultiWriter(sess.Stderr(), printed)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return s.cannotRun(run, err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return s.cannotRun(run, err)
	}
	if err := cmd.Start(); err != nil {
		if run.ctx.Err() != nil {
			// Gone before git started: as if it was killed at once.
			return s.killed(run, out)
		}
		return s.cannotRun(run, err)
	}

	var in io.Reader = sess
	if push {
		out.cmds = gitproto.NewCommandReader(sess)
		in = out.cmds
	}
	var limitErr atomic.Pointer[gitproto.LimitError]
	// Not waited for: a client that keeps its side open must not hold up
	// the end of the session. It ends when the session closes.
	go func() {
		if !push {
			io.Copy(stdin, in)
			stdin.Close()
			return
		}
		if le := s.guardPush(run, stdin, in); le != nil {
			limitErr.Store(le)
		}
	}()

	movedReported := false // a lost cluster race, answered as an ordinary rejection
	if push {
		out.res, out.relayErr = gitproto.RelayPush(sess, stdout, printed, func(report []byte) string {
			if limitErr.Load() != nil {
				return line(errPushRefused)
			}
			if v, _ := pushlog.ReadVerdict(run.verdict); v == pushlog.VerdictPermanent {
				return line(errPushRefused)
			}
			if out.failure = classifyStore(run.git.Dir, report, printed.Bytes()); out.failure != nil {
				return line(out.failure)
			}
			return ""
		})
		if out.res.Refused && !out.res.Sideband && out.failure != nil {
			tell(sess.Stderr(), out.failure)
		}
		if out.relayErr == nil && !out.res.Refused && len(out.res.Report) == 0 {
			out.res.Report, movedReported = reportMoved(sess, run.verdict, out.cmds)
		}
	} else {
		_, out.relayErr = io.Copy(sess, stdout)
	}
	if out.relayErr != nil {
		io.Copy(io.Discard, stdout)
	}
	werr := cmd.Wait()
	out.limit = limitErr.Load()
	out.code, _ = gitexec.ExitCode(werr)
	if killed.Load() {
		out = s.killed(run, out)
	}
	if movedReported {
		out.code = 0 // as receive-pack exits after reporting an ordinary rejection
	}
	if out.res.Refused {
		out.code = 1 // the permanent path: the stock client must see an error exit
	}
	return out
}

// guardPush copies the pushed pack to git through the pack guard and
// returns the limit it went over, if any.
func (s *Server) guardPush(run *gitRun, stdin io.WriteCloser, in io.Reader) *gitproto.LimitError {
	// Closing stdin early makes git stop at a truncated pack: it removes
	// its quarantine and moves no ref.
	defer stdin.Close()
	err := gitproto.GuardPush(stdin, in, gitproto.PackLimits{
		MaxBytes:   run.lc.Limits.MaxPushBytes,
		MaxObject:  run.lc.Limits.MaxObjectBytes,
		MaxObjects: run.lc.Limits.MaxPushObjects,
	})
	var le *gitproto.LimitError
	if !errors.As(err, &le) {
		return nil
	}
	// Permanent: the relay withholds git's report (an "unpacker error" the
	// stock client would retry forever) and the client sees this line and
	// an error exit.
	tell(run.sess.Stderr(), errPushLimit(le))
	return le
}

// killed is the outcome of a git the run's context ended.
func (s *Server) killed(run *gitRun, out gitOutcome) gitOutcome {
	if run.ctx.Err() == context.DeadlineExceeded {
		tell(run.sess.Stderr(), errPushTooLong)
	}
	out.code = 1
	return out
}

// cannotRun is the outcome of a git that could not be started: the client
// hears errInternal, the log why.
func (s *Server) cannotRun(run *gitRun, err error) gitOutcome {
	run.event(s, zerolog.ErrorLevel).Err(err).Msg("cannot run git")
	tell(run.sess.Stderr(), errInternal)
	return gitOutcome{code: 1, relayErr: err}
}

// record starts the run's one log event (sent by the caller, "git"), and
// counts the run in the metrics.
func (s *Server) record(run *gitRun, out gitOutcome) *zerolog.Event {
	e := run.event(s, zerolog.InfoLevel)
	if run.protocol != "" {
		e = e.Str("protocol", run.protocol)
	}
	if out.relayErr != nil {
		e = e.AnErr("relay", out.relayErr)
	}
	s.Metrics.GitCommand(string(run.svc), time.Since(run.start).Seconds())
	return e.Dur("duration", time.Since(run.start)).Int("exit", out.code)
}

// recordPush is a push's last stage: its verdict, the metrics and the
// disk's health, the event deriver told, and the one log line of the push.
func (s *Server) recordPush(run *gitRun, out gitOutcome) {
	v, rules, ng := s.pushVerdict(run, out)
	var ups []string
	for _, u := range out.cmds.Parsed() {
		ups = append(ups, u.String())
	}
	switch {
	case out.failure != nil && out.failure.rule == "disk-full":
		// Not the pusher's fault: the operator's alarm.
		s.disk.failed(run.repo.Name)
		s.Metrics.DiskFull(run.repo.Name)
		s.log.Error().Str("repo", run.repo.Name).Str("data_dir", s.cfg.DataDir).Msg("disk full: a push could not be stored")
	case v == pushlog.VerdictAccepted:
		s.Metrics.Push(run.repo.Name, true, nil)
	case v == pushlog.VerdictTransient, v == pushlog.VerdictPermanent:
		s.Metrics.Push(run.repo.Name, false, rules)
	}
	if v == pushlog.VerdictAccepted {
		s.disk.stored()
		s.maint.touched(run.repo.Name)
	}
	if s.Observer != nil && len(ups) > 0 {
		// Accepted or refused, the push left a record to derive events
		// from; derivation and delivery happen elsewhere, never here.
		s.Observer.Pushed(run.repo.Name)
	}
	e := s.record(run, out).Strs("refs", logtext.List(ups)).Str("verdict", v)
	if out.limit != nil {
		e = e.Str("limit", out.limit.Key).Str("reason", out.limit.Msg)
	}
	if len(rules) > 0 {
		e = e.Strs("rules", logtext.List(rules))
	}
	if out.failure != nil {
		e = e.Str("reason", out.failure.detail)
	}
	if len(ng) > 0 {
		e = e.Strs("ng", logtext.List(ng))
	}
	e.Msg("git")
}

// pushVerdict is what became of a push, from the hook's verdict file and
// git's report; a refused push exits non-zero.
func (s *Server) pushVerdict(run *gitRun, out gitOutcome) (v string, rules, ng []string) {
	v, rules = pushlog.ReadVerdict(run.verdict)
	_, ok, ng := gitproto.ReportStatus(out.res.Report)
	switch {
	case out.res.Refused:
		v = pushlog.VerdictPermanent
		if out.failure != nil {
			rules = []string{out.failure.rule}
		}
	case len(ng) > 0:
		if v != pushlog.VerdictTransient && v != pushlog.VerdictPermanent {
			v = pushlog.VerdictRejected // by git itself, or a hook without a verdict
		}
	case len(ok) > 0:
		v = pushlog.VerdictAccepted
	case out.code != 0:
		v = pushlog.VerdictFailed
	default:
		v = pushlog.VerdictNothing // no ref update reached the server (up to date, or refused by the client itself)
	}
	return v, rules, ng
}
