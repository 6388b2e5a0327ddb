package config

import "testing"

// The config, a client's path (daemon) and a peer's request (cluster) all
// ask ValidRepoName; a name it refuses never becomes a directory or an
// argument near git.
func TestValidRepoNameRefusesEveryWayOutOfTheReposDirectory(t *testing.T) {
	for _, name := range []string{"locks", "a.b-c", "L0cks_2", "x"} {
		if !ValidRepoName(name) {
			t.Errorf("%q refused", name)
		}
	}
	for _, name := range []string{
		"", ".", "..", "a..b", "locks..", "../locks", "locks/..", "/locks", "locks/x", `locks\x`,
		"-locks", "--upload-pack=id", ".locks", ".git", "lo cks", "locks\x00", "locks\n", "lo'cks",
		"~locks", "lócks", string(make([]byte, 101)), "a" + string(make([]byte, 100)),
	} {
		if ValidRepoName(name) {
			t.Errorf("%q accepted", name)
		}
	}
	long := ""
	for range 100 {
		long += "a"
	}
	if !ValidRepoName(long) || ValidRepoName(long+"a") {
		t.Error("a name may be 100 characters long, no more")
	}
}
