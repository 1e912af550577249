//! The `/metrics` handler: reads the figures from the database at each scrape and hands them
//! to `hub::metrics`, which writes the Prometheus text format.

use super::access::MetricsAuth;
use super::gateways::gateway_views;
use crate::hub::HubState;
use crate::hub::error::ApiError;
use crate::protocol::TransferProgress;
use axum::extract::State;

/// `/metrics` in the Prometheus text format.
pub(super) async fn metrics(
    State(state): State<HubState>,
    _: MetricsAuth,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    // One read of the gateways: their lease epochs (failovers) and their views.
    let rows = state.db.gateways().await?;
    let lease_epochs = rows.iter().map(|g| (g.id.clone(), g.lease_epoch)).collect();
    let gateways = gateway_views(&state, &rows).await?;
    let runs = state.db.run_counts().await?;
    let retries = state.db.retries().await?;
    let mut copied: std::collections::HashMap<String, (u64, u64)> = std::collections::HashMap::new();
    for (gateway, progress) in state.db.copied_progress().await? {
        if let Ok(p) = serde_json::from_str::<TransferProgress>(&progress) {
            let total = copied.entry(gateway).or_default();
            total.0 = total.0.saturating_add(p.bytes_done);
            total.1 = total.1.saturating_add(p.files_done);
        }
    }
    let snapshot = crate::hub::metrics::Snapshot {
        gateways: &gateways,
        runs: &runs,
        retries: &retries,
        copied: &copied,
        lease_epochs: &lease_epochs,
    };
    let text = crate::hub::metrics::render(&snapshot, &state.metrics);
    Ok(([(axum::http::header::CONTENT_TYPE, crate::prometheus::CONTENT_TYPE)], text))
}
