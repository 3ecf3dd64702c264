package runstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	evalflow "github.com/evalflow/evalflow/shared"
)

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
