package pool

import "testing"

func TestParseMessageInEveryPoolResourceFormat(t *testing.T) {
	cases := []struct {
		msg  string
		want Intent
	}{
		{"claiming: env-a\nBuild URL: https://ci.example.com/teams/main/pipelines/p/jobs/deploy/builds/42",
			Intent{Verb: "claiming", Name: "env-a", Team: "main", Pipeline: "p", Job: "deploy", Build: "42",
				BuildURL: "https://ci.example.com/teams/main/pipelines/p/jobs/deploy/builds/42"}},
		{"unclaiming: env-a\n\nBuild URL: https://ci/teams/t%20x/pipelines/p/jobs/j/builds/7.1?vars=1",
			Intent{Verb: "unclaiming", Name: "env-a", Team: "t x", Pipeline: "p", Job: "j", Build: "7.1",
				BuildURL: "https://ci/teams/t%20x/pipelines/p/jobs/j/builds/7.1?vars=1"}},
		{"claiming: env-a\nBuild URL: ", Intent{Verb: "claiming", Name: "env-a"}},
		{"main/p/deploy build 42 claiming: env-a",
			Intent{Verb: "claiming", Name: "env-a", Team: "main", Pipeline: "p", Job: "deploy", Build: "42"}},
		{"p/deploy build 3 adding claimed: x", Intent{Verb: "adding claimed", Name: "x", Pipeline: "p", Job: "deploy", Build: "3"}},
		{"one-off build 977 removing: x", Intent{Verb: "removing", Name: "x", BuildID: "977"}},
		{"one-off build 977 removing: x\nBuild URL: https://ci/builds/977", Intent{Verb: "removing", Name: "x", BuildID: "977", BuildURL: "https://ci/builds/977"}},
		{"updating: my lock", Intent{Verb: "updating", Name: "my lock"}},
		{"adding unclaimed: n", Intent{Verb: "adding unclaimed", Name: "n"}},
		{"Freshening up the pool staging", Intent{}},
		{"Merge branch 'master' of ssh://host/locks", Intent{}},
		{"claiming:", Intent{}},
		{"main/p/j build 4 did something", Intent{}},
		{"", Intent{}},
	}
	for _, c := range cases {
		if got := ParseMessage(c.msg); got != c.want {
			t.Errorf("ParseMessage(%q)\n got %+v\nwant %+v", c.msg, got, c.want)
		}
	}
}

// memTrees is an in-memory TreeReader for unit tests.
type memTrees map[string][]TreeEntry

func (m memTrees) ReadTree(h string) ([]TreeEntry, error) { return m[h], nil }

func TestDiffNamesEveryOperationOfTheDesignTable(t *testing.T) {
	mk := func(c, u map[string]string) *Snapshot {
		p := &Pool{Path: "s", Claimed: map[string]Lock{}, Unclaimed: map[string]Lock{}}
		for n, h := range c {
			p.Claimed[n] = Lock{Name: n, Mode: ModeFile, Hash: h}
		}
		for n, h := range u {
			p.Unclaimed[n] = Lock{Name: n, Mode: ModeFile, Hash: h}
		}
		return &Snapshot{Pools: map[string]*Pool{"s": p}}
	}
	before := mk(map[string]string{"rel": "1", "rm": "1", "upd": "1"}, map[string]string{"clm": "1", "rmu": "1", "dup": "1", "same": "1"})
	after := mk(map[string]string{"clm": "1", "new-c": "1", "upd": "2", "dup": "1"}, map[string]string{"rel": "1", "new-u": "1", "dup": "1", "same": "1"})
	want := map[string]Op{"rel": OpRelease, "rm": OpRemove, "upd": OpUpdate, "clm": OpClaim, "rmu": OpRemoveFree,
		"new-c": OpAddClaimed, "new-u": OpAdd, "dup": OpDuplicate}
	got := map[string]Op{}
	for _, c := range Diff(before, after) {
		got[c.Name] = c.Op
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for n, op := range want {
		if got[n] != op {
			t.Errorf("%s: got %s, want %s", n, got[n], op)
		}
	}
}

func TestLoaderFindsNestedPoolsAndStrays(t *testing.T) {
	f := func(n string) TreeEntry { return TreeEntry{Name: n, Mode: ModeFile, Hash: "f"} }
	d := func(n, h string) TreeEntry { return TreeEntry{Name: n, Mode: ModeTree, Hash: h} }
	trees := memTrees{
		"root":    {f("README.md"), d("team", "team"), d("notapool", "np")},
		"np":      {f("x")},
		"team":    {d("claimed", "tc"), d("unclaimed", "tu"), d("staging", "stg"), f(".pending-triggers"), f("junk")},
		"tc":      {f(".gitkeep"), f("a"), d("sub", "np")},
		"tu":      {f("b"), {Name: "ln", Mode: ModeSymlink, Hash: "l"}},
		"stg":     {d("unclaimed", "stg-u")},
		"stg-u":   {f("c")},
		"unused":  nil,
		"ignored": nil,
	}
	s, err := NewLoader(trees).Load("root")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.PoolPaths(); len(got) != 2 || got[0] != "team" || got[1] != "team/staging" {
		t.Fatalf("pools %v, want [team team/staging]", got)
	}
	team := s.Pool("team")
	if team.StateOf("a") != StateClaimed || team.StateOf("b") != StateUnclaimed || team.StateOf(".gitkeep") != Absent {
		t.Fatalf("team states wrong: %+v", team)
	}
	extras := map[string]bool{}
	for _, x := range team.Extras {
		extras[x.Path] = true
	}
	for _, p := range []string{"junk", "claimed/sub/", "unclaimed/ln"} {
		if !extras[p] {
			t.Errorf("extra %q not found in %v", p, team.Extras)
		}
	}
	if s.Pool("team/staging").StateOf("c") != StateUnclaimed {
		t.Fatal("nested pool lock missing")
	}
}

func TestBuildURLWithAnEscapedSlashStaysAJobBuild(t *testing.T) {
	in := ParseMessage("claiming: x\nBuild URL: https://ci/teams/main/pipelines/a%2Fb/jobs/j/builds/3")
	if in.Pipeline != "a/b" || in.Job != "j" || in.Build != "3" || in.BuildID != "" {
		t.Fatalf("got %+v", in)
	}
}
