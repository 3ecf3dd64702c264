package runstore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/evalflow/evalflow/devkit/testserver"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/pipeline/pipelinetest"
	"github.com/evalflow/evalflow/shared/runstore"
	"github.com/evalflow/evalflow/shared/seal"
)

func newStore(t *testing.T) (*runstore.Store, *redis.Client) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: testserver.Redis(t)})
	t.Cleanup(func() { rdb.Close() })
	key, _ := seal.ParseKey(seal.NewKey())
	sealer, err := seal.New(key)
	if err != nil {
		t.Fatal(err)
	}
	return runstore.New(rdb, sealer), rdb
}

func newRun(id string) *evalflow.Run {
	return evalflow.NewRun(evalflow.Request{EvalRequestID: id, ModelName: "m", BaseURL: "http://127.0.0.1:1",
		Datasets: []evalflow.DatasetSpec{{Name: "mmlu", Limit: 2}}}, time.Now())
}

const id = "7b2f0d0e-1c1a-4a5e-9f55-3a5c3e0b9a11"

func TestCreateIsIdempotentUnderConcurrentDuplicates(t *testing.T) {
	store, _ := newStore(t)
	ctx := context.Background()

	var wg sync.WaitGroup
	created := make(chan bool, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, ok, err := store.Create(ctx, newRun(id), map[string]string{runstore.SecretAPIKey: "sk-x"})
			if err != nil {
				t.Error(err)
			}
			created <- ok
		}()
	}
	wg.Wait()
	close(created)

	n := 0
	for ok := range created {
		if ok {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d creates reported created; want exactly 1", n)
	}
	runs, err := store.List(ctx, runstore.ListOptions{})
	if err != nil || len(runs) != 1 {
		t.Fatalf("List = %d runs, %v; want 1", len(runs), err)
	}
}

func TestSecretsAreSealedAtRestAndDroppedWhenTheRunEnds(t *testing.T) {
	store, rdb := newStore(t)
	ctx := context.Background()
	const apiKey = "sk-evalflow-canary-41f7"
	const kubeconfig = "apiVersion: v1\nclusters: []\n"
	if _, _, err := store.Create(ctx, newRun(id), map[string]string{runstore.SecretAPIKey: apiKey, runstore.SecretKubeconfig: kubeconfig}); err != nil {
		t.Fatal(err)
	}

	for _, k := range rdb.Keys(ctx, "*").Val() {
		dump := rdb.Dump(ctx, k).Val()
		if strings.Contains(dump, apiKey) {
			t.Fatalf("redis key %s holds the api key in clear", k)
		}
	}
	got, err := store.Secret(ctx, id, runstore.SecretAPIKey)
	if err != nil || got != apiKey {
		t.Fatalf("Secret = %q, %v; want the api key", got, err)
	}
	_, all, err := store.GetWithSecrets(ctx, id)
	if err != nil || len(all) != 2 || all[runstore.SecretAPIKey] != apiKey || all[runstore.SecretKubeconfig] != kubeconfig {
		t.Fatalf("Secrets = %d secrets, %v; want both, opened", len(all), err)
	}

	if _, err := pipelinetest.Update(ctx, store, id, pipelinetest.Walk(evalflow.StatusSucceeded)); err != nil {
		t.Fatal(err)
	}
	if got, err := store.Secret(ctx, id, runstore.SecretAPIKey); err != nil || got != "" {
		t.Fatalf("after the run succeeded, Secret = %q, %v; want it dropped", got, err)
	}
	if _, all, err := store.GetWithSecrets(ctx, id); err != nil || len(all) != 0 {
		t.Fatalf("after the run succeeded, Secrets = %d secrets, %v; want none", len(all), err)
	}
}

