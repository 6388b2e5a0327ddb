package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/poolgate/poolgate/config"
	"github.com/rs/zerolog"
)

// Listening sockets are either made here from the config or inherited in
// the systemd fd-passing form (LISTEN_FDS, LISTEN_FDNAMES, fds from 3 on).
// Two things pass them that way: systemd socket activation
// (systemd/poolgate.socket) and poolgate's own hand-over on SIGUSR2
// (Handover), so one code path serves both. An inherited socket was
// listening before this process started, so a client connecting while the
// daemon restarts waits in the kernel's backlog instead of being refused.

// Names of inherited sockets (FileDescriptorName= in a socket unit). Sockets
// without one of these names are taken in order: SSH first, then HTTP.
const (
	FDNameSSH  = "ssh"
	FDNameHTTP = "http"
)

// Environment of a process started by Handover.
const (
	envHandover = "POOLGATE_HANDOVER" // "1": LISTEN_PID is ours, whatever it says
	envReadyFD  = "POOLGATE_READY_FD" // fd the new process writes "ready" to
)

// Listeners returns the SSH listener and the HTTP one (nil when HTTP is
// off), inherited if the process was given sockets, else new ones on the
// configured addresses. inherited says which.
func Listeners(cfg *config.Config) (sshLn, httpLn net.Listener, inherited bool, err error) {
	if os.Getenv(envHandover) == "1" && os.Getenv("LISTEN_FDS") != "" {
		// A parent cannot know its child's pid before exec; systemd sets
		// LISTEN_PID in the forked child, Handover marks it this way.
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	}
	os.Unsetenv(envHandover)
	files := activation.Files(true)
	var unnamed []net.Listener
	for _, f := range files {
		ln, lerr := net.FileListener(f)
		f.Close()
		if lerr != nil {
			return nil, nil, false, fmt.Errorf("inherited socket %s: %w", f.Name(), lerr)
		}
		switch f.Name() {
		case FDNameSSH:
			sshLn = ln
		case FDNameHTTP:
			httpLn = ln
		default:
			unnamed = append(unnamed, ln)
		}
	}
	for _, ln := range unnamed {
		switch {
		case sshLn == nil:
			sshLn = ln
		case httpLn == nil:
			httpLn = ln
		default:
			ln.Close()
		}
	}
	inherited = len(files) > 0
	if sshLn == nil {
		if sshLn, err = net.Listen("tcp", cfg.SSH.Listen); err != nil {
			return nil, nil, inherited, fmt.Errorf("ssh: %w", err)
		}
	}
	if cfg.HTTPListen() == "" {
		if httpLn != nil {
			httpLn.Close()
		}
		return sshLn, nil, inherited, nil
	}
	if httpLn == nil {
		if httpLn, err = net.Listen("tcp", cfg.HTTPListen()); err != nil {
			sshLn.Close()
			return nil, nil, inherited, fmt.Errorf("http: %w", err)
		}
	}
	return sshLn, httpLn, inherited, nil
}

// Ready tells whoever started this process that it is accepting: the old
// process of a hand-over (through POOLGATE_READY_FD) and systemd (sd_notify,
// with MAINPID since a hand-over changes it; the unit sets NotifyAccess=all).
func Ready(log zerolog.Logger) {
	if s := os.Getenv(envReadyFD); s != "" {
		os.Unsetenv(envReadyFD)
		if fd, err := strconv.Atoi(s); err == nil && fd > 2 {
			f := os.NewFile(uintptr(fd), "ready")
			fmt.Fprintln(f, "ready")
			f.Close()
		}
	}
	if _, err := sddaemon.SdNotify(false, fmt.Sprintf("READY=1\nMAINPID=%d", os.Getpid())); err != nil {
		log.Debug().Err(err).Msg("sd_notify")
	}
}

// HandoverTimeout bounds how long the old process waits for the new one to
// say it is accepting; past it the new one is killed and the old one goes on.
const HandoverTimeout = 60 * time.Second

