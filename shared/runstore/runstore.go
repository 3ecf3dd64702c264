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
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
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

// Create records run r with its secrets (in clear here, sealed before they are
// written) and, with Recording, the first entry of its timeline, in one round trip.
// Creating a run that exists returns the stored run and created=false: a request is
// never recorded twice.
func (s *Store) Create(ctx context.Context, r *evalflow.Run, secrets map[string]string, opts ...UpdateOption) (stored *evalflow.Run, created bool, err error) {
	var o updateOptions
	for _, opt := range opts {
		opt(&o)
	}
	body, err := json.Marshal(r)
	if err != nil {
		return nil, false, fmt.Errorf("runstore: create run %s: %w", r.ID, err)
	}
	fields := make(map[string]any, len(secrets))
	digests := make(map[string]any, len(secrets))
	for name, v := range secrets {
		if v != "" {
			fields[name] = s.sealer.Seal(r.ID, []byte(v))
		}
		digests[name] = s.digest(r.ID, name, v)
	}
	score := r.CreatedAt.UnixNano()
	args := []any{body, r.ID, score, r.Caller, "", "", len(fields)}
	if o.entry != nil {
		entry := o.entry(r)
		b, err := json.Marshal(entry)
		if err != nil {
			return nil, false, fmt.Errorf("runstore: create run %s: %w", r.ID, err)
		}
		args[4], args[5] = entry.ID, b
	}
	for _, name := range slices.Sorted(maps.Keys(fields)) {
		args = append(args, name, fields[name])
	}
	for _, name := range slices.Sorted(maps.Keys(digests)) {
		args = append(args, name, digests[name])
	}
	keys := []string{runKey(r.ID), secretKey(r.ID), digestKey(r.ID), indexKey, statusKey(r.Status), callerKey(r.Caller), historyKey(r.ID)}
	existing, err := createScript.Run(ctx, s.rdb, keys, args...).Text()
	switch {
	case errors.Is(err, redis.Nil): // created
		created := *r
		created.Revision = revision(body)
		s.recent.Add(r.ID, body)
		return &created, true, nil
	case err != nil:
		return nil, false, fmt.Errorf("runstore: create run %s: %w", r.ID, err)
	}
	stored, err = decode(r.ID, []byte(existing))
	return stored, false, err
}

