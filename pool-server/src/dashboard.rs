//! The live dashboard and what it reads: `GET /` (and its CSS and JS, embedded in the binary),
//! `GET /balances`, `GET /balance/{id}` and `GET /metrics`.
//!
//! The page itself is a WebSocket client of `/ws` (see `assets/dashboard.js`): it gets blocks
//! from the broadcast and asks for `{"type": "stats"}` after each one, so it never polls these
//! routes; they are for scripts and Prometheus.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use protocol::MinerId;
use serde_json::{Value, json};

use crate::error::AppError;
use crate::http::Page;
use crate::metrics;
use crate::state::AppState;

/// The most balances one page of `GET /balances?from=&limit=` holds (and its default size).
pub const MAX_BALANCES_PAGE: u64 = 1_000;

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

/// `GET /balances`: `{"length", "from", "next", "balances": [{"id", "coins"}, ...]}`, highest
/// first, ties by id: every id, or with `from` (a place in that order, from 1) and/or `limit`
/// (1 to [`MAX_BALANCES_PAGE`], default [`MAX_BALANCES_PAGE`]) the page of places
/// `from..from+limit`. `length` is the number of ids; `next` the `from` of the next page, `null`
/// at the end.
///
/// Both read a snapshot of the ranking taken without the ledger lock, which costs a pointer per
/// few hundred ids (see [`crate::ranking`]). The whole list is streamed from the ranking's JSON,
/// serialised once per changed part and shared by every reader, so a reader that stops reading
/// holds references to it (and hyper's few queued chunks), never a copy; the server's write
/// deadline drops it.
///
/// # Errors
/// A 400 when `from` or `limit` is not a number in range.
pub async fn balances(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, AppError> {
    let page =
        Page::parse(query.as_deref(), MAX_BALANCES_PAGE, "a place in the ranking; the first is")
            .map_err(AppError::BadRequest)?;
    let standings = state.balances();
    let length = standings.len() as u64;
    let Some(Page { from, limit }) = page else {
        let head = format!(r#"{{"length":{length},"from":1,"next":null,"balances":["#);
        let chunks = std::iter::once(Bytes::from(head))
            .chain(standings.json())
            .chain(std::iter::once(Bytes::from_static(b"]}")))
            .map(Ok::<_, std::convert::Infallible>);
        let body = Body::from_stream(futures_util::stream::iter(chunks));
        return Ok(([(CONTENT_TYPE, "application/json")], body).into_response());
    };
    let to = from.saturating_add(limit);
    let start = usize::try_from(from - 1).unwrap_or(usize::MAX);
    let balances = standings.page(start, limit as usize);
    let next = (to <= length).then_some(to);
    Ok(Json(json!({ "length": length, "from": from, "next": next, "balances": balances }))
        .into_response())
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
