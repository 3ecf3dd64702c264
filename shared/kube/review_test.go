package kube_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/evalflow/evalflow/devkit/testserver"
	"github.com/evalflow/evalflow/shared/auth"
	"github.com/evalflow/evalflow/shared/kube"
	"github.com/evalflow/evalflow/shared/pipeline/pipelinetest"
)

// A step takes a request as the broker's delivery only with a token the API server
// authenticates for the step's audience, of the account Knative Eventing gives a
// Trigger in evalflow's namespace: the same account's token for another audience, any
// other account's (of evalflow's namespace or another, even one named like a
// Trigger's), an unsigned or absent token are refused, each saying why.
func TestOnlyATriggersTokenForTheStepIsADelivery(t *testing.T) {
	const audience = "serving.knative.dev/service/evalflow/evalflow-verify"
	k := pipelinetest.NewDeliveries(t, audience)
	ctx := context.Background()
	d, err := kube.OwnDeliveries(k.Kubeconfig(), audience)
	if err != nil {
		t.Fatal(err)
	}
	trigger := k.Trigger(t, "evalflow-verify")
	if err := d.Check(ctx, trigger); err != nil {
		t.Fatalf("the Trigger's delivery: %v", err)
	}
	if err := d.Check(ctx, trigger); err != nil { // remembered
		t.Fatalf("the Trigger's delivery again: %v", err)
	}
	for name, tc := range map[string]struct{ token, why string }{
		"no token":              {"", "no bearer token"},
		"a token no one signed": {"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", "does not take the token"},
		"the Trigger's token for another step": {k.Token(t, "evalflow", "evalflow-verify-oidc-eventing.knative.dev-trigger",
			"serving.knative.dev/service/evalflow/evalflow-deploy"), "does not take the token"},
		"another account of evalflow's namespace":              {k.Token(t, "evalflow", "evalflow-start", audience), "not a Trigger's"},
		"an account of another namespace named as a Trigger's": {k.Token(t, "intruder", "evalflow-verify-oidc-eventing.knative.dev-trigger", audience), "not a Trigger's"},
	} {
		t.Run(name, func(t *testing.T) {
			err := d.Check(ctx, tc.token)
			if !errors.Is(err, auth.ErrNotADelivery) {
				t.Fatalf("Check = %v; want a refusal (auth.ErrNotADelivery)", err)
			}
			if !strings.Contains(err.Error(), tc.why) {
				t.Fatalf("Check = %v; want it to say %q", err, tc.why)
			}
			if tc.token != "" && strings.Contains(err.Error(), tc.token) {
				t.Fatalf("Check = %v: it shows the token", err)
			}
		})
	}

	t.Run("an API server that cannot answer is not a refusal", func(t *testing.T) {
		gone := k.KubeconfigAt(t, "https://127.0.0.1:"+strconv.Itoa(testserver.FreePort(t)))
		d, err := kube.OwnDeliveries(gone, audience)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Check(ctx, trigger); err == nil || errors.Is(err, auth.ErrNotADelivery) {
			t.Fatalf("Check with no API server = %v; want an error that is not a refusal (the broker retries)", err)
		}
	})
}