// Handover starts a new poolgate (the binary now at this executable's path,
// so an upgrade takes effect) with this process's arguments and its
// listening sockets, and returns once the new process accepts on them. The
// caller then stops accepting and drains. On error nothing changed: this
// process keeps serving.
func Handover(ctx context.Context, log zerolog.Logger, sshLn, httpLn net.Listener) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	files, names, err := listenerFiles(sshLn, httpLn)
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	if err != nil {
		return err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	defer pr.Close()
	pid, err := startSuccessor(exe, files, names, pw)
	pw.Close()
	if err != nil {
		return err
	}
	proc, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	log.Info().Int("pid", pid).Str("exe", exe).Msg("hand-over: started the new process")
	if err := awaitReady(ctx, pr); err != nil {
		proc.Kill()
		proc.Wait()
		return err
	}
	// Reap it if it ever exits while this process still runs.
	go proc.Wait()
	return nil
}

// listenerFiles dups the listening sockets for the successor, with the
// systemd names it finds them by. The caller closes the files.
func listenerFiles(sshLn, httpLn net.Listener) ([]*os.File, []string, error) {
	var files []*os.File
	var names []string
	for _, l := range []struct {
		ln   net.Listener
		name string
	}{{sshLn, FDNameSSH}, {httpLn, FDNameHTTP}} {
		if l.ln == nil {
			continue
		}
		fl, ok := l.ln.(interface{ File() (*os.File, error) })
		if !ok {
			return files, names, fmt.Errorf("%s listener %T cannot be handed over", l.name, l.ln)
		}
		// File dups the socket: closing ours later leaves the child's open.
		f, err := fl.File()
		if err != nil {
			return files, names, err
		}
		files = append(files, f)
		names = append(names, l.name)
	}
	return files, names, nil
}

// startSuccessor starts exe with this process's arguments, the listening
// sockets as systemd passes them (fds 3…) and ready as the fd after them.
func startSuccessor(exe string, files []*os.File, names []string, ready *os.File) (int, error) {
	env := []string{}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", envHandover, envReadyFD:
			continue
		}
		env = append(env, kv)
	}
	env = append(env,
		"LISTEN_FDS="+strconv.Itoa(len(files)),
		"LISTEN_FDNAMES="+strings.Join(names, ":"),
		envHandover+"=1",
		envReadyFD+"="+strconv.Itoa(3+len(files)),
	)
	// The fds go to the child as raw numbers through syscall.StartProcess:
	// os/exec and os.StartProcess call (*os.File).Fd, which puts the fd in
	// blocking mode, and a socket's mode is shared by all its dups, so this
	// process's own listener would then block a thread in accept(2), which
	// closing it does not interrupt: the old process would hang in its
	// drain, or accept one more connection while stopping.
	fds := []uintptr{devNull(), os.Stdout.Fd(), os.Stderr.Fd()}
	for _, f := range files {
		fd, err := rawFD(f)
		if err != nil {
			return 0, err
		}
		fds = append(fds, fd)
	}
	fds = append(fds, ready.Fd())
	return syscall.ForkExec(exe, os.Args, &syscall.ProcAttr{
		Env:   env,
		Files: fds,
		// Its own process group: a Ctrl-C meant for the old one must not stop it.
		Sys: &syscall.SysProcAttr{Setpgid: true},
	})
}

// awaitReady waits for the successor's "ready" line on r, within
// HandoverTimeout.
func awaitReady(ctx context.Context, r io.Reader) error {
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(r).ReadString('\n')
		if err == nil && strings.TrimSpace(line) == "ready" {
			ready <- nil
			return
		}
		ready <- errors.New("the new process exited before accepting (see its log above)")
	}()
	t := time.NewTimer(HandoverTimeout)
	defer t.Stop()
	select {
	case err := <-ready:
		return err
	case <-t.C:
		return fmt.Errorf("the new process did not accept within %s", HandoverTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// rawFD is f's descriptor, without (*os.File).Fd's switch to blocking mode.
func rawFD(f *os.File) (uintptr, error) {
	sc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var fd uintptr
	if err := sc.Control(func(v uintptr) { fd = v }); err != nil {
		return 0, err
	}
	return fd, nil
}

var devNullFile *os.File

func devNull() uintptr {
	if devNullFile == nil {
		f, err := os.Open(os.DevNull)
		if err != nil {
			return os.Stdin.Fd()
		}
		devNullFile = f
	}
	return devNullFile.Fd()
}
