//! The course's HTTP API on the same port as the WebSocket: `GET /last_block`, `POST /mine`,
//! `GET /chain`, `POST /transactions/new`, plus JSON 404 and 405 fallbacks.
//!
//! Handlers only extract, call [`AppState`], and shape the answer. A well-formed proof that
//! loses is a 200 (the course's server answers failures with 200, and course miners only read
//! `message`), with `reason` and `index` added for clients that care.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::IntoResponse;
use protocol::message::{FORGED, MAX_COINS};
use protocol::{MinerId, ProofSubmission, Transaction};
use serde_json::{Value, json};

use crate::error::{AppError, JsonBody};
use crate::ledger::Outcome;
use crate::state::AppState;

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
    Ok(Json(match state.submit(sub).await? {
        Outcome::Accepted(block) => json!({ "message": FORGED, "block": block }),
        Outcome::Rejected { reason, message, index } => {
            json!({ "message": message, "reason": reason, "index": index })
        }
    }))
}

/// `GET /chain`: every block, genesis first.
pub async fn chain(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    let blocks = state.chain().await?;
    Ok(Json(json!({ "length": blocks.len(), "chain": blocks })))
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
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// The fallback for unknown routes: a JSON 404.
pub async fn not_found(uri: Uri) -> AppError {
    AppError::NotFound(uri.path().chars().take(100).collect())
}

/// The fallback for a known route with the wrong method: a JSON 405.
pub async fn method_not_allowed(method: Method) -> AppError {
    AppError::MethodNotAllowed(method.to_string())
}
