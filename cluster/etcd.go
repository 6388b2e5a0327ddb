package cluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"time"

	"github.com/poolgate/poolgate/config"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// etcdOpTimeout bounds one etcd request: past it the cluster counts as
// unreachable for this push or read.
const etcdOpTimeout = 3 * time.Second

// newEtcd makes a client from the cluster block. It does not wait for a
// connection: a node starts and serves reads with etcd down.
func newEtcd(cl *config.Cluster) (*clientv3.Client, error) {
	e := cl.Etcd
	var tlsCfg *tls.Config
	secure := e.CertFile != "" || e.TrustedCAFile != ""
	for _, ep := range e.Endpoints {
		if strings.HasPrefix(ep, "https://") {
			secure = true
		}
	}
	if secure {
		info := transport.TLSInfo{CertFile: e.CertFile, KeyFile: e.KeyFile, TrustedCAFile: e.TrustedCAFile, ServerName: e.ServerName}
		var err error
		if tlsCfg, err = info.ClientConfig(); err != nil {
			return nil, fmt.Errorf("cluster: etcd TLS: %w", err)
		}
	}
	return clientv3.New(clientv3.Config{
		Endpoints:   e.Endpoints,
		DialTimeout: e.DialTimeout.D(),
		// Dead connections are noticed within seconds, so a partitioned
		// node stops taking pushes promptly.
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		Username:             e.Username,
		Password:             e.Password,
		TLS:                  tlsCfg,
		Logger:               zap.NewNop(),
	})
}

// keys names poolgate's keys under the configured prefix.
type keys struct{ prefix string }

// tip is the key holding a repo branch's decided commit.
func (k keys) tip(repo, branch string) string {
	return k.prefix + "/repos/" + repo + "/refs/heads/" + branch
}

func (k keys) repos() string           { return k.prefix + "/repos/" }
func (k keys) node(name string) string { return k.prefix + "/nodes/" + name }
func (k keys) nodes() string           { return k.prefix + "/nodes/" }
func (k keys) lock(repo string) string { return k.prefix + "/locks/" + repo }
func (k keys) election() string        { return k.prefix + "/leader" }
func (k keys) events() string          { return k.prefix + "/events/" }
func (k keys) event(id string) string  { return k.prefix + "/events/" + id }
func (k keys) sent(webhook, id string) string {
	return k.prefix + "/webhooks/" + webhook + "/sent/" + id
}

// repoOfTipKey is the repo a tip key names, or "".
func (k keys) repoOfTipKey(key string) string {
	rest, ok := strings.CutPrefix(key, k.repos())
	if !ok {
		return ""
	}
	repo, _, ok := strings.Cut(rest, "/refs/heads/")
	if !ok {
		return ""
	}
	return repo
}

// decidedTip reads a tip from etcd with a linearizable read: a client that
// was told "ok" by another node is never shown an older tip here.
// found is false when no tip was decided yet.
func decidedTip(ctx context.Context, cli *clientv3.Client, key string) (tip string, found bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, etcdOpTimeout)
	defer cancel()
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return "", false, err
	}
	if len(resp.Kvs) == 0 {
		return "", false, nil
	}
	return string(resp.Kvs[0].Value), true, nil
}
