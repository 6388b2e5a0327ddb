package daemon

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/poolgate/poolgate/config"
	"go.yaml.in/yaml/v3"
	gossh "golang.org/x/crypto/ssh"
)

// Demo describes the no-config start of DESIGN.md §3.
type Demo struct {
	// ClientKey is the private key generated for the demo, "" when the
	// user's own ~/.ssh keys are authorized instead.
	ClientKey string
	OwnKeys   []string // the ~/.ssh/*.pub files authorized
	// PipelineKey is the private key of the demo's `write` user, the one
	// the printed pool-resource source uses: a pipeline is not an admin,
	// so a newcomer sees the rules enforced.
	PipelineKey string
}

// demoDoc is the demo config in the order a person reads a config: where
// data lives, how to reach it, who may, what it serves.
type demoDoc struct {
	DataDir string       `yaml:"data_dir"`
	SSH     demoListen   `yaml:"ssh"`
	HTTP    demoListen   `yaml:"http"`
	Users   []demoUser   `yaml:"users"`
	Repos   []demoRepoIn `yaml:"repos"`
}

type demoListen struct {
	Listen string `yaml:"listen"`
}

type demoUser struct {
	Name string   `yaml:"name"`
	Role string   `yaml:"role"`
	Keys []string `yaml:"keys"`
}

type demoRepoIn struct {
	Name   string     `yaml:"name"`
	Branch string     `yaml:"branch"`
	Pools  []demoPool `yaml:"pools"`
}

type demoPool struct {
	Name  string   `yaml:"name"`
	Locks []string `yaml:"locks,flow"`
}

// Demo defaults.
const (
	DemoDataDir = "poolgate-data"
	DemoSSH     = "127.0.0.1:2222"
	DemoHTTP    = "127.0.0.1:8080"
)

// DemoConfig writes the demo's config into dataDir and loads it. The hook
// reads the same file (POOLGATE_CONFIG), so the demo is configured exactly
// like a real install. home is searched for .ssh/*.pub.
func DemoConfig(dataDir, home string) (*config.Config, *Demo, error) {
	dataDir, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, nil, err
	}
	d := &Demo{}
	var keys []string
	if home != "" {
		files, _ := filepath.Glob(filepath.Join(home, ".ssh", "*.pub"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			if k, _, _, _, err := gossh.ParseAuthorizedKey(b); err == nil {
				keys = append(keys, strings.TrimSpace(string(gossh.MarshalAuthorizedKey(k))))
				d.OwnKeys = append(d.OwnKeys, f)
			}
		}
	}
	if len(keys) == 0 {
		d.ClientKey = filepath.Join(dataDir, "client_ed25519")
		pub, err := demoKey(d.ClientKey)
		if err != nil {
			return nil, nil, err
		}
		keys = append(keys, pub)
	}
	d.PipelineKey = filepath.Join(dataDir, "pipeline_ed25519")
	pipelinePub, err := demoKey(d.PipelineKey)
	if err != nil {
		return nil, nil, err
	}
	doc := demoDoc{
		DataDir: dataDir,
		SSH:     demoListen{DemoSSH},
		HTTP:    demoListen{DemoHTTP},
		Users: []demoUser{
			{Name: "admin", Role: "admin", Keys: keys},
			{Name: "pipeline", Role: "write", Keys: []string{pipelinePub}},
		},
		Repos: []demoRepoIn{{Name: "locks", Branch: "master",
			Pools: []demoPool{{Name: "demo", Locks: []string{"lock-a", "lock-b", "lock-c"}}}}},
	}
	body, err := yaml.Marshal(doc)
	if err != nil {
		return nil, nil, err
	}
	file := filepath.Join(dataDir, "demo-config.yaml")
	// True wherever the file is copied to; serve without --config
	// writes this one afresh at each start.
	header := "# poolgate config (the demo's): run it with `poolgate serve --config FILE`.\n" +
		"# admin may do anything (force pushes, new pools); pipeline (role write) is what\n" +
		"# a Concourse pipeline should use: the pool rules apply to it.\n"
	if err := os.WriteFile(file, append([]byte(header), body...), 0o644); err != nil {
		return nil, nil, err
	}
	cfg, err := config.Load(file)
	if err != nil {
		return nil, nil, err
	}
	return cfg, d, nil
}

// demoKey generates a demo key pair at path once and returns its public
// half in authorized_keys form.
func demoKey(path string) (string, error) {
	if _, err := os.Stat(path); os.IsNotExist(err) {
		if err := generateKey(path); err != nil {
			return "", fmt.Errorf("generate demo key: %w", err)
		}
	}
	b, err := os.ReadFile(path + ".pub")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// PrintDemo tells the user how to use the running demo: commands that work
// as printed, pinned to this server's host key through a known_hosts file
// of its own rather than StrictHostKeyChecking=no.
func PrintDemo(w io.Writer, s *Server, d *Demo, sshAddr, httpAddr string) error {
	host, port, err := net.SplitHostPort(sshAddr)
	if err != nil {
		return err
	}
	known := filepath.Join(s.cfg.DataDir, "known_hosts")
	line := knownHostsLine(host, port, s.HostKey())
	if err := os.WriteFile(known, []byte(line+"\n"), 0o644); err != nil {
		return err
	}
	sshCmd := "ssh -o UserKnownHostsFile=" + shq(known)
	keyRef := "your private key (one of " + strings.Join(d.OwnKeys, ", ") + ")"
	if d.ClientKey != "" {
		sshCmd = "ssh -i " + shq(d.ClientKey) + " -o IdentitiesOnly=yes -o UserKnownHostsFile=" + shq(known)
		keyRef = "the generated key " + d.ClientKey
	}
	url := fmt.Sprintf("ssh://git@%s/locks.git", net.JoinHostPort(host, port))
	fmt.Fprintf(w, `
poolgate demo is running (data in %s).
  repo locks, branch master, pool demo with locks lock-a, lock-b, lock-c
  authorized as admin: %s
  authorized as pipeline (role write, for pool-resource): %s
`, s.cfg.DataDir, keyRef, d.PipelineKey)
	if httpAddr != "" {
		fmt.Fprintf(w, "  status page: http://%s/   (API: /api/v1/repos, metrics: /metrics)\n", httpAddr)
	}
	fmt.Fprintf(w, `
Clone the lock repo (the ssh settings stay in the clone for fetch and push):

  git clone -c %s %s

Point pool-resource at it with the pipeline key, a write user, so the pool
rules apply to it as to any pipeline (Concourse workers must reach this
address: for anything beyond this machine, copy %s, set ssh.listen and
use --config):

  resources:
  - name: demo-lock
    type: pool
    source:
      uri: %s
      branch: master
      pool: demo
      private_key: ((poolgate_private_key))

  fly -t TARGET set-pipeline -p PIPELINE -c pipeline.yml -v poolgate_private_key="$(cat %s)"

`, shq("core.sshCommand="+sshCmd), url, s.cfg.File, url, shq(d.PipelineKey))
	return nil
}

func knownHostsLine(host, port string, key gossh.PublicKey) string {
	addr := host
	if port != "22" {
		addr = "[" + host + "]:" + port
	}
	return addr + " " + strings.TrimSpace(string(gossh.MarshalAuthorizedKey(key)))
}

func shq(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./=:@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
