package daemon

import (
	"errors"

	"github.com/gliderlabs/ssh"
	"github.com/poolgate/poolgate/config"
	gossh "golang.org/x/crypto/ssh"
)

// Permission extensions recording who authenticated.
const (
	extUser = "poolgate-user"
	extKey  = "poolgate-key"
)

var errUnknownKey = errors.New("unknown public key")

// identity is the verified pusher of a connection.
type identity struct {
	user *config.User
	key  string // SHA256 fingerprint of the key that signed
}

// publicKeyCallback accepts configured keys.
//
// Security (CVE-2024-45337): x/crypto calls this for every key a client
// offers, including keys it only asks about and never proves, and it may
// be called for several keys on one connection. So the identity is never
// taken from "the last call": each call returns its own fresh Permissions,
// and x/crypto attaches to the connection only the Permissions returned for
// the key whose signature verified. identityOf reads them from there.
// (gliderlabs' PublicKeyHandler shares one Permissions object between all
// calls, which is why it is not used.)
func (s *Server) publicKeyCallback(meta gossh.ConnMetadata, key gossh.PublicKey) (*gossh.Permissions, error) {
	u := s.conf().users[string(key.Marshal())]
	if u == nil {
		s.log.Debug().Str("remote", meta.RemoteAddr().String()).Str("key", gossh.FingerprintSHA256(key)).Msg("unknown key")
		return nil, errUnknownKey
	}
	return &gossh.Permissions{Extensions: map[string]string{
		extUser: u.Name,
		extKey:  gossh.FingerprintSHA256(key),
	}}, nil
}

// identityOf returns the verified identity of a session's connection.
func (s *Server) identityOf(ctx ssh.Context) (identity, bool) {
	conn, _ := ctx.Value(ssh.ContextKeyConn).(*gossh.ServerConn)
	if conn == nil || conn.Permissions == nil {
		return identity{}, false
	}
	u := s.conf().User(conn.Permissions.Extensions[extUser])
	key := conn.Permissions.Extensions[extKey]
	if u == nil || key == "" {
		return identity{}, false
	}
	return identity{user: u, key: key}, true
}
