//! [`AppError`]: every HTTP failure as a status code and a JSON `{"message": ...}` body.
//!
//! Bad input becomes a 4xx saying what is wrong and is not logged above debug. An internal
//! error becomes a 500 "something went wrong"; its details go to the log, never to the client.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{FromRequest, Request};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::storage::Unavailable;

/// An HTTP request that failed, as the client will see it.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request is well-formed HTTP but its content is wrong (a missing or mistyped field).
    #[error("{0}")]
    BadRequest(String),
    /// The body could not be read as JSON (malformed, wrong content type, too large).
    #[error("{}", .0.body_text())]
    Json(#[from] JsonRejection),
    /// A request to `/ws` that is not a WebSocket upgrade.
    #[error("{}", .0.body_text())]
    Upgrade(#[from] WebSocketUpgradeRejection),
    /// The request is well-formed but conflicts with the current state (a transfer that would
    /// take a balance beyond its bound).
    #[error("{0}")]
    Conflict(String),
    /// No such route.
    #[error(
        "no route for {0}; try GET /last_block, POST /mine, GET /chain, POST /transactions/new or ws://.../ws"
    )]
    NotFound(String),
    /// The next block is full; trying again once it is forged may work.
    #[error("{0}")]
    TooMany(String),
    /// The client sent too many requests of a kind; it may try again after `retry_after`.
    #[error("{message}")]
    RateLimited {
        /// What was limited and how.
        message: String,
        /// When one more request would be allowed.
        retry_after: Duration,
    },
    /// The route exists but not for this method.
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    /// The server is stopping and no longer judges or stores anything.
    #[error("the server is shutting down; try again when it is back")]
    ShuttingDown,
    /// The database cannot be reached (`--database`): nothing was stored, or, for a commit
    /// cut off, the outcome will show in the chain.
    #[error("{0}")]
    Unavailable(String),
    /// Something broke on our side; the details stay in the log.
    #[error("something went wrong")]
    Internal(#[source] anyhow::Error),
}

impl AppError {
    /// Returns the status code this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Json(r) => r.status(),
            AppError::Upgrade(r) => r.status(),
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            AppError::TooMany(_) | AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::ShuttingDown | AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<anyhow::Error> for AppError {
    fn from(e: anyhow::Error) -> Self {
        match e.chain().find_map(|c| c.downcast_ref::<Unavailable>()) {
            Some(Unavailable(message)) => AppError::Unavailable(message.clone()),
            None => AppError::Internal(e),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let AppError::Internal(e) = &self {
            tracing::error!(error = format!("{e:#}"), "internal error");
        } else {
            tracing::debug!(%status, message = %self, "rejected request");
        }
        let mut response = (status, Json(json!({ "message": self.to_string() }))).into_response();
        if let AppError::RateLimited { retry_after, .. } = &self {
            // Whole seconds, rounded up, as the header requires.
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

/// `axum::Json`, but its rejections answer with a JSON `{"message": ...}` body (keeping
/// axum's status: 400 malformed, 413 too large, 415 wrong content type, 422 wrong shape).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(JsonBody(value))
    }
}
