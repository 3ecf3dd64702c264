package evalflow

import (
	"log/slog"
	"os"
)

// Version is the build's version: what make release stamps into the functions' and
// the runner's binaries (local/release: the checkout's git describe), "dev" otherwise.
// Every step's log lines carry it, so the lines of two releases told apart in an upgrade.
var Version = "dev"

// NewLogger returns evalflow's logger: JSON on stderr at level ("debug", "info", "warn",
// "error"; info for anything else). Every step and engine logs through one.
func NewLogger(level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}