// createScript records a run unless its key exists, with its secrets, their digests,
// its places in the indexes and its first timeline entry, and answers nil; a run that
// exists is answered as stored. KEYS: run, secrets, digests, index, status index,
// caller index, history. ARGV: body, id, score, caller, entry id, entry, how many
// secrets, then secrets and digests as name, value pairs.
var createScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur then return cur end
redis.call('SET', KEYS[1], ARGV[1])
local n = tonumber(ARGV[7])
local i = 8
for _ = 1, n do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]); i = i + 2 end
while i < #ARGV do redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]); i = i + 2 end
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2])
redis.call('ZADD', KEYS[5], ARGV[3], ARGV[2])
if ARGV[4] ~= '' then redis.call('ZADD', KEYS[6], ARGV[3], ARGV[2]) end
if ARGV[5] ~= '' then redis.call('HSETNX', KEYS[7], ARGV[5], ARGV[6]) end
return false
`)

// revision names a stored run's version: the SHA-1 of its JSON, as Redis's
// redis.sha1hex computes it in updateScript.
func revision(body []byte) string {
	sum := sha1.Sum(body)
	return hex.EncodeToString(sum[:])
}

// Get returns run id, or evalflow.ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (*evalflow.Run, error) {
	body, err := s.rdb.Get(ctx, runKey(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, evalflow.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("runstore: get run %s: %w", id, err)
	}
	return s.seen(id, body)
}

// Decode reads run id as stored (its JSON, as Stored gives it), and notes its
// revision: the copy an update of it writes over only if the run is still so.
func Decode(id string, body []byte) (*evalflow.Run, error) {
	r, err := decode(id, body)
	if err == nil && r.ID != id {
		return nil, fmt.Errorf("runstore: decode run %s: the JSON is of run %q", id, r.ID)
	}
	return r, err
}

// decode reads a stored run, and notes its revision.
func decode(id string, body []byte) (*evalflow.Run, error) {
	var r evalflow.Run
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("runstore: decode run %s: %w", id, err)
	}
	r.Revision = revision(body)
	return &r, nil
}

// Update applies change to run id atomically and returns the run as stored after it.
// When change returns an error nothing is written and Update returns the run as it was
// with that error (evalflow.ErrStale for a duplicate or late event). When the run ends,
// its place in line is freed, its job slot goes to the first run in line
// (HandingOver), and its secrets are dropped, in the same write — but for the
// kubeconfig of a run that was cancelled or failed, kept (sealed) for StopGrace so
// that its job, which may still run, can be stopped. With Recording, the write
// records a timeline entry too.
func (s *Store) Update(ctx context.Context, id string, change func(*evalflow.Run) error, opts ...UpdateOption) (*evalflow.Run, error) {
	r, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return s.UpdateRun(ctx, r, change, opts...)
}

// UpdateRun is Update from r as it was read (its Revision): one round trip while
// nothing else has changed the run since; otherwise the same round trip answers the
// run as it is now, and change is applied to that.
func (s *Store) UpdateRun(ctx context.Context, r *evalflow.Run, change func(*evalflow.Run) error, opts ...UpdateOption) (*evalflow.Run, error) {
	var o updateOptions
	for _, opt := range opts {
		opt(&o)
	}
	for attempt := range maxUpdates {
		next := *r
		if err := change(&next); err != nil {
			return r, err
		}
		current, err := s.write(ctx, r, &next, o)
		switch {
		case err != nil:
			return nil, err
		case current == nil:
			return &next, nil
		}
		r = current      // changed meanwhile: apply change to the run as it is now
		if attempt > 0 { // many writers at once: let them spread out
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("runstore: update run %s: %w", r.ID, ctx.Err())
			case <-time.After(rand.N(time.Duration(min(attempt, 20)) * time.Millisecond)):
			}
		}
	}
	return nil, fmt.Errorf("runstore: update run %s: too much contention", r.ID)
}

// UpdateOption adds to what an update writes.
type UpdateOption func(*updateOptions)

type updateOptions struct {
	entry   func(*evalflow.Run) evalflow.TimelineEntry
	admit   *Admission
	secrets *map[string]string
	handed  *string
}

// HandingOver has the update, when it ends a run that held a job slot and the slot
// goes to the first run in line (as it always does: Update), set *next to that run's
// id, for the caller to let it in.
func HandingOver(next *string) UpdateOption {
	return func(o *updateOptions) { o.handed = next }
}

// WithSecrets has the update, when it writes, read the run's secrets in the same
// round trip, and set *secrets to them, opened (none: empty).
func WithSecrets(secrets *map[string]string) UpdateOption {
	return func(o *updateOptions) { o.secrets = secrets }
}

// Admission is a run's ask for one of Slots job slots (Admit), made with a write.
type Admission struct {
	Slots int
	// Decided is whether the write was made and so asked; then Admitted, or the
	// run's Position in line (1: next).
	Decided  bool
	Admitted bool
	Position int
}

// Admitting has the update, when it writes, ask for one of a.Slots job slots for the
// run in the same round trip (as Admit does), and say the answer in a. Given to
// GetWithSecrets, it asks with the read for a run in line already (a run that has
// ended is in line no more, and asks for nothing).
func Admitting(a *Admission) UpdateOption {
	return func(o *updateOptions) { o.admit = a }
}

// Recording has the update record, with the run, the timeline entry entry makes of
// the run as changed (once: an entry of the same id is kept as first recorded).
func Recording(entry func(*evalflow.Run) evalflow.TimelineEntry) UpdateOption {
	return func(o *updateOptions) { o.entry = entry }
}

// write stores next over was, unless the stored run is no longer was: then it
// returns the run as stored now (the script answers it in the same round trip).
func (s *Store) write(ctx context.Context, was, next *evalflow.Run, o updateOptions) (current *evalflow.Run, err error) {
	body, err := json.Marshal(next)
	if err != nil {
		return nil, fmt.Errorf("runstore: update run %s: %w", next.ID, err)
	}
	ending := ""
	switch {
	case next.Status == evalflow.StatusCancelled || next.Status == evalflow.StatusFailed:
		ending = "stopped" // deploy needs the kubeconfig a while yet, to stop the run's job
	case next.Status.Terminal():
		ending = "ended"
	}
	entryID, entry := "", []byte(nil)
	if o.entry != nil {
		e := o.entry(next)
		if entry, err = json.Marshal(e); err != nil {
			return nil, fmt.Errorf("runstore: update run %s: %w", next.ID, err)
		}
		entryID = e.ID
	}
	keys := []string{runKey(next.ID), statusKey(was.Status), statusKey(next.Status), slotsKey, queueKey, secretKey(next.ID), historyKey(next.ID), limitKey}
	slots, secrets := "", ""
	if o.admit != nil {
		slots = strconv.Itoa(o.admit.Slots)
	}
	if o.secrets != nil {
		secrets = "read"
	}
	res, err := updateScript.Run(ctx, s.rdb, keys, was.Revision, body, next.ID, next.CreatedAt.UnixNano(), ending,
		int64(StopGrace/time.Second), SecretAPIKey, entryID, entry, slots, secrets).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return nil, evalflow.ErrNotFound
	case err != nil:
		return nil, fmt.Errorf("runstore: update run %s: %w", next.ID, err)
	}
	if stored, ok := res.(string); ok {
		return s.seen(next.ID, []byte(stored))
	}
	if answer, ok := res.([]any); ok && len(answer) == 4 {
		if handed, _ := answer[3].(string); o.handed != nil {
			*o.handed = handed
		}
		if pos, _ := answer[1].(int64); o.admit != nil && pos >= 0 {
			o.admit.Decided, o.admit.Admitted, o.admit.Position = true, pos == 0, int(pos)
		}
		if o.secrets != nil {
			flat, _ := answer[2].([]any)
			sealed := make(map[string]string, len(flat)/2)
			for i := 0; i+1 < len(flat); i += 2 {
				name, _ := flat[i].(string)
				sealed[name], _ = flat[i+1].(string)
			}
			if *o.secrets, err = s.open(next.ID, sealed); err != nil {
				return nil, err
			}
		}
	}
	next.Revision = revision(body)
	s.recent.Add(next.ID, body)
	return nil, nil
}

// updateScript writes a run if it is still at the revision it was read at, and with
// it: its move between status indexes, a timeline entry, and when it ends the freeing
// of its secrets and of its job slot, which goes to the first run in line; it answers
// {1, admit's answer or -1, the secrets or {}, the id of the run handed the slot or
// ""}. A run at another revision is answered as it is, a run that is not there with
// nil. KEYS: run, old status index, new status index, slots, queue, secrets, history,
// limit. ARGV: revision, body, id, score, ending ("", "ended", "stopped"), grace
// seconds, the api_key's field, entry id, entry, the job slots to admit the run to
// ("": none), and "read" to read its secrets.
var updateScript = redis.NewScript(admitLua + `
local cur = redis.call('GET', KEYS[1])
if not cur then return false end
if redis.sha1hex(cur) ~= ARGV[1] then return cur end
redis.call('SET', KEYS[1], ARGV[2])
if KEYS[2] ~= KEYS[3] then
  redis.call('ZREM', KEYS[2], ARGV[3])
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
end
local handed = ''
if ARGV[5] ~= '' then
  local held = redis.call('ZREM', KEYS[4], ARGV[3])
  redis.call('ZREM', KEYS[5], ARGV[3])
  local limit = tonumber(redis.call('GET', KEYS[8]) or '0')
  if held == 1 and redis.call('ZCARD', KEYS[4]) < limit then
    local first = redis.call('ZPOPMIN', KEYS[5])
    if first[1] then
      redis.call('ZADD', KEYS[4], first[2], first[1])
      handed = first[1]
    end
  end
  if ARGV[5] == 'stopped' then
    redis.call('HDEL', KEYS[6], ARGV[7])
    redis.call('EXPIRE', KEYS[6], ARGV[6])
  else
    redis.call('DEL', KEYS[6])
  end
