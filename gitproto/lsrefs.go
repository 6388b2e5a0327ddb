package gitproto

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/poolgate/poolgate/pool"
)

// LsRefs answers a protocol v2 ls-refs request (the whole request as
// received, up to its flush) from the repo's ref files, byte for byte as
// git upload-pack would. ok is false whenever the daemon cannot be sure of
// that — an argument it does not know, a ref other than a plain branch, a
// symbolic ref other than HEAD, a ref file it cannot read — and git must
// answer instead.
func LsRefs(dir string, req []byte) (resp []byte, ok bool) {
	args, ok := parseLsRefs(req)
	if !ok {
		return nil, false
	}
	refs, head, ok := readRefs(dir)
	if !ok {
		return nil, false
	}
	var b bytes.Buffer
	line := func(s string) { b.Write(EncodePkt(s + "\n")) }
	// HEAD first, as git's send_possibly_unborn_head.
	if args.match("HEAD") {
		switch {
		case head.target == "":
			line(head.oid + " HEAD")
		case refs[head.target] != "":
			s := refs[head.target] + " HEAD"
			if args.symrefs {
				s += " symref-target:" + head.target
			}
			line(s)
		case args.unborn && args.symrefs:
			line("unborn HEAD symref-target:" + head.target)
		}
	}
	names := make([]string, 0, len(refs))
	for n := range refs {
		if args.match(n) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		line(refs[n] + " " + n)
	}
	b.WriteString("0000")
	return b.Bytes(), true
}

type lsRefsArgs struct {
	symrefs, peel, unborn bool
	prefixes              []string
}

func (a *lsRefsArgs) match(name string) bool {
	if len(a.prefixes) == 0 {
		return true
	}
	for _, p := range a.prefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// parseLsRefs reads the arguments of an ls-refs request: the command, the
// capability lines (agent=, object-format=, server-option=), a delim, then
// the arguments, then a flush.
func parseLsRefs(req []byte) (lsRefsArgs, bool) {
	var a lsRefsArgs
	r := bytes.NewReader(req)
	inArgs := false
	buf := make([]byte, 0, 1024)
	for i := 0; ; i++ {
		k, err := ReadPkt(r, buf)
		if err != nil {
			return a, false
		}
		buf = k.Raw[:0]
		if k.Flush {
			return a, r.Len() == 0
		}
		if k.Control {
			// "0001", the delim between capabilities and arguments.
			if string(k.Raw) != "0001" || inArgs {
				return a, false
			}
			inArgs = true
			continue
		}
		s := strings.TrimSuffix(string(k.Payload), "\n")
		if i == 0 {
			if s != "command=ls-refs" {
				return a, false
			}
			continue
		}
		if !inArgs {
			switch {
			case strings.HasPrefix(s, "agent="), strings.HasPrefix(s, "server-option="), s == "object-format=sha1":
			default:
				return a, false
			}
			continue
		}
		switch {
		case s == "symrefs":
			a.symrefs = true
		case s == "peel":
			a.peel = true
		case s == "unborn":
			a.unborn = true
		case strings.HasPrefix(s, "ref-prefix "):
			// git ignores prefixes beyond 65536 (then shows every ref);
			// leave such clients to git.
			if len(a.prefixes) >= 65536 {
				return a, false
			}
			a.prefixes = append(a.prefixes, s[len("ref-prefix "):])
		default:
			return a, false
		}
	}
}

// headRef is HEAD: a symbolic ref to target, or detached at oid.
type headRef struct {
	target string
	oid    string
}

// readRefs reads HEAD, the loose refs and packed-refs, as git does: the
// loose refs first, then packed-refs for the names they lack. git's
// pack-refs (run by gc --auto after a push) writes packed-refs before it
// deletes the loose refs it packed, so a ref read neither loose nor packed
// cannot happen in this order; in the other, a pack-refs between the two
// reads drops the branch from the answer. If packed-refs was replaced while
// the loose refs were read, everything is read again. ok is false unless
// every ref is a branch (refs/heads/...) holding a full object id, HEAD is
// a symbolic ref to a branch or a detached id, and packed-refs holds no
// peeled lines: then the refs need no object to be read for ls-refs.
func readRefs(dir string) (refs map[string]string, head headRef, ok bool) {
	for try := 0; try < 5; try++ {
		before, err := os.Stat(filepath.Join(dir, "packed-refs"))
		if err != nil && !os.IsNotExist(err) {
			return nil, head, false
		}
		head, ok = readHead(dir)
		if !ok {
			return nil, head, false
		}
		refs, ok = readLooseRefs(dir)
		if !ok {
			return nil, head, false
		}
		same, ok := readPackedRefs(dir, before, refs)
		if !ok {
			return nil, head, false
		}
		if same {
			return refs, head, true
		}
	}
	// packed-refs keeps changing: let git answer.
	return nil, head, false
}

func readHead(dir string) (head headRef, ok bool) {
	b, err := os.ReadFile(filepath.Join(dir, "HEAD"))
	if err != nil {
		return head, false
	}
	h := strings.TrimSuffix(string(b), "\n")
	if t, isSym := strings.CutPrefix(h, "ref: "); isSym {
		if !branchName(t) {
			return head, false
		}
		head.target = t
	} else if isOID(h) {
		head.oid = h
	} else {
		return head, false
	}
	return head, true
}

func readLooseRefs(dir string) (map[string]string, bool) {
	refs := map[string]string{}
	root := filepath.Join(dir, "refs")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p != root && errors.Is(err, fs.ErrNotExist) {
				return nil // a directory pack-refs pruned while we walked
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		if strings.HasSuffix(p, ".lock") {
			return nil // a ref being written; its old value is the file beside it
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		if !d.Type().IsRegular() || !branchName(name) {
			return errNotPlain
		}
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			// Packed and pruned since the directory was listed: packed-refs,
			// read next, has it.
			return nil
		}
		if err != nil {
			return err
		}
		oid := strings.TrimSuffix(string(b), "\n")
		if !isOID(oid) {
			return errNotPlain // a symbolic ref, or something git would warn about
		}
		refs[name] = oid
		return nil
	})
	if err != nil {
		return nil, false
	}
	return refs, true
}

