package daemon

import (
	"context"
	"errors"
	"fmt"
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
	"github.com/poolgate/poolgate/pushlog"
	"github.com/rs/zerolog"
)

// handleSession serves one exec request. Everything that is not one of the
// three git services gets one line on stderr and exit status 1.
func (s *Server) handleSession(sess ssh.Session) {
	s.Metrics.SessionOpened()
	defer s.Metrics.SessionClosed()
	id, ok := s.identityOf(sess.Context())
	if !ok {
		// Unreachable with public-key auth on; kept so that a change in
		// the auth set-up can never serve an anonymous session.
		s.refuse(sess, nil, sess.RawCommand(), "authentication required")
		return
	}
	if ssh.AgentRequested(sess) {
		// pool-resource's forward_agent asks for this; no agent channel
		// is ever opened, so it is ignored and the session goes on.
		s.log.Debug().Str("user", id.user.Name).Msg("agent forwarding requested, ignored")
	}
	if _, _, isPty := sess.Pty(); isPty {
		s.refuse(sess, &id, sess.RawCommand(), "interactive sessions are not served here; use git")
		return
	}
	raw := sess.RawCommand()
	if raw == "" {
		s.refuse(sess, &id, "shell", fmt.Sprintf("hi %s, there is no shell here; use git clone ssh://HOST/REPO.git", id.user.Name))
		return
	}
	svc, path, err := parseCommand(raw)
	if err != nil {
		s.refuse(sess, &id, raw, err.Error())
		return
	}
	cfg := s.conf().Config
	name, err := repoName(cfg, path)
	if err != nil {
		s.refuse(sess, &id, raw, fmt.Sprintf("%v: %q", err, path))
		return
	}
	repo := cfg.Repo(name)
	if repo.Upstream != nil && svc.writes() {
		s.refuse(sess, &id, raw, fmt.Sprintf("%s is a read-only mirror; push to its upstream", name))
		return
	}
	role := cfg.RoleFor(id.user.Name, repo)
	need := config.RoleRead
	if svc.writes() {
		need = config.RoleWrite
	}
	if role < need {
		verb := "read"
		if svc.writes() {
			verb = "push to"
		}
		s.refuse(sess, &id, raw, fmt.Sprintf("%s (role %s) may not %s %s", id.user.Name, role, verb, name))
		return
	}
	release, ok := s.perKey.acquire(id.key, cfg.SSH.MaxSessionsPerKey)
	if !ok {
		s.refuse(sess, &id, raw, fmt.Sprintf("too many sessions for this key (ssh.max_sessions_per_key %d), try again", cfg.SSH.MaxSessionsPerKey))
		return
	}
	defer release()
	code := s.serveGit(sess, id, role, svc, repo)
	sess.Exit(code)
}

// refuse ends a session with a one-line message; the detail goes to the log.
func (s *Server) refuse(sess ssh.Session, id *identity, what, msg string) {
	if len(what) > 200 {
		// The client chose it: logged, but not at any length.
		what = what[:200] + "…"
	}
	ev := s.log.Warn().Str("remote", sess.RemoteAddr().String()).Str("command", what)
	if id != nil {
		ev = ev.Str("user", id.user.Name).Str("key", id.key)
	}
	ev.Str("reason", msg).Msg("refused")
	fmt.Fprintf(sess.Stderr(), "poolgate: %s\n", msg)
	sess.Exit(1)
}

var gitProtocolRe = regexp.MustCompile(`^[A-Za-z0-9=:.,_-]{1,64}$`)

