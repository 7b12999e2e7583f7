//! Logging: `tracing` with an env filter (`RUST_LOG`, default `info`), text or JSON lines, on
//! standard error, so that commands which print results (`clients create`, `openapi`) keep standard
//! output for them.
//!
//! Tracing, optional: with `TESSERA_OTLP_ENDPOINT` set, each request's span (method, path, request
//! id, status — never headers, query strings or bodies) is exported to an OpenTelemetry collector
//! over OTLP/HTTP (protobuf), in batches from a background thread, so a slow or absent collector
//! never delays a request; spans are dropped, not queued without bound, when it cannot keep up.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{trace::SdkTracerProvider, Resource};
use tracing_subscriber::{filter::filter_fn, fmt, prelude::*, EnvFilter, Layer};

use crate::config::LogFormat;

/// Flushes exported spans when dropped (at the end of `serve`).
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// The OTLP/HTTP traces URL for `endpoint`: a base URL (`http://collector:4318`) gets the
/// standard `/v1/traces` path; a URL with a path is used as given.
pub fn traces_url(endpoint: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    let after_scheme = trimmed.split_once("://").map_or(trimmed, |(_, rest)| rest);
    if after_scheme.contains('/') {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/v1/traces")
    }
}

fn tracer_provider(endpoint: &str) -> Option<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(traces_url(endpoint))
        .with_timeout(std::time::Duration::from_secs(10))
        .build();
    match exporter {
        Ok(exporter) => Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(Resource::builder().with_service_name("tessera").build())
                .build(),
        ),
        Err(e) => {
            eprintln!("tessera: TESSERA_OTLP_ENDPOINT: cannot export traces: {e}");
            None
        }
    }
}

/// Installs the global subscriber (once; later calls are ignored), exporting request spans to
/// `otlp_endpoint` when one is given. Keep the returned value alive while serving.
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let Some(provider) = otlp_endpoint.and_then(tracer_provider) else {
        // Without a collector, one global filter: callsites below it are never even built (the
        // request span is DEBUG), so logging costs nothing per request.
        let _ = tracing_subscriber::registry().with(filter).with(log_layer(format)).try_init();
        return Telemetry { provider: None };
    };
    // With one, the filter applies to the log lines only, and only the request spans (with the
    // events at INFO or above inside them) go to the collector, whatever RUST_LOG says.
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("tessera")).with_filter(filter_fn(|meta| {
        if meta.is_span() {
            meta.name() == "request"
        } else {
            *meta.level() <= tracing::Level::INFO
        }
    }));
    let _ = tracing_subscriber::registry().with(otel).with(log_layer(format).with_filter(filter)).try_init();
    Telemetry { provider: Some(provider) }
}

fn log_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    match format {
        LogFormat::Json => {
            fmt::layer().json().flatten_event(true).with_current_span(true).with_writer(std::io::stderr).boxed()
        }
        // Colour only for a person at a terminal: escape codes in a file or a collector are noise.
        LogFormat::Text => fmt::layer()
            .with_target(false)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_endpoint_gets_the_standard_traces_path() {
        assert_eq!(traces_url("http://collector:4318"), "http://collector:4318/v1/traces");
        assert_eq!(traces_url("http://collector:4318/"), "http://collector:4318/v1/traces");
        assert_eq!(traces_url("https://otel.example/api/v1/traces"), "https://otel.example/api/v1/traces");
    }
}
