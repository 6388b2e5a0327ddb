package poolgate_test

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
	gossh "golang.org/x/crypto/ssh"

	"github.com/poolgate/poolgate/internal/testserver"
)

// The scenarios of hostile input and auth, one per file under
// testdata/scripts: each runs against its own `poolgate serve` on loopback
// (real SSH, real bare repos, the real hook), started by internal/testserver.
// `go test -run TestScripts/<name> .` runs one; -testwork keeps its $WORK.
//
// Users: writer (role write), reader (read), admin (admin), stranger (a key
// no user has). Repo: locks (pool demo: a b c d, max_claimed 2). A script
// may replace the config with its own poolgate.yaml section; $DATA, $TOKEN
// and $PUB_<user> are expanded in it.
//
// Variables: $SSH (ssh://git@127.0.0.1:PORT), $HTTP (host:port), $TOKEN,
// $DATA, $CONFIG, $PUB_<user>, $KEY_<user> (the private key's file).

// maxLogLine bounds every line the server logs, whatever a client sent.
const maxLogLine = 2048

const scriptPools = "[{name: demo, max_claimed: 2, locks: [a, b, c, d]}]"

type scriptEnv struct {
	srv  *testserver.Server
	keys map[string]testserver.Key
}

func TestScripts(t *testing.T) {
	testserver.Build(t) // once, before the scripts start in parallel
	testscript.Run(t, testscript.Params{
		Dir:                "testdata/scripts",
		RequireUniqueNames: true,
		Setup:              setupScript,
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"git":      cmdGit,
			"git-as":   cmdGitAs,
			"ssh-raw":  cmdSSHRaw,
			"gen":      cmdGen,
			"refs":     cmdRefs,
			"tip":      cmdTip,
			"pkt":      cmdPkt,
			"fsck":     cmdFsck,
			"poolgate": cmdPoolgate,
			"waitfor":  cmdWaitfor,
			"reload":   cmdReload,
			"http":     cmdHTTP,
		},
	})
}

func setupScript(env *testscript.Env) error {
	tb := env.T().(testing.TB)
	keys := map[string]testserver.Key{}
	dir := tb.TempDir()
	for _, u := range []string{"reader", "admin", "stranger"} {
		keys[u] = testserver.NewKey(tb, dir, u)
	}
	f := testserver.New(tb, testserver.Options{
		Pools: scriptPools,
		Token: "script-token",
		ExtraUsers: fmt.Sprintf("  - name: reader\n    role: read\n    keys: [%q]\n  - name: admin\n    role: admin\n    keys: [%q]\n",
			keys["reader"].Public, keys["admin"].Public),
		NoRace: true,
	})
	signer, err := readSigner(f.KeyPath)
	if err != nil {
		return err
	}
	keys["writer"] = testserver.Key{Path: f.KeyPath, Signer: signer,
		Public: strings.TrimSpace(string(gossh.MarshalAuthorizedKey(signer.PublicKey())))}
	vars := map[string]string{"DATA": f.Data, "CONFIG": f.Config, "TOKEN": "script-token"}
	for u, k := range keys {
		vars["PUB_"+u], vars["KEY_"+u] = k.Public, k.Path
	}
	if own, err := os.ReadFile(filepath.Join(env.WorkDir, "poolgate.yaml")); err == nil {
		if err := os.WriteFile(f.Config, []byte(os.Expand(string(own), func(k string) string { return vars[k] })), 0o644); err != nil {
			return err
		}
	}
	s := f.Start()
	vars["SSH"] = "ssh://git@127.0.0.1:" + s.SSHPort
	vars["HTTP"] = s.HTTPAddr
	for k, v := range vars {
		env.Setenv(k, v)
	}
	// git with nothing of this machine's set-up and a fixed identity.
	for _, kv := range []string{"HOME=" + env.WorkDir, "GIT_CONFIG_NOSYSTEM=1", "SSH_AUTH_SOCK=",
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@localhost", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@localhost"} {
		k, v, _ := strings.Cut(kv, "=")
		env.Setenv(k, v)
	}
	env.Values[envKey{}] = &scriptEnv{srv: s, keys: keys}
	env.Values[tbKey{}] = tb
	// Every log line stays bounded, whatever the script sent.
	tb.Cleanup(func() {
		for _, l := range strings.Split(s.Log(), "\n") {
			if len(l) > maxLogLine {
				tb.Errorf("the server logged a line of %d bytes: %.200s…", len(l), l)
			}
		}
	})
	return nil
}

