// Package daemon serves pool repos over SSH to git clients, chiefly
// Concourse's pool-resource, and runs the validator hook on every push.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gliderlabs/ssh"
	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/hooks"
	"github.com/poolgate/poolgate/internal/logtext"
	"github.com/poolgate/poolgate/metrics"
	"github.com/rs/zerolog"
	gossh "golang.org/x/crypto/ssh"
)

// DrainTimeout bounds how long a stopping daemon waits for in-flight git
// commands before killing them.
const DrainTimeout = 30 * time.Second

// Server is a running poolgate daemon.
type Server struct {
	// Metrics, if set, counts sessions, git commands and push verdicts.
	Metrics *metrics.Metrics

	cfg      *config.Config
	log      zerolog.Logger
	exe      string
	live     atomic.Pointer[liveConfig] // what SIGHUP may change; see reload.go
	running  *config.Live               // the same config, for every other part
	pushLock map[string]chan struct{}
	sessions chan struct{}
	perKey   keySessions
	keyConns keyConns
	accepted openConns // every accepted SSH connection until it closes
	disk     diskHealth

	hookTickets hookTickets // pushes the hook socket may judge (hooksock.go)
	hookSocket  string      // "": no socket, hooks judge in-process

	mu       sync.Mutex
	stopping bool
	inflight sync.WaitGroup // git commands running; Add only under mu
	maint    *maintainer
	ssh      *ssh.Server
	signer   gossh.Signer
	mux      *http.ServeMux

	// DrainTimeout overrides the package default; tests shorten it.
	DrainTimeout time.Duration
	// Observer, if set, hears of every push that ended (the event
	// service); it must not block.
	Observer PushObserver
	gate     Gate // cluster.go
}

// PushObserver is told when a receive-pack to repo has ended, accepted or
// not, so events are derived right away instead of at the next poll. It is
// only a wake-up: what happened is read from the repo and the hook's records.
type PushObserver interface{ Pushed(repo string) }

// New checks the config's keys and prepares a server. exe is the poolgate
// binary the pre-receive hook runs.
func New(cfg *config.Config, log zerolog.Logger, exe string) (*Server, error) {
	lc, err := newLiveConfig(cfg)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:          cfg,
		log:          log,
		exe:          exe,
		pushLock:     map[string]chan struct{}{},
		sessions:     make(chan struct{}, cfg.SSH.MaxSessions),
		DrainTimeout: DrainTimeout,
		running:      config.NewLive(cfg),
	}
	s.live.Store(lc)
	for _, r := range cfg.Repos {
		s.pushLock[r.Name] = make(chan struct{}, 1)
	}
	s.maint = newMaintainer(s)
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if p := s.disk.problem(cfg.DataDir); p != "" {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, p)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return s, nil
}

// Handle adds an HTTP handler (the status page, the API, /metrics) beside
// /healthz. Call before Serve.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Prepare makes the data dir ready: hook, repos, pools. Safe to run at
// every start.
func (s *Server) Prepare(ctx context.Context) error {
	if err := os.MkdirAll(s.cfg.DataDir, 0o755); err != nil {
		return err
	}
	signer, err := loadHostKey(s.HostKeyPath())
	if err != nil {
		return err
	}
	s.signer = signer
	install := hooks.Install
	if HookSocketOff() {
		install = hooks.InstallScript
	}
	if err := install(s.hooksDir(), s.exe); err != nil {
		return fmt.Errorf("install hook: %w", err)
	}
	if err := s.writeHookConfig(s.conf().raw); err != nil {
		return fmt.Errorf("hook config: %w", err)
	}
	for i := range s.cfg.Repos {
		if err := s.ensureRepo(ctx, &s.cfg.Repos[i]); err != nil {
			return fmt.Errorf("repo %s: %w", s.cfg.Repos[i].Name, err)
		}
	}
	return nil
}

// HostKey is the server's public host key (after Prepare).
func (s *Server) HostKey() gossh.PublicKey { return s.signer.PublicKey() }

// HostKeyPath is where the SSH host key lives.
func (s *Server) HostKeyPath() string { return s.cfg.HostKeyPath() }

