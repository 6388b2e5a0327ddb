// Package gitstore reads a repository's objects through git's own plumbing:
// one long-lived `git cat-file --batch-command` per Repo. Going through git,
// not go-git, is deliberate: inside a pre-receive hook the pushed objects sit
// in a quarantine directory that only git's environment variables
// (GIT_OBJECT_DIRECTORY, GIT_ALTERNATE_OBJECT_DIRECTORIES) point at.
package gitstore

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/poolgate/poolgate/internal/gitexec"
	"github.com/poolgate/poolgate/pool"
)

// ErrMissing is returned for an object the repository does not have.
var ErrMissing = errors.New("object not found")

// Repo reads objects of one repository.
type Repo struct {
	Dir string
	// Env, if set, is added to git's clean environment (gitexec.Environ)
	// in place of the variables a hook inherits (HookEnv): the daemon
	// judging a push names the quarantine itself.
	Env []string

	cmd   *exec.Cmd
	stdin io.Closer
	in    *bufio.Writer
	out   *bufio.Reader
}

// Open returns a reader for the repository at dir (a bare repo or a work
// tree). The cat-file process starts at the first read.
func Open(dir string) *Repo { return &Repo{Dir: dir} }

// HookEnv are the variables of its own environment a git the hook starts
// is given: git's quarantine of the pushed objects (receive-pack sets them
// for the hook; without them the pushed commits are not found), the repo
// as receive-pack named it, and HOME for its gitconfig.
var HookEnv = []string{
	"GIT_DIR", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_QUARANTINE_PATH", "HOME",
}

// command is git with args in the repo. It stays in the caller's process
// group: the hook's git must die with the receive-pack the daemon kills.
func (r *Repo) command(args ...string) *exec.Cmd {
	o := gitexec.Options{Dir: r.Dir, Env: r.Env, SameGroup: true}
	if r.Env == nil {
		o.Inherit = HookEnv
	}
	return gitexec.Command(context.Background(), o, args...)
}

func (r *Repo) start() error {
	if r.cmd != nil {
		return nil
	}
	cmd := r.command("cat-file", "--batch-command")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting git cat-file: %w", err)
	}
	r.cmd, r.stdin, r.in, r.out = cmd, stdin, bufio.NewWriter(stdin), bufio.NewReaderSize(stdout, 64<<10)
	return nil
}

// Close stops the cat-file process.
func (r *Repo) Close() error {
	if r.cmd == nil {
		return nil
	}
	r.in.Flush()
	r.stdin.Close()
	err := r.cmd.Wait()
	r.cmd = nil
	return err
}

// request sends one batch command and reads the header line back.
func (r *Repo) request(verb, obj string) (typ string, size int64, err error) {
	if strings.ContainsAny(obj, "\n\x00 ") || obj == "" {
		return "", 0, fmt.Errorf("bad object name %q", obj)
	}
	if err := r.start(); err != nil {
		return "", 0, err
	}
	if _, err := fmt.Fprintf(r.in, "%s %s\n", verb, obj); err != nil {
		return "", 0, err
	}
	if err := r.in.Flush(); err != nil {
		return "", 0, err
	}
	line, err := r.out.ReadString('\n')
	if err != nil {
		return "", 0, fmt.Errorf("git cat-file: %w", err)
	}
	f := strings.Fields(line)
	if len(f) == 2 && f[1] == "missing" {
		return "", 0, fmt.Errorf("%s: %w", obj, ErrMissing)
	}
	if len(f) != 3 {
		return "", 0, fmt.Errorf("git cat-file: unexpected reply %q", line)
	}
	size, err = strconv.ParseInt(f[2], 10, 64)
	return f[1], size, err
}

// maxObject bounds what is read into memory. Trees and commits of a pool repo
// are small; anything larger is hostile and refused rather than buffered.
const maxObject = 64 << 20

func (r *Repo) contents(obj, want string) ([]byte, error) {
	typ, size, err := r.request("contents", obj)
	if err != nil {
		return nil, err
	}
	if size > maxObject {
		// Drain so the stream stays usable, then refuse.
		if _, err := io.CopyN(io.Discard, r.out, size+1); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%s object %s is %d bytes, too large to read", typ, obj, size)
	}
	buf := make([]byte, size+1)
	if _, err := io.ReadFull(r.out, buf); err != nil {
		return nil, err
	}
	if want != "" && typ != want {
		return nil, fmt.Errorf("%s is a %s, not a %s", obj, typ, want)
	}
	return buf[:size], nil
}

// ReadBlob returns a blob's bytes (lock files: bounded by max_lock_bytes
// when pushed through the validator, and by maxObject here).
func (r *Repo) ReadBlob(hash string) ([]byte, error) { return r.contents(hash, "blob") }

// BlobSize returns an object's size without reading it.
func (r *Repo) BlobSize(hash string) (int64, error) {
	_, size, err := r.request("info", hash)
	return size, err
}