func readSigner(path string) (gossh.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return gossh.ParsePrivateKey(b)
}

func senv(ts *testscript.TestScript) *scriptEnv { return ts.Value(envKey{}).(*scriptEnv) }

// outcome fails the script when err does not match what neg expects.
func outcome(ts *testscript.TestScript, neg bool, what string, err error) {
	switch {
	case neg && err == nil:
		ts.Fatalf("%s: unexpected success", what)
	case !neg && err != nil:
		ts.Fatalf("%s: %v", what, err)
	}
}

// git <args>: git with no key, for local work in a clone.
func cmdGit(ts *testscript.TestScript, neg bool, args []string) {
	outcome(ts, neg, "git "+strings.Join(args, " "), ts.Exec("git", args...))
}

// git-as <user> <args>: git over ssh with that user's key and nothing else.
func cmdGitAs(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 2 {
		ts.Fatalf("usage: git-as user args...")
	}
	k, ok := senv(ts).keys[args[0]]
	if !ok {
		ts.Fatalf("no user %q", args[0])
	}
	old := ts.Getenv("GIT_SSH_COMMAND")
	ts.Setenv("GIT_SSH_COMMAND", testserver.SSHCommand(k.Path))
	err := ts.Exec("git", args[1:]...)
	ts.Setenv("GIT_SSH_COMMAND", old)
	outcome(ts, neg, "git-as "+strings.Join(args, " "), err)
}

