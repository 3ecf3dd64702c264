package runstore

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	evalflow "github.com/evalflow/evalflow/shared"
)

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
