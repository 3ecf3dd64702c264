package kube

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
)

// Connect parses kubeconfig. Everything it needs must be inline; a kubeconfig naming a
// program or a file is refused with ErrUnsafeKubeconfig before anything is dialled.
func Connect(kubeconfig []byte) (*Cluster, error) {
	c, err := fromKubeconfig(kubeconfig)
	if err != nil && !errors.Is(err, ErrUnsafeKubeconfig) {
		err = fmt.Errorf("%w: %w", ErrBadKubeconfig, err)
	}
	return c, err
}

// Pool keeps a Cluster per kubeconfig, so that a step reaching the same cluster again
// (job-watch, each tick) reuses its client and connections instead of dialling anew.
// The zero Pool is ready; it holds at most MaxPooled clusters.
type Pool struct {
	Options  // given to each Cluster
	mu       sync.Mutex
	clusters map[[sha256.Size]byte]*Cluster
}

// MaxPooled bounds a Pool; past it the Pool starts afresh.
const MaxPooled = 64

// Connect returns the pooled Cluster of kubeconfig, connecting on first use.
func (p *Pool) Connect(kubeconfig []byte) (*Cluster, error) {
	key := sha256.Sum256(kubeconfig)
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.clusters[key]; ok {
		return c, nil
	}
	c, err := Connect(kubeconfig)
	if err != nil {
		return nil, err
	}
	c.opts = p.Options
	if p.clusters == nil || len(p.clusters) >= MaxPooled {
		p.clusters = map[[sha256.Size]byte]*Cluster{}
	}
	p.clusters[key] = c
	return c, nil
}
