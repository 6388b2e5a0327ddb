package hooks_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/poolgate/poolgate/internal/poolclient"
	"github.com/poolgate/poolgate/internal/testserver"
	"github.com/poolgate/poolgate/pushlog"
)

// recipe is the README's plain-OpenSSH set-up: its three code blocks, in
// order (the hook script, the authorized_keys lines, poolgate-login).
func recipe(t *testing.T) (hook, keys, login string) {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	start := strings.Index(s, "**Plain git over OpenSSH.**")
	end := strings.Index(s, "**gitolite.**")
	if start < 0 || end < start {
		t.Fatal("README has no plain-OpenSSH section before the gitolite one")
	}
	blocks := regexp.MustCompile("(?s)```[a-z]*\n(.*?)```").FindAllStringSubmatch(s[start:end], -1)
	if len(blocks) != 3 {
		t.Fatalf("README's plain-OpenSSH section has %d code blocks, want 3 (hook, authorized_keys, poolgate-login)", len(blocks))
	}
	return blocks[0][1], blocks[1][1], blocks[2][1]
}

// sshdEnv is what the test needs from the machine: root (to add the git
// account and run sshd) and Debian's openssh-server, both of which .ci/run
// provides. Missing, the test fails unless explicitly waived.
func sshdEnv(t *testing.T) string {
	const sshd = "/usr/sbin/sshd"
	why := ""
	if os.Geteuid() != 0 {
		why = "not root (needed to add a git-shell account and run sshd)"
	} else if _, err := os.Stat(sshd); err != nil {
		why = "no " + sshd + " (Debian's openssh-server; bash .ci/run installs it)"
	} else if _, err := exec.LookPath("useradd"); err != nil {
		why = "no useradd"
	}
	if why == "" {
		return sshd
	}
	if os.Getenv("POOLGATE_NO_SSHD") == "1" {
		t.Skip(why + ", and POOLGATE_NO_SSHD=1")
	}
	t.Fatal(why + "; or set POOLGATE_NO_SSHD=1")
	return ""
}

