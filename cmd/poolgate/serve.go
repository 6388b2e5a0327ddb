package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/poolgate/poolgate/cluster"
	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/daemon"
	"github.com/poolgate/poolgate/events"
	"github.com/poolgate/poolgate/metrics"
	"github.com/poolgate/poolgate/operator"
	"github.com/poolgate/poolgate/upstream"
	"github.com/poolgate/poolgate/web"
	"github.com/poolgate/poolgate/webhook"
	"github.com/rs/zerolog"
	gossh "golang.org/x/crypto/ssh"
)

func init() {
	register("serve", "run the git-over-SSH server (demo default without --config)", runServe)
}

func runServe(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("serve", "serve [--config FILE]", stdout, stderr)
	cfgFile := fs.String("config", "", "config `FILE` (without it: the demo default, data in ./"+daemon.DemoDataDir+")")
	pos, code := parseFlags(fs, args, stderr)
	if code >= 0 {
		return code
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "poolgate serve: unexpected argument %q\n", pos[0])
		return exitUsage
	}

	cfg, demo, err := loadServeConfig(*cfgFile)
	if err != nil {
		fmt.Fprintf(stderr, "poolgate serve: %v\n", err)
		return exitUsage
	}
	log := daemon.NewLogger(os.Stderr, cfg.Log)
	for _, w := range cfg.Warnings {
		log.Warn().Msg(w)
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "poolgate serve: cannot find own executable: %v\n", err)
		return exitFailed
	}
	srv, err := daemon.New(cfg, log, exe)
	if err != nil {
		fmt.Fprintf(stderr, "poolgate serve: %v\n", err)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		// A second signal during the drain kills at once, as usual.
		<-ctx.Done()
		stop()
	}()
	// Before Prepare, so a hand-over or reload signal that arrives while
	// the repos are being prepared is not the default action (exit).
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGUSR2)
	defer signal.Stop(sigs)
	if err := srv.Prepare(ctx); err != nil {
		fmt.Fprintf(stderr, "poolgate serve: %v\n", err)
		return exitFailed
	}
	node, moved, leaveCluster, err := startCluster(cfg, log, srv, exe)
	if err != nil {
		fmt.Fprintf(stderr, "poolgate serve: %v\n", err)
		return exitFailed
	}
	defer leaveCluster()
	sshLn, httpLn, inherited, err := daemon.Listeners(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "poolgate serve: %v\n", err)
		return exitFailed
	}
	httpAddr := ""
	if httpLn != nil {
		httpAddr = httpLn.Addr().String()
	}
	log.Info().Str("ssh", sshLn.Addr().String()).Str("http", httpAddr).Str("config", cfg.File).Bool("inherited", inherited).
		Int("pid", os.Getpid()).Str("host_key", gossh.FingerprintSHA256(srv.HostKey())).Msg("listening")
	if demo != nil {
		if err := daemon.PrintDemo(stdout, srv, demo, sshLn.Addr().String(), httpAddr); err != nil {
			log.Warn().Err(err).Msg("demo instructions")
		}
	}
	serveCtx, handedOver := context.WithCancel(ctx)
	defer handedOver()
	go handleSignals(serveCtx, handedOver, sigs, log, srv, sshLn, httpLn)
	// Every part below reads the running config through live, which a
	// SIGHUP (srv.Reload) swaps for all of them at once.
	live := srv.Live()
	m := metrics.New()
	srv.Metrics = m
	svc, stopEvents, err := startEvents(live, log, srv, m, node)
	if err != nil {
		fmt.Fprintf(stderr, "poolgate serve: %v\n", err)
		return exitFailed
	}
	pushed := svc.Pushed
	moved.Store(&pushed)
	watched := upstream.Start(ctx, live, log.With().Str("part", "upstream").Logger(), svc.Pushed)
	startHTTP(live, log, srv, m, svc.Store, watched, node)
	startOperator(serveCtx, live, log, srv, svc.Store)
	// Events stop after the drain, so the last pushes are still derived.
	defer stopEvents()
	daemon.Ready(log)
	if err := srv.Serve(serveCtx, sshLn, httpLn); err != nil {
		fmt.Fprintf(stderr, "poolgate serve: %v\n", err)
		return exitFailed
	}
	return exitOK
}