// Serve runs until ctx ends, then stops accepting, lets in-flight git
// commands finish (up to DrainTimeout) and returns. httpLn may be nil.
func (s *Server) Serve(ctx context.Context, sshLn, httpLn net.Listener) error {
	if s.signer == nil {
		return errors.New("Serve called before Prepare")
	}
	s.ssh = s.newSSHServer(s.signer)
	if HookSocketOff() {
		s.log.Info().Msg("hook socket off (" + EnvHookSock + "): each push's hook judges in its own process")
	} else if hl, path, err := s.listenHookSocket(); err != nil {
		s.log.Warn().Err(err).Msg("no hook socket: each push's hook judges in its own process")
	} else {
		s.hookSocket = path
		go s.serveHookSocket(hl)
		defer hl.Close()
	}
	var err error
	errc := make(chan error, 2)
	go func() { errc <- s.ssh.Serve(s.accepted.listener(quickAckListener(sshLn))) }()
	var hs *http.Server
	if httpLn != nil {
		hs = &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- hs.Serve(httpLn) }()
	}
	mctx, stopMaint := context.WithCancel(context.Background())
	maintDone := make(chan struct{})
	go func() { s.maint.run(mctx); close(maintDone) }()

	select {
	case <-ctx.Done():
	case err = <-errc:
		s.log.Error().Err(err).Msg("listener failed")
	}
	s.log.Info().Msg("stopping: no new connections, waiting for running git commands")
	stopMaint()
	dctx, cancel := context.WithTimeout(context.Background(), s.DrainTimeout)
	defer cancel()
	if hs != nil {
		go hs.Shutdown(dctx)
	}
	serr := s.ssh.Shutdown(dctx)
	if serr == nil {
		// gliderlabs waits only for connections past their handshake; a
		// client accepted just before the listener closed is still in it,
		// and its git command must run too (drain.go).
		serr = s.accepted.wait(dctx)
	}
	if serr != nil {
		// Past the bound: closing the connections cancels their sessions'
		// contexts, which kills their git process groups. A push killed
		// before git's ref update lands nothing; git's ref update itself is
		// atomic.
		s.log.Warn().Msg("drain timeout: closing remaining connections")
		s.ssh.Close()
		s.accepted.closeAll()
	}
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	s.inflight.Wait()
	<-maintDone
	s.log.Info().Msg("stopped")
	if errors.Is(err, ssh.ErrServerClosed) || errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func (s *Server) newSSHServer(signer gossh.Signer) *ssh.Server {
	srv := &ssh.Server{
		Handler:     s.handleSession,
		HostSigners: []ssh.Signer{signer},
		Version:     "poolgate",
		// No IdleTimeout: gliderlabs would count keepalives as activity;
		// connState.watch counts channel traffic only (conns.go).
		// Public-key auth is set up in ServerConfigCallback, not through
		// gliderlabs' PublicKeyHandler: see publicKeyCallback.
		ServerConfigCallback: func(ctx ssh.Context) *gossh.ServerConfig {
			return &gossh.ServerConfig{
				PublicKeyCallback: s.publicKeyCallback,
				// gliderlabs turns NoClientAuth on when none of its own
				// auth handlers is set; this keeps "none" auth refused.
				NoClientAuthCallback: func(gossh.ConnMetadata) (*gossh.Permissions, error) {
					return nil, errors.New("public key required")
				},
				MaxAuthTries: 6,
				// Called with a nil error exactly once, when a key's
				// signature verified (queries are not logged).
				AuthLogCallback: func(_ gossh.ConnMetadata, method string, err error) {
					if st := connStateOf(ctx); err == nil && st != nil {
						st.authenticated(ctx)
					}
				},
			}
		},
		// Waits for a max_sessions slot and cuts the connection if the
		// handshake does not finish in time (conns.go).
		ConnCallback: s.admitConn,
		PtyCallback:  func(ssh.Context, ssh.Pty) bool { return true }, // refused with a message in handleSession
		SubsystemHandlers: map[string]ssh.SubsystemHandler{
			"default": func(sess ssh.Session) {
				var who *identity
				if id, ok := s.identityOf(sess.Context()); ok {
					who = &id
				}
				s.refuse(sess, who, "subsystem "+sess.Subsystem(), errSubsystem)
			},
		},
		ChannelHandlers: map[string]ssh.ChannelHandler{
			"session": s.sessionChannel,
			"default": func(_ *ssh.Server, _ *gossh.ServerConn, ch gossh.NewChannel, _ ssh.Context) {
				ch.Reject(gossh.Prohibited, channelRefused)
			},
		},
		ConnectionFailedCallback: func(c net.Conn, err error) {
			// x/crypto's errors quote the client (its algorithm lists).
			s.log.Debug().Str("remote", c.RemoteAddr().String()).Str("error", logtext.Clip(err.Error())).Msg("handshake failed")
		},
	}
	return srv
}

// begin registers a git command about to run; false once the server is
// past its drain and waits for nothing new.
func (s *Server) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return false
	}
	s.inflight.Add(1)
	return true
}
