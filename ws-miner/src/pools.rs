//! Failover across an ordered list of pools (`ws-miner URL [URL...]`, like xmrig's pools):
//! mine on the first that answers; when the pool mined on fails (refused, closed, unusable),
//! move to the next one in the list; while on a later pool, keep probing the earlier ones
//! (a TCP connect, and the TLS handshake for `wss://`/`https://`), each under its own capped
//! back-off, and go back to the earliest that answers. Each switch is one [`Event::PoolSwitch`].
//!
//! This module sits above the transports: it runs one leg at a time through either of them
//! (the same code a single server runs), with a [`Failover`] in the context that makes the
//! transport leave its pool instead of retrying it. Proofs not judged when a leg ends are
//! carried to the next leg, which sends them only where their block is the server's current
//! block (see [`crate::driver::Ctx::carried_for`]).
//! With one URL none of this runs.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout};

use crate::backoff::Backoff;
use crate::balance::BalanceProbe;
use crate::cli::Endpoint;
use crate::driver::{Ctx, End, Failover, Leave, stopped};
use crate::error::Outcome;
use crate::http;
use crate::miner::Found;
use crate::net;
use crate::output::Event;
use crate::session::mine_ws;

/// How long probing an earlier pool (TCP connect, TLS handshake) may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// One pool's back-off: failures of its legs and of its probes both count.
struct Retry {
    backoff: Backoff,
    /// When the pool may be tried (or probed) next.
    at: Instant,
}

type Retries = Arc<Mutex<Vec<Retry>>>;

fn lock(retries: &Retries) -> std::sync::MutexGuard<'_, Vec<Retry>> {
    // Only plain assignments happen under the lock: a poisoned one holds usable values.
    retries.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Returns the URL a pool is named by in lines.
pub(crate) fn name(endpoint: &Endpoint) -> String {
    match endpoint {
        Endpoint::WebSocket(url) => url.to_string(),
        Endpoint::Http { base, .. } => base.to_string(),
    }
}

/// Mines on one pool until the run ends (`Ok`) or, with several pools, the transport leaves it
/// (`Err`). An `http://` pool tries its WebSocket endpoint first unless `http_only` (set once
/// it answered the upgrade with a plain HTTP status).
pub(crate) async fn leg(
    ctx: &mut Ctx,
    endpoint: &Endpoint,
    http_only: &mut bool,
) -> Result<Outcome, Leave> {
    match endpoint {
        Endpoint::WebSocket(url) => match mine_ws(ctx, url, false).await {
            End::Done(outcome) => Ok(outcome),
            // Only asked for with `fallback`.
            End::Fallback => Ok(Outcome::Lost),
            End::Left(leave) => Err(leave),
        },
        Endpoint::Http { base, ws } => {
            if !*http_only {
                match mine_ws(ctx, ws, true).await {
                    End::Done(outcome) => return Ok(outcome),
                    End::Left(leave) => return Err(leave),
                    End::Fallback => *http_only = true,
                }
            }
            match http::mine_http(ctx, base).await {
                End::Done(outcome) => Ok(outcome),
                // The course protocol never falls back.
                End::Fallback => Ok(Outcome::Lost),
                End::Left(leave) => Err(leave),
            }
        }
    }
}

