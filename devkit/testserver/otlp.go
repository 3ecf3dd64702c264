package testserver

import (
	"compress/gzip"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// Span is a span an OTLPReceiver received.
type Span struct {
	TraceID, SpanID, ParentID string
	Name, Service             string
	Attributes                map[string]string
}

// OTLPReceiver is an OTLP/HTTP trace receiver (POST /v1/traces, protobuf, as
// OpenTelemetry's exporters send) that keeps what it receives.
type OTLPReceiver struct {
	URL   string // http://127.0.0.1:PORT, an OTEL_EXPORTER_OTLP_ENDPOINT
	mu    sync.Mutex
	spans []Span
}

// NewOTLPReceiver serves an OTLPReceiver on loopback for the test.
func NewOTLPReceiver(t testing.TB) *OTLPReceiver {
	rcv := &OTLPReceiver{}
	srv := httptest.NewServer(http.HandlerFunc(rcv.serve))
	t.Cleanup(srv.Close)
	rcv.URL = srv.URL
	return rcv
}

func (rcv *OTLPReceiver) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
		http.NotFound(w, r)
		return
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	var req coltracepb.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(b, &req)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rcv.mu.Lock()
	for _, rs := range req.ResourceSpans {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.Key == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				attrs := map[string]string{}
				for _, a := range s.Attributes {
					attrs[a.Key] = a.GetValue().GetStringValue()
				}
				rcv.spans = append(rcv.spans, Span{TraceID: hex.EncodeToString(s.TraceId), SpanID: hex.EncodeToString(s.SpanId),
					ParentID: hex.EncodeToString(s.ParentSpanId), Name: s.Name, Service: service, Attributes: attrs})
			}
		}
	}
	rcv.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

// Spans are the spans received so far.
func (rcv *OTLPReceiver) Spans() []Span {
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	return append([]Span(nil), rcv.spans...)
}
