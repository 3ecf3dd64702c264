package cloudevent_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/evalflow/evalflow/devkit/testserver"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
)

// A sender whose token lives in a file sends the file as it is at each send: a
// renewed token (Knative's /oidc/token, a projected ServiceAccount token) is picked up
// without a restart, and no file means no Authorization header.
func TestASenderSendsTheTokenFileAsItIsAtEachSend(t *testing.T) {
	srv := testserver.NewHeaderSink(t, "Authorization")
	file := filepath.Join(t.TempDir(), "token")
	s, err := cloudevent.NewSender(srv.URL, cloudevent.BearerFile(file))
	if err != nil {
		t.Fatal(err)
	}
	send := func(i string) {
		t.Helper()
		if err := s.Send(context.Background(), cloudevent.New(evalflow.StepStart, evalflow.TypeStarted, "run-"+i, nil)); err != nil {
			t.Fatal(err)
		}
	}
	send("1")
	for i, token := range []string{"first\n", "renewed"} {
		if err := os.WriteFile(file, []byte(token), 0o600); err != nil {
			t.Fatal(err)
		}
		send(string(rune('2' + i)))
	}
	if got, want := srv.Got(), []string{"", "Bearer first", "Bearer renewed"}; !slices.Equal(got, want) {
		t.Fatalf("the ingress got %q; want %q", got, want)
	}
}