// readPackedRefs adds to refs the packed refs it lacks. same is false when
// packed-refs is not the file before described (nil: there was none).
func readPackedRefs(dir string, before os.FileInfo, refs map[string]string) (same, ok bool) {
	f, err := os.Open(filepath.Join(dir, "packed-refs"))
	if os.IsNotExist(err) {
		return before == nil, true
	}
	if err != nil {
		return false, false
	}
	defer f.Close()
	now, err := f.Stat()
	if err != nil {
		return false, false
	}
	if before == nil || !os.SameFile(before, now) || before.Size() != now.Size() || !before.ModTime().Equal(now.ModTime()) {
		return false, true
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		oid, name, found := strings.Cut(line, " ")
		if !found || !isOID(oid) || !branchName(name) {
			return false, false
		}
		if _, loose := refs[name]; !loose {
			refs[name] = oid
		}
	}
	if sc.Err() != nil {
		return false, false
	}
	return true, true
}

var errNotPlain = fmt.Errorf("not a plain branch")

// isOID: the fast path serves SHA-1 repos only; anything else is git's.
func isOID(s string) bool { return len(s) == 40 && pool.IsObjectID(s) && !pool.IsZero(s) }

// branchName accepts refs/heads/NAME whose every component git's
// check_refname_format would accept, in a conservative subset: letters,
// digits and "-_./+@", no empty component, none starting with '.' or
// ending in ".lock", no "..", no "@{".
func branchName(name string) bool {
	rest, ok := strings.CutPrefix(name, "refs/heads/")
	if !ok || rest == "" || strings.Contains(rest, "..") || strings.Contains(rest, "@{") || rest == "@" {
		return false
	}
	for _, comp := range strings.Split(rest, "/") {
		if comp == "" || comp[0] == '.' || strings.HasSuffix(comp, ".lock") || strings.HasSuffix(comp, ".") {
			return false
		}
		for _, c := range comp {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_.+@", c)) {
				return false
			}
		}
	}
	return true
}
