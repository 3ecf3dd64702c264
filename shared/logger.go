package evalflow

import (
	"log/slog"
	"os"
)

// NewLogger returns evalflow's logger: JSON on stderr at level ("debug", "info", "warn",
// "error"; info for anything else). Every step and engine logs through one.
func NewLogger(level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}
