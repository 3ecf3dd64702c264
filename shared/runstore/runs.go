package runstore

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	evalflow "github.com/evalflow/evalflow/shared"
)

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
	if r.Target == "cluster" { // as runs stored before Run.OwnCluster name evalflow's own cluster
		r.InOwnCluster()
	}
	r.Revision = revision(body)
	return &r, nil
}

// UpdateRun applies change to run r atomically, from r as it was read (its Revision),
// and returns the run as stored after it: one round trip while nothing else has
// changed the run since; otherwise the same round trip answers the run as it is now,
// and change is applied to that. When change returns an error nothing is written and
// UpdateRun returns the run as it was with that error (evalflow.ErrStale for a
// duplicate or late event). When the run ends, its place in line is freed, its job
// slot goes to the first run in line (HandingOver), and its secrets are dropped, in
// the same write — but for the kubeconfig of a run that was cancelled or failed, kept
// (sealed) for StopGrace so that its job, which may still run, can be stopped. With
// Recording, the write records a timeline entry too.
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
// goes to the first run in line (as it always does: UpdateRun), set *next to that run's
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