// The README's recipe, as written, for an account whose login shell is
// git-shell: a real sshd on loopback (its own config and host key), the
// stock client's git commands over ssh with a `~/` URL, the hook refusing
// a violation and recording who pushed from the authorized_keys line.
func TestREADMEOpenSSHRecipeWithGitShell(t *testing.T) {
	sshd := sshdEnv(t)
	hookScript, keyLines, login := recipe(t)

	base, err := os.MkdirTemp("", "poolgate-openssh-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	// The account must reach its home, the binary and the config.
	os.Chmod(base, 0o755)
	rnd := make([]byte, 3)
	rand.Read(rnd)
	user := "pgtest" + hex.EncodeToString(rnd)
	home := filepath.Join(base, "home")
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	run("useradd", "-m", "-d", home, "-s", "/usr/bin/git-shell", user)
	t.Cleanup(func() { exec.Command("userdel", "-r", "-f", user).Run() })
	// No password, but not "locked": sshd without PAM refuses locked accounts.
	run("usermod", "-p", "*", user)

	bin := filepath.Join(base, "bin", "poolgate")
	os.MkdirAll(filepath.Dir(bin), 0o755)
	exe, _ := os.ReadFile(binary)
	if err := os.WriteFile(bin, exe, 0o755); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(base, "poolgate.yaml")
	os.WriteFile(cfgPath, []byte(defaultConfig), 0o644)

	// The bare repo in the account's home, seeded by an admin, with the
	// README's two hooks.
	bare := filepath.Join(home, "locks.git")
	seed := &poolRepo{t: t, bare: bare, work: filepath.Join(base, "seed"), config: cfgPath, env: gitEnv(base)}
	seed.run(base, "git", "init", "-q", "--bare", "-b", "master", bare)
	hookText := strings.NewReplacer("/usr/local/bin/poolgate", bin, "/etc/poolgate/poolgate.yaml", cfgPath).Replace(hookScript)
	for _, name := range []string{"pre-receive", "post-receive"} {
		text := strings.Replace(hookText, "hook pre-receive", "hook "+name, 1)
		if err := os.WriteFile(filepath.Join(bare, "hooks", name), []byte(text), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	seed.run(base, "git", "clone", "-q", bare, seed.work)
	for _, f := range []string{"staging/claimed/.gitkeep", "staging/unclaimed/a", "staging/unclaimed/b", "staging/unclaimed/c"} {
		seed.write(f, "")
	}
	seed.commit("create pools")
	seed.mustPush("admin", "origin", "HEAD:master")

	// authorized_keys and poolgate-login as the README has them.
	dir := t.TempDir()
	alice, ci := testserver.NewKey(t, dir, "alice"), testserver.NewKey(t, dir, "concourse")
	var auth []string
	for _, l := range strings.Split(strings.TrimSpace(keyLines), "\n") {
		switch {
		case strings.HasSuffix(l, " alice"):
			auth = append(auth, strings.Replace(l, "ssh-ed25519 AAAA… alice", alice.Public, 1))
		case strings.HasSuffix(l, " concourse"):
			auth = append(auth, strings.Replace(l, "ssh-ed25519 AAAA… concourse", ci.Public, 1))
		}
	}
	if len(auth) != 2 {
		t.Fatalf("README's authorized_keys block does not have the alice and concourse lines:\n%s", keyLines)
	}
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	os.WriteFile(filepath.Join(home, ".ssh", "authorized_keys"), []byte(strings.Join(auth, "\n")+"\n"), 0o600)
	os.MkdirAll(filepath.Join(home, "git-shell-commands"), 0o755)
	if err := os.WriteFile(filepath.Join(home, "git-shell-commands", "poolgate-login"), []byte(login), 0o755); err != nil {
		t.Fatal(err)
	}
	run("chown", "-R", user+":", home)
	// Owned by root, as the README says: the account cannot change it.
	run("chown", "-R", "root:root", filepath.Join(home, "git-shell-commands"))

	port := startSSHD(t, sshd, base, user)

	url := "ssh://" + user + "@127.0.0.1:" + strconv.Itoa(port) + "/~/locks.git"
	sshCmd := func(k testserver.Key) string {
		return "ssh -F /dev/null -i " + k.Path + " -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes"
	}
	client := seedClient(t, url, sshCmd(ci), filepath.Join(dir, "ci-clone"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := client.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	if err := client.Claim(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	claim := strings.TrimSpace(gitOut(t, seed, "--git-dir="+bare, "rev-parse", "master"))
	var last pushlog.Push
	lines, _, _ := pushlog.At(bare).Read(pushlog.Pushes, 0)
	if len(lines) > 0 {
		pushlog.Decode(lines[len(lines)-1], &last)
	}
	if last.User != "concourse" || last.Role != "write" || last.New != claim {
		t.Fatalf("accepted push recorded as %+v, want concourse (write) at %s", last, claim)
	}

	// A violation through the same path: claiming a lock that does not
	// exist is refused by the hook, with the reason, and nothing lands.
	os.MkdirAll(filepath.Join(client.Dir, "staging", "claimed"), 0o755)
	os.WriteFile(filepath.Join(client.Dir, "staging", "claimed", "ghost"), nil, 0o644)
	client.Git(ctx, "add", "-A")
	client.Git(ctx, "commit", "-q", "-m", "claiming: ghost")
	out, err := client.Git(ctx, "push", "origin", "HEAD:master")
	if err == nil || !strings.Contains(out, "remote: poolgate: [claim-missing]") {
		t.Fatalf("claim of a missing lock over OpenSSH: err %v\n%s", err, out)
	}
	if now := strings.TrimSpace(gitOut(t, seed, "--git-dir="+bare, "rev-parse", "master")); now != claim {
		t.Fatalf("branch moved to %s on a refused push", now)
	}

	// git-shell still decides what runs: a shell command through the
	// forced command is refused, whatever the client asks for.
	for _, remote := range []string{"id", "sh -c id", "git-receive-pack '~/locks.git'; id", ""} {
		args := append(strings.Fields(sshCmd(ci))[1:], "-p", strconv.Itoa(port), user+"@127.0.0.1")
		if remote != "" {
			args = append(args, remote)
		}
		cmd := exec.Command("ssh", args...)
		cmd.Stdin = strings.NewReader("")
		out, err := cmd.CombinedOutput()
		if err == nil || strings.Contains(string(out), "uid=") {
			t.Errorf("ssh %q through the recipe: err %v, output %q; want git-shell's refusal", remote, err, out)
		}
	}

	// The admin line's role reaches the hook: alice may create a pool.
	admin := seedClient(t, url, sshCmd(alice), filepath.Join(dir, "alice-clone"))
	if err := admin.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(admin.Dir, "newpool", "unclaimed"), 0o755)
	os.WriteFile(filepath.Join(admin.Dir, "newpool", "unclaimed", "x"), nil, 0o644)
	admin.Git(ctx, "add", "-A")
	admin.Git(ctx, "commit", "-q", "-m", "create pool newpool")
	if out, err := admin.Git(ctx, "push", "origin", "HEAD:master"); err != nil {
		t.Fatalf("admin's pool creation refused: %v\n%s", err, out)
	}
}

func gitOut(t *testing.T, r *poolRepo, args ...string) string {
	t.Helper()
	return r.run(filepath.Dir(r.bare), "git", args...)
}

// startSSHD runs sshd on a free loopback port with its own config and host
// key in dir, allowing only user, and stops it when the test ends.
func startSSHD(t *testing.T, sshd, dir, user string) int {
	t.Helper()
	hostKey := filepath.Join(dir, "ssh_host_ed25519_key")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKey).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	// Debian's sshd wants its privilege separation directory.
	os.MkdirAll("/run/sshd", 0o755)
	for attempt := 0; attempt < 3; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		conf := filepath.Join(dir, "sshd_config")
		os.WriteFile(conf, []byte(strings.Join([]string{
			"Port " + strconv.Itoa(port),
			"ListenAddress 127.0.0.1",
			"HostKey " + hostKey,
			"PidFile " + filepath.Join(dir, "sshd.pid"),
			"AuthorizedKeysFile .ssh/authorized_keys",
			"AllowUsers " + user,
			"PubkeyAuthentication yes",
			"PasswordAuthentication no",
			"KbdInteractiveAuthentication no",
			"UsePAM no",
			"PermitRootLogin no",
			"StrictModes yes",
			"LogLevel VERBOSE",
		}, "\n")+"\n"), 0o644)
		var logs strings.Builder
		var mu sync.Mutex
		cmd := exec.Command(sshd, "-D", "-e", "-f", conf)
		cmd.Stderr = writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return logs.Write(p) })
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		up := false
		for i := 0; i < 100 && !up; i++ {
			select {
			case <-exited:
				i = 100
				continue
			default:
			}
			if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second); err == nil {
				c.Close()
				up = true
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if up {
			t.Cleanup(func() {
				cmd.Process.Kill()
				<-exited
				if t.Failed() {
					mu.Lock()
					t.Logf("sshd log:\n%s", logs.String())
					mu.Unlock()
				}
			})
			return port
		}
		cmd.Process.Kill()
		<-exited
		mu.Lock()
		t.Logf("sshd did not start on port %d (attempt %d):\n%s", port, attempt+1, logs.String())
		mu.Unlock()
	}
	t.Fatal("sshd did not start")
	return 0
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// seedClient is the stock pool-resource's git sequence on pool staging,
// logging in with sshCommand.
func seedClient(t *testing.T, url, sshCommand, dir string) *poolclient.Client {
	return &poolclient.Client{
		URL: url, Branch: "master", Pool: "staging", Dir: dir,
		Env:        []string{"GIT_SSH_COMMAND=" + sshCommand, "SSH_AUTH_SOCK=", "HOME=" + filepath.Dir(dir), "GIT_CONFIG_NOSYSTEM=1"},
		RetryDelay: 50 * time.Millisecond,
		BuildURL:   "https://ci.example.com/teams/main/pipelines/p/jobs/deploy/builds/42",
	}
}