// A run cancelled or failed may leave its job running: its kubeconfig stays a while,
// for deploy to stop the job; its api key goes at once.
func TestACancelledOrFailedRunKeepsOnlyItsKubeconfigAWhile(t *testing.T) {
	for _, end := range []evalflow.Status{evalflow.StatusCancelled, evalflow.StatusFailed} {
		t.Run(string(end), func(t *testing.T) { keepsOnlyItsKubeconfig(t, end) })
	}
}

func keepsOnlyItsKubeconfig(t *testing.T, end evalflow.Status) {
	store, rdb := newStore(t)
	ctx := context.Background()
	secrets := map[string]string{runstore.SecretAPIKey: "sk-cancel-canary", runstore.SecretKubeconfig: "apiVersion: v1\nclusters: []"}
	if _, _, err := store.Create(ctx, newRun(id), secrets); err != nil {
		t.Fatal(err)
	}
	if _, err := pipelinetest.Update(ctx, store, id, func(r *evalflow.Run) error { return r.Advance(end, time.Now()) }); err != nil {
		t.Fatal(err)
	}
	if got, _ := store.Secret(ctx, id, runstore.SecretAPIKey); got != "" {
		t.Fatal("a cancelled run kept its api key")
	}
	if got, _ := store.Secret(ctx, id, runstore.SecretKubeconfig); got != secrets[runstore.SecretKubeconfig] {
		t.Fatal("a cancelled run lost its kubeconfig before deploy could stop its job")
	}
	keys := rdb.Keys(ctx, "*:secrets").Val()
	if len(keys) != 1 {
		t.Fatalf("secret keys %v", keys)
	}
	if ttl := rdb.TTL(ctx, keys[0]).Val(); ttl <= 0 || ttl > runstore.StopGrace {
		t.Fatalf("the kubeconfig's TTL is %s, want at most %s", ttl, runstore.StopGrace)
	}
}

func TestUpdateNeverMovesARunBackwards(t *testing.T) {
	store, _ := newStore(t)
	ctx := context.Background()
	if _, _, err := store.Create(ctx, newRun(id), nil); err != nil {
		t.Fatal(err)
	}
	advance := func(s evalflow.Status) error {
		_, err := pipelinetest.Update(ctx, store, id, func(r *evalflow.Run) error { return r.Advance(s, time.Now()) })
		return err
	}

	if _, err := pipelinetest.Update(ctx, store, id, pipelinetest.Walk(evalflow.StatusDeploying)); err != nil {
		t.Fatal(err)
	}
	errVerify := advance(evalflow.StatusVerifying) // a late event
	errAgain := advance(evalflow.StatusDeploying)  // a duplicate

	if !errors.Is(errVerify, evalflow.ErrStale) || !errors.Is(errAgain, evalflow.ErrStale) {
		t.Fatalf("late/duplicate advance: %v, %v; want ErrStale", errVerify, errAgain)
	}
	r, _ := store.Get(ctx, id)
	if r.Status != evalflow.StatusDeploying {
		t.Fatalf("status = %s, want deploying", r.Status)
	}
}

func TestConcurrentAdvancesApplyOnce(t *testing.T) {
	store, _ := newStore(t)
	ctx := context.Background()
	if _, _, err := store.Create(ctx, newRun(id), nil); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	applied := 0
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := pipelinetest.Update(ctx, store, id, func(r *evalflow.Run) error { return r.Advance(evalflow.StatusVerifying, time.Now()) })
			if err == nil {
				mu.Lock()
				applied++
				mu.Unlock()
			} else if !errors.Is(err, evalflow.ErrStale) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if applied != 1 {
		t.Fatalf("advance applied %d times; want 1", applied)
	}
}

