//! OpenTelemetry traces. When berthd's `otlp-endpoint` is set, berth's spans (every API call,
//! plugin call, image pull and its layers, container start and its phases) are exported over
//! OTLP/HTTP (protobuf; TLS for an `https://` endpoint, checked against the system's roots or
//! the `otlp-ca` bundle) by a batch processor on its own thread, so a slow or absent collector
//! never holds a call up. A caller's W3C `traceparent` header makes its trace the parent of
//! the call's span. Without an endpoint nothing is exported and the spans stay local.

use std::time::{Duration, SystemTime};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Span as _, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Telemetry failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The exporter could not be built (a bad endpoint).
    #[error("OTLP exporter for {endpoint}: {message}")]
    Exporter {
        /// The configured endpoint.
        endpoint: String,
        /// Why.
        message: String,
    },
    /// The `otlp-ca` bundle could not be read or holds no certificate.
    #[error("OTLP collector CA {path}: {message}")]
    Ca {
        /// The configured file.
        path: String,
        /// Why.
        message: String,
    },
}

impl Error {
    /// How the API would report this error (it is a configuration error).
    pub fn kind(&self) -> berth_api::ErrorKind {
        berth_api::ErrorKind::InvalidArgument
    }
}

/// The tracer provider, kept to flush the last spans at shutdown.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

/// The instrumentation scope of berthd's spans.
const SCOPE: &str = "berthd";

impl Telemetry {
    /// An OTLP/HTTP exporter to `endpoint` (e.g. `http://127.0.0.1:4318/v1/traces`, or an
    /// `https://` URL whose certificate must chain to `ca`, or without one to the system's
    /// roots) and the provider feeding it; installed as the global provider, so spans made
    /// directly with the OpenTelemetry API (the shim's phases) go the same way. Call outside
    /// any async runtime (the HTTP client is blocking, on the processor's thread).
    pub fn otlp(endpoint: &str, ca: Option<&std::path::Path>) -> Result<Telemetry, Error> {
        use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
        const TIMEOUT: Duration = Duration::from_secs(5);
        let mut client = reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .timeout(TIMEOUT);
        if let Some(ca) = ca {
            let bad = |message: String| Error::Ca {
                path: ca.display().to_string(),
                message,
            };
            let pem = std::fs::read(ca).map_err(|e| bad(e.to_string()))?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| bad(format!("not a PEM certificate bundle: {e}")))?;
            if roots.is_empty() {
                return Err(bad("holds no PEM certificate".to_owned()));
            }
            // Like a collector client's OTEL_EXPORTER_OTLP_CERTIFICATE: this CA, no other.
            client = client.tls_built_in_root_certs(false);
            for root in roots {
                client = client.add_root_certificate(root);
            }
        }
        let client = client.build().map_err(|e| Error::Exporter {
            endpoint: endpoint.to_owned(),
            message: format!("building its HTTP client: {e}"),
        })?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_timeout(TIMEOUT)
            .with_headers(Default::default())
            .build()
            .map_err(|e| Error::Exporter {
                endpoint: endpoint.to_owned(),
                message: e.to_string(),
            })?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("berthd")
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        Ok(Telemetry { provider })
    }

    /// The `tracing` layer that turns berth's spans into OpenTelemetry spans.
    pub fn layer<S>(
        &self,
    ) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer(SCOPE))
    }

    /// Exports what is left; blocking (call after the runtime has stopped).
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("berthd: the last spans may not have been exported: {e}");
        }
    }
}

/// The `traceparent` header of a call's HTTP request, carried to the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent(pub String);

struct OneHeader<'a>(&'a str);

impl Extractor for OneHeader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

/// Makes the caller's trace the parent of `span`, if `traceparent` is a valid W3C header;
/// anything else is ignored (a bad header must not fail a call).
pub fn adopt(span: &tracing::Span, traceparent: &str) {
    let context = TraceContextPropagator::new().extract(&OneHeader(traceparent));
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// Records finished phases (name, start, end) as child spans of the current span, with
/// their real times: the shim measures its phases in another process, and reports them
/// when the container has started.
pub fn record_phases(phases: &[(&'static str, SystemTime, SystemTime)]) {
    if phases.is_empty() {
        return;
    }
    let parent = tracing::Span::current().context();
    if !parent.span().span_context().is_valid() {
        return;
    }
    let tracer = opentelemetry::global::tracer(SCOPE);
    for (name, start, end) in phases {
        let mut span = tracer
            .span_builder(*name)
            .with_start_time(*start)
            .start_with_context(&tracer, &parent);
        span.end_with_timestamp(*end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceId;
    use opentelemetry_sdk::trace::InMemorySpanExporter;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn a_collector_ca_that_is_no_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = "https://127.0.0.1:4318/v1/traces";
        let missing = dir.path().join("missing.pem");
        let e = Telemetry::otlp(endpoint, Some(&missing)).unwrap_err();
        assert!(matches!(e, Error::Ca { .. }), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = Telemetry::otlp(endpoint, Some(&empty))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no PEM certificate") && e.contains("empty.pem"),
            "{e}"
        );
    }

    #[test]
    fn spans_adopt_the_callers_trace_and_phases_nest_under_them() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer(SCOPE)));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("rpc.call", otel.name = "container.start");
            adopt(
                &span,
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            );
            span.in_scope(|| {
                let start = SystemTime::now();
                record_phases(&[("shim.cgroup", start, start + Duration::from_millis(2))]);
            });
            // A header that is not one is ignored.
            let other = tracing::info_span!("rpc.call", otel.name = "system.ping");
            adopt(&other, "garbage");
            drop(other);
            drop(span);
        });
        let _ = provider.force_flush();
        let spans = exporter.get_finished_spans().unwrap();
        let trace = TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap();
        let call = spans.iter().find(|s| s.name == "container.start").unwrap();
        assert_eq!(call.span_context.trace_id(), trace);
        assert_eq!(call.parent_span_id.to_string(), "b7ad6b7169203331");
        let phase = spans.iter().find(|s| s.name == "shim.cgroup").unwrap();
        assert_eq!(phase.span_context.trace_id(), trace);
        assert_eq!(phase.parent_span_id, call.span_context.span_id());
        let took = phase.end_time.duration_since(phase.start_time).unwrap();
        assert_eq!(took, Duration::from_millis(2));
        let ping = spans.iter().find(|s| s.name == "system.ping").unwrap();
        assert_ne!(ping.span_context.trace_id(), trace);
    }
}
