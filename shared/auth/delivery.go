package auth

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
)

// ErrNotADelivery is a request posted to a step that is not the broker's delivery.
var ErrNotADelivery = errors.New("not a delivery of evalflow's broker")

// Deliveries tells the broker's deliveries to a step from anything else posted to it,
// by the bearer token each carries: nil for a delivery, an error wrapping
// ErrNotADelivery (saying why, never with the token) for anything else, any other
// error when it cannot tell now (the broker retries).
type Deliveries interface {
	Check(ctx context.Context, token string) error
}

// SharedToken is local mode's broker: it delivers with one token, which the steps are
// given.
type SharedToken string

// Check is nil when token is the broker's.
func (s SharedToken) Check(_ context.Context, token string) error {
	if token == "" {
		return fmt.Errorf("%w: no bearer token", ErrNotADelivery)
	}
	if subtle.ConstantTimeCompare([]byte(token), []byte(s)) != 1 {
		return fmt.Errorf("%w: not the broker's token", ErrNotADelivery)
	}
	return nil
}
