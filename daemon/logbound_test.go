package daemon_test

import (
	"strings"
	"testing"
)

// Issue 11: a refused 100 KiB command line wrote 100 KiB of log. Every log
// line of a refusal stays bounded, whatever the client sent; so does the
// client's own message.
func TestRefusedHugeCommandLineLogsABoundedLine(t *testing.T) {
	f := newFixture(t)
	s, _ := f.startInProcess(0)
	huge := strings.Repeat("é", 50<<10) // 100 KiB, 2-byte runes
	for _, cmd := range []string{
		"git-upload-pack '" + huge + "'", // a path that names no repo
		"git-upload-pack " + huge,        // an unquoted path git-shell would refuse
		"rm -rf " + huge,                 // not git at all
	} {
		stderr, code, err := s.exec(f.keys["reader"].signer, cmd, false)
		if err != nil || code == 0 {
			t.Fatalf("exit %d, err %v", code, err)
		}
		if len(stderr) > 1024 {
			t.Errorf("client's message is %d bytes", len(stderr))
		}
	}
	refused := 0
	for _, line := range strings.Split(s.logs.String(), "\n") {
		if len(line) > 2048 {
			t.Errorf("a log line of %d bytes: %.200s…", len(line), line)
		}
		if strings.Contains(line, `"message":"refused"`) {
			refused++
		}
	}
	if refused != 3 {
		t.Errorf("%d refusals logged, want 3", refused)
	}
}
