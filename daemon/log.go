package daemon

import (
	"io"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/poolgate/poolgate/config"
	"github.com/rs/zerolog"
)

// NewLogger logs to w: human-readable on a terminal, JSON lines otherwise
// (journald, files, log shippers), unless the config says which.
func NewLogger(w io.Writer, opts config.LogOptions) zerolog.Logger {
	console := opts.Format == "console"
	if opts.Format == "" {
		if f, ok := w.(*os.File); ok {
			console = isatty.IsTerminal(f.Fd())
		}
	}
	if console {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	level := zerolog.InfoLevel
	if l, err := zerolog.ParseLevel(opts.Level); err == nil && opts.Level != "" {
		level = l
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}
