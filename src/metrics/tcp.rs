//! The `tcp_*` handles: connections opened, closed and open, and the bytes they
//! carried, by direction, peer and TLS state (`metrics/tls.rs`). `TcpMetrics` (one per
//! direction and peer, built by `ProxyMetrics::tcp`) hands out the [`TcpSeries`] of a
//! TLS state; a connection keeps its `TcpSeries` for its life and counts itself there.
//! Owned by the event-loop thread.
//!
//! As the other handles do, `TcpMetrics` caches the series it has made: a new
//! connection in a TLS state seen before is a short linear scan and one reference-count
//! increment. Only the first connection of a state formats labels and takes the family
//! mutexes. The series appear on first use, as Linkerd's do.

use std::sync::Arc;

use super::tls::TlsLabel;
use super::{Counter, CounterFamily, Gauge, GaugeFamily, Labels};

/// Which end of a proxied TCP connection a `tcp_*` series counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// The client that connected to a spoke listener.
    Src,
    /// The upstream spoke connected to.
    Dst,
}

impl Peer {
    pub fn as_str(self) -> &'static str {
        match self {
            Peer::Src => "src",
            Peer::Dst => "dst",
        }
    }
}

// === impl TcpMetrics ===

/// The `tcp_*` families for one direction and peer, with the series of each TLS state
/// seen so far.
#[derive(Clone, Debug)]
pub struct TcpMetrics {
    base: Labels,
    /// opened, closed, bytes read, bytes written.
    counters: [CounterFamily; 4],
    open: GaugeFamily,
    seen: Vec<(TlsLabel, Arc<TcpSeries>)>,
}

impl TcpMetrics {
    /// `base` (direction and peer) in the four counter families (opened, closed, bytes
    /// read, bytes written) and the open-connections gauge.
    pub(super) fn new(base: Labels, counters: [&CounterFamily; 4], open: &GaugeFamily) -> Self {
        TcpMetrics {
            base,
            counters: counters.map(CounterFamily::clone),
            open: open.clone(),
            seen: Vec::new(),
        }
    }

    /// The series of connections in TLS state `tls` (made on first use).
    pub fn series(&mut self, tls: &TlsLabel) -> Arc<TcpSeries> {
        if let Some((_, s)) = self.seen.iter().find(|(t, _)| t == tls) {
            return s.clone();
        }
        let labels = tls.add_to(self.base.clone());
        let [opened, closed, read, written] = &self.counters;
        let series = Arc::new(TcpSeries {
            opened: opened.series(labels.clone()),
            closed: closed.series(labels.clone()),
            open: self.open.series(labels.clone()),
            read_bytes: read.series(labels.clone()),
            write_bytes: written.series(labels),
        });
        self.seen.push((tls.clone(), series.clone()));
        series
    }
}

// === impl TcpSeries ===

/// `tcp_open_total`, `tcp_close_total`, `tcp_open_connections` and the byte counters of
/// one label set: what a connection counts itself in. All methods take `&self`.
#[derive(Debug)]
pub struct TcpSeries {
    opened: Counter,
    closed: Counter,
    open: Gauge,
    read_bytes: Counter,
    write_bytes: Counter,
}

impl TcpSeries {
    /// A connection was accepted or established.
    pub fn open(&self) {
        self.opened.inc();
        self.open.inc();
    }

    /// A connection that `open` counted was closed. Call exactly once per `open`.
    pub fn close(&self) {
        self.closed.inc();
        self.open.dec();
    }

    /// Bytes a connection read and wrote since they were last counted.
    #[inline]
    pub fn bytes(&self, (read, written): (u64, u64)) {
        if read > 0 {
            self.read_bytes.add(read);
        }
        if written > 0 {
            self.write_bytes.add(written);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tls::NoTlsReason;
    use super::super::{Direction, ProxyMetrics, Registry};
    use super::*;

    fn metrics() -> ProxyMetrics {
        ProxyMetrics::new(&Registry::new()).expect("spoke's families register")
    }

    #[test]
    fn tcp_families_render_exactly_and_track_open_connections() {
        let m = metrics();
        let mut inbound = m.tcp(Direction::Inbound, Peer::Src);
        let mut outbound = m.tcp(Direction::Outbound, Peer::Dst);
        let plain = TlsLabel::NoIdentity(NoTlsReason::NoTlsFromRemote);
        let src = inbound.series(&plain);
        let dst = outbound.series(&TlsLabel::ServerId("b.ns.sa".into()));
        src.open();
        src.open();
        src.close();
        dst.open();
        src.bytes((10, 0));
        dst.bytes((5, 7));
        dst.bytes((1, 0));
        let a = "direction=\"inbound\",peer=\"src\",tls=\"no_identity\",\
                 no_tls_reason=\"no_tls_from_remote\"";
        let b = "direction=\"outbound\",peer=\"dst\",tls=\"true\",server_id=\"b.ns.sa\"";
        let expected = format!(
            "# HELP tcp_open_total Total TCP connections opened.\n\
             # TYPE tcp_open_total counter\n\
             tcp_open_total{{{a}}} 2\n\
             tcp_open_total{{{b}}} 1\n\
             # HELP tcp_close_total Total TCP connections closed.\n\
             # TYPE tcp_close_total counter\n\
             tcp_close_total{{{a}}} 1\n\
             tcp_close_total{{{b}}} 0\n\
             # HELP tcp_open_connections TCP connections currently open.\n\
             # TYPE tcp_open_connections gauge\n\
             tcp_open_connections{{{a}}} 1\n\
             tcp_open_connections{{{b}}} 1\n\
             # HELP tcp_read_bytes_total Total bytes read from TCP connections.\n\
             # TYPE tcp_read_bytes_total counter\n\
             tcp_read_bytes_total{{{a}}} 10\n\
             tcp_read_bytes_total{{{b}}} 6\n\
             # HELP tcp_write_bytes_total Total bytes written to TCP connections.\n\
             # TYPE tcp_write_bytes_total counter\n\
             tcp_write_bytes_total{{{a}}} 0\n\
             tcp_write_bytes_total{{{b}}} 7\n"
        );
        assert_eq!(m.registry().render_to_string(), expected);
    }

    #[test]
    fn each_tls_state_has_its_series_and_a_repeated_one_is_reused() {
        let m = metrics();
        let mut src = m.tcp(Direction::Inbound, Peer::Src);
        assert_eq!(
            m.registry().render_to_string(),
            "",
            "no series before a connection"
        );
        let alice = || TlsLabel::ClientId(Some("alice".into()));
        let first = src.series(&alice());
        let again = src.series(&alice());
        assert!(Arc::ptr_eq(&first, &again), "one series per state");
        src.series(&TlsLabel::ClientId(None)).open();
        src.series(&TlsLabel::Opaque("db.example".into())).open();
        first.open();
        again.open();
        assert_eq!(src.seen.len(), 3);
        let text = m.registry().render_to_string();
        for line in [
            "tcp_open_total{direction=\"inbound\",peer=\"src\",tls=\"true\",client_id=\"alice\"} 2\n",
            "tcp_open_total{direction=\"inbound\",peer=\"src\",tls=\"true\",client_id=\"\"} 1\n",
            "tcp_open_total{direction=\"inbound\",peer=\"src\",tls=\"opaque\",sni=\"db.example\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