end
if ARGV[8] ~= '' then redis.call('HSETNX', KEYS[7], ARGV[8], ARGV[9]) end
local pos, secrets = -1, {}
if ARGV[10] ~= '' then pos = admit(KEYS[4], KEYS[5], KEYS[8], ARGV[3], ARGV[4], tonumber(ARGV[10]), false) end
if ARGV[11] ~= '' then secrets = redis.call('HGETALL', KEYS[6]) end
return {1, pos, secrets, handed}
`)

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

// Secrets opens every secret of run id in one read: name → value, empty when the run
// has none (or has ended).
func (s *Store) Secrets(ctx context.Context, id string) (map[string]string, error) {
	sealed, err := s.rdb.HGetAll(ctx, secretKey(id)).Result()
	if err != nil {
		return nil, fmt.Errorf("runstore: read secrets of run %s: %w", id, err)
	}
	return s.open(id, sealed)
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

// Record adds e to run id's history, once: an entry of the same id again (a step
// redone on a redelivery) is dropped.
func (s *Store) Record(ctx context.Context, id string, e evalflow.TimelineEntry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("runstore: history of run %s: %w", id, err)
	}
	if err := s.rdb.HSetNX(ctx, historyKey(id), e.ID, b).Err(); err != nil {
		return fmt.Errorf("runstore: history of run %s: %w", id, err)
	}
	return nil
}

// History is run id's history, oldest first.
func (s *Store) History(ctx context.Context, id string) ([]evalflow.TimelineEntry, error) {
	all, err := s.rdb.HGetAll(ctx, historyKey(id)).Result()
	if err != nil {
		return nil, fmt.Errorf("runstore: history of run %s: %w", id, err)
	}
	out := make([]evalflow.TimelineEntry, 0, len(all))
	for _, v := range all {
		var e evalflow.TimelineEntry
		if err := json.Unmarshal([]byte(v), &e); err != nil {
			return nil, fmt.Errorf("runstore: history of run %s: %w", id, err)
		}
		out = append(out, e)
	}
	slices.SortStableFunc(out, func(a, b evalflow.TimelineEntry) int { return a.Time.Compare(b.Time) })
	return out, nil
}

// MaxDeadLetters is how many dead letters are kept: the newest.
const MaxDeadLetters = 10_000

// keepDeadLetter keeps a dead letter once (KEYS hash, index; ARGV field, JSON, time,
// the most kept) and drops the oldest past the most.
var keepDeadLetter = redis.NewScript(`
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if over > 0 then
  local old = redis.call('ZRANGE', KEYS[2], 0, over - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
  redis.call('HDEL', KEYS[1], unpack(old))
end
return 1
`)

// KeepDeadLetter keeps d, once per event and destination (the dead-letter sink may be
// sent the same again), and only the newest DeadLetterLimit.
func (s *Store) KeepDeadLetter(ctx context.Context, d evalflow.DeadLetter) error {
	b, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("runstore: dead letter %s: %w", d.ID, err)
	}
	most := cmp.Or(s.DeadLetterLimit, MaxDeadLetters)
	if err := keepDeadLetter.Run(ctx, s.rdb, []string{deadLettersKey, deadLetterTimes}, d.ID+" "+d.Destination, b, d.Time.UnixNano(), most).Err(); err != nil {
		return fmt.Errorf("runstore: dead letter %s: %w", d.ID, err)
	}
	return nil
}

// DeadLetters are the dead letters kept, newest first; of run id's only, when id is set.
func (s *Store) DeadLetters(ctx context.Context, runID string) ([]evalflow.DeadLetter, error) {
	all, err := s.rdb.HGetAll(ctx, deadLettersKey).Result()
	if err != nil {
		return nil, fmt.Errorf("runstore: dead letters: %w", err)
	}
	out := []evalflow.DeadLetter{}
	for _, v := range all {
		var d evalflow.DeadLetter
		if err := json.Unmarshal([]byte(v), &d); err != nil {
			return nil, fmt.Errorf("runstore: dead letters: %w", err)
		}
		if runID == "" || d.RunID == runID {
			out = append(out, d)
		}
	}
	slices.SortStableFunc(out, func(a, b evalflow.DeadLetter) int { return b.Time.Compare(a.Time) })
	return out, nil
}

// admitLua is the Lua function that takes a job slot for a run when one of n is
// free and no run that asked earlier waits: admit(slots, queue, limit, run id, the
// time it asked, n) answers 0 when the run holds a slot (now or already), else its
// place in line (1: next); it keeps n as the limit. With waiting, it asks only for a
// run in line already, at the time it asked then (-1: not in line, so not asking).
// The admit script and updateScript (Admitting) share it.
const admitLua = `
local function admit(slots, queue, limit, id, asked, n, waiting)
  redis.call('SET', limit, n)
  if redis.call('ZSCORE', slots, id) then return 0 end
  if waiting then
    asked = redis.call('ZSCORE', queue, id)
    if not asked then return -1 end
  end
  redis.call('ZADD', queue, 'NX', asked, id)
  local free = n - redis.call('ZCARD', slots)
  local rank = redis.call('ZRANK', queue, id)
  if rank < free then
    redis.call('ZREM', queue, id)
    redis.call('ZADD', slots, asked, id)
    return 0
  end
  return rank + 1 - math.max(free, 0)
end
`

// admitScript is admit on its own: KEYS slots, queue, limit; ARGV run id, asked, n,
// and "waiting" for a run in line only.
var admitScript = redis.NewScript(admitLua + `return admit(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4] == 'waiting')`)

// Admit gives run id one of n job slots, in the order runs asked (asked: when it
// first did): admitted, or its place in line (1: next). A run keeps its slot, or its
// place, until it ends (Update frees them).
func (s *Store) Admit(ctx context.Context, id string, asked time.Time, n int) (admitted bool, position int, err error) {
	pos, err := admitScript.Run(ctx, s.rdb, []string{slotsKey, queueKey, limitKey}, id, asked.UnixNano(), n, "").Int()
	if err != nil {
		return false, 0, fmt.Errorf("runstore: admit run %s: %w", id, err)
	}
	return pos == 0, pos, nil
}

// Counts are how many runs are in each status, and how many wait for a job slot.
func (s *Store) Counts(ctx context.Context) (map[evalflow.Status]int64, int64, error) {
	statuses := []evalflow.Status{evalflow.StatusPending, evalflow.StatusVerifying, evalflow.StatusDeploying, evalflow.StatusRunning,
		evalflow.StatusStoring, evalflow.StatusSucceeded, evalflow.StatusFailed, evalflow.StatusCancelled}
	cmds := make([]*redis.IntCmd, len(statuses))
	var waiting *redis.IntCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, st := range statuses {
			cmds[i] = p.ZCard(ctx, statusKey(st))
		}
		waiting = p.ZCard(ctx, queueKey)
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("runstore: count runs: %w", err)
	}
	out := make(map[evalflow.Status]int64, len(statuses))
	for i, st := range statuses {
		out[st] = cmds[i].Val()
	}
	return out, waiting.Val(), nil
}

// QueuePositions are the runs' places in line for a job slot (1: next; 0: not
// waiting), in one round trip.
func (s *Store) QueuePositions(ctx context.Context, ids ...string) ([]int, error) {
	cmds := make([]*redis.IntCmd, len(ids))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.ZRank(ctx, queueKey, id)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("runstore: places in line: %w", err)
	}
	out := make([]int, len(ids))
	for i, c := range cmds {
		if rank, err := c.Result(); err == nil {
			out[i] = int(rank) + 1
		}
	}
	return out, nil
}

// ListOptions filter List. Zero values mean no filter and the default limit.
type ListOptions struct {
	Status evalflow.Status
	// Caller, when set, lists only the runs of that caller.
	Caller string
	Limit  int
}

// MaxList is the most runs one List returns.
const MaxList = 1000

// List returns runs, newest first. It reads the narrowest index the options allow (a
// caller's runs, or a status's) and filters by the other.
func (s *Store) List(ctx context.Context, opts ListOptions) ([]*evalflow.Run, error) {
	limit := opts.Limit
	if limit <= 0 || limit > MaxList {
		limit = 100
	}
	index := indexKey
	switch {
	case opts.Caller != "":
		index = callerKey(opts.Caller)
	case opts.Status != "":
		index = statusKey(opts.Status)
	}
	out := []*evalflow.Run{}
	const page = 200
	for start := int64(0); len(out) < limit; start += page {
		ids, err := s.rdb.ZRevRange(ctx, index, start, start+page-1).Result()
		if err != nil {
			return nil, fmt.Errorf("runstore: list runs: %w", err)
		}
		if len(ids) == 0 {
			break
		}
		keys := make([]string, len(ids))
		for i, id := range ids {
			keys[i] = runKey(id)
		}
		vals, err := s.rdb.MGet(ctx, keys...).Result()
		if err != nil {
			return nil, fmt.Errorf("runstore: list runs: %w", err)
		}
		for i, v := range vals {
			str, ok := v.(string)
			if !ok {
				continue
			}
			r, err := decode(ids[i], []byte(str))
			if err != nil {
				return nil, err
			}
			if (opts.Status == "" || r.Status == opts.Status) && (opts.Caller == "" || r.Caller == opts.Caller) {
				out = append(out, r)
				if len(out) == limit {
					break
				}
			}
		}
		if len(ids) < page {
			break
		}
	}
	return out, nil
}

// Ping reports whether Redis answers.
func (s *Store) Ping(ctx context.Context) error { return s.rdb.Ping(ctx).Err() }
