package runstore

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"

	evalflow "github.com/evalflow/evalflow/shared"
)

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
