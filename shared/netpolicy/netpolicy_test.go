package netpolicy_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/evalflow/evalflow/shared/netpolicy"
)

func TestURLsOfMetadataServicesAreRefusedByDefault(t *testing.T) {
	p, err := netpolicy.Parse("", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"http://169.254.169.254/latest/meta-data", "http://[fe80::1]:80/v1", "http://metadata.google.internal/computeMetadata/v1",
		"http://METADATA.google.internal./v1", "http://[fd00:ec2::254]/v1", "http://100.100.100.200/v1", "http://[::ffff:169.254.169.254]/v1"} {
		if err := p.CheckURL(u); !errors.Is(err, netpolicy.ErrRefused) {
			t.Errorf("%s: %v; want refused", u, err)
		}
	}
	for _, u := range []string{"http://127.0.0.1:11434/v1", "https://api.openai.com/v1", "http://10.200.0.1:8000/v1", "http://[::1]:8000/v1"} {
		if err := p.CheckURL(u); err != nil {
			t.Errorf("%s: %v; want allowed", u, err)
		}
	}
}

func TestTheOperatorsListsAddAndAllow(t *testing.T) {
	p, err := netpolicy.Parse("169.254.10.0/24, metadata", "10.0.0.0/8,models.internal, 192.168.1.7")
	if err != nil {
		t.Fatal(err)
	}
	for u, refused := range map[string]bool{
		"http://169.254.10.5/v1": false, "http://169.254.169.254/v1": true, "http://metadata/v1": false,
		"http://10.1.2.3/v1": true, "http://models.internal:8000/v1": true, "http://192.168.1.7/v1": true, "http://192.168.1.8/v1": false,
	} {
		if err := p.CheckURL(u); errors.Is(err, netpolicy.ErrRefused) != refused {
			t.Errorf("%s: %v; want refused %v", u, err, refused)
		}
	}
	if allow, deny := p.Lists(); !strings.Contains(allow, "169.254.10.0/24") || !strings.Contains(deny, "models.internal") {
		t.Errorf("Lists() = %q, %q", allow, deny)
	}
	for _, bad := range []string{"10.0.0.0/33", "1.2.3", "a/b", "::zz"} {
		if _, err := netpolicy.Parse("", bad); err == nil || !strings.Contains(err.Error(), "EVALFLOW_BASE_URL_DENY") {
			t.Errorf("deny %q: %v; want an error naming the setting", bad, err)
		}
	}
}

// A name that resolves to a refused address gets no connection: the policy checks
// where each connection goes, not only the URL.
func TestAConnectionToARefusedAddressIsNeverMade(t *testing.T) {
	var asked atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { asked.Add(1) }))
	defer srv.Close()
	port := srv.URL[strings.LastIndexByte(srv.URL, ':'):]
	refusing, _ := netpolicy.Parse("", "127.0.0.0/8")
	if err := refusing.CheckURL("http://localhost" + port); err != nil {
		t.Fatalf("the URL names no refused address, yet: %v", err)
	}
	_, err := (&http.Client{Transport: refusing.Transport()}).Get("http://localhost" + port)
	if !errors.Is(err, netpolicy.ErrRefused) || asked.Load() != 0 {
		t.Fatalf("GET localhost under a policy refusing 127.0.0.0/8: %v, %d requests", err, asked.Load())
	}
	allowing, _ := netpolicy.Parse("127.0.0.1", "127.0.0.0/8")
	resp, err := (&http.Client{Transport: allowing.Transport()}).Get("http://127.0.0.1" + port)
	if err != nil || asked.Load() != 1 {
		t.Fatalf("an allowed address: %v, %d requests", err, asked.Load())
	}
	resp.Body.Close()
}
