package daemon

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gliderlabs/ssh"
	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/gitproto"
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
	id, ok := s.identityOf(sess.Context())
	if !ok {
		// Unreachable with public-key auth on; kept so that a change in
		// the auth set-up can never serve an anonymous session.
		s.refuse(sess, nil, sess.RawCommand(), errAuthRequired)
		return
	}
	if ssh.AgentRequested(sess) {
		// pool-resource's forward_agent asks for this; no agent channel
		// is ever opened, so it is ignored and the session goes on.
		s.log.Debug().Str("user", id.user.Name).Msg("agent forwarding requested, ignored")
	}
	if _, _, isPty := sess.Pty(); isPty {
		s.refuse(sess, &id, sess.RawCommand(), errInteractive)
		return
	}
	raw := sess.RawCommand()
	if raw == "" {
		s.refuse(sess, &id, "shell", errNoShell(id.user.Name))
		return
	}
	svc, path, err := gitproto.ParseCommand(raw)
	if err != nil {
		s.refuse(sess, &id, raw, err)
		return
	}
	cfg := s.conf().Config
	name, err := repoName(cfg, path)
	if err != nil {
		s.refuse(sess, &id, raw, errNoRepo(err, path))
		return
	}
	repo := cfg.Repo(name)
	if repo.Upstream != nil && svc.Writes() {
		s.refuse(sess, &id, raw, errMirror(name))
		return
	}
	role := cfg.RoleFor(id.user.Name, repo)
	need := config.RoleRead
	if svc.Writes() {
		need = config.RoleWrite
	}
	if role < need {
		s.refuse(sess, &id, raw, errRole(id.user.Name, role, svc.Writes(), name))
		return
	}
	release, ok := s.perKey.acquire(id.key, cfg.SSH.MaxSessionsPerKey)
	if !ok {
		s.refuse(sess, &id, raw, errKeySessions(cfg.SSH.MaxSessionsPerKey))
		return
	}
	defer release()
	code := s.serveGit(sess, id, role, svc, repo)
	sess.Exit(code)
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

