//! One small, bounded `GET` of a JSON route beside the endpoint mined on (`ws://H/ws` →
//! `http://H/…`, `wss://` → `https://`; under the base URL in the course HTTP mode), in the
//! background: the shared part of the balance and workers probes.
//!
//! At most one request in flight, each under [`BALANCE_TIMEOUT`] and reading at most the
//! probe's body cap. A server without the route (a course Flask server answers 404) is not
//! asked again.

use reqwest::{Client, StatusCode};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::task::JoinHandle;
use url::Url;

use crate::cli::Endpoint;
use crate::http_body::read_capped;
use crate::limits::BALANCE_TIMEOUT;

/// Asks one route of the server, now and then.
pub(crate) struct RouteProbe {
    client: Client,
    url: Url,
    max_body: usize,
    /// False once the server answered 404: it has no such route.
    supported: Arc<AtomicBool>,
    pending: Option<JoinHandle<()>>,
}

impl RouteProbe {
    /// Returns a probe of the route `segments` beside `endpoint`, reading at most `max_body`
    /// bytes of an answer; `None` when no URL can be made.
    pub(crate) fn new(
        endpoint: &Endpoint,
        segments: &[&str],
        client: Client,
        max_body: usize,
    ) -> Option<Self> {
        Some(RouteProbe {
            client,
            url: route_url(endpoint, segments)?,
            max_body,
            supported: Arc::new(AtomicBool::new(true)),
            pending: None,
        })
    }

    /// Returns true when a request may start: the route is there and none is in flight.
    pub(crate) fn ready(&self) -> bool {
        self.supported.load(Ordering::Relaxed)
            && self.pending.as_ref().is_none_or(|p| p.is_finished())
    }

    /// Asks in the background and hands the answer (`None` on any failure) to `then`. Only
    /// when [`RouteProbe::ready`].
    pub(crate) fn spawn(&mut self, then: impl FnOnce(Option<Value>) + Send + 'static) {
        let (client, url, supported) =
            (self.client.clone(), self.url.clone(), self.supported.clone());
        let max_body = self.max_body;
        self.pending = Some(tokio::spawn(async move {
            then(get_json(&client, &url, &supported, max_body).await);
        }));
    }

    /// Stops a request in flight, then asks once more and waits for the answer (`None` on any
    /// failure, or when the route is missing).
    pub(crate) async fn ask_now(&mut self) -> Option<Value> {
        if let Some(pending) = self.pending.take() {
            pending.abort();
        }
        if !self.supported.load(Ordering::Relaxed) {
            return None;
        }
        get_json(&self.client, &self.url, &self.supported, self.max_body).await
    }
}

impl Drop for RouteProbe {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            pending.abort();
        }
    }
}

/// Returns the URL of the HTTP route `segments` (each percent-encoded as one segment) beside
/// `endpoint`: `ws://H/ws` → `http://H/…`, `wss://` → `https://`; under the base URL in the
/// course HTTP mode.
pub(crate) fn route_url(endpoint: &Endpoint, segments: &[&str]) -> Option<Url> {
    let mut url = match endpoint {
        Endpoint::WebSocket(ws) => {
            let mut url = ws.clone();
            let scheme = if ws.scheme() == "wss" { "https" } else { "http" };
            url.set_scheme(scheme).ok()?;
            url.set_path("/");
            url
        }
        Endpoint::Http { base, .. } => base.clone(),
    };
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut().ok()?.pop_if_empty().extend(segments);
    Some(url)
}

/// One bounded `GET` of a JSON answer; `None` on any failure. A 404 marks the route as missing.
async fn get_json(
    client: &Client,
    url: &Url,
    supported: &AtomicBool,
    max_body: usize,
) -> Option<Value> {
    let answer = tokio::time::timeout(BALANCE_TIMEOUT, async {
        let response = client.get(url.clone()).timeout(BALANCE_TIMEOUT).send().await.ok()?;
        if response.status() == StatusCode::NOT_FOUND {
            supported.store(false, Ordering::Relaxed);
            return None;
        }
        if !response.status().is_success() {
            return None;
        }
        let body = read_capped(response, max_body).await.ok()?;
        serde_json::from_slice(&body).ok()
    })
    .await;
    answer.ok().flatten()
}
