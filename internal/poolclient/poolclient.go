// Package poolclient is a test client that drives git exactly as Concourse's
// stock pool-resource (out step) does: the same commands, commit messages,
// file modes and retry loop (see POOL-RESOURCE.md). Tests use it to see a
// server the way real pipelines will.
package poolclient

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// MaxUnexpected is how many push failures that are not rejections the stock
// client tolerates before failing the step.
const MaxUnexpected = 5

// ErrNotClaimed is pool-resource's immediate failure when releasing or
// removing a lock that is not claimed.
var ErrNotClaimed = errors.New("lock is not claimed")

// FailedError is a step failing after MaxUnexpected unexpected push errors;
// Outputs holds each failed push's output, as the build log would show it.
type FailedError struct{ Outputs []string }

func (e *FailedError) Error() string {
	return fmt.Sprintf("too many unexpected errors; last push said:\n%s", e.Outputs[len(e.Outputs)-1])
}

// Client is one pool-resource out step's working state.
type Client struct {
	URL    string // as in source.uri
	Branch string
	Pool   string
	Dir    string   // the clone; created by Clone
	Env    []string // added to the environment, e.g. GIT_SSH_COMMAND

	RetryDelay time.Duration // source.retry_delay; jittered up to 2x so racing clients spread out
	BuildURL   string
	// OldPrefix, if set, writes pre-v1.8.0 messages: "PREFIX claiming: NAME"
	// (e.g. "main/pipe/job build 7"), with no Build URL line.
	OldPrefix string

	// Stop, if set, ends a waiting step between git commands once closed
	// (ErrStopped), as aborting a build does; a running git command is
	// never cut.
	Stop <-chan struct{}
	// OnUnexpected, if set, hears each push failure that is not a
	// rejection, with git's output (tests attribute them to a cause).
	OnUnexpected func(output string)

	mu    sync.Mutex
	stats Stats
}

// ErrStopped is a step ended by Stop before it finished.
var ErrStopped = errors.New("step stopped")

// Stats counts what the retry loop went through.
type Stats struct {
	Pushes, Conflicts, Unexpected int
	// LastPush is the output of the latest push.
	LastPush string
}