// serveGit runs the system git for one service and returns its exit status.
func (s *Server) serveGit(sess ssh.Session, id identity, role config.Role, svc Service, repo *config.Repo) int {
	if !s.begin() {
		fmt.Fprintln(sess.Stderr(), "poolgate: server is stopping, try again")
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

	if code, ok := s.tryUploadV2(ctx, sess, svc, protocol, env, repo, ev, start); ok {
		return code
	}

	var verdictFile string
	if svc == ReceivePack {
		// One writer at a time per repo, for the whole receive-pack: the
		// next pusher's advertisement shows the new tip, so the loser of a
		// race gets git's own non-fast-forward rejection and retries.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, lc.SSH.PushTimeout.D())
		defer cancel()
		lock := s.pushLock[repo.Name]
		select {
		case lock <- struct{}{}:
			defer func() { <-lock }()
		case <-ctx.Done():
			ev(zerolog.WarnLevel).Dur("waited", time.Since(start)).Msg("push gave up waiting for the repo")
			fmt.Fprintln(sess.Stderr(), "poolgate: repository busy, try again")
			return 1
		}
		tmp, err := os.MkdirTemp("", "poolgate-push-")
		if err != nil {
			ev(zerolog.ErrorLevel).Err(err).Msg("temp dir")
			fmt.Fprintln(sess.Stderr(), "poolgate: internal error")
			return 1
		}
		defer os.RemoveAll(tmp)
		verdictFile = filepath.Join(tmp, "verdict")
		env = append(env, pushlog.EnvVerdictFile+"="+verdictFile)
	}

	// "." with the repo as working directory: nothing the client sent is
	// ever an argument to git.
	cmd := exec.Command("git", svc.subcommand(), ".")
	cmd.Dir = repoDir(s.cfg, repo.Name)
	cmd.Env = env
	cmd.Stderr = sess.Stderr()
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

	var cmds *commandReader
	var in io.Reader = sess
	if svc == ReceivePack {
		cmds = &commandReader{r: sess}
		in = cmds
	}
	var limitErr atomic.Pointer[LimitError]
	go func() {
		// Not waited for: a client that keeps its side open must not hold
		// up the end of the session. It ends when the session closes.
		if svc != ReceivePack {
			io.Copy(stdin, in)
			stdin.Close()
			return
		}
		err := guardPush(stdin, in, packLimits{
			maxBytes:   lc.Limits.MaxPushBytes,
			maxObject:  lc.Limits.MaxObjectBytes,
			maxObjects: lc.Limits.MaxPushObjects,
		})
		var le *LimitError
		if errors.As(err, &le) {
			// Permanent: the relay withholds git's report (an "unpacker
			// error" the stock client would retry forever) and the client
			// sees this line and an error exit.
			limitErr.Store(le)
			fmt.Fprintf(sess.Stderr(), "poolgate: push refused: %v\n", le)
		}
		// Closing stdin early makes git stop at a truncated pack: it
		// removes its quarantine and moves no ref.
		stdin.Close()
	}()

	var res relayResult
	if svc == ReceivePack {
		res, err = relayPush(sess, stdout, func() string {
			if limitErr.Load() != nil {
				return pushlog.VerdictPermanent
			}
			v, _ := pushlog.ReadVerdict(verdictFile)
			return v
		})
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
			fmt.Fprintln(sess.Stderr(), "poolgate: push took too long and was stopped")
		}
		code = 1
	default:
	}

	e := ev(zerolog.InfoLevel)
	if protocol != "" {
		e = e.Str("protocol", protocol)
	}
	if svc == ReceivePack {
		v, rules := pushlog.ReadVerdict(verdictFile)
		ok, ng := reportStatus(res.report)
		switch {
		case res.refused:
			v = pushlog.VerdictPermanent
			code = 1
		case len(ng) > 0:
			if v != pushlog.VerdictTransient && v != pushlog.VerdictPermanent {
				v = "rejected" // by git itself, or a hook without a verdict
			}
		case len(ok) > 0:
			v = "accepted"
			s.maint.touched(repo.Name)
		case code != 0:
			v = "failed"
		default:
			v = "nothing-pushed" // no ref update reached the server (up to date, or refused by the client itself)
		}
		var ups []string
		for _, u := range cmds.parsed() {
			ups = append(ups, u.String())
		}
		e = e.Strs("refs", ups).Str("verdict", v)
		if le := limitErr.Load(); le != nil {
			e = e.Str("limit", le.Key).Str("reason", le.Msg)
		}
		if len(rules) > 0 {
			e = e.Strs("rules", rules)
		}
		switch v {
		case "accepted":
			s.Metrics.Push(repo.Name, true, nil)
		case pushlog.VerdictTransient, pushlog.VerdictPermanent:
			s.Metrics.Push(repo.Name, false, rules)
		}
		if s.Observer != nil && len(ups) > 0 {
			// Accepted or refused, the push left a record to derive events
			// from; derivation and delivery happen elsewhere, never here.
			s.Observer.Pushed(repo.Name)
		}
		if len(ng) > 0 {
			e = e.Strs("ng", ng)
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
	fmt.Fprintln(sess.Stderr(), "poolgate: internal error")
	return 1
}
