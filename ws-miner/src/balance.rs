//! The id's balance on the server, shown beside this run's coins: `GET /balance/{id}` beside
//! the endpoint mined on (see `probe`).
//!
//! Cheap and bounded: at most one request in flight, one per win and one for the summary, each
//! under [`BALANCE_TIMEOUT`](crate::limits::BALANCE_TIMEOUT). A server without the route (a
//! course Flask server answers 404) is not asked again, and nothing is printed about it.

use reqwest::Client;
use serde_json::Value;

use crate::cli::Endpoint;
use crate::output::{Event, Reporter};
use crate::probe::RouteProbe;

/// The most bytes of a `/balance/{id}` answer read (it is a few dozen).
const MAX_BALANCE_BODY_BYTES: usize = 16 * 1024;

/// Asks the server for the id's coins.
pub(crate) struct BalanceProbe {
    probe: RouteProbe,
    id: String,
}

impl BalanceProbe {
    /// Returns a probe for `id` on the server at `endpoint`, or `None` when no URL can be made.
    pub(crate) fn new(endpoint: &Endpoint, id: &str, client: Client) -> Option<Self> {
        let probe = RouteProbe::new(endpoint, &["balance", id], client, MAX_BALANCE_BODY_BYTES)?;
        Some(BalanceProbe { probe, id: id.to_owned() })
    }

    /// After a win: fetches the balance in the background and reports it with `coins` (this
    /// run's), unless a fetch is still in flight or the server has no such route.
    pub(crate) fn after_win(&mut self, coins: u64, reporter: &Reporter) {
        if !self.probe.ready() {
            return;
        }
        let (id, reporter) = (self.id.clone(), reporter.clone());
        self.probe.spawn(move |answer| {
            if let Some(server_coins) = answer.as_ref().and_then(coins_of) {
                reporter.emit(Event::Balance { id, coins, server_coins });
            }
        });
    }

    /// Stops a fetch in flight (the run is ending), then fetches once more for the summary.
    pub(crate) async fn for_summary(&mut self) -> Option<i64> {
        self.probe.ask_now().await.as_ref().and_then(coins_of)
    }
}

/// Returns the `coins` of a `/balance/{id}` answer.
fn coins_of(answer: &Value) -> Option<i64> {
    answer.get("coins")?.as_i64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parse_endpoint;
    use crate::probe::route_url;

    /// The id is percent-encoded as one segment.
    #[track_caller]
    fn url_for(endpoint: &str, id: &str) -> String {
        let endpoint = parse_endpoint(endpoint).expect("valid");
        route_url(&endpoint, &["balance", id]).map(|u| u.to_string()).unwrap_or_default()
    }

    #[test]
    fn the_balance_url_sits_beside_the_endpoint() {
        assert_eq!(url_for("ws://h:5000/ws", "alice"), "http://h:5000/balance/alice");
        assert_eq!(url_for("ws://h:5000/ws?x=1", "a b/c"), "http://h:5000/balance/a%20b%2Fc");
        assert_eq!(url_for("http://h:81/pool", "bob"), "http://h:81/pool/balance/bob");
        assert_eq!(url_for("h:5000", "bob"), "http://h:5000/balance/bob");
    }

    #[test]
    fn only_an_integer_balance_is_taken() {
        use serde_json::json;
        assert_eq!(coins_of(&json!({"id": "a", "coins": -3})), Some(-3));
        assert_eq!(coins_of(&json!({"coins": 1.5})), None);
        assert_eq!(coins_of(&json!([1])), None);
    }
}