// loadServeConfig reads FILE, or without one makes the demo default.
func loadServeConfig(file string) (*config.Config, *daemon.Demo, error) {
	if file == "" {
		home, _ := os.UserHomeDir()
		return daemon.DemoConfig(daemon.DemoDataDir, home)
	}
	// Absolute, because the hook reads the same file from inside a repo.
	abs, err := filepath.Abs(file)
	if err != nil {
		abs = file
	}
	cfg, err := config.Load(abs)
	return cfg, nil, err
}

// handleSignals reloads on SIGHUP and hands over on SIGUSR2 until ctx ends
// or a hand-over succeeds (then handedOver stops this process accepting).
func handleSignals(ctx context.Context, handedOver func(), sigs <-chan os.Signal, log zerolog.Logger, srv *daemon.Server, sshLn, httpLn net.Listener) {
	for {
		select {
		case <-ctx.Done():
			return
		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP:
				srv.Reload()
			case syscall.SIGUSR2:
				// Hand-over: a new process takes the listening sockets;
				// once it accepts, this one stops accepting and drains.
				if err := daemon.Handover(ctx, log, sshLn, httpLn); err != nil {
					log.Error().Err(err).Msg("hand-over failed; this process goes on serving")
					continue
				}
				log.Info().Msg("hand-over: the new process is accepting; draining")
				handedOver()
				return
			}
		}
	}
}

// startHTTP puts the page, the API, metrics and the upstream webhook
// receiver on the daemon's HTTP listener.
func startHTTP(live *config.Live, log zerolog.Logger, srv *daemon.Server, m *metrics.Metrics, st *events.Store, watched *upstream.Handler, node *cluster.Node) {
	backend := &web.StoreBackend{Config: live, Store: st, Mirrors: watched.Status}
	// Series a reload adds (a pool, a webhook) start at 0 too.
	m.Known(knownSeries(live.Current()))
	live.Subscribe(func(c *config.Config) { m.Known(knownSeries(c)) })
	m.WatchPools(poolGauges(live, backend))
	m.WatchMirrors(mirrorGauges(watched))
	page := web.New(backend, live.Current().HTTP.Token, m.Handler(), log.With().Str("part", "http").Logger())
	page.HandleOperator(srv)
	if node != nil {
		// Which nodes are up, which leads, which are behind: from any node.
		page.HandleAPI("GET /api/v1/cluster", node.StatusHandler())
		page.SetCluster(func(ctx context.Context) web.ClusterView { return clusterView(node.Status(ctx)) })
		m.Registry.MustRegister(node.Collector())
	}
	srv.Handle("/", page)
	if watched != nil {
		// Providers cannot send our bearer token; the payload signature
		// is what authenticates these.
		srv.Handle("POST /hooks/{provider}/{repo}", watched)
	}
}