/// Mines on the pools of `ctx.config` (the preferred first) until the run ends.
pub(crate) async fn mine_pools(ctx: &mut Ctx) -> Outcome {
    let endpoints: Vec<Endpoint> = ctx.config.endpoints().cloned().collect();
    let now = Instant::now();
    let retries: Retries = Arc::new(Mutex::new(
        endpoints
            .iter()
            .map(|_| Retry { backoff: Backoff::new(ctx.config.backoff), at: now })
            .collect(),
    ));
    let mut http_only = vec![false; endpoints.len()];
    // Each pool's balance is asked of that pool; the context holds the current one's.
    let first = ctx.balance.take();
    let mut balances: Vec<Option<BalanceProbe>> = endpoints
        .iter()
        .enumerate()
        .map(|(i, endpoint)| {
            if i == 0 {
                return None;
            }
            ctx.config
                .server_balance
                .then(|| crate::http_client(&ctx.config).ok())
                .flatten()
                .and_then(|client| BalanceProbe::new(endpoint, &ctx.config.id, client))
        })
        .collect();
    if let Some(slot) = balances.first_mut() {
        *slot = first;
    }
    let mut carried: Vec<Found> = Vec::new();
    let mut shutdown = ctx.shutdown.clone();
    let mut current = 0;
    loop {
        let (Some(endpoint), Some(only)) = (endpoints.get(current), http_only.get_mut(current))
        else {
            return Outcome::Lost;
        };
        let at = lock(&retries).get(current).map_or_else(Instant::now, |r| r.at);
        tokio::select! {
            () = sleep_until(at) => {}
            () = stopped(&mut shutdown) => return Outcome::Interrupted,
        }
        let (tx, rx) = oneshot::channel();
        let probe: Option<JoinHandle<Option<usize>>> = (current > 0).then(|| {
            let earlier = endpoints[..current].to_vec();
            tokio::spawn(probe(earlier, retries.clone(), ctx.config.tls.clone(), tx))
        });
        ctx.failover = Some(Failover {
            url: name(endpoint),
            preferred: probe.is_some().then_some(rx),
            carried: std::mem::take(&mut carried),
            block: None,
            failed: None,
        });
        if let Some(slot) = balances.get_mut(current) {
            std::mem::swap(&mut ctx.balance, slot);
        }
        let end = leg(ctx, endpoint, only).await;
        let answered = match probe {
            Some(probe) if matches!(end, Err(Leave::Preferred)) => probe.await.ok().flatten(),
            Some(probe) => {
                probe.abort();
                None
            }
            None => None,
        };
        let leave = match end {
            // The summary asks the pool mined on last for the balance: leave it in place.
            Ok(outcome) => return outcome,
            Err(leave) => leave,
        };
        if let Some(slot) = balances.get_mut(current) {
            std::mem::swap(&mut ctx.balance, slot);
        }
        let worked = ctx.failover.as_ref().is_some_and(|f| f.block.is_some());
        if let Some(failover) = ctx.failover.take() {
            carried = failover.carried;
        }
        let (next, why) = {
            let mut retries = lock(&retries);
            if let Some(retry) = retries.get_mut(current) {
                if worked {
                    retry.backoff.reset();
                }
                retry.at = match leave {
                    Leave::Failed(_) => Instant::now() + retry.backoff.next_delay(),
                    Leave::Preferred => Instant::now(),
                };
            }
            match leave {
                Leave::Failed(why) => ((current + 1) % endpoints.len(), why),
                Leave::Preferred => {
                    let to = answered.unwrap_or(0);
                    if let Some(retry) = retries.get_mut(to) {
                        retry.at = Instant::now();
                    }
                    let back = endpoints.get(to).map(name).unwrap_or_default();
                    (to, format!("{back} answers again (an earlier pool in the list)"))
                }
            }
        };
        if next != current {
            let to = endpoints.get(next).map(name).unwrap_or_default();
            ctx.reporter.emit(Event::PoolSwitch { from: name(endpoint), to, why });
        }
        current = next;
    }
}

/// Probes the `earlier` pools (the first ones of the list), each when its back-off allows,
/// earliest in the list first among those due; on the first that answers, says so on `tx` and
/// returns its index. A probe is a TCP connect plus, for `wss://`/`https://`, the TLS handshake.
async fn probe(
    earlier: Vec<Endpoint>,
    retries: Retries,
    tls: Option<Arc<rustls::ClientConfig>>,
    tx: oneshot::Sender<()>,
) -> Option<usize> {
    loop {
        let (index, at) = lock(&retries)
            .iter()
            .take(earlier.len())
            .enumerate()
            .min_by_key(|(_, r)| r.at)
            .map(|(i, r)| (i, r.at))?;
        sleep_until(at).await;
        let url = match earlier.get(index)? {
            Endpoint::WebSocket(url) => url,
            Endpoint::Http { base, .. } => base,
        };
        if let Ok(Ok(_stream)) = timeout(PROBE_TIMEOUT, net::open(url, tls.as_ref())).await {
            let _ = tx.send(());
            return Some(index);
        }
        let mut retries = lock(&retries);
        if let Some(retry) = retries.get_mut(index) {
            retry.at = Instant::now() + retry.backoff.next_delay();
        }
    }
}
