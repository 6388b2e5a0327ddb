package config_test

import (
	"strings"
	"testing"

	. "github.com/poolgate/poolgate/config"
)

func TestClusterBlockIsParsedWithDefaults(t *testing.T) {
	t.Setenv("POOLGATE_TEST_ETCD_PASSWORD", "s3cret")
	c, err := Parse("/etc/poolgate/poolgate.yaml", []byte(yamlLines(
		"cluster:",
		"  node: n1",
		"  advertise: \"10.0.0.1:7001\"",
		"  peers:",
		"    - name: n2",
		"      address: \"10.0.0.2:7001\"",
		"    - name: n3",
		"      address: \"10.0.0.3:7001\"",
		"  etcd:",
		"    endpoints: [\"https://10.0.0.9:2379\", \"10.0.0.8:2379\"]",
		"    username: poolgate",
		"    password: \"${POOLGATE_TEST_ETCD_PASSWORD}\"",
		"    trusted_ca_file: ca.pem",
		"    cert_file: /etc/poolgate/client.pem",
		"    key_file: client-key.pem",
	)))
	if err != nil {
		t.Fatal(err)
	}
	cl := c.Cluster
	if cl == nil || cl.Node != "n1" || len(cl.Peers) != 2 || cl.Peers[1].Address != "10.0.0.3:7001" {
		t.Fatalf("cluster = %+v", cl)
	}
	if cl.Listen != "10.0.0.1:7001" || cl.Etcd.Prefix != "/poolgate" || cl.Etcd.DialTimeout.D() != DefaultEtcdDialTimeout {
		t.Errorf("defaults not applied: %+v", cl)
	}
	if cl.Etcd.Password != "s3cret" || cl.Etcd.TrustedCAFile != "/etc/poolgate/ca.pem" || cl.Etcd.KeyFile != "/etc/poolgate/client-key.pem" {
		t.Errorf("etcd = %+v", cl.Etcd)
	}
	if cl.Nodes() != 3 || cl.Quorum() != 2 {
		t.Errorf("nodes %d quorum %d", cl.Nodes(), cl.Quorum())
	}
}

func TestNoClusterBlockIsOneNode(t *testing.T) {
	c, err := Parse("x.yaml", []byte("data_dir: /tmp/x\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Cluster != nil {
		t.Fatalf("cluster = %+v", c.Cluster)
	}
}

func TestBadClusterBlockNamesFileAndLine(t *testing.T) {
	base := func(extra ...string) string {
		return yamlLines(append([]string{
			"data_dir: /tmp/x",
			"cluster:",
			"  node: n1",
			"  advertise: \"127.0.0.1:7001\"",
		}, extra...)...)
	}
	for _, tc := range []struct {
		name, yaml string
		line       int
		reason     string
	}{
		{"no etcd", base(), 3, "etcd.endpoints is required"},
		{"unknown key", base("  etcd:", "    endpoint: [x:1]"), 6, `unknown key "endpoint"`},
		{"peer named like the node", base("  peers:", "    - name: n1", "      address: \"127.0.0.1:7002\"", "  etcd: {endpoints: [\"127.0.0.1:2379\"]}"), 6, `node name "n1" is used twice`},
		{"peer without port", base("  peers:", "    - name: n2", "      address: host", "  etcd: {endpoints: [\"127.0.0.1:2379\"]}"), 6, "want HOST:PORT"},
		{"same address twice", base("  peers:", "    - name: n2", "      address: \"127.0.0.1:7001\"", "  etcd: {endpoints: [\"127.0.0.1:2379\"]}"), 6, "used twice"},
		{"bad endpoint", base("  etcd: {endpoints: [\"ftp://x\"]}"), 3, `etcd endpoint "ftp://x"`},
		{"cert without key", base("  etcd: {endpoints: [\"127.0.0.1:2379\"], cert_file: c.pem}"), 3, "go together"},
		{"password without user", base("  etcd: {endpoints: [\"127.0.0.1:2379\"], password: x}"), 3, "go together"},
		{"bad prefix", base("  etcd: {endpoints: [\"127.0.0.1:2379\"], prefix: \"poolgate\"}"), 3, "etcd.prefix"},
		{"bad advertise", yamlLines("cluster:", "  node: n1", "  advertise: \":7001\"", "  etcd: {endpoints: [\"127.0.0.1:2379\"]}"), 2, "advertise"},
		{"bad node name", yamlLines("cluster:", "  node: \"n 1\"", "  advertise: \"h:1\"", "  etcd: {endpoints: [\"127.0.0.1:2379\"]}"), 2, "node"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("/etc/pg.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatal("accepted")
			}
			want := "/etc/pg.yaml:" + itoa(tc.line) + ": "
			if !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("error %q, want %q…%q", err, want, tc.reason)
			}
		})
	}
}

func TestClusterExampleConfigLoads(t *testing.T) {
	t.Setenv("POOLGATE_HTTP_TOKEN", "t")
	c, err := Load("../systemd/cluster/poolgate-n1.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Cluster == nil || c.Cluster.Node != "n1" || c.Cluster.Quorum() != 2 {
		t.Fatalf("cluster = %+v", c.Cluster)
	}
}
