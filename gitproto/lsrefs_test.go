package gitproto

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/poolgate/poolgate/internal/gittest"
)

// lsRefsRequest builds an ls-refs request as a git client sends it.
func lsRefsRequest(caps []string, args ...string) []byte {
	var b bytes.Buffer
	b.Write(EncodePkt("command=ls-refs\n"))
	for _, c := range caps {
		b.Write(EncodePkt(c + "\n"))
	}
	b.WriteString("0001")
	for _, a := range args {
		b.Write(EncodePkt(a + "\n"))
	}
	b.WriteString("0000")
	return b.Bytes()
}

// gitLsRefs is git's own answer to the request.
func gitLsRefs(t *testing.T, dir string, req []byte) []byte {
	t.Helper()
	cmd := exec.Command("git", "upload-pack", "--stateless-rpc", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_PROTOCOL=version=2", "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
	cmd.Stdin = bytes.NewReader(req)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git upload-pack: %v: %s", err, stderr.String())
	}
	return out
}

var lsRefsRequests = [][]byte{
	lsRefsRequest(nil),
	lsRefsRequest([]string{"agent=git/2.39.5", "object-format=sha1"}, "symrefs", "peel", "unborn"),
	// git clone --single-branch --branch master
	lsRefsRequest([]string{"agent=git/2.39.5"}, "symrefs", "peel", "ref-prefix HEAD", "ref-prefix refs/heads/master", "ref-prefix refs/tags/master", "unborn"),
	// git fetch origin master
	lsRefsRequest([]string{"agent=git/2.39.5", "object-format=sha1"}, "symrefs", "peel", "ref-prefix master", "ref-prefix refs/master",
		"ref-prefix refs/tags/master", "ref-prefix refs/heads/master", "ref-prefix refs/remotes/master", "ref-prefix refs/remotes/master/HEAD", "ref-prefix refs/tags/"),
	lsRefsRequest(nil, "ref-prefix refs/heads/"),
	lsRefsRequest(nil, "symrefs", "ref-prefix refs/heads/f", "ref-prefix refs/heads/"),
	lsRefsRequest(nil, "symrefs", "unborn", "ref-prefix HEAD"),
	lsRefsRequest(nil, "ref-prefix nothing"),
}

// The daemon's ls-refs answers equal git's, byte for byte, on the repo
// shapes it answers itself, and it leaves the others to git.
func TestLsRefsLikeGit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "r.git")
	gitT(t, filepath.Dir(dir), "", "init", "-q", "--bare", "--initial-branch=master", dir)

	check := func(stage string, wantOK bool) {
		t.Helper()
		for i, req := range lsRefsRequests {
			got, ok := LsRefs(dir, req)
			if ok != wantOK {
				t.Fatalf("%s, request %d: answered itself = %v, want %v", stage, i, ok, wantOK)
			}
			if !ok {
				continue
			}
			if want := gitLsRefs(t, dir, req); !bytes.Equal(got, want) {
				t.Errorf("%s, request %d:\n got %q\nwant %q", stage, i, got, want)
			}
		}
	}
	check("empty repo (HEAD unborn)", true)

	blob := gitT(t, dir, "x\n", "hash-object", "-w", "--stdin")
	tree := gitT(t, dir, "100644 blob "+blob+"\tf\n", "mktree")
	c1 := gitT(t, dir, "", "commit-tree", tree, "-m", "one")
	c2 := gitT(t, dir, "", "commit-tree", tree, "-p", c1, "-m", "two")
	gitT(t, dir, "", "update-ref", "refs/heads/master", c1)
	check("one branch", true)

	gitT(t, dir, "", "update-ref", "refs/heads/feature/x", c2)
	gitT(t, dir, "", "update-ref", "refs/heads/f", c2)
	check("three branches", true)

	gitT(t, dir, "", "pack-refs", "--all")
	check("packed refs", true)

	gitT(t, dir, "", "update-ref", "refs/heads/master", c2)
	check("a loose ref over a packed one", true)

	gitT(t, dir, "", "symbolic-ref", "HEAD", "refs/heads/gone")
	check("HEAD at a missing branch", true)

	gitT(t, dir, "", "update-ref", "--no-deref", "HEAD", c1)
	check("detached HEAD", true)
	gitT(t, dir, "", "symbolic-ref", "HEAD", "refs/heads/master")

	gitT(t, dir, "", "tag", "-a", "-m", "t", "v1", c1)
	check("an annotated tag: left to git", false)
	gitT(t, dir, "", "tag", "-d", "v1")
	check("tag deleted again", true)

	gitT(t, dir, "", "symbolic-ref", "refs/heads/alias", "refs/heads/master")
	check("a symbolic branch: left to git", false)
	gitT(t, dir, "", "update-ref", "-d", "--no-deref", "refs/heads/alias")
	check("symbolic branch deleted again", true)

	if _, ok := LsRefs(dir, lsRefsRequest(nil, "no-such-arg")); ok {
		t.Error("an unknown argument must be left to git")
	}
	if _, ok := LsRefs(dir, lsRefsRequest([]string{"object-format=sha256"})); ok {
		t.Error("another object format must be left to git")
	}
}

