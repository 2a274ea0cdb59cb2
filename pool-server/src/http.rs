//! The course's HTTP API on the same port as the WebSocket: `GET /last_block`, `POST /mine`,
//! `GET /chain`, `POST /transactions/new`, plus JSON 404 and 405 fallbacks.
//!
//! Handlers only extract, call [`AppState`], and shape the answer. A well-formed proof that
//! loses is a 200 (the course's server answers failures with 200, and course miners only read
//! `message`), with `reason` and `index` added for clients that care.

use std::net::SocketAddr;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use protocol::message::{FORGED, MAX_COINS};
use protocol::{MinerId, ProofSubmission, Transaction};
use serde_json::{Value, json};

use crate::error::{AppError, JsonBody};
use crate::ledger::Outcome;
use crate::state::AppState;
use crate::state::WORKER_WINDOW;

/// `GET /last_block`: the block to mine on and the difficulty.
pub async fn last_block(State(state): State<AppState>) -> Json<Value> {
    let latest = state.latest();
    Json(json!({ "last_block": latest.block, "difficulty": state.difficulty() }))
}

/// `POST /mine` `{"proof", "id"}` (optional `"index"`): the course's proof submission.
pub async fn mine(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, AppError> {
    state.allow_proof(peer.ip())?;
    let sub =
        ProofSubmission::from_value(&body).map_err(|e| AppError::BadRequest(e.to_string()))?;
    Ok(Json(match state.submit(sub, None).await? {
        Outcome::Accepted(block) => json!({ "message": FORGED, "block": block }),
        Outcome::Rejected { reason, message, index } => {
            json!({ "message": message, "reason": reason, "index": index })
        }
    }))
}

/// `GET /workers`: each miner's share figures over the last [`WORKER_WINDOW`]
/// (`crate::state::WORKER_WINDOW`), most work first, at most
/// [`MAX_WORKERS`](crate::state::MAX_WORKERS).
pub async fn workers(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    let workers = state.workers().await?;
    Ok(Json(json!({ "window": WORKER_WINDOW.as_secs(), "workers": &*workers })))
}

/// The most blocks one page of `GET /chain?from=&limit=` holds (and its default size).
pub const MAX_CHAIN_PAGE: u64 = 1_000;

/// `GET /chain`: every block, genesis first, as the course's server answers; or, with `from`
/// (a block index, default 1) and/or `limit` (1 to [`MAX_CHAIN_PAGE`], default
/// [`MAX_CHAIN_PAGE`]), the page of blocks `from..from+limit`. The answer is
/// `{"length", "from", "next", "chain"}`: `length` the whole chain's, `next` the index to ask for
/// next (`null` when the page reaches the end).
///
/// Streamed from the pre-serialised [`Snapshot`](crate::chain_json::Snapshot) without the
/// ledger lock: nothing is built per request but the first line, and a slow reader holds only
/// references to bytes the chain keeps anyway, so a bare `GET /chain` stays whole whatever the
/// chain's length.
///
/// # Errors
/// A 400 when `from` or `limit` is not a number in range.
pub async fn chain(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, AppError> {
    let page = Page::parse(query.as_deref(), MAX_CHAIN_PAGE, "a block index; the genesis block is")
        .map_err(AppError::BadRequest)?;
    let snapshot = state.chain_json();
    let length = snapshot.len();
    let (from, to) = match page {
        None => (1, length + 1),
        Some(Page { from, limit }) => (from, from.saturating_add(limit)),
    };
    let next = if to <= length { to.to_string() } else { "null".to_owned() };
    let head = format!(r#"{{"length":{length},"from":{from},"next":{next},"chain":["#);
    let (blocks, blocks_len) = snapshot.blocks(from - 1, to - 1);
    let tail: &'static [u8] = b"]}";
    let content_length = head.len() + blocks_len + tail.len();
    let chunks = std::iter::once(Bytes::from(head))
        .chain(blocks)
        .chain(std::iter::once(Bytes::from_static(tail)))
        .map(Ok::<_, std::convert::Infallible>);
    Ok((
        [
            (CONTENT_TYPE, "application/json".to_owned()),
            (CONTENT_LENGTH, content_length.to_string()),
        ],
        Body::from_stream(futures_util::stream::iter(chunks)),
    )
        .into_response())
}

/// The `from` and `limit` of a paged `GET /chain` or `GET /balances`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Page {
    /// The first item asked for, from 1.
    pub(crate) from: u64,
    /// How many at most: 1 to the route's maximum.
    pub(crate) limit: u64,
}

impl Page {
    /// Reads `from` and `limit` from a query string; `None` when neither is there (the whole
    /// list). `limit` is 1 to `max` (default `max`); `first` says what `from` counts, for the
    /// message when it is 0 ("… 1"). Other parameters are ignored.
    pub(crate) fn parse(
        query: Option<&str>,
        max: u64,
        first: &str,
    ) -> Result<Option<Page>, String> {
        let (mut from, mut limit) = (None, None);
        for pair in query.unwrap_or("").split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match key {
                "from" => &mut from,
                "limit" => &mut limit,
                _ => continue,
            };
            if slot.is_some() {
                return Err(format!("{key:?} is given twice"));
            }
            let number = value
                .parse::<u64>()
                .ok()
                .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| {
                    let shown: String = value.chars().take(40).collect();
                    format!("{key:?} must be a non-negative integer, got {shown:?}")
                })?;
            *slot = Some(number);
        }
        if from.is_none() && limit.is_none() {
            return Ok(None);
        }
        let from = from.unwrap_or(1);
        if from == 0 {
            return Err(format!("\"from\" is {first} 1"));
        }
        let limit = limit.unwrap_or(max);
        if !(1..=max).contains(&limit) {
            return Err(format!("\"limit\" must be between 1 and {max}, got {limit}"));
        }
        Ok(Some(Page { from, limit }))
    }
}

