package daemon

import (
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"testing"

	"github.com/poolgate/poolgate/config"
	"github.com/rs/zerolog"
	gossh "golang.org/x/crypto/ssh"
)

type fakeMeta struct{ gossh.ConnMetadata }

func (fakeMeta) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

// Each key check must return its own Permissions: x/crypto attaches to the
// connection only those of the key that signed, so a later check of an
// offered-but-unproven key cannot overwrite the identity (CVE-2024-45337).
func TestEachKeyCheckReturnsItsOwnPermissions(t *testing.T) {
	pubs := map[string]gossh.PublicKey{}
	yaml := "users:\n"
	for _, n := range []string{"alice", "bob"} {
		pub, _, _ := ed25519.GenerateKey(rand.Reader)
		k, _ := gossh.NewPublicKey(pub)
		pubs[n] = k
		yaml += "  - name: " + n + "\n    keys: [\"" + string(gossh.MarshalAuthorizedKey(k)[:len(gossh.MarshalAuthorizedKey(k))-1]) + "\"]\n"
	}
	cfg, err := config.Parse("t.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, zerolog.Nop(), "/bin/false")
	if err != nil {
		t.Fatal(err)
	}
	pa, err := s.publicKeyCallback(fakeMeta{}, pubs["alice"])
	if err != nil {
		t.Fatal(err)
	}
	pb, err := s.publicKeyCallback(fakeMeta{}, pubs["bob"])
	if err != nil {
		t.Fatal(err)
	}
	if pa == pb || pa.Extensions[extUser] != "alice" || pb.Extensions[extUser] != "bob" ||
		pa.Extensions[extKey] != gossh.FingerprintSHA256(pubs["alice"]) {
		t.Fatalf("permissions shared or wrong: %v %v", pa.Extensions, pb.Extensions)
	}
	stranger, _, _ := ed25519.GenerateKey(rand.Reader)
	sk, _ := gossh.NewPublicKey(stranger)
	if p, err := s.publicKeyCallback(fakeMeta{}, sk); err == nil || p != nil {
		t.Fatal("unknown key accepted")
	}
}
