//! Idle upstream HTTP/1.1 connections, by what they were made for
//! (event-loop thread).
//!
//! A connection goes back here after a clean exchange with keep-alive on both
//! sides, under its [`UpstreamKey`]: the endpoint's address, the identity it
//! must prove, and the protocol spoken. A request takes an idle connection
//! only under the key it needs, so a connection made for one thing never
//! serves a request that needs another (a plaintext one for an mTLS endpoint
//! at the same address, an HTTP/1 one for HTTP/2).
//!
//! The loop keeps one pool per direction, so a connection made for an
//! inbound request never serves an outbound one to the same address, nor
//! the other way round. Each key has a bucket; its slab index names it in
//! the socket-owner table (`Owner::Idle(direction, bucket)`), so an event on
//! an idle socket finds its connection without hashing the key. A connection stays registered with the poll while
//! pooled, so a peer close is noticed and the connection dropped; connections
//! idle past the pool timeout are dropped on maintenance. A bucket emptied by
//! `take` stays until the next maintenance, so a connection going back and
//! forth between a request and the pool (the keep-alive path) reuses its
//! bucket and the bucket's `Vec` rather than allocating them again.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use slab::Slab;

use super::buffer::Buffer;
use super::transport::Transport;
use crate::endpoints::{ClientTls, EndpointRef};
use crate::FastMap;

/// The protocol an upstream connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    Http1,
    /// One multiplexed HTTP/2 connection (`proxy/h2`).
    H2,
}

/// What an upstream connection was made for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UpstreamKey {
    pub addr: SocketAddr,
    /// The name to ask for and the identity the endpoint must prove, or
    /// `None` for an endpoint the control plane does not call meshed.
    pub tls: Option<ClientTls>,
    pub proto: Proto,
}

impl UpstreamKey {
    pub fn new(endpoint: &EndpointRef, proto: Proto) -> UpstreamKey {
        UpstreamKey {
            addr: endpoint.addr,
            tls: endpoint.tls.clone(),
            proto,
        }
    }
}

pub struct IdleConn {
    /// The connection, with the `tcp_*` series it is counted in.
    pub stream: Transport,
    pub sock: usize,
    pub since: Instant,
    /// The connection's (empty) read buffer, kept so a reused connection
    /// does not allocate and zero a new one per request.
    pub buf: Buffer,
}

struct Bucket {
    key: UpstreamKey,
    conns: Vec<IdleConn>,
}

pub struct Pool {
    buckets: Slab<Bucket>,
    by_key: FastMap<UpstreamKey, usize>,
    max_per_key: usize,
}

impl Pool {
    pub fn new(max_per_key: usize) -> Self {
        Pool {
            buckets: Slab::new(),
            by_key: FastMap::default(),
            max_per_key,
        }
    }

    /// The most recently used idle connection made for `key` (warmest first).
    pub fn take(&mut self, key: &UpstreamKey) -> Option<IdleConn> {
        let b = *self.by_key.get(key)?;
        self.buckets[b].conns.pop()
    }

    /// Keeps `conn` for reuse under `key`, returning the bucket that now
    /// holds it; or gives it back if that bucket is full (always, when the
    /// pool keeps none: no bucket is made then).
    pub fn put(&mut self, key: &UpstreamKey, conn: IdleConn) -> Result<usize, IdleConn> {
        if self.max_per_key == 0 {
            return Err(conn);
        }
        let b = match self.by_key.get(key) {
            Some(&b) => b,
            None => {
                let b = self.buckets.insert(Bucket {
                    key: key.clone(),
                    conns: Vec::new(),
                });
                self.by_key.insert(key.clone(), b);
                b
            }
        };
        let conns = &mut self.buckets[b].conns;
        if conns.len() >= self.max_per_key {
            return Err(conn);
        }
        conns.push(conn);
        Ok(b)
    }

    /// The idle connection with socket `sock` in `bucket`, if it is pooled.
    pub fn get_mut(&mut self, bucket: usize, sock: usize) -> Option<&mut IdleConn> {
        self.buckets
            .get_mut(bucket)?
            .conns
            .iter_mut()
            .find(|c| c.sock == sock)
    }

    /// Removes the idle connection with socket `sock` from `bucket` (its
    /// peer closed it or sent something unexpected).
    pub fn remove(&mut self, bucket: usize, sock: usize) -> Option<IdleConn> {
        let conns = &mut self.buckets.get_mut(bucket)?.conns;
        let i = conns.iter().position(|c| c.sock == sock)?;
        Some(conns.swap_remove(i))
    }

