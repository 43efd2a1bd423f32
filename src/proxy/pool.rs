//! Idle upstream HTTP/1.1 connections, by endpoint address (event-loop thread).
//!
//! A connection goes back here after a clean exchange with keep-alive on both
//! sides. It stays registered with the poll under its socket token (its owner
//! becomes `Owner::Idle`), so a peer close is noticed and the connection is
//! dropped; connections idle past the pool timeout are dropped on maintenance.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::buffer::Buffer;
use super::transport::Transport;
use crate::metrics::Direction;
use crate::FastMap;

pub struct IdleConn {
    pub stream: Transport,
    /// The direction of the session that pooled it (for its `tcp_*` series).
    pub direction: Direction,
    pub sock: usize,
    pub since: Instant,
    /// The connection's (empty) read buffer, kept so a reused connection
    /// does not allocate and zero a new one per request.
    pub buf: Buffer,
}

pub struct Pool {
    idle: FastMap<SocketAddr, Vec<IdleConn>>,
    max_per_endpoint: usize,
}

impl Pool {
    pub fn new(max_per_endpoint: usize) -> Self {
        Pool {
            idle: FastMap::default(),
            max_per_endpoint,
        }
    }

    /// The most recently used idle connection to `addr` (warmest first).
    pub fn take(&mut self, addr: SocketAddr) -> Option<IdleConn> {
        let conns = self.idle.get_mut(&addr)?;
        let c = conns.pop();
        if conns.is_empty() {
            self.idle.remove(&addr);
        }
        c
    }

    /// Keeps `conn` for reuse; returns it back if the pool for `addr` is full.
    pub fn put(&mut self, addr: SocketAddr, conn: IdleConn) -> Result<(), IdleConn> {
        let conns = self.idle.entry(addr).or_default();
        if conns.len() >= self.max_per_endpoint {
            return Err(conn);
        }
        conns.push(conn);
        Ok(())
    }

    /// The idle connection with socket `sock`, if it is pooled.
    pub fn get(&self, addr: SocketAddr, sock: usize) -> Option<&IdleConn> {
        self.idle.get(&addr)?.iter().find(|c| c.sock == sock)
    }

    /// Removes the idle connection with socket `sock` (its peer closed it or
    /// sent something unexpected).
    pub fn remove(&mut self, addr: SocketAddr, sock: usize) -> Option<IdleConn> {
        let conns = self.idle.get_mut(&addr)?;
        let i = conns.iter().position(|c| c.sock == sock)?;
        let c = conns.swap_remove(i);
        if conns.is_empty() {
            self.idle.remove(&addr);
        }
        Some(c)
    }

    /// Removes connections idle for longer than `ttl`.
    pub fn expire(&mut self, now: Instant, ttl: Duration) -> Vec<IdleConn> {
        let mut out = Vec::new();
        self.idle.retain(|_, conns| {
            let mut i = 0;
            while i < conns.len() {
                if now.saturating_duration_since(conns[i].since) >= ttl {
                    out.push(conns.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            !conns.is_empty()
        });
        out
    }

    /// Removes everything (shutdown).
    pub fn drain(&mut self) -> Vec<IdleConn> {
        self.idle.drain().flat_map(|(_, v)| v).collect()
    }
}