// startEvents runs event derivation and webhook delivery beside the daemon,
// never in a push's path: the daemon only pokes the service when a push
// ends. The returned func stops both and closes the store.
func startEvents(live *config.Live, log zerolog.Logger, srv *daemon.Server, m *metrics.Metrics, node *cluster.Node) (*events.Service, func(), error) {
	svc, err := events.NewService(live, log.With().Str("part", "events").Logger())
	if err != nil {
		return nil, nil, err
	}
	opts := webhook.Options{OnAttempt: m.Delivery}
	if node != nil {
		opts.Ledger = node
	}
	disp := webhook.New(live, svc.Store, log.With().Str("part", "webhook").Logger(), opts)
	svc.OnEvents = func(evs []events.Event) {
		for _, e := range evs {
			if e.HeldSeconds != nil && (e.Type == events.Released || e.Type == events.Removed) {
				m.Held(e.Repo, e.Pool, float64(*e.HeldSeconds))
			}
		}
		disp.Notify()
		if node != nil {
			node.EventsDerived() // this node's rejections go to the others
		}
	}
	// Cursors before the first sync: a new target starts after the newest
	// event; history found on a first start is recorded, not announced
	// (events.Deriver), and deriving it does not hold up serving.
	if err := disp.Init(context.Background()); err != nil {
		svc.Store.Close()
		return nil, nil, err
	}
	srv.Observer = svc
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 3)
	go func() { svc.Run(ctx); done <- struct{}{} }()
	go func() { runDelivery(ctx, node, disp, svc.Store); done <- struct{}{} }()
	waits := 2
	if node != nil {
		// Refused pushes are recorded on one node only: shared through
		// etcd so the leader delivers them (cluster/shared.go).
		waits++
		go func() { node.ShareRejections(ctx, svc.Store, disp.Notify); done <- struct{}{} }()
	}
	return svc, func() {
		cancel()
		for range waits {
			<-done
		}
		svc.Store.Close()
	}, nil
}

// startOperator serves the operator socket for the CLI and runs
// release_after, both until ctx ends (a stop or a hand-over).
func startOperator(ctx context.Context, live *config.Live, log zerolog.Logger, srv *daemon.Server, st *events.Store) {
	olog := log.With().Str("part", "operator").Logger()
	go func() {
		if err := operator.ServeSocket(ctx, operator.SocketPath(live.Current().DataDir), srv, olog); err != nil {
			olog.Error().Err(err).Msg("operator socket; poolgate release and friends will act without the daemon")
		}
	}()
	auto := &operator.AutoRelease{Config: live.Current, Holds: st.Holds, Actor: srv, Log: olog}
	go auto.Run(ctx)
}

// poolGauges reads each pool's state at scrape time from the same place
// the API does.
func poolGauges(live *config.Live, b *web.StoreBackend) metrics.PoolSource {
	return func() []metrics.PoolGauge {
		var out []metrics.PoolGauge
		for _, r := range live.Current().Repos {
			pools, err := b.Pools(context.Background(), r.Name)
			if err != nil {
				continue
			}
			for _, p := range pools {
				g := metrics.PoolGauge{Repo: r.Name, Pool: p.Name, Claimed: p.Claimed, Total: p.Total,
					Waiting: len(p.Waiting), Ages: map[string]float64{}}
				for _, l := range p.Locks {
					age := 0.0
					if l.HeldSeconds != nil && l.State != "unclaimed" {
						age = float64(*l.HeldSeconds)
					}
					g.Ages[l.Name] = age
					if p.StaleAfterSeconds != nil && l.HeldSeconds != nil && *l.HeldSeconds >= *p.StaleAfterSeconds {
						g.Stale++
					}
				}
				out = append(out, g)
			}
		}
		return out
	}
}

// mirrorGauges reads watch-mode fetch health at scrape time.
func mirrorGauges(h *upstream.Handler) metrics.MirrorSource {
	return func() []metrics.MirrorGauge {
		var out []metrics.MirrorGauge
		for name, st := range h.Status() {
			g := metrics.MirrorGauge{Repo: name, Failures: float64(st.Failures)}
			if !st.LastSync.IsZero() {
				g.LastSync = float64(st.LastSync.UnixNano()) / 1e9
			}
			out = append(out, g)
		}
		return out
	}
}

// knownSeries is what the config declares, for series that start at 0.
func knownSeries(cfg *config.Config) (repos []string, pools [][2]string, targets []string) {
	for _, r := range cfg.Repos {
		repos = append(repos, r.Name)
		for _, p := range r.Pools {
			pools = append(pools, [2]string{r.Name, p.Name})
		}
	}
	for _, w := range cfg.Webhooks {
		targets = append(targets, w.Name)
	}
	return repos, pools, targets
}
