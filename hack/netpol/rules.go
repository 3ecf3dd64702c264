package main

import (
	"bytes"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
)

// rules is the iptables chain that queues the new connections of policed pods, and its
// jumps, first in FORWARD (pod to pod, pod to a Service's pod) and INPUT (pod to the
// node). IPv4: the node's pods have no other address.
type rules struct {
	chain string
	queue uint16
}

var hooks = []string{"FORWARD", "INPUT"}

// sync makes the chain queue the new connections from and to ips (of every pod, when
// all), and puts the jumps to it first.
func (r rules) sync(ips []netip.Addr, all bool) error {
	var b strings.Builder
	fmt.Fprintf(&b, "*filter\n:%s - [0:0]\n", r.chain)
	fmt.Fprintf(&b, "-A %s -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN\n", r.chain)
	queue := fmt.Sprintf("-j NFQUEUE --queue-num %d", r.queue)
	if all {
		fmt.Fprintf(&b, "-A %s %s\n", r.chain, queue)
	}
	slices.SortFunc(ips, netip.Addr.Compare)
	for _, ip := range ips {
		if !all && ip.Is4() {
			fmt.Fprintf(&b, "-A %s -s %s %s\n-A %s -d %s %s\n", r.chain, managed(ip), queue, r.chain, managed(ip), queue)
		}
	}
	b.WriteString("COMMIT\n")
	cmd := exec.Command("iptables-restore", "-w", "--noflush")
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("iptables-restore: %w: %s", err, out)
	}
	for _, hook := range hooks {
		if first, _ := iptables("-S", hook); !bytes.Contains(firstRule(first), []byte("-j "+r.chain)) {
			_, _ = iptables("-D", hook, "-j", r.chain)
			if _, err := iptables("-I", hook, "1", "-j", r.chain); err != nil {
				return err
			}
		}
	}
	return nil
}

// remove deletes the jumps and the chain: with no engine to answer, a queued packet
// would be dropped.
func (r rules) remove() error {
	for _, hook := range hooks {
		for {
			if _, err := iptables("-D", hook, "-j", r.chain); err != nil {
				break
			}
		}
	}
	_, _ = iptables("-F", r.chain)
	_, err := iptables("-X", r.chain)
	return err
}

func iptables(args ...string) ([]byte, error) {
	out, err := exec.Command("iptables", append([]string{"-w", "-t", "filter"}, args...)...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("iptables %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

// firstRule is the first rule of iptables -S output.
func firstRule(out []byte) []byte {
	for _, line := range bytes.Split(out, []byte("\n")) {
		if bytes.HasPrefix(line, []byte("-A ")) {
			return line
		}
	}
	return nil
}

// managed is the prefix of an address as iptables writes it.
func managed(ip netip.Addr) string { return netip.PrefixFrom(ip, ip.BitLen()).String() }
