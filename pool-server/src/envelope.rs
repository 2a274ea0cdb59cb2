//! The outer layer of every HTTP answer: request-size limits checked before any route, and a JSON
//! `{"message"}` for every error response that would otherwise have no body.
//!
//! hyper parses a request's head into a buffer of at most [`HEAD_BUFFER_BYTES`] and answers a
//! head it cannot parse, or one that overflows that buffer, itself, with an empty body (400, 414
//! or 431) before any of our code runs. So the documented limits are set well below hyper's:
//! a URI over [`MAX_URI_BYTES`] gets a JSON 414 and headers over [`MAX_HEADER_BYTES`] in all a
//! JSON 431 from here, and only requests that are not HTTP at all, or that overflow hyper's
//! buffer, get hyper's bare answer.

use axum::Json;
use axum::extract::Request;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The longest request target (path and query) answered; a longer one gets a JSON 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// The most bytes of header names and values in one request; more get a JSON 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// hyper's buffer for one request head (its own bare 431 beyond it), also the most a
/// connection holds of a head it is still reading.
pub const HEAD_BUFFER_BYTES: usize = 64 * 1024;

/// Refuses requests over the URI and header limits, and gives every bodiless error response a
/// JSON `{"message"}`.
pub async fn envelope(request: Request, next: Next) -> Response {
    // Counted as sent, without building a string on every request's path.
    let uri = request.uri().path_and_query().map_or(0, |target| target.as_str().len());
    if uri > MAX_URI_BYTES {
        return refusal(
            StatusCode::URI_TOO_LONG,
            format!("the request target is {uri} bytes long; at most {MAX_URI_BYTES} are read"),
        );
    }
    let headers = header_bytes(request.headers());
    if headers > MAX_HEADER_BYTES {
        return refusal(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("the headers take {headers} bytes; at most {MAX_HEADER_BYTES} are read"),
        );
    }
    let response = next.run(request).await;
    let status = response.status();
    if (status.is_client_error() || status.is_server_error())
        && !response.headers().contains_key(CONTENT_TYPE)
    {
        // A layer's own refusal (the request timeout's 503, say): say what it means.
        let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
        let message = match status {
            StatusCode::SERVICE_UNAVAILABLE => {
                format!("{reason}: the request took too long; try again")
            }
            _ => reason,
        };
        let (mut parts, _) = response.into_parts();
        let fresh = refusal(status, message);
        parts.headers.remove(CONTENT_LENGTH);
        parts.headers.extend(fresh.headers().clone());
        return Response::from_parts(parts, fresh.into_body());
    }
    response
}

fn refusal(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "message": message }))).into_response()
}

fn header_bytes(headers: &HeaderMap) -> usize {
    headers.iter().map(|(name, value)| name.as_str().len() + value.len()).sum()
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    async fn answer(app: Router, uri: &str) -> (StatusCode, Option<String>, String) {
        let request = Request::get(uri).body(Body::empty()).expect("a request");
        let response = app.oneshot(request).await.expect("infallible");
        let status = response.status();
        let content_type =
            response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("a body");
        (status, content_type, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_bodiless_error_gets_a_json_message_and_others_pass_untouched() {
        let app = Router::new()
            .route("/busy", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
            .route("/gone", get(|| async { StatusCode::GONE }))
            .route("/ok", get(|| async { "fine" }))
            .layer(axum::middleware::from_fn(envelope));
        let (status, content_type, body) = answer(app.clone(), "/busy").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(content_type.as_deref(), Some("application/json"));
        assert_eq!(
            body,
            r#"{"message":"service unavailable: the request took too long; try again"}"#
        );
        let (status, _, body) = answer(app.clone(), "/gone").await;
        assert_eq!((status, body.as_str()), (StatusCode::GONE, r#"{"message":"gone"}"#));
        let (status, _, body) = answer(app, "/ok").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "fine"));
    }
}
