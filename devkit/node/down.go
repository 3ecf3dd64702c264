package node

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Down stops the node recorded in dir and removes what it added to the machine: its
// pods' tasks, its processes (by recorded PID), containerd's shims, mounts under dir,
// the pods' network namespaces, the iptables chains of kube-proxy, the kubelet and
// the CNI plugins, the bridge, the node address, its cgroups and kernel settings. A
// dir with no node is nothing to do.
func Down(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	n, err := Load(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	procs, err := recorded(dir)
	if err != nil {
		return err
	}
	var errs []error
	// The kubelet first, so that it restarts no container; then every pod's task.
	for _, p := range procs {
		if p.Name == "kubelet" {
			p.stop(10 * time.Second)
		}
	}
	killTasks(n.Machine.ContainerdSock)
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].stop(10 * time.Second)
	}
	if n.Machine.ContainerdSock != "" {
		for _, pid := range processesWith(n.Machine.ContainerdSock) { // the shims
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	errs = append(errs, unmountUnder(dir))
	errs = append(errs, removeNetns(n.Machine.NetnsBefore))
	errs = append(errs, removeChains())
	if exists("/sys/class/net/" + bridge) {
		errs = append(errs, run("ip", "link", "del", bridge))
	}
	if hasAddress(n.Address) {
		errs = append(errs, run("ip", "addr", "del", n.Address+"/32", "dev", "lo"))
	}
	errs = append(errs, removeCgroups())
	for k, v := range n.Machine.Sysctls {
		if now, ok := readSysctl(k); ok && now != v {
			errs = append(errs, os.WriteFile(sysctlPath(k), []byte(v), 0o644))
		}
	}
	if !n.Machine.RunContainerd {
		errs = append(errs, os.RemoveAll("/run/containerd"))
	}
	if !n.Machine.VarLibCNI {
		errs = append(errs, os.RemoveAll("/var/lib/cni"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("node: down %s: %w", dir, err)
	}
	return os.Remove(filepath.Join(dir, "node.json"))
}

// killTasks kills and deletes every container task of containerd at sock.
func killTasks(sock string) {
	if sock == "" || !exists(sock) {
		return
	}
	ctr := func(args ...string) []byte {
		out, _ := exec.Command("ctr", append([]string{"--address", sock, "--namespace", "k8s.io"}, args...)...).Output()
		return out
	}
	ids := strings.Fields(string(ctr("tasks", "ls", "-q")))
	for _, id := range ids {
		ctr("tasks", "kill", "--signal", "SIGKILL", id)
	}
	for _, id := range ids {
		for i := 0; i < 50; i++ {
			if len(ctr("tasks", "delete", "--force", id)) > 0 || !strings.Contains(string(ctr("tasks", "ls", "-q")), id) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// unmountUnder detaches every mount under dir, the deepest first.
func unmountUnder(dir string) error {
	var errs []error
	for _, m := range mountsUnder(dir) {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	return errors.Join(errs...)
}

// mountsUnder lists the mount points under dir, the deepest first.
func mountsUnder(dir string) []string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var ms []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 {
			m := unescape(f[4])
			if m == dir || strings.HasPrefix(m, dir+"/") {
				ms = append(ms, m)
			}
		}
	}
	sort.Slice(ms, func(i, j int) bool { return len(ms[i]) > len(ms[j]) })
	return ms
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removeNetns removes the pods' network namespaces (cni-*) that were not there before.
func removeNetns(before []string) error {
	had := map[string]bool{}
	for _, b := range before {
		had[b] = true
	}
	var errs []error
	for _, name := range netns() {
		if had[name] || !strings.HasPrefix(name, "cni-") {
			continue
		}
		p := filepath.Join("/run/netns", name)
		_ = syscall.Unmount(p, syscall.MNT_DETACH)
		if err := os.Remove(p); err != nil {
			errs = append(errs, err)
		}
	}
	if len(before) == 0 {
		if entries, _ := os.ReadDir("/run/netns"); len(entries) == 0 {
			_ = syscall.Unmount("/run/netns", syscall.MNT_DETACH)
			_ = os.Remove("/run/netns")
		}
	}
	return errors.Join(errs...)
}

// chainPrefixes name the chains kube-proxy, the kubelet, the CNI plugins and the
// NetworkPolicy enforcer add.
var chainPrefixes = []string{"KUBE-", "CNI-", "EVALFLOW-"}

var tables = []string{"filter", "nat", "mangle"}

func ours(chain string) bool {
	for _, p := range chainPrefixes {
		if strings.HasPrefix(chain, p) {
			return true
		}
	}
	return false
}

// ourChains lists the node's chains present now, as TOOL/TABLE/CHAIN.
func ourChains() []string {
	var found []string
	for _, tool := range []string{"iptables", "ip6tables"} {
		for _, t := range tables {
			for _, c := range chains(tool, t) {
				if ours(c) {
					found = append(found, tool+"/"+t+"/"+c)
				}
			}
		}
	}
	return found
}

// chains lists the chains of table.
func chains(tool, table string) []string {
	out, _ := exec.Command(tool, "-w", "-t", table, "-S").Output()
	var cs []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && (f[0] == "-N" || f[0] == "-P") {
			cs = append(cs, f[1])
		}
	}
	return cs
}

// removeChains deletes every rule that jumps to one of the node's chains, by its
// number (their comments hold quotes that -S output does not round-trip), then
// flushes and deletes those chains.
func removeChains() error {
	var errs []error
	for _, tool := range []string{"iptables", "ip6tables"} {
		for _, t := range tables {
			all := chains(tool, t)
			for _, c := range all {
				if ours(c) {
					continue
				}
				out, _ := exec.Command(tool, "-w", "-t", t, "-S", c).Output()
				var rules []int
				num := 0
				for _, line := range strings.Split(string(out), "\n") {
					if !strings.HasPrefix(line, "-A ") {
						continue
					}
					num++
					if f := strings.Fields(line); len(f) > 1 && ours(f[len(f)-1]) {
						rules = append(rules, num)
					} else if strings.Contains(line, " -j KUBE-") || strings.Contains(line, " -j CNI-") || strings.Contains(line, " -j EVALFLOW-") {
						rules = append(rules, num)
					}
				}
				for i := len(rules) - 1; i >= 0; i-- {
					errs = append(errs, run(tool, "-w", "-t", t, "-D", c, strconv.Itoa(rules[i])))
				}
			}
			for _, c := range all {
				if ours(c) {
					errs = append(errs, run(tool, "-w", "-t", t, "-F", c))
				}
			}
			for _, c := range all {
				if ours(c) {
					errs = append(errs, run(tool, "-w", "-t", t, "-X", c))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// removeCgroups removes the node's cgroups (Name in every hierarchy), leaves first.
func removeCgroups() error {
	var errs []error
	for _, h := range cgroupHierarchies() {
		root := filepath.Join(h, Name)
		if !exists(root) {
			continue
		}
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := os.Remove(dirs[i]); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// sysctls are the kernel settings the kubelet, kube-proxy and the bridge plugin may change.
var sysctls = []string{"vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
	"kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes", "net.ipv4.ip_forward", "net.ipv4.conf.all.route_localnet",
	"net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables", "net.ipv6.conf.all.forwarding"}

func readSysctls() map[string]string {
	m := map[string]string{}
	for _, k := range sysctls {
		if v, ok := readSysctl(k); ok {
			m[k] = v
		}
	}
	return m
}

func readSysctl(k string) (string, bool) {
	b, err := os.ReadFile(sysctlPath(k))
	return strings.TrimSpace(string(b)), err == nil
}

func sysctlPath(k string) string { return "/proc/sys/" + strings.ReplaceAll(k, ".", "/") }
