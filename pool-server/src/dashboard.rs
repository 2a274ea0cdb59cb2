//! The live dashboard and what it reads: `GET /` (and its CSS and JS, embedded in the binary),
//! `GET /balances`, `GET /balance/{id}` and `GET /metrics`.
//!
//! The page itself is a WebSocket client of `/ws` (see `assets/dashboard.js`): it gets blocks
//! from the broadcast and asks for `{"type": "stats"}` after each one, so it never polls these
//! routes; they are for scripts and Prometheus.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use protocol::MinerId;
use serde_json::{Value, json};

use crate::error::AppError;
use crate::metrics;
use crate::state::AppState;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const DASHBOARD_CSS: &str = include_str!("../assets/dashboard.css");
const DASHBOARD_JS: &str = include_str!("../assets/dashboard.js");

/// Serves an embedded asset. `no-cache` makes browsers revalidate, so a new server binary's page
/// is picked up on the next load.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")], body).into_response()
}

/// `GET /`: the dashboard page.
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /dashboard.css`.
pub async fn css() -> Response {
    asset("text/css; charset=utf-8", DASHBOARD_CSS)
}

/// `GET /dashboard.js`.
pub async fn js() -> Response {
    asset("text/javascript; charset=utf-8", DASHBOARD_JS)
}

/// `GET /balances`: `{"balances": [{"id", "coins"}, ...]}`, highest first, ties by id.
pub async fn balances(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "balances": state.balances().page(0, usize::MAX) }))
}

/// `GET /balance/{id}`: `{"id", "coins"}`; 0 coins for an id the chain never mentions. The id
/// follows the rules of ids in proofs ([`MinerId`]: trimmed, printable, at most 128 bytes).
///
/// # Errors
/// A 400 when the path segment is not valid percent-encoded UTF-8 or not a valid id.
pub async fn balance(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, AppError> {
    let Path(id) = id.map_err(|e| AppError::BadRequest(e.body_text()))?;
    let id = MinerId::parse(&id).map_err(|e| AppError::BadRequest(format!("the id {e}")))?;
    Ok(Json(json!({ "id": id.as_str(), "coins": state.coins(id.as_str()) })))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(CONTENT_TYPE, metrics::CONTENT_TYPE), (CACHE_CONTROL, "no-cache")],
        state.metrics_text().await,
    )
        .into_response()
}
