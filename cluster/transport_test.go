package cluster

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/poolgate/poolgate/config"
	"github.com/rs/zerolog"
	gossh "golang.org/x/crypto/ssh"
)

func newSigner(t *testing.T) gossh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir, "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// peerFixture is a node's peer listener over one bare repo "locks", and a
// second repo holding one more commit than it.
type peerFixture struct {
	key              gossh.Signer
	addr, dir, other string
	base, next       string // commits: both repos have base; other also has next
}

func newPeerFixture(t *testing.T) *peerFixture {
	t.Helper()
	root := t.TempDir()
	f := &peerFixture{key: newSigner(t), dir: filepath.Join(root, "locks.git"), other: filepath.Join(root, "other.git")}
	git(t, root, "init", "-q", "--bare", "--initial-branch=master", f.dir)
	work := filepath.Join(root, "work")
	git(t, root, "init", "-q", "--initial-branch=master", work)
	os.WriteFile(filepath.Join(work, "a"), []byte("a"), 0o644)
	git(t, work, "add", "a")
	git(t, work, "commit", "-qm", "base")
	f.base = git(t, work, "rev-parse", "HEAD")
	git(t, work, "push", "-q", f.dir, "master")
	os.WriteFile(filepath.Join(work, "b"), []byte("b"), 0o644)
	git(t, work, "add", "b")
	git(t, work, "commit", "-qm", "next")
	f.next = git(t, work, "rev-parse", "HEAD")
	git(t, root, "clone", "-q", "--bare", work, f.other)

	cfg, err := config.Parse("", []byte("repos: [{name: locks}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &peerServer{cfg: cfg, signer: f.key, git: gitRunner{home: root}, log: zerolog.Nop(),
		repoDir: func(name string) string { return filepath.Join(root, name+".git") }}
	go p.serve(ln)
	t.Cleanup(p.close)
	f.addr = ln.Addr().String()
	return f
}

func TestPeerShipsObjectsWithoutMovingARef(t *testing.T) {
	f := newPeerFixture(t)
	g := gitRunner{home: t.TempDir()}
	if err := sendObjects(context.Background(), g, f.key, f.addr, f.other, "locks", f.next); err != nil {
		t.Fatal(err)
	}
	if !g.connected(context.Background(), f.dir, f.next) {
		t.Error("the peer does not hold the objects")
	}
	if tip, _ := g.tip(context.Background(), f.dir, "master"); tip != f.base {
		t.Errorf("the peer's branch moved to %s", tip)
	}
	// And back: a node fetching from the peer.
	fresh := filepath.Join(t.TempDir(), "fresh.git")
	git(t, filepath.Dir(fresh), "init", "-q", "--bare", fresh)
	if err := fetchObjects(context.Background(), g, f.key, f.addr, fresh, "locks", f.next, ""); err != nil {
		t.Fatal(err)
	}
	if !g.connected(context.Background(), fresh, f.next) {
		t.Error("fetched objects incomplete")
	}
}

// Attack: an anonymous or foreign client on the node-to-node port.
func TestPeerPortRefusesAClientWithoutTheClusterKey(t *testing.T) {
	f := newPeerFixture(t)
	intruder := newSigner(t)
	_, err := gossh.Dial("tcp", f.addr, &gossh.ClientConfig{User: "poolgate", Auth: []gossh.AuthMethod{gossh.PublicKeys(intruder)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey()})
	if err == nil {
		t.Fatal("a client with another key was let in")
	}
	_, err = gossh.Dial("tcp", f.addr, &gossh.ClientConfig{User: "poolgate", Auth: []gossh.AuthMethod{gossh.Password("")},
		HostKeyCallback: gossh.InsecureIgnoreHostKey()})
	if err == nil {
		t.Fatal("a client without a key was let in")
	}
}

// Attack: something on the peer's address that is not a node (another
// key) must not receive a push's objects.
func TestNodeRefusesAPeerPresentingAnotherHostKey(t *testing.T) {
	f := newPeerFixture(t)
	other := newSigner(t)
	if _, err := dialPeer(context.Background(), f.addr, other); err == nil {
		t.Fatal("dialled a server that does not present the cluster key")
	}
}

// Attack: a holder of the key sending commands other than the two, paths
// out of the data dir, or options for git.
func TestPeerRefusesShellsPathsAndOptions(t *testing.T) {
	f := newPeerFixture(t)
	cli, err := dialPeer(context.Background(), f.addr, f.key)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for _, cmd := range []string{
		"sh -c id",
		"objects ../../etc " + f.next,
		"objects locks " + f.next + " extra",
		"pack locks --upload-pack=touch",
		"pack locks " + f.next + " --all",
		"pack other " + f.next, // a repo on disk but not in the config
		"git-upload-pack 'locks'",
		"",
		// Hostile repo names: refused by config.ValidRepoName, the check a
		// client's path goes through, before the config is even asked.
		"objects .. " + f.next,
		"objects locks/../locks " + f.next,
		"pack ./locks " + f.next,
		"pack -locks " + f.next,
		"pack .locks " + f.next,
		"decided ..",
		"decided ../locks",
		"decided /locks",
		"decided locks.git/..",
		"decided --git-dir=/",
	} {
		sess, err := cli.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		var stdout, stderr bytes.Buffer
		sess.Stdout, sess.Stderr = &stdout, &stderr
		err = sess.Run(cmd)
		sess.Close()
		if err == nil || stdout.Len() > 0 {
			t.Errorf("%q: ran (stdout %d bytes, stderr %q)", cmd, stdout.Len(), stderr.String())
		}
	}
}