func TestListFiltersByStatusNewestFirst(t *testing.T) {
	store, _ := newStore(t)
	ctx := context.Background()
	ids := []string{"00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002", "00000000-0000-4000-8000-000000000003"}
	for i, rid := range ids {
		r := newRun(rid)
		r.CreatedAt = time.Unix(int64(1000+i), 0)
		if _, _, err := store.Create(ctx, r, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pipelinetest.Update(ctx, store, ids[1], func(r *evalflow.Run) error { return r.Fail("x", time.Now()) }); err != nil {
		t.Fatal(err)
	}

	all, _ := store.List(ctx, runstore.ListOptions{})
	failed, _ := store.List(ctx, runstore.ListOptions{Status: evalflow.StatusFailed})

	if len(all) != 3 || all[0].ID != ids[2] || all[2].ID != ids[0] {
		t.Fatalf("List order wrong: %v", all)
	}
	if len(failed) != 1 || failed[0].ID != ids[1] {
		t.Fatalf("List(failed) = %v", failed)
	}
	if _, err := store.Get(ctx, "00000000-0000-4000-8000-00000000dead"); !errors.Is(err, evalflow.ErrNotFound) {
		t.Fatalf("Get(missing) err = %v, want ErrNotFound", err)
	}
}

// TestTheStatusIndexesFollowTheRunsUnderConcurrentUpdates: each run is in exactly the
// index of its status, however many deliveries raced to move it, and a status list
// reads only its own index (a limit of 1 is honoured from the newest).
func TestTheStatusIndexesFollowTheRunsUnderConcurrentUpdates(t *testing.T) {
	store, rdb := newStore(t)
	ctx := context.Background()
	var ids []string
	for i := range 20 {
		rid := "00000000-0000-4000-8000-0000000001" + string(rune('a'+i/10)) + string(rune('0'+i%10))
		r := newRun(rid)
		r.CreatedAt = time.Unix(int64(2000+i), 0)
		if _, _, err := store.Create(ctx, r, nil); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rid)
	}
	var wg sync.WaitGroup
	for i, rid := range ids {
		for range 4 { // duplicate deliveries of the same moves
			wg.Add(1)
			go func() {
				defer wg.Done()
				pipelinetest.Update(ctx, store, rid, func(r *evalflow.Run) error { return r.Advance(evalflow.StatusVerifying, time.Now()) })
				if i%2 == 0 {
					pipelinetest.Update(ctx, store, rid, func(r *evalflow.Run) error { return r.Fail("x", time.Now()) })
				}
			}()
		}
	}
	wg.Wait()

	for _, st := range []evalflow.Status{evalflow.StatusPending, evalflow.StatusVerifying, evalflow.StatusFailed} {
		members, err := rdb.ZRange(ctx, "evalflow:runs:"+string(st), 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		want := map[evalflow.Status]int{evalflow.StatusPending: 0, evalflow.StatusVerifying: 10, evalflow.StatusFailed: 10}[st]
		if len(members) != want {
			t.Errorf("index of %s holds %d runs, want %d", st, len(members), want)
		}
		for _, m := range members {
			if r, _ := store.Get(ctx, m); r.Status != st {
				t.Errorf("run %s is %s but indexed as %s", m, r.Status, st)
			}
		}
	}
	newest, err := store.List(ctx, runstore.ListOptions{Status: evalflow.StatusVerifying, Limit: 1})
	if err != nil || len(newest) != 1 || newest[0].ID != ids[19] {
		t.Fatalf("List(verifying, 1) = %v, %v; want the newest verifying run", newest, err)
	}
}

// A caller's list holds its runs only, newest first, past a page of others' runs,
// and filters by status too.
func TestListByCallerShowsOnlyThatCallersRuns(t *testing.T) {
	store, _ := newStore(t)
	ctx := context.Background()
	var mine []string
	for i := range 450 {
		r := newRun(fmt.Sprintf("00000000-0000-4000-8000-%012d", i))
		r.CreatedAt = time.Unix(int64(1000+i), 0)
		r.Caller = "bob"
		if i%150 == 0 {
			r.Caller = "alice"
			mine = append([]string{r.ID}, mine...)
		}
		if _, _, err := store.Create(ctx, r, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pipelinetest.Update(ctx, store, mine[0], func(r *evalflow.Run) error { return r.Fail("x", time.Now()) }); err != nil {
		t.Fatal(err)
	}

	got, _ := store.List(ctx, runstore.ListOptions{Caller: "alice"})
	failed, _ := store.List(ctx, runstore.ListOptions{Caller: "alice", Status: evalflow.StatusFailed})
	pending, _ := store.List(ctx, runstore.ListOptions{Caller: "alice", Status: evalflow.StatusPending, Limit: 1})
	nobody, _ := store.List(ctx, runstore.ListOptions{Caller: "carol"})

	var ids []string
	for _, r := range got {
		ids = append(ids, r.ID)
	}
	if !slices.Equal(ids, mine) {
		t.Fatalf("alice's list %v; want %v", ids, mine)
	}
	if len(failed) != 1 || failed[0].ID != mine[0] || len(pending) != 1 || pending[0].ID != mine[1] || len(nobody) != 0 {
		t.Fatalf("filtered lists: failed %v, pending %v, carol %v", failed, pending, nobody)
	}
}

// Job slots go in the order runs asked, a run keeps its slot or its place until it
// ends, and racing runs never hold more slots than there are.
func TestJobSlotsGoInOrderAndNeverOverflow(t *testing.T) {
	store, _ := newStore(t)
	ctx := context.Background()
	t0 := time.Unix(1000, 0)
	ids := []string{"00000000-0000-4000-8000-00000000000a", "00000000-0000-4000-8000-00000000000b",
		"00000000-0000-4000-8000-00000000000c", "00000000-0000-4000-8000-00000000000d"}
	for i, id := range ids {
		r := newRun(id)
		r.CreatedAt = t0.Add(time.Duration(i) * time.Second)
		store.Create(ctx, r, nil)
	}
	admit := func(i int) (bool, int) {
		ok, pos, err := store.Admit(ctx, ids[i], t0.Add(time.Duration(i)*time.Second), 2)
		if err != nil {
			t.Fatal(err)
		}
		return ok, pos
	}
	// d asks first, yet c asked earlier: c stands before it.
	for _, c := range []struct {
		i      int
		ok     bool
		pos    int
		reason string
	}{{0, true, 0, "a: a free slot"}, {1, true, 0, "b: the last free slot"}, {3, false, 1, "d: none free"},
		{2, false, 1, "c: before d, who asked later"}, {2, false, 1, "c again: the same place"}, {0, true, 0, "a again: its slot"}} {
		if ok, pos := admit(c.i); ok != c.ok || pos != c.pos {
			t.Errorf("%s: admitted %v at %d; want %v at %d", c.reason, ok, pos, c.ok, c.pos)
		}
	}
	if places, _ := store.QueuePositions(ctx, ids[3], ids[0]); !slices.Equal(places, []int{2, 0}) {
		t.Errorf("places in line of d and a %v; want 2 (behind c) and 0 (a holds a slot)", places)
	}
	var handed string
	if _, err := pipelinetest.Update(ctx, store, ids[3], pipelinetest.Walk(evalflow.StatusDeploying), runstore.HandingOver(&handed)); err != nil || handed != "" {
		t.Fatalf("a run moved on, not ended: slot handed to %q (%v)", handed, err)
	}
	if _, err := pipelinetest.Update(ctx, store, ids[0], func(r *evalflow.Run) error { return r.Fail("x", time.Now()) },
		runstore.HandingOver(&handed)); err != nil {
		t.Fatal(err)
	}
	if handed != ids[2] {
		t.Errorf("a's end handed its slot to %q; want c (d waits behind it)", handed)
	}
	if ok, _ := admit(3); ok {
		t.Error("d took the freed slot before c")
	}
	if ok, _ := admit(2); !ok {
		t.Error("c does not hold the slot a freed")
	}
	if _, err := pipelinetest.Update(ctx, store, ids[3], func(r *evalflow.Run) error { return r.Fail("x", time.Now()) },
		runstore.HandingOver(&handed)); err != nil || handed != "" {
		t.Fatalf("d's end, in line: slot handed to %q (%v)", handed, err)
	}
	if places, _ := store.QueuePositions(ctx, ids[3]); !slices.Equal(places, []int{0}) {
		t.Errorf("d ended, still in line at %v", places)
	}

	// Fifty runs racing for five slots.
	store2, _ := newStore(t)
	var wg sync.WaitGroup
	var admitted atomic.Int32
	for i := range 50 {
		wg.Go(func() {
			if ok, _, err := store2.Admit(ctx, fmt.Sprintf("run-%d", i), t0.Add(time.Duration(i)), 5); err == nil && ok {
				admitted.Add(1)
			}
		})
	}
	wg.Wait()
	if admitted.Load() != 5 {
		t.Fatalf("%d of 50 racing runs admitted to 5 slots", admitted.Load())
	}
}

// Dead letters are kept once each, and only the newest.
func TestDeadLettersAreKeptOnceAndOnlyTheNewest(t *testing.T) {
	store, _ := newStore(t)
	store.DeadLetterLimit = 3
	ctx := context.Background()
	t0 := time.Unix(1000, 0)
	for i := range 5 {
		d := evalflow.DeadLetter{ID: fmt.Sprintf("ev-%d", i), Type: evalflow.TypeVerified, RunID: "r", Destination: "http://deploy", Time: t0.Add(time.Duration(i) * time.Second)}
		for range 2 { // the sink sent the same again
			if err := store.KeepDeadLetter(ctx, d); err != nil {
				t.Fatal(err)
			}
		}
	}
	kept, err := store.DeadLetters(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, d := range kept {
		ids = append(ids, d.ID)
	}
	if !slices.Equal(ids, []string{"ev-4", "ev-3", "ev-2"}) {
		t.Fatalf("kept %v; want the newest 3, newest first, once each", ids)
	}
}

// An update from the run as read is one round trip, with its timeline entry; updates
// from a stale read each still apply once, on the run as it is.
func TestAnUpdateIsOneRoundTripAndNeverLosesAnother(t *testing.T) {
	store, _ := newStore(t)
	ctx := context.Background()
	entry := func(n string) runstore.UpdateOption {
		return runstore.Recording(func(r *evalflow.Run) evalflow.TimelineEntry {
			return evalflow.TimelineEntry{ID: n, Time: time.Now(), Notification: evalflow.Notification{RunID: r.ID, Title: n}}
		})
	}
	created, _, err := store.Create(ctx, newRun(id), nil, entry("recorded"))
	if err != nil {
		t.Fatal(err)
	}
	before := store.RoundTrips()
	run, err := store.UpdateRun(ctx, created, func(r *evalflow.Run) error { return r.Advance(evalflow.StatusVerifying, time.Now()) }, entry("verifying"))
	if err != nil || run.Status != evalflow.StatusVerifying {
		t.Fatalf("UpdateRun: %v %+v", err, run)
	}
	if n := store.RoundTrips() - before; n > 2 { // the script's first use may load it (EVALSHA, then EVAL)
		t.Errorf("an update from a current read took %d round trips", n)
	}
	before = store.RoundTrips()
	if _, err := store.UpdateRun(ctx, run, func(r *evalflow.Run) error { r.Message = "again"; return nil }); err != nil {
		t.Fatal(err)
	}
	if n := store.RoundTrips() - before; n != 1 {
		t.Errorf("an update from a current read took %d round trips; want 1", n)
	}

	// Twenty updates from the same stale read: each applies, once.
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			if _, err := store.UpdateRun(ctx, run, func(r *evalflow.Run) error { r.Progress.Done++; return nil }, entry(fmt.Sprint("report ", i))); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	got, _ := store.Get(ctx, id)
	history, _ := store.History(ctx, id)
	if got.Progress.Done != 20 || got.Message != "again" || len(history) != 22 {
		t.Errorf("after 20 concurrent updates: done %d, message %q, %d timeline entries; want 20, again, 22", got.Progress.Done, got.Message, len(history))
	}
}

func TestAMoveAsksForAJobSlotInTheSameRoundTrip(t *testing.T) {
	store, _ := newStore(t)
	ctx := context.Background()
	t0 := time.Unix(2000, 0)
	ids := []string{"00000000-0000-4000-8000-0000000000a1", "00000000-0000-4000-8000-0000000000a2"}
	runs := make([]*evalflow.Run, len(ids))
	for i, id := range ids {
		r := newRun(id)
		r.CreatedAt = t0.Add(time.Duration(i) * time.Second)
		runs[i], _, _ = store.Create(ctx, r, nil)
	}
	move := func(r *evalflow.Run) error { return r.Advance(evalflow.StatusVerifying, time.Now()) }
	store.UpdateRun(ctx, runs[0], func(*evalflow.Run) error { return nil }) // the script loaded
	for i, want := range []runstore.Admission{{Slots: 1, Decided: true, Admitted: true}, {Slots: 1, Decided: true, Position: 1}} {
		got := runstore.Admission{Slots: 1}
		before := store.RoundTrips()
		if _, err := pipelinetest.Update(ctx, store, ids[i], move, runstore.Admitting(&got)); err != nil {
			t.Fatal(err)
		}
		if got != want || store.RoundTrips()-before != 2 { // the read, then the write that asks
			t.Errorf("run %d: %+v in %d round trips; want %+v in 2", i, got, store.RoundTrips()-before, want)
		}
	}
	if places, _ := store.QueuePositions(ctx, ids[1], ids[0]); !slices.Equal(places, []int{1, 0}) {
		t.Errorf("places in line %v; want the second run first in line, the first holding the slot", places)
	}
	// A read asks for a run in line (the second, once the first has ended), and for
	// nothing for one not in line (the first, ended).
	if _, err := pipelinetest.Update(ctx, store, ids[0], func(r *evalflow.Run) error { return r.Fail("x", time.Now()) }); err != nil {
		t.Fatal(err)
	}
	store.GetWithSecrets(ctx, ids[0], runstore.Admitting(&runstore.Admission{Slots: 1})) // the script loaded: NOSCRIPT, load, read
	for i, want := range []runstore.Admission{{Slots: 1}, {Slots: 1, Decided: true, Admitted: true}} {
		got := runstore.Admission{Slots: 1}
		before := store.RoundTrips()
		if _, _, err := store.GetWithSecrets(ctx, ids[i], runstore.Admitting(&got)); err != nil {
			t.Fatal(err)
		}
		if got != want || store.RoundTrips()-before != 1 {
			t.Errorf("read of run %d: %+v in %d round trips; want %+v in 1", i, got, store.RoundTrips()-before, want)
		}
	}
	if places, _ := store.QueuePositions(ctx, ids[1]); !slices.Equal(places, []int{0}) {
		t.Errorf("the second run still in line at %v", places)
	}
	// A change that writes nothing asks for nothing.
	nothing := runstore.Admission{Slots: 5}
	pipelinetest.Update(ctx, store, ids[1], func(*evalflow.Run) error { return evalflow.ErrStale }, runstore.Admitting(&nothing))
	if nothing.Decided {
		t.Errorf("no write, yet an answer: %+v", nothing)
	}
}

func TestRecentIsTheRunAsThisStoreLastSawIt(t *testing.T) {
	store, rdb := newStore(t)
	ctx := context.Background()
	if _, ok := store.Recent(id); ok {
		t.Fatal("a run never seen is recent")
	}
	created, _, _ := store.Create(ctx, newRun(id), nil)
	moved, err := store.UpdateRun(ctx, created, func(r *evalflow.Run) error { return r.Advance(evalflow.StatusVerifying, time.Now()) })
	if err != nil {
		t.Fatal(err)
	}
	r, ok := store.Recent(id)
	if !ok || r.Status != evalflow.StatusVerifying || r.Revision != moved.Revision {
		t.Fatalf("Recent after a write: %v %+v", ok, r)
	}
	// Another process moves the run on: this Store's copy is behind, and a write
	// from it costs one round trip more and applies to the run as it is.
	otherClient := redis.NewClient(&redis.Options{Addr: rdb.Options().Addr})
	t.Cleanup(func() { otherClient.Close() })
	other := runstore.New(otherClient, nil)
	if _, err := pipelinetest.Update(ctx, other, id, func(r *evalflow.Run) error { return r.Advance(evalflow.StatusDeploying, time.Now()) }); err != nil {
		t.Fatal(err)
	}
	stale, _ := store.Recent(id)
	before := store.RoundTrips()
	got, err := store.UpdateRun(ctx, stale, func(r *evalflow.Run) error { r.Message = "noted"; return nil })
	if err != nil || got.Status != evalflow.StatusDeploying || got.Message != "noted" || store.RoundTrips()-before != 2 {
		t.Fatalf("a write from a stale copy: %v, %+v in %d round trips; want deploying, noted, in 2", err, got, store.RoundTrips()-before)
	}
	if r, _ := store.Recent(id); r.Status != evalflow.StatusDeploying || r.Message != "noted" {
		t.Errorf("Recent after the write: %+v", r)
	}
}

// Each visits every run of a status once, oldest first, however many there are and
// however many share a creation time.
func TestEachVisitsEveryRunOfAStatusOldestFirst(t *testing.T) {
	ctx := context.Background()
	store, _ := newStore(t)
	base := time.Now().Add(-time.Hour)
	const n = 1100
	want := make([]string, 0, n)
	for i := range n {
		r := newRun(fmt.Sprintf("00000000-0000-4000-8000-%012d", i))
		r.CreatedAt = base.Add(time.Duration(i/300) * time.Second) // 300 at each time: ties across pages
		if _, _, err := store.Create(ctx, r, nil); err != nil {
			t.Fatal(err)
		}
		want = append(want, r.ID)
	}
	seen := map[string]int{}
	var last time.Time
	err := store.Each(ctx, evalflow.StatusPending, func(r *evalflow.Run) error {
		if r.CreatedAt.Before(last) {
			t.Errorf("run %s (created %s) after one created %s: not oldest first", r.ID, r.CreatedAt, last)
		}
		last = r.CreatedAt
		seen[r.ID]++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range want {
		if seen[id] != 1 {
			t.Errorf("run %s visited %d times; want once", id, seen[id])
		}
	}
	if len(seen) != n {
		t.Errorf("%d runs visited; want %d", len(seen), n)
	}
	stop := errors.New("stop")
	visits := 0
	if err := store.Each(ctx, evalflow.StatusPending, func(*evalflow.Run) error { visits++; return stop }); !errors.Is(err, stop) || visits != 1 {
		t.Errorf("Each after visit's error: %v, %d visits; want the error after one", err, visits)
	}
}

// A run stored before Run.OwnCluster (target "cluster") reads as a Kubernetes run in
// evalflow's own cluster.
func TestARunStoredWithTheOldClusterTargetReadsAsOwnCluster(t *testing.T) {
	ctx := context.Background()
	store, rdb := newStore(t)
	r := newRun(id)
	b, _ := json.Marshal(r)
	old := bytes.Replace(b, []byte(`"target":"local"`), []byte(`"target":"cluster"`), 1)
	if bytes.Equal(old, b) {
		t.Fatalf("no target to replace in %s", b)
	}
	if err := rdb.Set(ctx, "evalflow:run:"+id, old, 0).Err(); err != nil {
		t.Fatal(err)
	}
	got, err := store.Get(ctx, id)
	if err != nil || got.Target != evalflow.TargetKubernetes || !got.OwnCluster || !got.OnKubernetes() {
		t.Fatalf("Get = target %q, own cluster %v (%v); want kubernetes in evalflow's own", got.Target, got.OwnCluster, err)
	}
}
