package runstore

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/redis/go-redis/v9"
)

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
		runs, err := s.getMany(ctx, ids)
		if err != nil {
			return nil, fmt.Errorf("runstore: list runs: %w", err)
		}
		for _, r := range runs {
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

// eachPage is how many runs Each reads at a time.
const eachPage = 200

// Each calls visit with every run in status st, oldest first, reading them a page at
// a time: however many runs are in st, each is visited (at most once; a run that
// leaves st meanwhile may not be). It stops at visit's first error and returns it.
func (s *Store) Each(ctx context.Context, st evalflow.Status, visit func(*evalflow.Run) error) error {
	index := statusKey(st)
	from := "-inf"
	var atFrom []string // the ids visited whose score is from's: the next page reads from there again
	for {
		zs, err := s.rdb.ZRangeByScoreWithScores(ctx, index, &redis.ZRangeBy{Min: from, Max: "+inf", Count: eachPage + int64(len(atFrom))}).Result()
		if err != nil {
			return fmt.Errorf("runstore: runs %s: %w", st, err)
		}
		var ids []string
		for _, z := range zs {
			if id := z.Member.(string); !slices.Contains(atFrom, id) {
				ids = append(ids, id)
			}
		}
		if len(ids) == 0 {
			return nil
		}
		runs, err := s.getMany(ctx, ids)
		if err != nil {
			return fmt.Errorf("runstore: runs %s: %w", st, err)
		}
		for _, r := range runs {
			if r.Status != st {
				continue
			}
			if err := visit(r); err != nil {
				return err
			}
		}
		last := zs[len(zs)-1].Score
		if next := strconv.FormatFloat(last, 'f', -1, 64); next != from {
			from, atFrom = next, nil
		}
		for _, z := range zs {
			if z.Score == last {
				atFrom = append(atFrom, z.Member.(string))
			}
		}
	}
}

// getMany reads runs ids in one round trip, in their order; a run gone meanwhile is
// left out.
func (s *Store) getMany(ctx context.Context, ids []string) ([]*evalflow.Run, error) {
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = runKey(id)
	}
	vals, err := s.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, err
	}
	runs := make([]*evalflow.Run, 0, len(ids))
	for i, v := range vals {
		if str, ok := v.(string); ok {
			r, err := decode(ids[i], []byte(str))
			if err != nil {
				return nil, err
			}
			runs = append(runs, r)
		}
	}
	return runs, nil
}
