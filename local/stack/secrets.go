package stack

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/evalflow/evalflow/shared/auth"
	"github.com/evalflow/evalflow/shared/seal"
)

// The stack's secrets: tokens, the seal key, and the state directory they live in.

// prepareTokens makes the tokens file with an operator token where the config names
// none (StateDir/tokens, mode 0600, kept across restarts), and the broker's delivery
// token.
func (s *Stack) prepareTokens() error {
	s.deliveryToken, s.BrokerToken = auth.NewToken(), auth.NewToken()
	if s.cfg.TokensFile != "" {
		_, err := auth.Open(s.cfg.TokensFile) // a bad file is told now, not by start's log
		return err
	}
	s.cfg.TokensFile = filepath.Join(s.cfg.StateDir, "tokens")
	token, err := operatorToken(s.cfg.TokensFile)
	if err != nil {
		return fmt.Errorf("stack: tokens file: %w", err)
	}
	s.OperatorToken = token
	return nil
}

// operatorToken is the operator's token in the tokens file at path, which it makes
// (with a fresh one) when there is none.
func operatorToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		token := auth.NewToken()
		return token, os.WriteFile(path, auth.NewFile(token), 0o600)
	}
	if err != nil {
		return "", err
	}
	if _, err := auth.Parse(bytes.NewReader(b)); err != nil {
		return "", err
	}
	return auth.OperatorToken(b), nil
}

// loadSealKey reads the sealing key from path, making one (mode 0600) the first time.
func loadSealKey(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	key := seal.NewKey()
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("stack: seal key: %w", err)
	}
	return key, nil
}

// ownerOnly makes dir, and everything an older version left in it, its owner's alone
// (directories 0700, files without group or other bits): the state directory holds
// Redis' data, keys and results, and nothing made in it later is reachable through it
// by another user, whatever its own mode.
func ownerOnly(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil || info.Mode()&fs.ModeSymlink != 0 || info.Mode().Perm()&0o077 == 0 {
			return err
		}
		return os.Chmod(path, info.Mode().Perm()&0o700)
	})
}
