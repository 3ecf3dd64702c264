// Package tracing is evalflow's OpenTelemetry tracing: a run is one trace, from the
// request that starts it to its artifact. Each step's handling of an event is a span,
// the child of the span that sent the event, whose context travels in the event's
// traceparent extension (the CloudEvents distributed-tracing extension); the job's
// runner continues it from its spec, and its requests to the model carry it in their
// traceparent header. Spans are exported over OTLP/HTTP where an endpoint is
// configured (OTEL_EXPORTER_OTLP_ENDPOINT, as OpenTelemetry's own settings say);
// without one, contexts still travel and nothing is exported.
package tracing

import (
	"context"
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
)

var propagator = propagation.TraceContext{}

// Setup installs the process's tracer provider, exporting to the OTLP/HTTP endpoint
// (http://HOST:PORT; "" exports nothing) as service. Call shutdown before exiting: it
// sends what is left.
func Setup(ctx context.Context, service, endpoint string) (shutdown func(context.Context) error, err error) {
	otel.SetTextMapPropagator(propagator)
	if endpoint == "" {
		return func(context.Context) error { return nil }, nil
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(endpoint+"/v1/traces"))
	if err != nil {
		return nil, err
	}
	res := resource.NewWithAttributes(semconv.SchemaURL, semconv.ServiceName(service))
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
}

// Start starts a span named name, the child of ctx's, for run id.
func Start(ctx context.Context, name, runID string) (context.Context, trace.Span) {
	return otel.Tracer("evalflow").Start(ctx, name, trace.WithAttributes(attribute.String("evalflow.run_id", runID)))
}

// End ends span, marking it failed with err when err is not nil.
func End(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// Inject is ctx's span context as W3C trace context (traceparent, tracestate).
func Inject(ctx context.Context) (traceparent, tracestate string) {
	c := propagation.MapCarrier{}
	propagator.Inject(ctx, c)
	return c["traceparent"], c["tracestate"]
}

// Extract is ctx carrying the span context traceparent and tracestate name.
func Extract(ctx context.Context, traceparent, tracestate string) context.Context {
	return propagator.Extract(ctx, propagation.MapCarrier{"traceparent": traceparent, "tracestate": tracestate})
}

// FromRequest is r's context carrying the span context of its traceparent header.
func FromRequest(r *http.Request) context.Context {
	return propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
}

// Transport sends each request in a client span, with its traceparent header.
func Transport(base http.RoundTripper) http.RoundTripper {
	return otelhttp.NewTransport(base, otelhttp.WithPropagators(propagator))
}