// ssh-raw [flags] <user> [command line]: one connection with the Go ssh
// client, to send what git never would. The remote's stdout and stderr
// become the command's; a non-zero exit status, a refused channel or a
// failed login is a failure. A refusal (non-zero, nothing on stdout) must
// be exit 1 and one line "poolgate: …", checked here for every script. The command line is the arguments joined by
// spaces, or the content of -f FILE (less one trailing newline); -e reads
// Go escapes in it (\n, \x00).
func cmdSSHRaw(ts *testscript.TestScript, neg bool, args []string) {
	fs := flag.NewFlagSet("ssh-raw", flag.ContinueOnError)
	fs.SetOutput(ts.Stderr())
	var (
		pty, shell, escapes, nosession bool
		subsystem, file, stdin, auth   string
		forward                        string
		envs                           multiFlag
	)
	fs.BoolVar(&pty, "pty", false, "request a pty first")
	fs.BoolVar(&shell, "shell", false, "request a shell instead of exec")
	fs.BoolVar(&escapes, "e", false, "read Go escapes in the command line")
	fs.BoolVar(&nosession, "nosession", false, "open no channel; succeed once the server closes the connection")
	fs.StringVar(&subsystem, "subsystem", "", "request this subsystem instead of exec")
	fs.StringVar(&file, "f", "", "read the command line from this file")
	fs.StringVar(&stdin, "stdin", "", "send this file as the session's input")
	fs.StringVar(&auth, "auth", "publickey", "publickey | password | keyboard-interactive | none")
	fs.StringVar(&forward, "forward", "", "open a direct-tcpip channel to this host:port instead of a session")
	fs.Var(&envs, "env", "K=V sent as an env request (repeatable)")
	if err := fs.Parse(args); err != nil || fs.NArg() < 1 {
		ts.Fatalf("usage: ssh-raw [flags] user [command line]")
	}
	se := senv(ts)
	k, ok := se.keys[fs.Arg(0)]
	if !ok {
		ts.Fatalf("no user %q", fs.Arg(0))
	}
	cmdline := strings.Join(fs.Args()[1:], " ")
	if file != "" {
		cmdline = strings.TrimSuffix(ts.ReadFile(file), "\n")
	}
	// $VAR inside single quotes reaches here unexpanded: expand it now.
	cmdline = os.Expand(cmdline, func(k string) string {
		if k == "" {
			return "$"
		}
		return ts.Getenv(k)
	})
	if escapes {
		u, err := strconv.Unquote(`"` + strings.ReplaceAll(cmdline, `"`, `\"`) + `"`)
		ts.Check(err)
		cmdline = u
	}
	var methods []gossh.AuthMethod
	switch auth {
	case "publickey":
		methods = []gossh.AuthMethod{gossh.PublicKeys(k.Signer)}
	case "password":
		methods = []gossh.AuthMethod{gossh.Password("hunter2")}
	case "keyboard-interactive":
		methods = []gossh.AuthMethod{gossh.KeyboardInteractive(func(string, string, []string, []bool) ([]string, error) {
			return []string{"hunter2"}, nil
		})}
	case "none":
	default:
		ts.Fatalf("unknown -auth %q", auth)
	}
	c, err := gossh.Dial("tcp", "127.0.0.1:"+se.srv.SSHPort, &gossh.ClientConfig{
		User: "git", Auth: methods, HostKeyCallback: gossh.InsecureIgnoreHostKey(), Timeout: 30 * time.Second,
	})
	if err != nil {
		fmt.Fprintln(ts.Stderr(), err)
		outcome(ts, neg, "ssh-raw: login", err)
		return
	}
	defer c.Close()
	switch {
	case nosession:
		closed := make(chan error, 1)
		go func() { closed <- c.Wait() }()
		select {
		case <-closed:
			outcome(ts, neg, "ssh-raw -nosession", nil)
		case <-time.After(60 * time.Second):
			outcome(ts, neg, "ssh-raw -nosession", errors.New("the server kept a connection without a session for 60s"))
		}
		return
	case forward != "":
		conn, err := c.Dial("tcp", forward)
		if err == nil {
			conn.Close()
		} else {
			fmt.Fprintln(ts.Stderr(), err)
		}
		outcome(ts, neg, "ssh-raw -forward", err)
		return
	}
	sess, err := c.NewSession()
	if err != nil {
		fmt.Fprintln(ts.Stderr(), err)
		outcome(ts, neg, "ssh-raw: session", err)
		return
	}
	defer sess.Close()
	if subsystem != "" {
		// x/crypto starts no copying for a subsystem: read the pipes.
		errp, err := sess.StderrPipe()
		ts.Check(err)
		outp, err := sess.StdoutPipe()
		ts.Check(err)
		ts.Check(sess.RequestSubsystem(subsystem))
		go io.Copy(io.Discard, outp)
		msg, _ := io.ReadAll(errp)
		ts.Stderr().Write(msg)
		if len(msg) > 0 {
			err = errors.New("the server wrote to stderr")
		}
		outcome(ts, neg, "ssh-raw -subsystem", err)
		return
	}
	var stdout, stderr bytes.Buffer
	sess.Stdout, sess.Stderr = &stdout, &stderr
	if stdin != "" {
		sess.Stdin = strings.NewReader(ts.ReadFile(stdin))
	} else {
		sess.Stdin = strings.NewReader("0000") // a fetch that wants nothing
	}
	for _, kv := range envs {
		name, value, _ := strings.Cut(kv, "=")
		if err := sess.Setenv(name, value); err != nil {
			fmt.Fprintf(ts.Stdout(), "env %s: refused\n", name)
		}
	}
	if pty {
		ts.Check(sess.RequestPty("xterm", 24, 80, gossh.TerminalModes{}))
	}
	switch {
	case shell:
		ts.Check(sess.Shell())
		err = sess.Wait()
	default:
		err = sess.Run(cmdline)
	}
	ts.Stdout().Write(stdout.Bytes())
	ts.Stderr().Write(stderr.Bytes())
	// A refused command (nothing served) is exit 1 and one line
	// "poolgate: …", whatever the client sent (SECURITY.md).
	var ee *gossh.ExitError
	if errors.As(err, &ee) && stdout.Len() == 0 {
		if msg := stderr.String(); ee.ExitStatus() != 1 || !strings.HasPrefix(msg, "poolgate: ") || strings.Count(msg, "\n") != 1 || !strings.HasSuffix(msg, "\n") {
			ts.Fatalf("a refusal is exit 1 and one line \"poolgate: …\"; got exit %d and %q", ee.ExitStatus(), msg)
		}
	}
	outcome(ts, neg, "ssh-raw", err)
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// gen <file> <count> <text>: text (Go escapes read) appended count times.
func cmdGen(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: gen file count text")
	}
	n, err := strconv.Atoi(args[1])
	ts.Check(err)
	text, err := strconv.Unquote(`"` + strings.ReplaceAll(args[2], `"`, `\"`) + `"`)
	ts.Check(err)
	f, err := os.OpenFile(ts.MkAbs(args[0]), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	ts.Check(err)
	_, err = f.Write(bytes.Repeat([]byte(text), n))
	ts.Check(errors.Join(err, f.Close()))
}

func bareRepo(ts *testscript.TestScript, name string) string {
	return filepath.Join(ts.Getenv("DATA"), "repos", name+".git")
}

// refs <repo>: every ref of the served repo, with its object, to stdout:
// `cmp stdout` against an earlier copy says nothing moved.
func cmdRefs(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: refs repo")
	}
	outcome(ts, false, "refs", ts.Exec("git", "-C", bareRepo(ts, args[0]), "for-each-ref", "--format=%(objectname) %(refname)"))
}

