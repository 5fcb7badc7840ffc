//! The Prometheus recorder of the examples (included with `#[path]`: not an example itself):
//! the oauth-as server's `/metrics`, and `loadgen`, which measures the store as that server
//! records it.

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// OpenTelemetry's recommended bucket boundaries for `db.client.operation.duration`, in
/// seconds.
const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
];

/// Installs a Prometheus recorder as the `metrics` facade's global recorder, with the
/// operation durations as histograms of OpenTelemetry's buckets (not the exporter's default
/// summaries, which cannot be added up across server instances). The caller runs its
/// upkeep ([`PrometheusHandle::run_upkeep`]), which drains the histograms' buffers.
pub fn install_recorder() -> Result<PrometheusHandle, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            // par_store::metrics::OPERATION_DURATION, spelled out: that module needs the
            // `metrics` feature, and the server exports its own metrics without it.
            Matcher::Full("db.client.operation.duration".to_owned()),
            &DURATION_BUCKETS,
        )?
        .install_recorder()
}
