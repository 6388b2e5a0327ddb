package operator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"

	"github.com/poolgate/poolgate/pool"
	"github.com/rs/zerolog"
)

// SocketPath is where a daemon with this data dir listens for the CLI.
//
// A unix socket rather than the HTTP API: it needs no token in the CLI's
// environment, it is reachable only from the machine, and the kernel says
// who connects (SO_PEERCRED), so the audit names the operator's own login
// rather than whoever holds a shared token.
func SocketPath(dataDir string) string { return filepath.Join(dataDir, "operator", "sock") }

type peerKey struct{}

// maxSocketPath is sun_path's size on Linux less its terminating NUL.
const maxSocketPath = 107

// ServeSocket answers operator actions on the socket until ctx ends.
// Security: the socket is 0660 in a 0750 directory: the daemon's user and
// its group (the operators) may act, nobody else may even connect.
func ServeSocket(ctx context.Context, path string, a Actor, log zerolog.Logger) error {
	if len(path) > maxSocketPath {
		// The kernel's sun_path limit; a shorter data_dir fixes it.
		return fmt.Errorf("operator socket path %s is %d bytes, over the %d a unix socket allows", path, len(path), maxSocketPath)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	if err := os.Chmod(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	// A socket left by a previous process (or one handing over to this
	// one) is replaced: the newest daemon answers.
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	// The successor of a hand-over has bound its own socket at the same
	// path by the time this one closes: leave the file alone.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return err
	}
	mux := http.NewServeMux()
	mux.Handle(Pattern, Handler(a, func(r *http.Request, claimed string) string {
		uid, ok := r.Context().Value(peerKey{}).(int)
		if !ok {
			return ""
		}
		return OperatorName(uid, claimed)
	}, func(err error) { log.Error().Err(err).Msg("operator action") }))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if uid, ok := peerUID(c); ok {
				return context.WithValue(ctx, peerKey{}, uid)
			}
			return ctx
		}}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// OperatorName is who the audit names for a local user: the login of uid.
// Root may say who it acts for (the CLI sends $SUDO_USER): root could
// write anything anyway, and under the shipped unit (DynamicUser) only root
// reaches the socket, so this is what keeps the audit's name meaningful.
func OperatorName(uid int, claimed string) string {
	name := "uid " + strconv.Itoa(uid)
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		name = u.Username
	}
	if uid == 0 && claimed != "" && pool.CheckReason("name", claimed) == nil {
		return claimed + " (sudo)"
	}
	return name
}

// ErrNoDaemon is a socket nobody listens on: no daemon runs for this data
// dir (or it is not this host's).
var ErrNoDaemon = errors.New("no daemon answers on the operator socket")

// Call asks the daemon listening at path to perform an action.
func Call(ctx context.Context, path string, a Action) (Result, error) {
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
	body, _ := json.Marshal(Request{Reason: a.Reason, Commit: a.Commit, Operator: a.Operator})
	u := fmt.Sprintf("http://poolgate/api/v1/repos/%s/pools/%s/locks/%s/%s",
		url.PathEscape(a.Repo), url.PathEscape(a.Pool), url.PathEscape(a.Lock), url.PathEscape(string(a.Verb)))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return Result{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, errConnRefused) {
			return Result{}, ErrNoDaemon
		}
		return Result{}, fmt.Errorf("operator socket %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		var ok Response
		if err := json.NewDecoder(resp.Body).Decode(&ok); err != nil {
			return Result{}, err
		}
		return ok.Result, nil
	}
	var bad ErrorResponse
	json.NewDecoder(resp.Body).Decode(&bad)
	if bad.Error == "" {
		bad.Error = resp.Status
	}
	return Result{}, &Refusal{Code: codeOf(resp.StatusCode), Msg: bad.Error, Rules: bad.Rules}
}

func codeOf(status int) Code {
	switch status {
	case http.StatusBadRequest:
		return Invalid
	case http.StatusNotFound:
		return NotFound
	case http.StatusConflict:
		return Conflict
	case http.StatusServiceUnavailable:
		return Busy
	}
	return Invalid
}
