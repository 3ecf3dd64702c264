package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	duckv1 "knative.dev/pkg/apis/duck/v1"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/evalflow/evalflow/local/broker"
	"github.com/evalflow/evalflow/localjob"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/auth"
	"github.com/evalflow/evalflow/shared/cloudevent"
)

// The broker, the job runtime beside it, and the PingSources' ticks.

// serveBroker serves the broker, routing by triggers/, and the job runtime, which
// reports to it; it returns a sender to the broker.
func (s *Stack) serveBroker(fctx context.Context, brokerL, jobsL net.Listener) (*cloudevent.Sender, error) {
	triggers, err := broker.LoadTriggers(fctx, s.cfg.Triggers, BrokerName, s.resolve)
	if err != nil {
		return nil, err
	}
	s.brk = broker.New(triggers, broker.Options{Log: s.cfg.Log.With("component", "broker"), DeliveryToken: s.deliveryToken, Lose: s.cfg.LoseEvents,
		IngressToken: s.BrokerToken, Open: jobReport})
	s.serve(brokerL, s.brk)
	sender, err := cloudevent.NewSender(s.Broker, cloudevent.Bearer(s.BrokerToken))
	if err != nil {
		return nil, err
	}
	s.jobsToken = auth.NewToken()
	s.jobs = &localjob.Server{RunnerPath: s.cfg.RunnerPath, Commands: s.cfg.Commands, WorkDir: filepath.Join(s.cfg.StateDir, "jobs"),
		Events: sender, Log: s.cfg.Log.With("component", "localjob"),
		Token: s.jobsToken, OutputRoot: filepath.Join(s.cfg.StateDir, "results"), CallbackURL: s.Broker}
	s.serve(jobsL, s.jobs)
	return sender, nil
}

// jobReport is whether ev is a job's report, which a job posts to the broker without
// its token: job-watch takes only those signed with the run's own key.
func jobReport(ev event.Event) bool {
	return cloudevent.TypeOf(ev) == evalflow.TypeJobProgress || cloudevent.TypeOf(ev) == evalflow.TypeJobFinished
}

// exposeBroker serves the broker on the Jobs' address too, when the config has one.
func (s *Stack) exposeBroker() error {
	if s.cfg.JobAddress == "" {
		return nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort(s.cfg.JobAddress, "0"))
	if err != nil {
		return fmt.Errorf("stack: the broker on the Jobs' address: %w", err)
	}
	s.serve(l, s.brk)
	s.jobCallback = "http://" + l.Addr().String()
	return nil
}

// tick plays the PingSources of eventing/ as the cluster's would (stopped first on Down).
func (s *Stack) tick(fctx context.Context, sender *cloudevent.Sender) error {
	pings, err := broker.LoadPingSources(fctx, s.cfg.Eventing)
	if err != nil {
		return err
	}
	tickCtx, stopTicks := context.WithCancel(context.Background())
	for _, p := range pings {
		go p.Run(tickCtx, sender.Send, s.cfg.Log.With("component", "pingsource"))
	}
	s.stops = append(s.stops, stopTicks)
	return nil
}

// resolve maps a Knative Service named evalflow-NAME to the local function NAME.
func (s *Stack) resolve(ref *duckv1.KReference) (*url.URL, error) {
	name, ok := strings.CutPrefix(ref.Name, "evalflow-")
	if u, found := s.Functions[name]; ok && found && ref.Kind == "Service" {
		return url.Parse(u)
	}
	return nil, fmt.Errorf("no local function for %s %s", ref.Kind, ref.Name)
}

func listen() (net.Listener, string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	return l, "http://" + l.Addr().String(), nil
}

// serve serves h on l until Down.
func (s *Stack) serve(l net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	s.servers = append(s.servers, srv)
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.cfg.Log.Error("local server", "addr", l.Addr().String(), "error", err)
		}
	}()
}

// Idle reports whether the broker has nothing under way.
func (s *Stack) Idle() bool { return s.brk.Idle() }

// InFlight describes the broker's deliveries under way.
func (s *Stack) InFlight() []string { return s.brk.InFlight() }

// JobsRunning counts the local job runtime's jobs running now.
func (s *Stack) JobsRunning() int { return s.jobs.Running() }

// JobsCreated counts the jobs the local job runtime has created.
func (s *Stack) JobsCreated() int { return s.jobs.Created() }
