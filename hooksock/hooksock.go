// Package hooksock is the hooks' line to the running daemon. Under
// `poolgate serve` the pre-receive hook does not judge a push itself: it
// sends its input and its quarantine directory over a unix socket, and the
// daemon, which has the config loaded and knows who pushes, judges
// in-process. The post-receive hook sends the refs that moved the same way,
// and the daemon records the accepted push. In a cluster, the
// reference-transaction hook sends the ref update it is about to make, and
// the daemon decides it cluster-wide with the node's own etcd client. This
// package holds the wire
// format and the hooks' side of it, and nothing else, so the small hook
// program (cmd/poolgate-hook) that imports it starts fast.
package hooksock

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Environment the daemon gives git receive-pack, and so the hook.
const (
	// EnvSocket is the daemon's hook socket.
	EnvSocket = "POOLGATE_HOOK_SOCKET"
	// EnvToken is this push's ticket: the daemon judges a request as the
	// session that holds the ticket, never as anything the request claims.
	EnvToken = "POOLGATE_HOOK_TOKEN"
)

// MaxInput bounds the hook input sent (OLD NEW REF lines); a pool-resource
// push is one line. The daemon reads no more than MaxRequest.
const (
	MaxInput   = 1 << 20
	MaxRequest = MaxInput + 64<<10
	// MaxResponse bounds what the hook reads back.
	MaxResponse = 4 << 20
)

// The hooks that ask the daemon.
const (
	PreReceive  = "pre-receive"
	PostReceive = "post-receive"
	// RefTransaction is installed only on a cluster node (package cluster).
	RefTransaction = "reference-transaction"
)

// RefTransactionDecides reports whether a reference-transaction run with
// these arguments is one the cluster decides: the "prepared" phase (the
// ref locked, not yet moved; a non-zero exit aborts it) of a client's push
// through the daemon, which sets the verdict file. The other phases, and
// the daemon's own updates (catch-up), pass without asking anyone.
func RefTransactionDecides(args []string, getenv func(string) string) bool {
	return len(args) == 1 && args[0] == "prepared" && getenv(envVerdictFile) != ""
}

// Request is what the hook sends: one JSON object, then it half-closes.
type Request struct {
	// Hook is PostReceive, RefTransaction or, empty, PreReceive.
	Hook  string `json:"hook,omitempty"`
	Token string `json:"token"`
	// Quarantine is git's GIT_QUARANTINE_PATH: where receive-pack keeps
	// the pushed objects until the hook accepts them. Empty when the push
	// brought no objects (a delete).
	Quarantine string `json:"quarantine,omitempty"`
	Input      string `json:"input"`
}

// Response is the daemon's answer: the hook's exit status and what it
// prints on stderr. Exit is a pointer so that an answer without it is an
// error, never a zero value that would read as "accepted".
type Response struct {
	Exit   *int   `json:"exit"`
	Stderr string `json:"stderr"`
}

// Answer makes a response.
func Answer(exit int, stderr string) Response { return Response{Exit: &exit, Stderr: stderr} }

// Timeout bounds each read and write of the hook on the socket; the
// daemon's push timeout kills the whole push earlier in practice.
const Timeout = 10 * time.Minute

// conn is the hook's end of the socket.
type conn interface {
	io.ReadWriteCloser
	CloseWrite() error
}

// envVerdictFile is pushlog.EnvVerdictFile.
const envVerdictFile = "POOLGATE_VERDICT_FILE"

// Enabled reports whether the daemon gave this hook a socket and a ticket.
// Without them (plain git, gitolite) the hook judges in-process.
func Enabled(getenv func(string) string) bool {
	return getenv(EnvSocket) != "" && getenv(EnvToken) != ""
}

// Run is the whole hook when Enabled: it sends stdin to the daemon, prints
// the daemon's messages and returns the exit status. Pre-receive fails
// closed: a socket that cannot be reached, dies mid-judgement or answers
// anything but a well-formed response refuses the push; so does the
// reference-transaction hook, and the ref does not move without the
// cluster's decision. Post-receive runs after the refs moved and cannot
// undo them: it warns.
func Run(hook string, getenv func(string) string, stdin io.Reader, stderr io.Writer) int {
	resp, err := ask(hook, getenv, stdin)
	if err != nil && hook == PostReceive {
		// The push has landed; who pushed it is in the pending record the
		// pre-receive judgement wrote (as hooks.PostReceive says).
		fmt.Fprintf(stderr, "poolgate: warning: the push landed but could not be recorded: %v\n", err)
		return 1
	}
	if err != nil {
		if hook == RefTransaction {
			// Worded as cluster.UnavailableError is: the cluster could not
			// decide.
			fmt.Fprintf(stderr, "poolgate: push refused: pushes are unavailable: the daemon could not decide it: %v\n", err)
		} else {
			fmt.Fprintf(stderr, "poolgate: push refused: the server could not validate it: %v\n", err)
		}
		// A validator that cannot answer is not a lock conflict: the
		// permanent verdict makes the daemon end the push as an error the
		// stock client shows, not a rejection it retries silently. The
		// file's format is pushlog.WriteVerdict's (the verdict on the first
		// line); pushlog is not imported to keep the hook program small.
		if p := getenv(envVerdictFile); p != "" {
			_ = os.WriteFile(p, []byte("permanent\nrules: \n"), 0o600)
		}
		return 1
	}
	io.WriteString(stderr, resp.Stderr)
	return *resp.Exit
}

func ask(hook string, getenv func(string) string, stdin io.Reader) (Response, error) {
	var resp Response
	in, err := io.ReadAll(io.LimitReader(stdin, MaxInput+1))
	if err != nil {
		return resp, fmt.Errorf("reading the hook input: %w", err)
	}
	if len(in) > MaxInput {
		return resp, errors.New("hook input too large")
	}
	if hook == PreReceive {
		hook = "" // the default, as older requests spelled it
	}
	req, err := json.Marshal(Request{Hook: hook, Token: getenv(EnvToken), Quarantine: getenv("GIT_QUARANTINE_PATH"), Input: string(in)})
	if err != nil {
		return resp, err
	}
	who := "the validator"
	if hook == RefTransaction {
		who = "the daemon"
	}
	c, err := dial(getenv(EnvSocket), Timeout)
	if err != nil {
		return resp, errors.New(who + " is not reachable")
	}
	defer c.Close()
	if _, err := c.Write(req); err != nil {
		return resp, errors.New(who + " went away")
	}
	if err := c.CloseWrite(); err != nil {
		return resp, errors.New(who + " went away")
	}
	out, err := io.ReadAll(io.LimitReader(c, MaxResponse+1))
	if err != nil || len(out) > MaxResponse {
		return resp, errors.New(who + " went away")
	}
	if err := Decode(out, &resp); err != nil || resp.Exit == nil || (*resp.Exit != 0 && *resp.Exit != 1) {
		return Response{}, errors.New(who + " answered nonsense")
	}
	return resp, nil
}

// Decode reads exactly one JSON object of v's type from b, refusing
// unknown fields and trailing data, so a truncated or garbled message is an
// error rather than a zero value.
func Decode(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	var extra json.RawMessage
	if err := d.Decode(&extra); err != io.EOF {
		return errors.New("trailing data")
	}
	return nil
}

// Path is where the daemon with this pid listens, inside its data dir's
// owner-only run directory: one socket per process, so a hand-over's new
// daemon never takes over the socket of pushes the old one still judges.
func Path(runDir string, pid int) string {
	return filepath.Join(runDir, "hook-"+strconv.Itoa(pid)+".sock")
}