// serveGit runs the system git for one service and returns its exit status.
func (s *Server) serveGit(sess ssh.Session, id identity, role config.Role, svc Service, repo *config.Repo) int {
	if !s.begin() {
		tell(sess.Stderr(), errStopping)
		return 1
	}
	defer s.inflight.Done()
	start := time.Now()
	var ctx context.Context = sess.Context()
	ev := func(level zerolog.Level) *zerolog.Event {
		return s.log.WithLevel(level).Str("user", id.user.Name).Str("key", id.key).Str("repo", repo.Name).
			Str("service", string(svc)).Str("remote", sess.RemoteAddr().String())
	}

	lc := s.conf()
	env := append(s.baseEnv(),
		pushlog.EnvConfig+"="+lc.hookFile,
		pushlog.EnvRepo+"="+repo.Name,
		pushlog.EnvUser+"="+id.user.Name,
		pushlog.EnvRole+"="+role.String(),
		pushlog.EnvKey+"="+id.key,
	)
	// The hook reads the same config, ${NAME}s included.
	env = append(env, lc.env...)
	protocol := ""
	for _, kv := range sess.Environ() {
		// GIT_PROTOCOL only (protocol v2 for fetches); other env requests
		// are ignored, as git-shell behind OpenSSH would.
		if v, ok := strings.CutPrefix(kv, "GIT_PROTOCOL="); ok && gitProtocolRe.MatchString(v) {
			env = append(env, kv)
			protocol = v
		}
	}

	if !svc.Writes() {
		release, err := s.gateCheck(ctx, repo.Name, false)
		release()
		if err != nil {
			tell(sess.Stderr(), errCluster(err))
			return 1
		}
	}
	if code, ok := s.tryUploadV2(ctx, sess, svc, protocol, env, repo, ev, start); ok {
		return code
	}

	var verdictFile string
	if svc == ReceivePack {
		// The repo for the whole receive-pack (takeForWrite).
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, lc.SSH.PushTimeout.D())
		defer cancel()
		release, err := s.takeForWrite(ctx, repo.Name)
		switch {
		case errors.Is(err, errRepoTaken):
			ev(zerolog.WarnLevel).Dur("waited", time.Since(start)).Msg("push gave up waiting for the repo")
			tell(sess.Stderr(), errRepoBusy)
			return 1
		case err != nil:
			ev(zerolog.WarnLevel).Err(err).Msg("push refused by the cluster")
			tell(sess.Stderr(), errCluster(err))
			return 1
		}
		defer release()
		tmp, err := os.MkdirTemp("", "poolgate-push-")
		if err != nil {
			ev(zerolog.ErrorLevel).Err(err).Msg("temp dir")
			tell(sess.Stderr(), errInternal)
			return 1
		}
		defer os.RemoveAll(tmp)
		verdictFile = filepath.Join(tmp, "verdict")
		env = append(env, pushlog.EnvVerdictFile+"="+verdictFile)
		if s.hookSocket != "" {
			tenv, withdraw, err := s.hookTickets.issue(s.hookSocket, &hookTicket{cfg: lc.Config, repo: repo.Name,
				dir: repoDir(s.cfg, repo.Name), user: id.user.Name, key: id.key, role: role.String(), verdict: verdictFile})
			if err != nil {
				return s.internal(sess, ev, err)
			}
			defer withdraw()
			env = append(env, tenv...)
		}
	}

	// "." with the repo as working directory: nothing the client sent is
	// ever an argument to git.
	dir := repoDir(s.cfg, repo.Name)
	cmd := exec.Command("git", svc.Subcommand(), ".")
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stderr = sess.Stderr()
	// What git printed, for telling why a push was not stored.
	printed := &gitTail{}
	if svc == ReceivePack {
		cmd.Stderr = io.MultiWriter(sess.Stderr(), printed)
	}
	// Own process group: a Ctrl-C on the daemon's terminal must not kill a
	// push half-way, and killing the group also ends the hook.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return s.internal(sess, ev, err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return s.internal(sess, ev, err)
	}
	if err := cmd.Start(); err != nil {
		return s.internal(sess, ev, err)
	}
	killed := make(chan struct{})
	stopKill := context.AfterFunc(ctx, func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		close(killed)
	})

	var cmds *gitproto.CommandReader
	var in io.Reader = sess
	if svc == ReceivePack {
		cmds = gitproto.NewCommandReader(sess)
		in = cmds
	}
	var limitErr atomic.Pointer[gitproto.LimitError]
	go func() {
		// Not waited for: a client that keeps its side open must not hold
		// up the end of the session. It ends when the session closes.
		if svc != ReceivePack {
			io.Copy(stdin, in)
			stdin.Close()
			return
		}
		err := gitproto.GuardPush(stdin, in, gitproto.PackLimits{
			MaxBytes:   lc.Limits.MaxPushBytes,
			MaxObject:  lc.Limits.MaxObjectBytes,
			MaxObjects: lc.Limits.MaxPushObjects,
		})
		var le *gitproto.LimitError
		if errors.As(err, &le) {
			// Permanent: the relay withholds git's report (an "unpacker
			// error" the stock client would retry forever) and the client
			// sees this line and an error exit.
			limitErr.Store(le)
			tell(sess.Stderr(), errPushLimit(le))
		}
		// Closing stdin early makes git stop at a truncated pack: it
		// removes its quarantine and moves no ref.
		stdin.Close()
	}()

	var res gitproto.RelayResult
	var failure *storeFailure
	movedReported := false // a lost cluster race, answered as an ordinary rejection
	if svc == ReceivePack {
		res, err = gitproto.RelayPush(sess, stdout, printed, func(report []byte) string {
			if limitErr.Load() != nil {
				return line(errPushRefused)
			}
			if v, _ := pushlog.ReadVerdict(verdictFile); v == pushlog.VerdictPermanent {
				return line(errPushRefused)
			}
			if failure = classifyStore(dir, report, printed.Bytes()); failure != nil {
				return line(failure)
			}
			return ""
		})
		if res.Refused && !res.Sideband && failure != nil {
			tell(sess.Stderr(), failure)
		}
		if err == nil && !res.Refused && len(res.Report) == 0 {
			res.Report, movedReported = reportMoved(sess, verdictFile, cmds)
		}
	} else {
		_, err = io.Copy(sess, stdout)
	}
	if err != nil {
		io.Copy(io.Discard, stdout)
	}
	werr := cmd.Wait()
	if !stopKill() {
		// The kill has started: let it finish, so the select below sees
		// it (git can die and be waited for before close(killed) runs).
		<-killed
	}
	code := 0
	if werr != nil {
		code = 1
		var ee *exec.ExitError
		if errors.As(werr, &ee) && ee.ExitCode() > 0 {
			code = ee.ExitCode()
		}
	}
	select {
	case <-killed:
		if ctx.Err() == context.DeadlineExceeded {
			tell(sess.Stderr(), errPushTooLong)
		}
		code = 1
	default:
	}
	if movedReported {
		code = 0 // as receive-pack exits after reporting an ordinary rejection
	}

	e := ev(zerolog.InfoLevel)
	if protocol != "" {
		e = e.Str("protocol", protocol)
	}
	if svc == ReceivePack {
		v, rules := pushlog.ReadVerdict(verdictFile)
		_, ok, ng := gitproto.ReportStatus(res.Report)
		switch {
		case res.Refused:
			v = pushlog.VerdictPermanent
			code = 1
			if failure != nil {
				rules = []string{failure.rule}
			}
		case len(ng) > 0:
			if v != pushlog.VerdictTransient && v != pushlog.VerdictPermanent {
				v = "rejected" // by git itself, or a hook without a verdict
			}
		case len(ok) > 0:
			v = "accepted"
			s.disk.stored()
			s.maint.touched(repo.Name)
		case code != 0:
			v = "failed"
		default:
			v = "nothing-pushed" // no ref update reached the server (up to date, or refused by the client itself)
		}
		var ups []string
		for _, u := range cmds.Parsed() {
			ups = append(ups, u.String())
		}
		e = e.Strs("refs", logtext.List(ups)).Str("verdict", v)
		if le := limitErr.Load(); le != nil {
			e = e.Str("limit", le.Key).Str("reason", le.Msg)
		}
		if len(rules) > 0 {
			e = e.Strs("rules", logtext.List(rules))
		}
		if failure != nil {
			e = e.Str("reason", failure.detail)
		}
		switch {
		case failure != nil && failure.rule == "disk-full":
			// Not the pusher's fault: the operator's alarm.
			s.disk.failed(repo.Name)
			s.Metrics.DiskFull(repo.Name)
			s.log.Error().Str("repo", repo.Name).Str("data_dir", s.cfg.DataDir).Msg("disk full: a push could not be stored")
		case v == "accepted":
			s.Metrics.Push(repo.Name, true, nil)
		case v == pushlog.VerdictTransient, v == pushlog.VerdictPermanent:
			s.Metrics.Push(repo.Name, false, rules)
		}
		if s.Observer != nil && len(ups) > 0 {
			// Accepted or refused, the push left a record to derive events
			// from; derivation and delivery happen elsewhere, never here.
			s.Observer.Pushed(repo.Name)
		}
		if len(ng) > 0 {
			e = e.Strs("ng", logtext.List(ng))
		}
	}
	if err != nil {
		e = e.AnErr("relay", err)
	}
	s.Metrics.GitCommand(string(svc), time.Since(start).Seconds())
	e.Dur("duration", time.Since(start)).Int("exit", code).Msg("git")
	return code
}

func (s *Server) internal(sess ssh.Session, ev func(zerolog.Level) *zerolog.Event, err error) int {
	ev(zerolog.ErrorLevel).Err(err).Msg("cannot run git")
	tell(sess.Stderr(), errInternal)
	return 1
}
