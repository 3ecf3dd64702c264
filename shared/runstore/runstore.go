// Package runstore keeps evalflow runs in Redis.
//
// Keys derive from the run id: evalflow:run:<id> holds the run as JSON,
// evalflow:run:<id>:secrets the sealed secrets (a hash), evalflow:run:<id>:digests
// keyed digests of them (kept after the run ends), the sorted set evalflow:runs
// indexes runs by creation time, evalflow:runs:<status> does so for the runs in each
// status, and evalflow:runs-of:<caller> for each caller's. Every change is one Lua
// script that writes the run only if it is still the version it was read at (its
// revision), so two deliveries of one event cannot both apply; the indexes, the job
// slots, the secrets and the run's timeline entry change with it, in one round trip.
package runstore

import (
	"context"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/redis/go-redis/v9"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/seal"
)

// Secret names.
const (
	SecretAPIKey     = "api_key"
	SecretKubeconfig = "kubeconfig"
)

const (
	indexKey = "evalflow:runs"
	// maxUpdates bounds the writes one update tries while others change the run.
	maxUpdates = 100
)

func runKey(id string) string             { return "evalflow:run:" + id }
func statusKey(st evalflow.Status) string { return indexKey + ":" + string(st) }
func secretKey(id string) string          { return "evalflow:run:" + id + ":secrets" }
func digestKey(id string) string          { return "evalflow:run:" + id + ":digests" }
func callerKey(caller string) string      { return "evalflow:runs-of:" + caller }
func historyKey(id string) string         { return "evalflow:run:" + id + ":history" }

const (
	deadLettersKey = "evalflow:deadletters"
	// deadLetterTimes indexes them by when they came, to keep the newest MaxDeadLetters.
	deadLetterTimes = "evalflow:deadletters:by-time"
	// The job slots: the runs holding one, and the runs waiting for one, each by
	// the time they first asked.
	slotsKey = "evalflow:jobs:slots"
	queueKey = "evalflow:jobs:queue"
	// limitKey is how many slots there are, as the last ask for one said: a run's
	// end hands its slot on only while fewer are held.
	limitKey = "evalflow:jobs:limit"
)

// Store reads and writes runs.
type Store struct {
	rdb    redis.UniversalClient
	sealer *seal.Sealer
	now    func() time.Time
	trips  *roundTrips
	// recent is the JSON of the runs this Store last read or wrote (Recent).
	recent *lru.Cache[string, []byte]
	// DeadLetterLimit is how many dead letters are kept (0: MaxDeadLetters).
	DeadLetterLimit int
}

// New returns a Store over a Redis client; secrets are sealed with sealer. The
// client's round trips are counted from then on (RoundTrips).
func New(rdb redis.UniversalClient, sealer *seal.Sealer) *Store {
	recent, _ := lru.New[string, []byte](recentRuns) // only a size under 1 fails
	s := &Store{rdb: rdb, sealer: sealer, now: time.Now, trips: &roundTrips{}, recent: recent}
	rdb.AddHook(s.trips)
	return s
}

// recentRuns is how many runs a Store keeps as it last saw them: a few KB each.
const recentRuns = 4096

// Recent returns run id as this Store last read or wrote it, if it has (without a
// round trip). It may be behind the stored run, never ahead of it: for a step that
// goes on to write the run with UpdateRun, a stale copy costs the round trip that
// answers the run as it is, never a wrong write.
func (s *Store) Recent(id string) (*evalflow.Run, bool) {
	body, ok := s.recent.Get(id)
	if !ok {
		return nil, false
	}
	r, err := decode(id, body)
	return r, err == nil
}

// Stored is run id's JSON as this Store last read or wrote it, if it has: what a
// step's reply carries for the next step to write from (Decode).
func (s *Store) Stored(id string) ([]byte, bool) { return s.recent.Get(id) }

// seen decodes run id as stored (body), and keeps it as the Store's recent copy.
func (s *Store) seen(id string, body []byte) (*evalflow.Run, error) {
	r, err := decode(id, body)
	if err == nil {
		s.recent.Add(id, body)
	}
	return r, err
}

// RoundTrips counts the store's round trips to Redis: a command, or a pipeline or
// transaction sent at once.
func (s *Store) RoundTrips() int64 { return s.trips.n.Load() }

// roundTrips is a go-redis hook counting round trips.
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { r.n.Add(1); return next(ctx, cmd) }
}

func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { r.n.Add(1); return next(ctx, cmds) }
}

// Ping reports whether Redis answers.
func (s *Store) Ping(ctx context.Context) error { return s.rdb.Ping(ctx).Err() }
