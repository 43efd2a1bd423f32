//! DNS resolution for endpoint sets, run on `endpoints:<dst>` threads only
//! (blocking `getaddrinfo` must never run on the event loop).
//!
//! Used for names outside the `Get` suffixes, for names the controller answers
//! with `no_endpoints{exists:false}`, and after the controller refuses a name.
//! A failed lookup keeps the last good set; a name that never resolved gets an
//! empty set so requests fail fast with 503 instead of waiting.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;

use super::wait::block_on_timeout;
use crate::endpoints::{Endpoint, EndpointSet, Source};
use crate::updates::SnapshotTx;

/// The last DNS answer published, and when it was asked.
pub struct Resolved {
    addrs: Option<Vec<SocketAddr>>,
    at: Instant,
}

impl Resolved {
    /// Resolves `name:port` and publishes the set if it changed since `prev`.
    pub fn resolve(
        name: &str,
        port: u16,
        prev: Option<Resolved>,
        tx: &SnapshotTx<Arc<EndpointSet>>,
    ) -> Resolved {
        let prev_addrs = prev.and_then(|p| p.addrs);
        let addrs = match lookup(name, port) {
            Ok(addrs) => Some(addrs),
            Err(e) => {
                log::warn!("{name}:{port}: DNS lookup failed: {e}");
                prev_addrs.clone().or(Some(Vec::new()))
            }
        };
        if addrs != prev_addrs {
            let eps = addrs
                .iter()
                .flatten()
                .map(|a| Endpoint::from_addr(*a))
                .collect();
            let set = EndpointSet::new(eps, Source::Dns);
            tx.publish(Arc::new(set));
        }
        Resolved {
            addrs,
            at: Instant::now(),
        }
    }

    pub fn until_refresh(&self, every: Duration) -> Duration {
        every.saturating_sub(self.at.elapsed())
    }
}

/// Sorted, deduplicated addresses of `name:port`.
pub fn lookup(name: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    let mut addrs: Vec<SocketAddr> = (name.trim_end_matches('.'), port)
        .to_socket_addrs()?
        .collect();
    addrs.sort();
    addrs.dedup();
    Ok(addrs)
}

/// Resolves and refreshes until hangup.
// Not inlined: its frame stays off the stack of a parked `Get` watch (see `stack`).
#[inline(never)]
pub fn run(
    name: &str,
    port: u16,
    every: Duration,
    tx: &SnapshotTx<Arc<EndpointSet>>,
    hangup: &mut oneshot::Receiver<()>,
) {
    let mut resolved = Resolved::resolve(name, port, None, tx);
    loop {
        let wait = resolved.until_refresh(every);
        if block_on_timeout(hangup, Some(wait)).is_some() {
            return;
        }
        resolved = Resolved::resolve(name, port, Some(resolved), tx);
    }
}