// ReadTree implements pool.TreeReader.
func (r *Repo) ReadTree(hash string) ([]pool.TreeEntry, error) {
	data, err := r.contents(hash, "tree")
	if err != nil {
		return nil, err
	}
	return ParseTree(data, len(hash)/2)
}

// ParseTree decodes a tree object with hashes of hashLen bytes.
func ParseTree(data []byte, hashLen int) ([]pool.TreeEntry, error) {
	var out []pool.TreeEntry
	for len(data) > 0 {
		sp := bytes.IndexByte(data, ' ')
		nul := bytes.IndexByte(data, 0)
		if sp < 0 || nul < sp || len(data) < nul+1+hashLen {
			return nil, errors.New("malformed tree object")
		}
		mode, err := strconv.ParseUint(string(data[:sp]), 8, 32)
		if err != nil {
			return nil, errors.New("malformed tree entry mode")
		}
		out = append(out, pool.TreeEntry{
			Name: string(data[sp+1 : nul]),
			Mode: uint32(mode),
			Hash: fmt.Sprintf("%x", data[nul+1:nul+1+hashLen]),
		})
		data = data[nul+1+hashLen:]
	}
	return out, nil
}

// Signature is an author or committer line.
type Signature struct {
	Name  string
	Email string
	When  time.Time
}

// Commit is a parsed commit object.
type Commit struct {
	Hash      string
	Tree      string
	Parents   []string
	Author    Signature
	Committer Signature
	Message   string
}

// Commit reads and parses a commit.
func (r *Repo) Commit(hash string) (*Commit, error) {
	data, err := r.contents(hash, "commit")
	if err != nil {
		return nil, err
	}
	c, err := ParseCommit(data)
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", hash, err)
	}
	c.Hash = hash
	return c, nil
}

// ParseCommit decodes a commit object's body.
func ParseCommit(data []byte) (*Commit, error) {
	c := &Commit{}
	head, msg, _ := bytes.Cut(data, []byte("\n\n"))
	c.Message = string(msg)
	for _, line := range strings.Split(string(head), "\n") {
		if strings.HasPrefix(line, " ") { // continuation of gpgsig, mergetag
			continue
		}
		k, v, _ := strings.Cut(line, " ")
		switch k {
		case "tree":
			c.Tree = v
		case "parent":
			c.Parents = append(c.Parents, v)
		case "author":
			c.Author = parseSig(v)
		case "committer":
			c.Committer = parseSig(v)
		}
	}
	if c.Tree == "" {
		return nil, errors.New("no tree")
	}
	return c, nil
}

func parseSig(s string) Signature {
	var sig Signature
	lt, gt := strings.IndexByte(s, '<'), strings.LastIndexByte(s, '>')
	if lt < 0 || gt < lt {
		sig.Name = s
		return sig
	}
	sig.Name = strings.TrimSpace(s[:lt])
	sig.Email = s[lt+1 : gt]
	f := strings.Fields(s[gt+1:])
	if len(f) >= 1 {
		if sec, err := strconv.ParseInt(f[0], 10, 64); err == nil {
			sig.When = time.Unix(sec, 0).UTC()
			if len(f) == 2 && len(f[1]) == 5 {
				h, _ := strconv.Atoi(f[1][1:3])
				m, _ := strconv.Atoi(f[1][3:5])
				off := h*3600 + m*60
				if f[1][0] == '-' {
					off = -off
				}
				sig.When = sig.When.In(time.FixedZone(f[1], off))
			}
		}
	}
	return sig
}

// Git runs a git command in the repo and returns its trimmed stdout.
func (r *Repo) Git(args ...string) (string, error) { return r.GitStatus(0, args...) }

// GitStatus is Git for commands whose exit status quiet (besides 0) is an
// answer, not a failure (merge-base exits 1 when there is no base): it
// returns "" and no error then.
func (r *Repo) GitStatus(quiet int, args ...string) (string, error) {
	cmd := r.command(args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var ee *exec.ExitError
	if quiet != 0 && errors.As(err, &ee) && ee.ExitCode() == quiet && stderr.Len() == 0 {
		return "", nil
	}
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return "", fmt.Errorf("git %s: %s", args[0], msg)
	}
	return strings.TrimSpace(string(out)), nil
}

// IsAncestor reports whether a is an ancestor of b.
func (r *Repo) IsAncestor(a, b string) (bool, error) {
	err := r.command("merge-base", "--is-ancestor", a, b).Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 1 {
		return false, nil
	}
	return err == nil, err
}

// ResolveBranch returns the commit a branch points at, or "" if it does not exist.
func (r *Repo) ResolveBranch(branch string) (string, error) {
	out, err := r.Git("rev-parse", "--verify", "--quiet", "refs/heads/"+branch+"^{commit}")
	if err != nil {
		if _, err2 := r.Git("rev-parse", "--git-dir"); err2 != nil {
			return "", err2
		}
		return "", nil
	}
	return out, nil
}
