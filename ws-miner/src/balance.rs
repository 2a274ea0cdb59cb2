//! The id's balance on the server, shown beside this run's coins: `GET /balance/{id}` on the
//! HTTP side of the server mined on (`ws://H/ws` → `http://H/balance/{id}`, `wss://` →
//! `https://`; in the course HTTP mode, under the base URL).
//!
//! Cheap and bounded: at most one request in flight, one per win and one for the summary, each
//! under [`BALANCE_TIMEOUT`]. A server without the route (a course Flask server answers 404) is
//! not asked again, and nothing is printed about it.

use reqwest::{Client, StatusCode};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::task::JoinHandle;
use url::Url;

use crate::cli::Endpoint;
use crate::http_body::read_capped;
use crate::limits::BALANCE_TIMEOUT;
use crate::output::{Event, Reporter};

/// The most bytes of a `/balance/{id}` answer read (it is a few dozen).
const MAX_BALANCE_BODY_BYTES: usize = 16 * 1024;

/// Asks the server for the id's coins.
pub(crate) struct BalanceProbe {
    client: Client,
    url: Url,
    id: String,
    /// False once the server answered 404: it has no such route.
    supported: Arc<AtomicBool>,
    pending: Option<JoinHandle<()>>,
}

impl BalanceProbe {
    /// Returns a probe for `id` on the server at `endpoint`, or `None` when no URL can be made.
    pub(crate) fn new(endpoint: &Endpoint, id: &str, client: Client) -> Option<Self> {
        let url = balance_url(endpoint, id)?;
        Some(BalanceProbe {
            client,
            url,
            id: id.to_owned(),
            supported: Arc::new(AtomicBool::new(true)),
            pending: None,
        })
    }

    /// After a win: fetches the balance in the background and reports it with `coins` (this
    /// run's), unless a fetch is still in flight or the server has no such route.
    pub(crate) fn after_win(&mut self, coins: u64, reporter: &Reporter) {
        if self.pending.as_ref().is_some_and(|p| !p.is_finished())
            || !self.supported.load(Ordering::Relaxed)
        {
            return;
        }
        let (client, url, supported) =
            (self.client.clone(), self.url.clone(), self.supported.clone());
        let (id, reporter) = (self.id.clone(), reporter.clone());
        self.pending = Some(tokio::spawn(async move {
            if let Some(server_coins) = fetch(&client, &url, &supported).await {
                reporter.emit(Event::Balance { id, coins, server_coins });
            }
        }));
    }

    /// Stops a fetch in flight (the run is ending), then fetches once more for the summary.
    pub(crate) async fn for_summary(&mut self) -> Option<i64> {
        if let Some(pending) = self.pending.take() {
            pending.abort();
        }
        if !self.supported.load(Ordering::Relaxed) {
            return None;
        }
        fetch(&self.client, &self.url, &self.supported).await
    }
}

/// Returns the `/balance/{id}` URL beside `endpoint`, the id percent-encoded as one segment.
pub(crate) fn balance_url(endpoint: &Endpoint, id: &str) -> Option<Url> {
    route_url(endpoint, &["balance", id])
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

/// One bounded `GET`; `None` on any failure. A 404 marks the route as missing.
async fn fetch(client: &Client, url: &Url, supported: &AtomicBool) -> Option<i64> {
    let answer = tokio::time::timeout(BALANCE_TIMEOUT, async {
        let response = client.get(url.clone()).timeout(BALANCE_TIMEOUT).send().await.ok()?;
        if response.status() == StatusCode::NOT_FOUND {
            supported.store(false, Ordering::Relaxed);
            return None;
        }
        if !response.status().is_success() {
            return None;
        }
        let body = read_capped(response, MAX_BALANCE_BODY_BYTES).await.ok()?;
        serde_json::from_slice::<Value>(&body).ok()?.get("coins")?.as_i64()
    })
    .await;
    answer.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parse_endpoint;

    #[track_caller]
    fn url_for(endpoint: &str, id: &str) -> String {
        let endpoint = parse_endpoint(endpoint).expect("valid");
        balance_url(&endpoint, id).map(|u| u.to_string()).unwrap_or_default()
    }

    #[test]
    fn the_balance_url_sits_beside_the_endpoint() {
        assert_eq!(url_for("ws://h:5000/ws", "alice"), "http://h:5000/balance/alice");
        assert_eq!(url_for("ws://h:5000/ws?x=1", "a b/c"), "http://h:5000/balance/a%20b%2Fc");
        assert_eq!(url_for("http://h:81/pool", "bob"), "http://h:81/pool/balance/bob");
        assert_eq!(url_for("h:5000", "bob"), "http://h:5000/balance/bob");
    }
}
