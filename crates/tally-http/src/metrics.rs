//! Request metrics in the Prometheus text format.
//!
//! Two counters per route and status are kept: `http_requests_total` and the
//! `http_request_duration_seconds` histogram, labelled by method, *matched*
//! path (`/v1/payments/{id}`, never the raw path, so ids cannot blow up the
//! label space) and status.
//!
//! Where they are recorded is the [`Metrics`] value in the config:
//!
//! - [`Metrics::local`] (the default) builds a Prometheus recorder that is
//!   **not** installed globally; the middleware records into it with
//!   `metrics::with_local_recorder`, and `/metrics` renders it. Every router
//!   has its own, so tests (and simulated instances) running in one process
//!   never share or fight over the global recorder.
//! - [`Metrics::global`] takes the handle of a recorder the binary installed
//!   globally (see [`Metrics::builder`]): then metrics recorded anywhere in
//!   the process through the `metrics` macros show up in `/metrics` too.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

const REQUESTS_TOTAL: &str = "http_requests_total";
const REQUEST_DURATION: &str = "http_request_duration_seconds";
const REFUSED_TOTAL: &str = "http_refused_total";

/// Latency buckets in seconds: from a fast in-memory answer (~1 ms) up to the
/// request timeout (30 s).
const DURATION_BUCKETS: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The label used for requests no route matched.
pub const UNMATCHED_PATH: &str = "unmatched";

#[derive(Clone)]
pub enum Metrics {
    /// A recorder private to one router.
    Local(Arc<PrometheusRecorder>),
    /// The process-wide recorder, installed by the binary.
    Global(PrometheusHandle),
}

impl Metrics {
    /// A builder with this crate's histogram buckets, for a binary that
    /// installs the recorder globally (`Metrics::builder().install_recorder()`).
    pub fn builder() -> PrometheusBuilder {
        PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.to_owned()), &DURATION_BUCKETS)
            .expect("the bucket list is not empty")
    }

    pub fn local() -> Metrics {
        Metrics::Local(Arc::new(Metrics::builder().build_recorder()))
    }

    pub fn global(handle: PrometheusHandle) -> Metrics {
        Metrics::Global(handle)
    }

    /// The Prometheus text exposition of everything recorded so far.
    pub fn render(&self) -> String {
        match self {
            Metrics::Local(recorder) => recorder.handle().render(),
            Metrics::Global(handle) => handle.render(),
        }
    }

    pub(crate) fn record_request(&self, method: &str, path: &str, status: u16, elapsed: Duration) {
        self.record(|| {
            let labels = [("method", method.to_owned()), ("path", path.to_owned()), ("status", status.to_string())];
            metrics::counter!(REQUESTS_TOTAL, &labels).increment(1);
            metrics::histogram!(REQUEST_DURATION, &labels).record(elapsed.as_secs_f64());
        });
    }

    /// Counts a request or connection refused by a limit, in
    /// `http_refused_total{limit=…}` (`rate_limited`, `connection_limit`).
    pub(crate) fn record_refusal(&self, limit: &'static str) {
        self.record(|| metrics::counter!(REFUSED_TOTAL, "limit" => limit).increment(1));
    }

    fn record(&self, record: impl FnOnce()) {
        match self {
            Metrics::Local(recorder) => metrics::with_local_recorder(recorder.as_ref(), record),
            Metrics::Global(_) => record(),
        }
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Metrics::Local(_) => f.write_str("Metrics::Local"),
            Metrics::Global(_) => f.write_str("Metrics::Global"),
        }
    }
}
