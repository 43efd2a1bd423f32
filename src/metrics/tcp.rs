//! The `tcp_*` handles (`TcpMetrics`): connections opened, closed and open, and the
//! bytes they carried, for one direction and peer. Built by `ProxyMetrics::tcp`;
//! owned by the event-loop thread.

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

/// `tcp_open_total`, `tcp_close_total` and `tcp_open_connections` for one direction and
/// peer. Cheap to clone; all methods take `&self`.
#[derive(Clone, Debug)]
pub struct TcpMetrics {
    opened: Counter,
    closed: Counter,
    open: Gauge,
    read_bytes: Counter,
    write_bytes: Counter,
}

impl TcpMetrics {
    /// The series of `labels` in the four counter families (opened, closed, bytes read,
    /// bytes written) and the open-connections gauge.
    pub(super) fn new(
        labels: Labels,
        [opened, closed, read, written]: [&CounterFamily; 4],
        open: &GaugeFamily,
    ) -> TcpMetrics {
        TcpMetrics {
            opened: opened.series(labels.clone()),
            closed: closed.series(labels.clone()),
            open: open.series(labels.clone()),
            read_bytes: read.series(labels.clone()),
            write_bytes: written.series(labels),
        }
    }

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
    use super::super::{Direction, ProxyMetrics, Registry};
    use super::*;

    fn metrics() -> ProxyMetrics {
        ProxyMetrics::new(&Registry::new()).expect("spoke's families register")
    }

    #[test]
    fn tcp_families_render_exactly_and_track_open_connections() {
        let m = metrics();
        let src = m.tcp(Direction::Inbound, Peer::Src);
        let dst = m.tcp(Direction::Outbound, Peer::Dst);
        src.open();
        src.open();
        src.close();
        dst.open();
        src.bytes((10, 0));
        dst.bytes((5, 7));
        dst.bytes((1, 0));
        let expected = "\
            # HELP tcp_open_total Total TCP connections opened.\n\
            # TYPE tcp_open_total counter\n\
            tcp_open_total{direction=\"inbound\",peer=\"src\"} 2\n\
            tcp_open_total{direction=\"outbound\",peer=\"dst\"} 1\n\
            # HELP tcp_close_total Total TCP connections closed.\n\
            # TYPE tcp_close_total counter\n\
            tcp_close_total{direction=\"inbound\",peer=\"src\"} 1\n\
            tcp_close_total{direction=\"outbound\",peer=\"dst\"} 0\n\
            # HELP tcp_open_connections TCP connections currently open.\n\
            # TYPE tcp_open_connections gauge\n\
            tcp_open_connections{direction=\"inbound\",peer=\"src\"} 1\n\
            tcp_open_connections{direction=\"outbound\",peer=\"dst\"} 1\n\
            # HELP tcp_read_bytes_total Total bytes read from TCP connections.\n\
            # TYPE tcp_read_bytes_total counter\n\
            tcp_read_bytes_total{direction=\"inbound\",peer=\"src\"} 10\n\
            tcp_read_bytes_total{direction=\"outbound\",peer=\"dst\"} 6\n\
            # HELP tcp_write_bytes_total Total bytes written to TCP connections.\n\
            # TYPE tcp_write_bytes_total counter\n\
            tcp_write_bytes_total{direction=\"inbound\",peer=\"src\"} 0\n\
            tcp_write_bytes_total{direction=\"outbound\",peer=\"dst\"} 7\n";
        assert_eq!(m.registry().render_to_string(), expected);
    }
}