func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// Git runs git in the clone and returns its combined output.
func (c *Client) Git(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = c.Dir
	cmd.Env = append(os.Environ(), c.Env...)
	cmd.Env = append(cmd.Env,
		"GIT_AUTHOR_NAME=git", "GIT_AUTHOR_EMAIL=git@localhost",
		"GIT_COMMITTER_NAME=git", "GIT_COMMITTER_EMAIL=git@localhost",
		"GIT_TERMINAL_PROMPT=0", "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("git %s: %w: %s", args[0], err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Clone is the out step's first command.
func (c *Client) Clone(ctx context.Context) error {
	parent := filepath.Dir(c.Dir)
	cmd := &Client{Dir: parent, Env: c.Env}
	_, err := cmd.Git(ctx, "clone", "--single-branch", "--branch", c.Branch, c.URL, c.Dir)
	return err
}

var errNoLocks = errors.New("no locks available")

// Acquire claims a random unclaimed lock, waiting while there is none.
func (c *Client) Acquire(ctx context.Context) (string, error) {
	var got string
	err := c.robust(ctx, func() error {
		names, err := c.list(pathJoin(c.Pool, "unclaimed"))
		if err != nil {
			return err
		}
		if len(names) == 0 {
			return errNoLocks
		}
		got = names[rand.IntN(len(names))]
		return c.move(ctx, got, "unclaimed", "claimed", "claiming")
	})
	return got, err
}

// Claim claims one named lock, waiting while it is not unclaimed.
func (c *Client) Claim(ctx context.Context, name string) error {
	return c.robust(ctx, func() error {
		if !c.exists(pathJoin(c.Pool, "unclaimed", name)) {
			return errNoLocks
		}
		return c.move(ctx, name, "unclaimed", "claimed", "claiming")
	})
}

// Release returns a claimed lock; it fails at once if it is not claimed.
func (c *Client) Release(ctx context.Context, name string) error {
	return c.robust(ctx, func() error {
		if !c.exists(pathJoin(c.Pool, "claimed", name)) {
			return ErrNotClaimed
		}
		return c.move(ctx, name, "claimed", "unclaimed", "unclaiming")
	})
}

// Add writes a new lock file with mode 0555, as pool-resource does; it never
// looks at the other directory.
func (c *Client) Add(ctx context.Context, name string, content []byte, claimed bool) error {
	dir, op := "unclaimed", "adding unclaimed"
	if claimed {
		dir, op = "claimed", "adding claimed"
	}
	return c.robust(ctx, func() error {
		return c.write(ctx, pathJoin(c.Pool, dir, name), content, op, name)
	})
}

// Remove deletes a claimed lock.
func (c *Client) Remove(ctx context.Context, name string) error {
	return c.robust(ctx, func() error {
		p := pathJoin(c.Pool, "claimed", name)
		if !c.exists(p) {
			return ErrNotClaimed
		}
		if _, err := c.Git(ctx, "rm", p); err != nil {
			return err
		}
		return c.commit(ctx, "removing", name)
	})
}

// Update rewrites an unclaimed lock's content, waiting while it is claimed.
func (c *Client) Update(ctx context.Context, name string, content []byte) error {
	return c.robust(ctx, func() error {
		if c.exists(pathJoin(c.Pool, "claimed", name)) {
			return errNoLocks
		}
		op := "updating"
		if !c.exists(pathJoin(c.Pool, "unclaimed", name)) {
			op = "adding unclaimed"
		}
		return c.write(ctx, pathJoin(c.Pool, "unclaimed", name), content, op, name)
	})
}

// robust is pool-resource's loop: fetch and reset (a failure there fails
// the step), do the operation, push; "[rejected]", "[remote rejected]" or
// "Everything up-to-date" mean "the pool moved": wait and start over, with
// no limit. Other push failures fail the step after MaxUnexpected.
func (c *Client) robust(ctx context.Context, op func() error) error {
	var failures []string
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		select {
		case <-c.Stop:
			return ErrStopped
		default:
		}
		if _, err := c.Git(ctx, "fetch", "origin", c.Branch); err != nil {
			return err
		}
		if _, err := c.Git(ctx, "reset", "--hard", "origin/"+c.Branch); err != nil {
			return err
		}
		if err := op(); errors.Is(err, errNoLocks) {
			c.sleep(ctx)
			continue
		} else if err != nil {
			return err
		}
		out, err := c.Git(ctx, "push", "origin", "HEAD:"+c.Branch)
		c.mu.Lock()
		c.stats.Pushes++
		c.stats.LastPush = out
		c.mu.Unlock()
		if strings.Contains(out, "[rejected]") || strings.Contains(out, "[remote rejected]") || strings.Contains(out, "Everything up-to-date") {
			c.mu.Lock()
			c.stats.Conflicts++
			c.mu.Unlock()
			c.sleep(ctx)
			continue
		}
		if err != nil {
			c.mu.Lock()
			c.stats.Unexpected++
			c.mu.Unlock()
			if c.OnUnexpected != nil {
				c.OnUnexpected(out)
			}
			failures = append(failures, out)
			if len(failures) >= MaxUnexpected {
				return &FailedError{Outputs: failures}
			}
			continue
		}
		return nil
	}
}

func (c *Client) sleep(ctx context.Context) {
	d := c.RetryDelay
	if d > 0 {
		d += rand.N(d)
	}
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func (c *Client) move(ctx context.Context, name, from, to, op string) error {
	if _, err := c.Git(ctx, "mv", pathJoin(c.Pool, from, name), pathJoin(c.Pool, to, name)); err != nil {
		return err
	}
	return c.commit(ctx, op, name)
}

func (c *Client) write(ctx context.Context, rel string, content []byte, op, name string) error {
	p := filepath.Join(c.Dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	os.Chmod(p, 0o644) // an existing lock file is read-only (0555)
	if err := os.WriteFile(p, content, 0o555); err != nil {
		return err
	}
	if err := os.Chmod(p, 0o555); err != nil {
		return err
	}
	if _, err := c.Git(ctx, "add", rel); err != nil {
		return err
	}
	return c.commit(ctx, op, name)
}

// Message is the commit message pool-resource writes for op on name.
func (c *Client) Message(op, name string) string {
	if c.OldPrefix != "" {
		return c.OldPrefix + " " + op + ": " + name
	}
	return op + ": " + name + "\nBuild URL: " + c.BuildURL
}

func (c *Client) commit(ctx context.Context, op, name string) error {
	_, err := c.Git(ctx, "commit", "-m", c.Message(op, name))
	return err
}

func (c *Client) list(rel string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(c.Dir, rel))
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") && !e.IsDir() {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

func (c *Client) exists(rel string) bool {
	fi, err := os.Stat(filepath.Join(c.Dir, rel))
	return err == nil && !fi.IsDir()
}

func pathJoin(parts ...string) string { return filepath.ToSlash(filepath.Join(parts...)) }
