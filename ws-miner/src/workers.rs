//! The pool's estimate of this miner's hashrate, shown beside the miner's own while it mines
//! shares: `GET /workers` beside the endpoint (see `probe`), this id's `hashrate`.
//!
//! Cheap and bounded: asked at most once per [`SHARES_REPORT_EVERY`] while shares are mined, one
//! request in flight at a time, under [`BALANCE_TIMEOUT`], at most [`MAX_WORKERS_BODY_BYTES`]
//! read. A server without the route (404) is not asked again. `--no-balance` turns it off
//! with the balance; the miner then estimates from its accepted shares alone.
//!
//! [`SHARES_REPORT_EVERY`]: crate::limits::SHARES_REPORT_EVERY
//! [`BALANCE_TIMEOUT`]: crate::limits::BALANCE_TIMEOUT

use reqwest::Client;
use serde_json::Value;

use crate::cli::Endpoint;
use crate::limits::MAX_WORKERS_BODY_BYTES;
use crate::output::{Event, Reporter};
use crate::probe::RouteProbe;

/// Asks the pool for its figure for one id.
pub(crate) struct WorkersProbe {
    probe: RouteProbe,
    id: String,
}

impl WorkersProbe {
    /// Returns a probe for `id` on the server at `endpoint`, or `None` when no URL can be made.
    pub(crate) fn new(endpoint: &Endpoint, id: &str, client: Client) -> Option<Self> {
        let probe = RouteProbe::new(endpoint, &["workers"], client, MAX_WORKERS_BODY_BYTES)?;
        Some(WorkersProbe { probe, id: id.to_owned() })
    }

    /// Reports `event` (an [`Event::Shares`]) once the pool has given its figure for the id, in
    /// the background (at most [`BALANCE_TIMEOUT`](crate::limits::BALANCE_TIMEOUT) later); at
    /// once, with the miner's own estimate, when a request is still in flight, the route is
    /// missing or the pool does not list the id.
    pub(crate) fn report(&mut self, event: Event, reporter: &Reporter) {
        if !self.probe.ready() {
            reporter.emit(event);
            return;
        }
        let (id, reporter) = (self.id.clone(), reporter.clone());
        self.probe.spawn(move |answer| {
            let mut event = event;
            if let Some(rate) = answer.as_ref().and_then(|a| hashrate_of(a, &id))
                && let Event::Shares { pool_hashrate, pool_source, .. } = &mut event
            {
                *pool_hashrate = rate;
                *pool_source = "workers";
            }
            reporter.emit(event);
        });
    }
}

/// Returns the `hashrate` of `id` in a `/workers` answer, when it is listed with a finite,
/// non-negative one.
fn hashrate_of(answer: &Value, id: &str) -> Option<f64> {
    answer
        .get("workers")?
        .as_array()?
        .iter()
        .find(|w| w.get("id").and_then(Value::as_str) == Some(id))?
        .get("hashrate")?
        .as_f64()
        .filter(|rate| rate.is_finite() && *rate >= 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parse_endpoint;
    use crate::probe::route_url;
    use serde_json::json;

    #[test]
    fn the_workers_url_sits_beside_the_endpoint() {
        let url = |e: &str| {
            route_url(&parse_endpoint(e).expect("valid"), &["workers"]).map(|u| u.to_string())
        };
        assert_eq!(url("ws://h:5000/ws").as_deref(), Some("http://h:5000/workers"));
        assert_eq!(url("wss://h/ws").as_deref(), Some("https://h/workers"));
        assert_eq!(url("http://h:81/pool").as_deref(), Some("http://h:81/pool/workers"));
    }

    #[test]
    fn only_the_ids_own_finite_figure_is_taken() {
        let answer = json!({"window": 120, "workers": [
            {"id": "bob", "hashrate": 5.0},
            {"id": "alice", "hashrate": 1.5e6, "shares": 3},
        ]});
        assert_eq!(hashrate_of(&answer, "alice"), Some(1.5e6));
        assert_eq!(hashrate_of(&answer, "carol"), None);
        assert_eq!(hashrate_of(&json!({"workers": [{"id": "a", "hashrate": -1}]}), "a"), None);
        assert_eq!(hashrate_of(&json!({"workers": [{"id": "a", "hashrate": "x"}]}), "a"), None);
        assert_eq!(hashrate_of(&json!([1, 2]), "a"), None);
    }
}
