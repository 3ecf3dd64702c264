package runstore

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	evalflow "github.com/evalflow/evalflow/shared"
)

// StopGrace is how long the kubeconfig (sealed) of a run that was cancelled or failed
// outlives the run, for deploy to stop the run's job in its cluster.
const StopGrace = time.Hour

// Secret opens the named secret of run id; "" when the run has none (or has ended).
func (s *Store) Secret(ctx context.Context, id, name string) (string, error) {
	sealed, err := s.rdb.HGet(ctx, secretKey(id), name).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("runstore: read %s of run %s: %w", name, id, err)
	}
	b, err := s.sealer.Open(id, sealed)
	if err != nil {
		return "", fmt.Errorf("runstore: open %s of run %s: %w", name, id, err)
	}
	return string(b), nil
}

// GetWithSecrets returns run id (or evalflow.ErrNotFound) and its secrets, opened,
// in one round trip; with Admitting, a run in line asks for a job slot in it too.
func (s *Store) GetWithSecrets(ctx context.Context, id string, opts ...UpdateOption) (*evalflow.Run, map[string]string, error) {
	var o updateOptions
	for _, opt := range opts {
		opt(&o)
	}
	var run *redis.StringCmd
	var sealed *redis.MapStringStringCmd
	var admitted *redis.Cmd
	read := func() error {
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			run, sealed = p.Get(ctx, runKey(id)), p.HGetAll(ctx, secretKey(id))
			if o.admit != nil {
				admitted = p.EvalSha(ctx, admitScript.Hash(), []string{slotsKey, queueKey, limitKey}, id, 0, o.admit.Slots, "waiting") // asked: when it joined
			}
			return nil
		})
		return err
	}
	err := read()
	if admitted != nil && redis.HasErrorPrefix(admitted.Err(), "NOSCRIPT") { // Redis started afresh: load the script, read again
		if err = admitScript.Load(ctx, s.rdb).Err(); err == nil {
			err = read()
		}
	}
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, nil, fmt.Errorf("runstore: get run %s: %w", id, err)
	}
	body, err := run.Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil, evalflow.ErrNotFound
	}
	if err != nil {
		return nil, nil, fmt.Errorf("runstore: get run %s: %w", id, err)
	}
	r, err := s.seen(id, body)
	if err != nil {
		return nil, nil, err
	}
	if admitted != nil {
		if pos, err := admitted.Int(); err == nil && pos >= 0 {
			o.admit.Decided, o.admit.Admitted, o.admit.Position = true, pos == 0, pos
		}
	}
	secrets, err := s.open(id, sealed.Val())
	return r, secrets, err
}

// open opens run id's sealed secrets.
func (s *Store) open(id string, sealed map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(sealed))
	for name, v := range sealed {
		b, err := s.sealer.Open(id, v)
		if err != nil {
			return nil, fmt.Errorf("runstore: open %s of run %s: %w", name, id, err)
		}
		out[name] = string(b)
	}
	return out, nil
}

// DifferingSecret names the first secret (by name, in order) whose value in secrets is
// not the one run id was created with, "" when all are the same. It compares keyed
// digests that outlive the secrets themselves (deleted when the run ends), so a
// request reused after its run ended is still compared.
func (s *Store) DifferingSecret(ctx context.Context, id string, secrets map[string]string) (string, error) {
	stored, err := s.rdb.HGetAll(ctx, digestKey(id)).Result()
	if err != nil {
		return "", fmt.Errorf("runstore: read digests of run %s: %w", id, err)
	}
	for _, name := range slices.Sorted(maps.Keys(secrets)) {
		if d, ok := stored[name]; ok && !hmac.Equal([]byte(d), []byte(s.digest(id, name, secrets[name]))) {
			return name, nil
		}
	}
	return "", nil
}

// digest is a keyed digest of a secret of run id: it tells whether a value is the
// same, and nothing of the value.
func (s *Store) digest(id, name, value string) string {
	m := hmac.New(sha256.New, s.sealer.Derive("secret digest", id))
	m.Write([]byte(name + "\x00" + value))
	return base64.RawStdEncoding.EncodeToString(m.Sum(nil))
}
