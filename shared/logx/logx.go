// Package logx builds pwsync's zerolog logger.
package logx

import (
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"
)

// New returns a structured JSON logger at level ("debug", "info", ...).
// Pretty console output is for a terminal only (format "console").
func New(w io.Writer, level, format string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		lvl = zerolog.InfoLevel
	}
	zerolog.TimeFieldFormat = time.RFC3339Nano
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), err
}

// Stderr is a default logger for commands that run before config is read.
func Stderr() zerolog.Logger {
	l, _ := New(os.Stderr, "info", "json")
	return l
}