// Requests the daemon does not understand exactly are left to git.
func TestParseLsRefsLeavesOddRequestsToGit(t *testing.T) {
	good := lsRefsRequest([]string{"agent=git/2.39.5"}, "symrefs", "ref-prefix refs/heads/")
	if _, ok := parseLsRefs(good); !ok {
		t.Fatal("a plain request must parse")
	}
	odd := map[string][]byte{
		"truncated":                    good[:len(good)-4],
		"junk after the flush":         append(append([]byte{}, good...), "0000"...),
		"two delims":                   []byte("0014command=ls-refs\n00010001000csymrefs\n0000"),
		"an argument before the delim": []byte("0014command=ls-refs\n000csymrefs\n0000"),
		"another command":              []byte("0012command=fetch\n00010000"),
		"a response-end packet":        []byte("0014command=ls-refs\n000100020000"),
		"a bad length":                 []byte("0014command=ls-refs\n0001zzzz0000"),
	}
	for name, req := range odd {
		if _, ok := parseLsRefs(req); ok {
			t.Errorf("%s: parsed, want it left to git", name)
		}
	}
}

// RequestReader hands over one request, up to and including its flush, and
// leaves what follows for the next one.
func TestRequestReaderStopsAtTheFlush(t *testing.T) {
	first := []byte("0012command=fetch\n")
	rest := "00010009done\n0000" + "0014command=ls-refs\n0000"
	r := bytes.NewReader([]byte(rest))
	q := &RequestReader{r: r, pending: first}
	got, err := io.ReadAll(q)
	if err != nil {
		t.Fatal(err)
	}
	if want := "0012command=fetch\n00010009done\n0000"; string(got) != want || !q.done || q.err != nil {
		t.Fatalf("got %q (done %v, err %v), want %q", got, q.done, q.err, want)
	}
	left, _ := io.ReadAll(r)
	if string(left) != "0014command=ls-refs\n0000" {
		t.Fatalf("left %q for the next request", left)
	}
	// A request cut short ends the reader with an error noted.
	q = &RequestReader{r: bytes.NewReader([]byte("0009done\n")), pending: first}
	io.ReadAll(q)
	if q.done || q.err == nil {
		t.Fatalf("cut-short request: done %v, err %v", q.done, q.err)
	}
}

func gitT(t *testing.T, dir string, stdin string, args ...string) string {
	t.Helper()
	return gittest.Run(t, dir, []byte(stdin), args...)
}

// Issue 11: git's gc --auto runs pack-refs after a push; a pack-refs
// between the reads of packed-refs and of the loose refs dropped the
// branch from the answer, and the stock client's fetch failed its step.
// Each round a push moves master and creates a branch (loose refs), and
// pack-refs packs and prunes them, while ls-refs is asked again and again:
// a branch once shown is shown in every later answer, and master never
// goes back to an older commit.
func TestLsRefsAlwaysShowsTheBranchWhilePackRefsRuns(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "r.git")
	gitT(t, filepath.Dir(dir), "", "init", "-q", "--bare", "--initial-branch=master", dir)
	blob := gitT(t, dir, "x\n", "hash-object", "-w", "--stdin")
	tree := gitT(t, dir, "100644 blob "+blob+"\tf\n", "mktree")
	const rounds = 100
	commits := make([]string, rounds)
	order := map[string]int{}
	for i := range commits {
		args := []string{"commit-tree", tree, "-m", fmt.Sprint(i)}
		if i > 0 {
			args = append(args, "-p", commits[i-1])
		}
		commits[i] = gitT(t, dir, "", args...)
		order[commits[i]] = i
	}
	gitT(t, dir, "", "update-ref", "refs/heads/master", commits[0])
	req := lsRefsRequest([]string{"agent=git/2.39.5"}, "symrefs", "peel", "ref-prefix refs/heads/")

	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i < rounds; i++ {
			gitT(t, dir, "", "update-ref", "refs/heads/master", commits[i])
			gitT(t, dir, "", "update-ref", fmt.Sprintf("refs/heads/b%d", i), commits[i])
			gitT(t, dir, "", "pack-refs", "--all", "--prune")
		}
	}()
	seen := map[string]bool{}
	answered, last := 0, 0
	var failure string
	for polling := true; polling && failure == ""; {
		select {
		case <-done:
			polling = false
		default:
		}
		resp, ok := LsRefs(dir, req)
		if !ok {
			continue // left to git, which reads refs its own way
		}
		answered++
		now := map[string]string{}
		for _, line := range strings.Split(string(resp), "\n") {
			if len(line) > 4+41 {
				oid, name, _ := strings.Cut(line[4:], " ")
				now[name] = oid
			}
		}
		for name := range seen {
			if now[name] == "" {
				failure = fmt.Sprintf("answer %d: %s, shown before, is missing", answered, name)
			}
		}
		for name := range now {
			seen[name] = true
		}
		m, ok := order[now["refs/heads/master"]]
		if !ok || m < last {
			failure = fmt.Sprintf("answer %d: master at commit %d (%q), after commit %d", answered, m, now["refs/heads/master"], last)
		}
		last = m
	}
	<-done
	if failure != "" {
		t.Fatal(failure)
	}
	if answered == 0 || len(seen) < rounds/2 {
		t.Fatalf("%d answers, %d branches seen: the test proves nothing", answered, len(seen))
	}
	t.Logf("%d answers, %d branches, none dropped", answered, len(seen))
}