    /// Removes connections idle for longer than `ttl`, and the buckets left
    /// empty.
    pub fn expire(&mut self, now: Instant, ttl: Duration) -> Vec<IdleConn> {
        let mut out = Vec::new();
        let mut emptied = Vec::new();
        for (b, bucket) in self.buckets.iter_mut() {
            let conns = &mut bucket.conns;
            let mut i = 0;
            while i < conns.len() {
                if now.saturating_duration_since(conns[i].since) >= ttl {
                    out.push(conns.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            if conns.is_empty() {
                emptied.push(b);
            }
        }
        for b in emptied {
            self.drop_if_empty(b);
        }
        out
    }

    /// Removes everything (shutdown).
    pub fn drain(&mut self) -> Vec<IdleConn> {
        self.by_key.clear();
        self.buckets.drain().flat_map(|b| b.conns).collect()
    }

    fn drop_if_empty(&mut self, b: usize) {
        if self
            .buckets
            .get(b)
            .is_some_and(|bucket| bucket.conns.is_empty())
        {
            let bucket = self.buckets.remove(b);
            self.by_key.remove(&bucket.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::ProtocolHint;
    use std::sync::Arc;

    fn conn(sock: usize, since: Instant) -> IdleConn {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let stream =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        IdleConn {
            stream: Transport::accepted(mio::net::TcpStream::from_std(stream)),
            sock,
            since,
            buf: Buffer::new(16),
        }
    }

    fn key(addr: &str, id: Option<&str>) -> UpstreamKey {
        let ep = EndpointRef {
            addr: addr.parse().expect("addr"),
            tls: id.map(|id| ClientTls {
                server_name: Arc::from("sni"),
                server_id: Arc::from(id),
            }),
            hint: ProtocolHint::Unknown,
            opaque_port: None,
        };
        UpstreamKey::new(&ep, Proto::Http1)
    }

    #[test]
    fn a_connection_serves_only_the_key_it_was_made_for() {
        let t = Instant::now();
        let mut pool = Pool::new(2);
        let plain = key("10.0.0.1:80", None);
        let meshed = key("10.0.0.1:80", Some("books.ns.serviceaccount.identity"));
        let b = pool.put(&plain, conn(1, t)).ok().expect("room");
        assert!(pool.take(&meshed).is_none(), "same address, other identity");
        assert_eq!(pool.get_mut(b, 1).map(|c| c.sock), Some(1));
        assert_eq!(pool.take(&plain).map(|c| c.sock), Some(1));
        assert!(pool.take(&plain).is_none());
        // Full buckets give the connection back.
        pool.put(&meshed, conn(2, t)).ok().expect("room");
        pool.put(&meshed, conn(3, t)).ok().expect("room");
        assert_eq!(pool.put(&meshed, conn(4, t)).err().map(|c| c.sock), Some(4));
    }

    #[test]
    fn a_pool_that_keeps_none_gives_every_connection_back() {
        let t = Instant::now();
        let mut pool = Pool::new(0);
        let k = key("10.0.0.4:80", Some("books.ns.serviceaccount.identity"));
        assert_eq!(pool.put(&k, conn(1, t)).err().map(|c| c.sock), Some(1));
        assert!(pool.take(&k).is_none());
        assert!(pool.buckets.is_empty() && pool.by_key.is_empty());
    }

    #[test]
    fn an_emptied_bucket_is_reused_then_swept() {
        let t = Instant::now();
        let mut pool = Pool::new(4);
        let k = key("10.0.0.2:80", None);
        let b = pool.put(&k, conn(1, t)).ok().expect("room");
        assert!(pool.take(&k).is_some());
        // The keep-alive path: back in the same bucket.
        assert_eq!(pool.put(&k, conn(2, t)).ok(), Some(b));
        assert_eq!(pool.remove(b, 2).map(|c| c.sock), Some(2));
        assert!(pool.remove(b, 2).is_none());
        // Maintenance sweeps empty buckets and expires old connections.
        let other = key("10.0.0.3:80", None);
        let ob = pool.put(&other, conn(3, t)).ok().expect("room");
        let expired = pool.expire(t + Duration::from_secs(5), Duration::from_secs(3));
        assert_eq!(expired.iter().map(|c| c.sock).collect::<Vec<_>>(), vec![3]);
        assert!(pool.get_mut(ob, 3).is_none());
        assert!(pool.buckets.is_empty() && pool.by_key.is_empty());
    }
}
