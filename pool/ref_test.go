package pool

import "testing"

// The pre-receive hook's input, the cluster's reference-transaction hook
// input and a pusher's commands are all read by ParseRefUpdate: an id that
// is not a full object id never reaches git from any of them.
func TestParseRefUpdateTakesOnlyFullObjectIDs(t *testing.T) {
	sha1 := "1234567890abcdef1234567890abcdef12345678"
	sha256 := sha1 + "1234567890abcdef1234567890abcdef"[:24]
	good := []string{
		ZeroSHA + " " + sha1 + " refs/heads/master",
		sha1 + " " + ZeroSHA + " refs/heads/master",
		sha256 + " " + sha256 + " refs/heads/master",
		"  " + sha1 + "\t" + sha1 + " HEAD ",
	}
	for _, l := range good {
		u, err := ParseRefUpdate(l)
		if err != nil || u.Ref == "" || !u.FastForward || u.Commits != nil {
			t.Errorf("ParseRefUpdate(%q) = %+v, %v", l, u, err)
		}
	}
	bad := []string{
		"",
		sha1 + " " + sha1,
		sha1 + " " + sha1 + " refs/heads/master extra",
		sha1[:39] + " " + sha1 + " refs/heads/master",
		"--upload-pack=x" + sha1[15:] + " " + sha1 + " refs/heads/master",
		"1234567890ABCDEF1234567890abcdef12345678 " + sha1 + " refs/heads/master",
		sha1 + "0 " + sha1 + " refs/heads/master",
		"HEAD~1 " + sha1 + " refs/heads/master",
	}
	for _, l := range bad {
		if u, err := ParseRefUpdate(l); err == nil {
			t.Errorf("ParseRefUpdate(%q) = %+v, want an error", l, u)
		}
	}
	if !IsZero(ZeroSHA) || !IsZero(ZeroSHA+"000000000000000000000000") || IsZero("") || IsZero(sha1) {
		t.Error("IsZero")
	}
}

func TestShortIsTenCharactersOfAnID(t *testing.T) {
	if got := Short("1234567890abcdef1234567890abcdef12345678"); got != "1234567890" {
		t.Errorf("Short = %q", got)
	}
	if got := Short("abc"); got != "abc" {
		t.Errorf("Short of a short id = %q", got)
	}
}
