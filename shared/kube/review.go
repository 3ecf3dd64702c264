package kube

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	authnclient "k8s.io/client-go/kubernetes/typed/authentication/v1"

	"github.com/evalflow/evalflow/shared/auth"
)

// triggerAccount ends the name of the ServiceAccount Knative Eventing makes for each
// Trigger when its OIDC authentication is on (knative.dev/eventing pkg/auth: the
// Trigger's name, then "-oidc-", the group and the kind): the filter delivers with a
// token of that account, for the subscriber's audience.
const triggerAccount = "-oidc-eventing.knative.dev-trigger"

// Deliveries tells Knative Eventing's deliveries to one subscriber from anything else
// posted to it: each carries a token the API server authenticates (TokenReview) for
// the subscriber's audience, of a Trigger's account in evalflow's own namespace. Tokens
// taken are remembered for a minute, so a run's events cost one review a Trigger.
type Deliveries struct {
	reviews   authnclient.TokenReviewInterface
	audience  string
	namespace string

	mu    sync.Mutex
	taken map[[sha256.Size]byte]time.Time // until when
}

// OwnDeliveries checks deliveries for audience, with evalflow's own cluster reached
// from source (as for Own): Triggers of the namespace of its ServiceAccount or
// kubeconfig deliver.
func OwnDeliveries(source, audience string) (*Deliveries, error) {
	if audience == "" {
		return nil, errors.New("kube: deliveries: no audience")
	}
	rest, namespace, err := ownConfig(source)
	if err != nil {
		return nil, err
	}
	rest.Timeout = 10 * time.Second
	rest.UserAgent = "evalflow"
	client, err := kubernetes.NewForConfig(rest)
	if err != nil {
		return nil, fmt.Errorf("kube: deliveries for %s: %w", audience, err)
	}
	return &Deliveries{reviews: client.AuthenticationV1().TokenReviews(), audience: audience, namespace: namespace,
		taken: map[[sha256.Size]byte]time.Time{}}, nil
}

// Check is nil when token is a delivery's (auth.Deliveries). A refusal wraps
// auth.ErrNotADelivery and says why, never with the token; any other error is the API
// server's, worth a retry.
func (d *Deliveries) Check(ctx context.Context, token string) error {
	if token == "" {
		return fmt.Errorf("%w: no bearer token", auth.ErrNotADelivery)
	}
	key := sha256.Sum256([]byte(token))
	now := time.Now()
	d.mu.Lock()
	until, ok := d.taken[key]
	d.mu.Unlock()
	if ok && now.Before(until) {
		return nil
	}
	review, err := d.reviews.Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{
		Token: token, Audiences: []string{d.audience}}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("kube: review a delivery's token for %s: %w", d.audience, err)
	}
	if err := d.judge(review.Status); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.taken) >= 1024 {
		for k, u := range d.taken {
			if !now.Before(u) {
				delete(d.taken, k)
			}
		}
		if len(d.taken) >= 1024 {
			clear(d.taken)
		}
	}
	d.taken[key] = now.Add(time.Minute)
	return nil
}

// judge is whether the API server's review makes the token a delivery's.
func (d *Deliveries) judge(s authenticationv1.TokenReviewStatus) error {
	if !s.Authenticated {
		return fmt.Errorf("%w: the API server does not take the token for %s: %s", auth.ErrNotADelivery, d.audience, s.Error)
	}
	if !slices.Contains(s.Audiences, d.audience) {
		return fmt.Errorf("%w: the token is for %v, not %s", auth.ErrNotADelivery, s.Audiences, d.audience)
	}
	account, ok := strings.CutPrefix(s.User.Username, "system:serviceaccount:"+d.namespace+":")
	if !ok || !strings.HasSuffix(account, triggerAccount) || strings.Contains(account, ":") {
		return fmt.Errorf("%w: the token is %s's, not a Trigger's of namespace %s", auth.ErrNotADelivery, s.User.Username, d.namespace)
	}
	return nil
}

// NeededForDeliveries is what a step needs in evalflow's own cluster to review the
// tokens the broker delivers with (eventing/rbac.yaml's ClusterRole
// evalflow-delivery-review).
var NeededForDeliveries = []Permission{{Verb: "create", Group: "authentication.k8s.io", Resource: "tokenreviews"}}
