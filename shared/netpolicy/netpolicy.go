// Package netpolicy says which addresses a run's base_url may reach. Link-local
// addresses (cloud metadata services among them) and the metadata services' names are
// refused by default; an operator adds to what is refused, and may allow some of it
// back (EVALFLOW_BASE_URL_DENY, EVALFLOW_BASE_URL_ALLOW: CIDRs or host names, comma
// separated). It is checked twice: on the URL (a name, or an address written in it),
// and on every connection, at the address the name resolved to, so that a name
// resolving somewhere refused gets nowhere.
package netpolicy

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Defaults: what is refused unless allowed.
var (
	DefaultDeny = []netip.Prefix{
		netip.MustParsePrefix("169.254.0.0/16"),     // IPv4 link-local: AWS, GCP, Azure, OpenStack metadata
		netip.MustParsePrefix("fe80::/10"),          // IPv6 link-local
		netip.MustParsePrefix("fd00:ec2::254/128"),  // AWS metadata over IPv6
		netip.MustParsePrefix("100.100.100.200/32"), // Alibaba Cloud metadata
	}
	DefaultDenyHosts = []string{"metadata.google.internal", "metadata.goog", "metadata"}
)

// ErrRefused says an address or a name is one a base_url may not reach.
var ErrRefused = errors.New("refused by the deployment's base_url policy")

// Policy is what a base_url may reach. The zero Policy refuses the defaults.
type Policy struct {
	Allow, Deny           []netip.Prefix
	AllowHosts, DenyHosts []string
	// allow and deny are the lists Parse read, as given (Lists).
	allow, deny string
}

// Lists are the operator's lists the policy was parsed from, to hand on (a job's spec).
func (p *Policy) Lists() (allow, deny string) { return p.allow, p.deny }

// Parse reads the operator's lists (comma separated CIDRs, addresses or host names;
// empty for none) into a Policy.
func Parse(allow, deny string) (*Policy, error) {
	p := &Policy{allow: allow, deny: deny}
	for _, l := range []struct {
		name, list string
		nets       *[]netip.Prefix
		hosts      *[]string
	}{{"EVALFLOW_BASE_URL_ALLOW", allow, &p.Allow, &p.AllowHosts}, {"EVALFLOW_BASE_URL_DENY", deny, &p.Deny, &p.DenyHosts}} {
		for _, item := range strings.Split(l.list, ",") {
			item = strings.TrimSpace(item)
			switch pfx, err := parsePrefix(item); {
			case item == "":
			case err == nil:
				*l.nets = append(*l.nets, pfx)
			case strings.ContainsAny(item, "/:") || strings.Trim(item, "0123456789.") == "":
				return nil, fmt.Errorf("netpolicy: %s: %q is neither a CIDR, an address nor a host name", l.name, item)
			default:
				*l.hosts = append(*l.hosts, strings.ToLower(strings.TrimSuffix(item, ".")))
			}
		}
	}
	return p, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.ParsePrefix(s)
}

// CheckURL checks a base_url's host: a name refused by name, or an address refused.
// It does not resolve names (Control checks where they lead).
func (p *Policy) CheckURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("not a URL: %w", err)
	}
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	if a, err := netip.ParseAddr(host); err == nil {
		return p.checkAddr(a)
	}
	if slices.Contains(p.AllowHosts, host) {
		return nil
	}
	if slices.Contains(DefaultDenyHosts, host) || slices.Contains(p.DenyHosts, host) {
		return fmt.Errorf("host %s is %w", host, ErrRefused)
	}
	return nil
}

func (p *Policy) checkAddr(a netip.Addr) error {
	a = a.Unmap()
	in := func(list []netip.Prefix) bool {
		return slices.ContainsFunc(list, func(pfx netip.Prefix) bool { return pfx.Contains(a) })
	}
	if in(p.Allow) {
		return nil
	}
	if in(DefaultDeny) || in(p.Deny) {
		return fmt.Errorf("address %s is %w", a, ErrRefused)
	}
	return nil
}

// Control is a net.Dialer's Control: it refuses a connection to an address the policy
// refuses, whatever name led there.
func (p *Policy) Control(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("netpolicy: %s is not an address", address)
	}
	return p.checkAddr(a)
}

// Transport is http.DefaultTransport's settings with the policy checking every
// connection it dials.
func (p *Policy) Transport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: p.Control}).DialContext
	return t
}
