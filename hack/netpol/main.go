// Command netpol enforces Kubernetes NetworkPolicies on the node of devkit/node.
//
// What a policy allows is decided by kube-network-policies (sigs.k8s.io), the
// Kubernetes network SIG's NetworkPolicy implementation, used here as a library: its
// policy engine, fed by the API server's pods, namespaces and policies, judges each new
// connection. Its own dataplane hands packets over with nftables' queue expression,
// which this machine's kernel lacks (CONFIG_NFT_QUEUE unset); so here iptables does it,
// with its NFQUEUE target: the first packet of each new connection from or to a pod of
// this node that some policy selects goes to the engine, which accepts or drops it.
// Nothing passes while the engine cannot answer (no --queue-bypass): the policy fails
// closed. Traffic the node itself starts (the kubelet, the API server's exec) is never
// queued, as in kube-network-policies.
//
//	netpol -kubeconfig FILE -node NAME [-queue 100]
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/florianl/go-nfqueue/v2"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"sigs.k8s.io/kube-network-policies/pkg/api"
	"sigs.k8s.io/kube-network-policies/pkg/network"
	"sigs.k8s.io/kube-network-policies/pkg/networkpolicy"
	"sigs.k8s.io/kube-network-policies/pkg/podinfo"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	kubeconfig := flag.String("kubeconfig", "", "the node's kubeconfig")
	node := flag.String("node", "", "the node's name: the pods it enforces policies for run there")
	queue := flag.Uint("queue", 100, "the NFQUEUE number")
	flag.Parse()
	if *kubeconfig == "" || *node == "" {
		fmt.Fprintln(os.Stderr, "usage: netpol -kubeconfig FILE -node NAME [-queue N]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, log, *kubeconfig, *node, uint16(*queue)); err != nil {
		log.Error("netpol", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, kubeconfig, node string, queue uint16) error {
	engine, err := newEngine(ctx, kubeconfig, node)
	if err != nil {
		return err
	}
	nf, err := nfqueue.Open(&nfqueue.Config{NfQueue: queue, Flags: nfqueue.NfQaCfgFlagGSO, MaxPacketLen: 128,
		MaxQueueLen: 1024, Copymode: nfqueue.NfQnlCopyPacket, WriteTimeout: 100 * time.Millisecond})
	if err != nil {
		return fmt.Errorf("open nfqueue %d: %w", queue, err)
	}
	defer nf.Close()
	judge := func(a nfqueue.Attribute) int {
		verdict := nfqueue.NfDrop
		if a.PacketID == nil || a.Payload == nil {
			return 0
		}
		p, err := network.ParsePacket(*a.Payload)
		if err == nil {
			p.ID = *a.PacketID
			if ok, err := engine.EvaluatePacket(ctx, &p); err != nil {
				log.Warn("evaluate packet", "packet", p.String(), "err", err)
			} else if ok {
				verdict = nfqueue.NfAccept
			} else {
				log.Info("denied", "src", p.SrcIP.String(), "dst", p.DstIP.String(), "dport", p.DstPort, "proto", p.Proto)
			}
		}
		if err := nf.SetVerdict(*a.PacketID, verdict); err != nil {
			log.Warn("set verdict", "err", err)
		}
		return 0
	}
	if err := nf.RegisterWithErrorFunc(ctx, judge, func(err error) int {
		if ctx.Err() == nil {
			log.Warn("nfqueue", "err", err)
		}
		return 0
	}); err != nil {
		return fmt.Errorf("listen on nfqueue %d: %w", queue, err)
	}

	r := rules{chain: "EVALFLOW-NETPOL", queue: queue}
	changed := make(chan struct{}, 1)
	engine.SetDataplaneSyncCallbacks(func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	})
	defer func() {
		if err := r.remove(); err != nil {
			log.Error("remove the rules", "err", err)
		}
	}()
	tick := time.NewTicker(5 * time.Second) // the hooks stay first, whatever inserts before them
	defer tick.Stop()
	for {
		ips, all, err := engine.GetManagedIPs(ctx)
		if err == nil {
			err = r.sync(ips, all)
		}
		if err != nil {
			log.Error("sync the rules", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-tick.C:
		}
	}
}

// newEngine is kube-network-policies' engine for the standard NetworkPolicy, on the
// API server's pods, namespaces and policies, once their informers have synced.
func newEngine(ctx context.Context, kubeconfig, node string) (*networkpolicy.PolicyEngine, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	factory := informers.NewSharedInformerFactory(client, 0)
	pods, namespaces, policies := factory.Core().V1().Pods(), factory.Core().V1().Namespaces(), factory.Networking().V1().NetworkPolicies()
	resolver, err := podinfo.NewInformerResolver(pods.Informer())
	if err != nil {
		return nil, err
	}
	provider := podinfo.NewInformerProvider(pods, namespaces, nil, []podinfo.IPResolver{resolver})
	standard := networkpolicy.NewStandardNetworkPolicy(node, namespaces, pods, policies)
	engine := networkpolicy.NewPolicyEngine(provider, []api.PolicyEvaluator{standard})
	factory.Start(ctx.Done())
	for _, synced := range factory.WaitForCacheSync(ctx.Done()) {
		if !synced {
			return nil, fmt.Errorf("the informers did not sync: %w", context.Cause(ctx))
		}
	}
	for !engine.Ready() {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return engine, nil
}
