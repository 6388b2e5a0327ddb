package poolrepo

import (
	"fmt"
	"strings"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/pool"
	"github.com/poolgate/poolgate/validator"
)

// Policy maps a repo's config onto the validator's policy. With no repo
// config, branch is the repo's default branch and only the global limits
// apply.
func (r *Repo) Policy(cfg *config.Config, name string) (validator.Policy, error) {
	p := validator.Policy{MaxClaimed: map[string]int{}}
	rc := cfg.Repo(name)
	p.MaxLockBytes = cfg.LockBytes(rc)
	p.MaxTree = pool.Shape{Paths: cfg.Limits.MaxTreePaths, Depth: cfg.Limits.MaxTreeDepth}
	if rc != nil {
		p.Branch = rc.Branch
		for _, pl := range rc.Pools {
			if pl.MaxClaimed > 0 {
				p.MaxClaimed[pl.Name] = pl.MaxClaimed
			}
		}
		return p, nil
	}
	b, err := r.Git.Git("symbolic-ref", "--short", "HEAD")
	if err != nil {
		return p, fmt.Errorf("finding the default branch: %w", err)
	}
	p.Branch = b
	return p, nil
}

// CheckRange judges existing history offline as the hook judges a push:
// every commit of revRange (default: the policy's branch), parents first,
// each against its parent and a merge against what its parents combine to.
// Who pushed is unknown, so pusher rules are not judged.
func (r *Repo) CheckRange(revRange string, p validator.Policy) (checked int, vs []validator.Violation, err error) {
	if revRange == "" {
		revRange = "refs/heads/" + p.Branch
	}
	if strings.HasPrefix(revRange, "-") {
		return 0, nil, fmt.Errorf("revision range %q may not start with '-'", revRange)
	}
	out, err := r.Git.Git("rev-list", "--topo-order", "--reverse", revRange, "--")
	if err != nil {
		return 0, nil, err
	}
	if out == "" {
		return 0, nil, nil
	}
	chain := strings.Split(out, "\n")
	vs, err = validator.CheckCommits(r, chain, validator.Pusher{}, p)
	return len(chain), vs, err
}
