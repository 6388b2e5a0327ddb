package config

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"
)

// Cluster is the `cluster:` block (DESIGN.md §9). Absent: one node.
type Cluster struct {
	// Node is this node's name, unique in the cluster.
	Node string `yaml:"node"`
	// Advertise is where the other nodes reach this one (node-to-node SSH).
	Advertise string `yaml:"advertise"`
	// Listen is the local address for node-to-node traffic; default
	// Advertise (set it when the node sits behind NAT, e.g. ":7001").
	Listen string `yaml:"listen"`
	Peers  []Peer `yaml:"peers"`
	Etcd   Etcd   `yaml:"etcd"`

	Line int `yaml:"-"`
}

// Peer is another node of the cluster.
type Peer struct {
	Name    string `yaml:"name"`
	Address string `yaml:"address"`

	Line int `yaml:"-"`
}

// Etcd holds what etcd's Go client (clientv3.Config, transport.TLSInfo)
// takes; the names follow theirs.
type Etcd struct {
	Endpoints     []string `yaml:"endpoints"`
	Username      string   `yaml:"username"`
	Password      string   `yaml:"password"`
	CertFile      string   `yaml:"cert_file"`
	KeyFile       string   `yaml:"key_file"`
	TrustedCAFile string   `yaml:"trusted_ca_file"`
	// ServerName overrides the name checked in the servers' certificates.
	ServerName  string   `yaml:"server_name"`
	DialTimeout Duration `yaml:"dial_timeout"`
	// Prefix is where poolgate keeps its keys; lets clusters share an etcd.
	Prefix string `yaml:"prefix"`
}

// Defaults of the cluster block.
const (
	DefaultEtcdDialTimeout = 5 * time.Second
	DefaultEtcdPrefix      = "/poolgate"
)

var etcdPrefixRe = regexp.MustCompile(`^(/[A-Za-z0-9_.-]+)+$`)

func (c *Cluster) UnmarshalYAML(n *yaml.Node) error {
	type plain Cluster
	if err := n.Decode((*plain)(c)); err != nil {
		return err
	}
	c.Line = n.Line
	return nil
}

func (p *Peer) UnmarshalYAML(n *yaml.Node) error {
	type plain Peer
	if err := n.Decode((*plain)(p)); err != nil {
		return err
	}
	p.Line = n.Line
	return nil
}

// Nodes is the cluster's size: this node and its peers.
func (c *Cluster) Nodes() int { return 1 + len(c.Peers) }

// Quorum is how many nodes must hold a push's objects before its tip is
// decided: a majority, so any later majority includes one that has them.
func (c *Cluster) Quorum() int { return c.Nodes()/2 + 1 }

func (c *Config) validateCluster() error {
	cl := c.Cluster
	if cl == nil {
		return nil
	}
	at := func(line int, format string, args ...any) error {
		return &posErr{line: line, msg: "cluster: " + fmt.Sprintf(format, args...)}
	}
	if !userNameRe.MatchString(cl.Node) {
		return at(cl.Line, "node %q is missing or invalid (letters, digits, _ . @ -)", cl.Node)
	}
	if err := checkHostPort(cl.Advertise); err != nil {
		return at(cl.Line, "advertise %q: %v", cl.Advertise, err)
	}
	if cl.Listen == "" {
		cl.Listen = cl.Advertise
	} else if _, _, err := net.SplitHostPort(cl.Listen); err != nil {
		return at(cl.Line, "listen %q: want HOST:PORT or :PORT", cl.Listen)
	}
	names := map[string]bool{cl.Node: true}
	addrs := map[string]bool{cl.Advertise: true}
	for _, p := range cl.Peers {
		if !userNameRe.MatchString(p.Name) {
			return at(p.Line, "peer name %q is missing or invalid", p.Name)
		}
		if names[p.Name] {
			return at(p.Line, "node name %q is used twice", p.Name)
		}
		names[p.Name] = true
		if err := checkHostPort(p.Address); err != nil {
			return at(p.Line, "peer %q address %q: %v", p.Name, p.Address, err)
		}
		if addrs[p.Address] {
			return at(p.Line, "peer %q: address %s is used twice", p.Name, p.Address)
		}
		addrs[p.Address] = true
	}
	e := &cl.Etcd
	if len(e.Endpoints) == 0 {
		return at(cl.Line, "etcd.endpoints is required")
	}
	for _, ep := range e.Endpoints {
		if u, err := url.Parse(ep); err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" {
			continue
		}
		if checkHostPort(ep) != nil {
			return at(cl.Line, "etcd endpoint %q: want http(s)://HOST:PORT or HOST:PORT", ep)
		}
	}
	if (e.CertFile == "") != (e.KeyFile == "") {
		return at(cl.Line, "etcd.cert_file and etcd.key_file go together")
	}
	if (e.Username == "") != (e.Password == "") {
		return at(cl.Line, "etcd.username and etcd.password go together")
	}
	for _, f := range []*string{&e.CertFile, &e.KeyFile, &e.TrustedCAFile} {
		*f = c.ResolvePath(*f)
	}
	if e.DialTimeout <= 0 {
		e.DialTimeout = Duration(DefaultEtcdDialTimeout)
	}
	if e.Prefix == "" {
		e.Prefix = DefaultEtcdPrefix
	}
	if !etcdPrefixRe.MatchString(e.Prefix) {
		return at(cl.Line, "etcd.prefix %q: want /name[/name...]", e.Prefix)
	}
	return nil
}

// checkHostPort wants an address other machines can dial: a host and a port.
func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n <= 0 || n > 65535 {
		return fmt.Errorf("want HOST:PORT")
	}
	return nil
}

// HostKeyPath is where the SSH host key lives. In a cluster every node
// holds a copy of the same key: clients' known_hosts survive a failover,
// and the nodes authenticate each other with it.
func (c *Config) HostKeyPath() string {
	if c.SSH.HostKey != "" {
		return c.SSH.HostKey
	}
	return filepath.Join(c.DataDir, "ssh_host_ed25519_key")
}
