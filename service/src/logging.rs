//! Logs: `tracing` to stderr, filtered by `RUST_LOG` (default `info`), as text for people or as
//! one JSON object per line for log collectors (`[log] format`, `--log-format`). Every gRPC call
//! runs in a `grpc` span with its `request_id` ([`crate::grpc::observe`]), and the steps of an
//! instance and of a search in `decode`, `queue`, `encode`, `store` and `search` spans; JSON lines
//! carry those spans' fields. No span or event carries patient data.

use crate::config::LogFormat;

/// An error and its sources, `: `-joined, a source left out when the text already says it: the
/// top-level message of hyper, rustls or tonic alone rarely names the cause.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let next = inner.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = inner.source();
    }
    text
}

/// Installs the process's subscriber; a second call (tests) leaves the first in place.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
}
