package broker

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/robfig/cron/v3"

	"github.com/evalflow/evalflow/devkit/testserver"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
)

func TestTheProjectsPingSourceTicksJobWatchsEvent(t *testing.T) {
	eventing := filepath.Join(testserver.RepoRoot(), "eventing")
	ctx, err := FeatureContext(context.Background(), os.DirFS(eventing), "config-features.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pings, err := LoadPingSources(ctx, os.DirFS(eventing))
	if err != nil || len(pings) != 1 {
		t.Fatalf("ping sources %v, %v; want eventing/pingsource.yaml's one", pings, err)
	}
	at := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	e := pings[0].Event(at)
	if err := e.Validate(); err != nil {
		t.Fatal(err)
	}
	if cloudevent.TypeOf(e) != evalflow.TypePing || e.Source() != "/apis/v1/namespaces/evalflow/pingsources/evalflow-job-watch-tick" || !e.Time().Equal(at) {
		t.Fatalf("tick %s", e)
	}
	if next := pings[0].schedule.Next(at); next != at.Add(time.Minute) {
		t.Fatalf("next tick %s, want a minute on", next)
	}
}

func TestAPingSourceSendsOnItsSchedule(t *testing.T) {
	doc := []byte("apiVersion: sources.knative.dev/v1\nkind: PingSource\nmetadata: {name: fast, namespace: ns}\n" +
		"spec:\n  schedule: '*/5 * * * *'\n  sink: {uri: 'http://127.0.0.1:1'}\n")
	ps, err := ParsePingSource(context.Background(), doc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParsePingSource(context.Background(), []byte(string(doc)+"  bogus: 1\n")); err == nil {
		t.Fatal("an unknown field was accepted")
	}
	ps.schedule = cron.Every(time.Second) // Knative accepts minutes at the finest; a test cannot wait them
	var mu sync.Mutex
	var got []event.Event
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		ps.Run(ctx, func(_ context.Context, e event.Event) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, e)
			return nil
		}, slog.New(slog.DiscardHandler))
		close(done)
	}()
	testserver.Eventually(t, 10*time.Second, "two ticks", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= 2
	})
	cancel()
	<-done
	if got[0].ID() == got[1].ID() {
		t.Fatal("two ticks with one id: the broker would drop the second")
	}
}