/// `POST /transactions/new` `{"sender", "recipient", "amount"}`: queues a transaction for the
/// next block.
pub async fn new_transaction(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    JsonBody(body): JsonBody<Value>,
) -> Result<impl IntoResponse, AppError> {
    state.allow_transaction(peer.ip())?;
    let t = transaction_from_value(&body).map_err(AppError::BadRequest)?;
    let index = state.add_transaction(t).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "message": format!("Transaction will be added to Block {index}") })),
    ))
}

/// Checks a transaction's fields: `sender` and `recipient` valid ids (printable, non-empty after
/// trimming, at most 128 characters: see [`MinerId`]; `sender` not `"0"`, which marks mining
/// rewards), `amount` a positive integer of at most [`MAX_COINS`].
fn transaction_from_value(body: &Value) -> Result<Transaction, String> {
    let obj = body.as_object().ok_or("expected a JSON object")?;
    let party = |field: &str| -> Result<String, String> {
        match obj.get(field) {
            None => Err(format!("missing field {field:?}")),
            Some(Value::String(s)) => {
                MinerId::parse(s).map(MinerId::into_string).map_err(|e| format!("{field:?} {e}"))
            }
            Some(v) => Err(format!("{field:?} must be a string, got {v}")),
        }
    };
    let sender = party("sender")?;
    let recipient = party("recipient")?;
    if sender == protocol::block::REWARD_SENDER {
        return Err("sender \"0\" is reserved for mining rewards".to_owned());
    }
    let amount = match obj.get("amount") {
        None => return Err("missing field \"amount\"".to_owned()),
        Some(v) => {
            v.as_u64().filter(|a| (1..=MAX_COINS.unsigned_abs()).contains(a)).ok_or_else(|| {
                format!("\"amount\" must be a positive integer of at most {MAX_COINS}, got {v}")
            })?
        }
    };
    Ok(Transaction { sender, recipient, amount })
}

/// The OpenAPI 3 document of these routes, errors included (`pool-server/openapi.json`).
pub const OPENAPI: &str = include_str!("../openapi.json");

/// `GET /openapi.json`: the OpenAPI document, as written (schemathesis tests the server
/// against it).
pub async fn openapi() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], OPENAPI)
}

/// The fallback for unknown routes: a JSON 404.
pub async fn not_found(uri: Uri) -> AppError {
    AppError::NotFound(uri.path().chars().take(100).collect())
}

/// The fallback for a known route with the wrong method: a JSON 405.
pub async fn method_not_allowed(method: Method) -> AppError {
    AppError::MethodNotAllowed(method.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_page_parameters() {
        let parse = |query| Page::parse(query, MAX_CHAIN_PAGE, "an index from");
        let page = |from, limit| Ok(Some(Page { from, limit }));
        assert_eq!(parse(None), Ok(None));
        assert_eq!(parse(Some("")), Ok(None));
        assert_eq!(parse(Some("x=1&y")), Ok(None));
        assert_eq!(parse(Some("from=5")), page(5, MAX_CHAIN_PAGE));
        assert_eq!(parse(Some("limit=7")), page(1, 7));
        assert_eq!(parse(Some("limit=1000&from=3&x")), page(3, 1000));
        for bad in [
            "from=0",
            "from=-1",
            "from=+1",
            "from=",
            "from",
            "from=1e3",
            "limit=0",
            "limit=1001",
            "from=1&from=2",
            "from=99999999999999999999",
            "limit=%31",
        ] {
            assert!(parse(Some(bad)).is_err(), "{bad}");
        }
    }
}
