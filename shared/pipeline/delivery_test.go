package pipeline_test

import (
	"context"
	"strings"
	"testing"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/pipeline"
	"github.com/evalflow/evalflow/shared/pipeline/pipelinetest"
)

// A step told how to tell the broker's deliveries in a way it cannot follow is refused
// at start, naming the settings: Kubernetes tokens need evalflow's own cluster to review
// them, and the broker delivers with one kind of token, not two; so does a sender given
// two tokens for the broker.
func TestDeliverySettingsThatCannotHoldAreRefusedNamingThem(t *testing.T) {
	p := pipelinetest.New(t)
	for _, tc := range []struct {
		cfg  map[string]string
		want []string
	}{
		{map[string]string{"EVALFLOW_DELIVERY_AUDIENCE": "serving.knative.dev/service/evalflow/evalflow-verify"},
			[]string{"EVALFLOW_DELIVERY_AUDIENCE", "EVALFLOW_OWN_CLUSTER"}},
		{map[string]string{"EVALFLOW_DELIVERY_AUDIENCE": "serving.knative.dev/service/evalflow/evalflow-verify", "EVALFLOW_DELIVERY_TOKEN": "delivery-token-0123456789"},
			[]string{"EVALFLOW_DELIVERY_AUDIENCE", "EVALFLOW_DELIVERY_TOKEN"}},
		{map[string]string{"EVALFLOW_BROKER_TOKEN": "broker-token-0123456789", "EVALFLOW_BROKER_TOKEN_FILE": "/oidc/token"},
			[]string{"EVALFLOW_BROKER_TOKEN_FILE", "EVALFLOW_BROKER_TOKEN"}},
	} {
		_, err := pipeline.Open(context.Background(), evalflow.StepVerify, p.With(tc.cfg))
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("Open with %v: %v; want an error naming %v", tc.cfg, err, tc.want)
				break
			}
		}
	}
}