// tip <repo>: the served branch's commit, to stdout and to $TIP.
func cmdTip(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: tip repo")
	}
	out, err := exec.Command("git", "-C", bareRepo(ts, args[0]), "rev-parse", "HEAD").Output()
	ts.Check(err)
	tip := strings.TrimSpace(string(out))
	ts.Setenv("TIP", tip)
	fmt.Fprintln(ts.Stdout(), tip)
}

// pkt <file> <line|0000>...: appends each argument (Go escapes read) as a
// pkt-line, 0000/0001/0002 as a flush/delim/response-end: a request git itself would never send, for
// ssh-raw -stdin.
func cmdPkt(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: pkt file line...")
	}
	var b bytes.Buffer
	for _, a := range args[1:] {
		if a == "0000" || a == "0001" || a == "0002" { // flush, delim, response-end
			b.WriteString(a)
			continue
		}
		text, err := strconv.Unquote(`"` + strings.ReplaceAll(a, `"`, `\"`) + `"`)
		ts.Check(err)
		fmt.Fprintf(&b, "%04x%s", len(text)+4, text)
	}
	f, err := os.OpenFile(ts.MkAbs(args[0]), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	ts.Check(err)
	_, err = f.Write(b.Bytes())
	ts.Check(errors.Join(err, f.Close()))
}

// fsck <repo>: the served repo is sound, no object left dangling by a
// refused push.
func cmdFsck(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: fsck repo")
	}
	outcome(ts, neg, "fsck", ts.Exec("git", "-C", bareRepo(ts, args[0]), "fsck", "--strict", "--no-dangling", "--no-progress"))
}

// poolgate <args>: the same build as the server's hook (status, check…).
func cmdPoolgate(ts *testscript.TestScript, neg bool, args []string) {
	_, bin := testserver.Build(ts.Value(tbKey{}).(testing.TB))
	outcome(ts, neg, "poolgate", ts.Exec(bin, args...))
}

type (
	tbKey  struct{}
	envKey struct{}
)

// waitfor <regexp> [count]: up to a minute for the server's log to hold
// count (1) matches.
func cmdWaitfor(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 1 || len(args) > 2 {
		ts.Fatalf("usage: waitfor regexp [count]")
	}
	re, err := regexp.Compile(args[0])
	ts.Check(err)
	n := 1
	if len(args) == 2 {
		n, err = strconv.Atoi(args[1])
		ts.Check(err)
	}
	waitLog(ts, re, n)
}

func waitLog(ts *testscript.TestScript, re *regexp.Regexp, n int) {
	s := senv(ts).srv
	deadline := time.Now().Add(time.Minute)
	for len(re.FindAllStringIndex(s.Log(), -1)) < n {
		if time.Now().After(deadline) {
			ts.Fatalf("no log line matches %q in a minute", re)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var reloaded = regexp.MustCompile(`"message":"config reloaded"|"message":"reload refused`)

// reload <file>: the file (with $DATA, $PUB_<user> expanded) becomes the
// server's config, and SIGHUP; waits until the server says how it went.
func cmdReload(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: reload file")
	}
	s := senv(ts).srv
	before := len(reloaded.FindAllStringIndex(s.Log(), -1))
	ts.Check(os.WriteFile(s.F.Config, []byte(os.Expand(ts.ReadFile(args[0]), ts.Getenv)), 0o644))
	ts.Check(s.Signal(syscall.SIGHUP))
	waitLog(ts, reloaded, before+1)
}

// http <method> <path> [body file]: the API with the token; the body to
// stdout; a status other than 2xx fails.
func cmdHTTP(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 2 || len(args) > 3 {
		ts.Fatalf("usage: http method path [body-file]")
	}
	var body io.Reader
	if len(args) == 3 {
		body = strings.NewReader(ts.ReadFile(args[2]))
	}
	req, err := http.NewRequest(args[0], "http://"+senv(ts).srv.HTTPAddr+args[1], body)
	ts.Check(err)
	req.Header.Set("Authorization", "Bearer "+ts.Getenv("TOKEN"))
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Do(req)
	ts.Check(err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	ts.Check(err)
	ts.Stdout().Write(b)
	if resp.StatusCode/100 != 2 {
		err = fmt.Errorf("%s", resp.Status)
	}
	outcome(ts, neg, "http", err)
}
