//! The metric families spoke emits (Linkerd's names, see DESIGN.md) and the typed
//! handles that update them: `AuthorityMetrics` and `RouteMetrics` on the event loop per
//! request, `DiscoveryMetrics` on discovery threads (`TcpMetrics`, per connection, is
//! in `tcp.rs`).
//!
//! Threads: `ProxyMetrics` is built once in `main` and cloned to every thread. A handle is
//! created once per authority/route/direction/kind and then owned by its user; the
//! generic registry behind it lives in `metrics/mod.rs`.
//!
//! Handles cache the series they have needed so far (responses by status,
//! classification and error; discovery errors by code). A repeated outcome is a short
//! linear scan of that cache and one or two atomic adds: no allocation, no lock. Only the
//! first occurrence of an outcome formats labels and takes the family mutex. Methods that
//! may fill a cache take `&mut self`, which is why each user owns its handle.

use std::time::Duration;

use crate::conn_failure::ConnFailure;

use super::tcp::{Peer, TcpMetrics};
use super::tls::TlsLabel;
use super::{
    Counter, CounterFamily, GaugeFamily, Histogram, HistogramFamily, Labels, MetricsError, Registry,
};

/// Which way traffic goes through the proxy: the `direction` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// From a client outside the pod to the local application.
    Inbound,
    /// From the local application to the rest of the mesh.
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// Which discovery stream a `spoke_discovery_*` series counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiscoveryKind {
    /// `GetProfile` streams.
    Profile,
    /// `Get` (endpoint) streams.
    Endpoints,
}

impl DiscoveryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DiscoveryKind::Profile => "profile",
            DiscoveryKind::Endpoints => "endpoints",
        }
    }
}

/// Every family spoke emits, registered on one `Registry`. Clone it to each thread.
#[derive(Clone, Debug)]
pub struct ProxyMetrics {
    registry: Registry,
    request_total: CounterFamily,
    response_total: CounterFamily,
    response_latency_ms: HistogramFamily,
    route_request_total: CounterFamily,
    route_response_total: CounterFamily,
    route_response_latency_ms: HistogramFamily,
    route_actual_request_total: CounterFamily,
    route_actual_response_total: CounterFamily,
    route_retryable_total: CounterFamily,
    tcp_open_total: CounterFamily,
    tcp_close_total: CounterFamily,
    tcp_open_connections: GaugeFamily,
    tcp_read_bytes: CounterFamily,
    tcp_write_bytes: CounterFamily,
    discovery_streams_opened: CounterFamily,
    discovery_messages: CounterFamily,
    discovery_errors: CounterFamily,
    discovery_reconnects: CounterFamily,
    discovery_swap_latency_ms: HistogramFamily,
    connect_retries: CounterFamily,
    connections_refused: CounterFamily,
    detect: CounterFamily,
    http2_goaway: CounterFamily,
}

impl ProxyMetrics {
    /// Registers spoke's families on `registry` (in the order they render). Registering
    /// twice on one registry yields handles on the same families. Fails only if some
    /// other code already registered one of these names as a different kind.
    pub fn new(registry: &Registry) -> Result<Self, MetricsError> {
        let r = registry;
        Ok(Self {
            registry: registry.clone(),
            request_total: r.counter_family(
                "request_total",
                "Total HTTP requests received, by destination authority.",
            )?,
            response_total: r.counter_family(
                "response_total",
                "Total HTTP responses, by status code and classification.",
            )?,
            response_latency_ms: r.histogram_family(
                "response_latency_ms",
                "Milliseconds from a request being received to its response, by status code.",
            )?,
            route_request_total: r.counter_family(
                "route_request_total",
                "Total HTTP requests, by profile route.",
            )?,
            route_response_total: r.counter_family(
                "route_response_total",
                "Total HTTP responses by profile route, after retries and timeouts.",
            )?,
            route_response_latency_ms: r.histogram_family(
                "route_response_latency_ms",
                "Milliseconds from a request being received to its response, by profile route, \
                 covering every attempt.",
            )?,
            route_actual_request_total: r.counter_family(
                "route_actual_request_total",
                "Total HTTP request attempts (retries included), by profile route.",
            )?,
            route_actual_response_total: r.counter_family(
                "route_actual_response_total",
                "Total HTTP responses to each attempt (retries included), by profile route.",
            )?,
            route_retryable_total: r.counter_family(
                "route_retryable_total",
                "Failed responses on retryable routes; skipped=\"no_budget\" counts those \
                 the retry budget did not allow to be retried.",
            )?,
            tcp_open_total: r.counter_family("tcp_open_total", "Total TCP connections opened.")?,
            tcp_close_total: r
                .counter_family("tcp_close_total", "Total TCP connections closed.")?,
            tcp_open_connections: r
                .gauge_family("tcp_open_connections", "TCP connections currently open.")?,
            tcp_read_bytes: r.counter_family(
                "tcp_read_bytes_total",
                "Total bytes read from TCP connections.",
            )?,
            tcp_write_bytes: r.counter_family(
                "tcp_write_bytes_total",
                "Total bytes written to TCP connections.",
            )?,
            discovery_streams_opened: r.counter_family(
                "spoke_discovery_streams_opened_total",
                "Discovery streams opened to the control plane.",
            )?,
            discovery_messages: r.counter_family(
                "spoke_discovery_messages_total",
                "Discovery messages received from the control plane.",
            )?,
            discovery_errors: r.counter_family(
                "spoke_discovery_errors_total",
                "Discovery stream failures, by gRPC status code.",
            )?,
            discovery_reconnects: r.counter_family(
                "spoke_discovery_reconnects_total",
                "Discovery streams requested again after ending or failing.",
            )?,
            discovery_swap_latency_ms: r.histogram_family(
                "spoke_discovery_swap_latency_ms",
                "Milliseconds from a discovery thread receiving a snapshot to the event \
                 loop swapping it in.",
            )?,
            connect_retries: r.counter_family(
                "spoke_connect_retries_total",
                "Requests sent again to another endpoint (or after a backoff) because their \
                 connection failed before a response, by the destination whose endpoint \
                 failed and how (refused, unreachable, connect_timeout, connect_error, \
                 reset, closed).",
            )?,
            connections_refused: r.counter_family(
                "spoke_connections_refused_total",
                "Accepted connections closed at once, by why (loop: redirected to one of \
                 spoke's own listeners; no_orig_dst: an inbound connection that was not \
                 redirected, so has no target; not_inbound_ip: an inbound connection whose \
                 target IP is not one of LINKERD2_PROXY_INBOUND_IPS).",
            )?,
            detect: r.counter_family(
                "spoke_detect_total",
                "Accepted connections by the protocol detection settled on and why \
                 (detected: from the first bytes; quiet_server_first: the client was silent \
                 and the server spoke first; timeout; eof; opaque_port; opaque_profile).",
            )?,
            http2_goaway: r.counter_family(
                "spoke_http2_goaway_total",
                "GOAWAYs with an error code spoke sent to HTTP/2 clients, by why \
                 (premature_reset: the client reset most of many accepted streams; \
                 enhance_your_calm: h2's limits on reset, SETTINGS, PING and CONTINUATION \
                 floods; protocol_error: frames RFC 9113 forbids; flow_control_error; \
                 other).",
            )?,
        })
    }

    /// The registry to render for `/metrics`.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Handle for one authority (`name:port`) in one direction (`outbound`/`inbound`).
    /// Its series appear on first use, one set per TLS state (`metrics/tls.rs`).
    pub fn authority(&self, direction: Direction, authority: &str) -> AuthorityMetrics {
        let base = Labels::new()
            .with("direction", direction.as_str())
            .with("authority", authority.to_owned());
        AuthorityMetrics {
            base,
            request_family: self.request_total.clone(),
            response_family: self.response_total.clone(),
            latency_family: self.response_latency_ms.clone(),
            by_tls: Vec::new(),
        }
    }

    /// Handle for one route of destination `dst` (`name:port`). `labels` are the route's
    /// metrics labels, emitted as `rt_<key>` sorted by key (so the order of a map does not
    /// matter); an empty slice is the default route, which has no `rt_*` labels.
    pub fn route(
        &self,
        direction: Direction,
        dst: &str,
        labels: &[(String, String)],
    ) -> RouteMetrics {
        let mut base = Labels::new()
            .with("direction", direction.as_str())
            .with("dst", dst.to_owned());
        let mut sorted: Vec<&(String, String)> = labels.iter().collect();
        sorted.sort();
        for (key, value) in sorted {
            base.push(format!("rt_{key}"), value.clone());
        }
        RouteMetrics {
            requests: self.route_request_total.series(base.clone()),
            responses: Responses::new(
                base.clone(),
                self.route_response_total.clone(),
                Some(self.route_response_latency_ms.clone()),
            ),
            actual_requests: self.route_actual_request_total.series(base.clone()),
            actual_responses: Responses::new(
                base.clone(),
                self.route_actual_response_total.clone(),
                None,
            ),
            retryable_family: self.route_retryable_total.clone(),
            retryable: None,
            retryable_no_budget: None,
            base,
        }
    }

    /// Handle for TCP connections in `direction` on the `peer` side.
    pub fn tcp(&self, direction: Direction, peer: Peer) -> TcpMetrics {
        let labels = Labels::new()
            .with("direction", direction.as_str())
            .with("peer", peer.as_str());
        TcpMetrics::new(
            labels,
            [
                &self.tcp_open_total,
                &self.tcp_close_total,
                &self.tcp_read_bytes,
                &self.tcp_write_bytes,
            ],
            &self.tcp_open_connections,
        )
    }

    /// The counter of connections in `direction` that detection classified
    /// as `protocol` for `reason` (made on first use: once per connection).
    pub fn detected(
        &self,
        direction: Direction,
        protocol: &'static str,
        reason: &'static str,
    ) -> Counter {
        self.detect.series(
            Labels::new()
                .with("direction", direction.as_str())
                .with("protocol", protocol)
                .with("reason", reason),
        )
    }

    /// Handle for the connection retries of one destination in `direction`. It
    /// holds no series until the first retry, so an idle destination costs no
    /// label set.
    pub fn connect_retries(&self, direction: Direction) -> ConnectRetryMetrics {
        ConnectRetryMetrics {
            direction,
            family: self.connect_retries.clone(),
            seen: Vec::new(),
        }
    }

    /// The counter of accepted connections refused in `direction` for
    /// `reason` (the series is made on first use; refusals are rare).
    /// `spoke_http2_goaway_total` for one direction and reason.
    pub fn http2_goaway(&self, direction: Direction, reason: &'static str) -> Counter {
        self.http2_goaway.series(
            Labels::new()
                .with("direction", direction.as_str())
                .with("reason", reason),
        )
    }

    pub fn connection_refused(&self, direction: Direction, reason: &'static str) -> Counter {
        self.connections_refused.series(
            Labels::new()
                .with("direction", direction.as_str())
                .with("reason", reason),
        )
    }

    /// Handle for discovery streams of `kind`. Each discovery thread (and the event loop,
    /// for swap latency) takes its own; all handles of a kind share the same series.
    pub fn discovery(&self, kind: DiscoveryKind) -> DiscoveryMetrics {
        let labels = Labels::new().with("kind", kind.as_str());
        DiscoveryMetrics {
            streams_opened: self.discovery_streams_opened.series(labels.clone()),
            messages: self.discovery_messages.series(labels.clone()),
            reconnects: self.discovery_reconnects.series(labels.clone()),
            swap_latency: self.discovery_swap_latency_ms.series(labels.clone()),
            errors_family: self.discovery_errors.clone(),
            errors: Vec::new(),
            labels,
        }
    }
}

// === Responses: the shared status/classification cache ===

/// The series of one response outcome, created on first sight and then reused.
#[derive(Clone, Debug)]
struct Outcome {
    status: u16,
    /// The gRPC status of a gRPC response (`grpc_status`).
    grpc: Option<u32>,
    success: bool,
    error: Option<&'static str>,
    responses: Counter,
    latency: Option<Histogram>,
}

/// A response counter family (plus, optionally, its latency histogram) for one base label
/// set, with the outcomes seen so far.
#[derive(Clone, Debug)]
struct Responses {
    base: Labels,
    counter_family: CounterFamily,
    latency_family: Option<HistogramFamily>,
    seen: Vec<Outcome>,
}

impl Responses {
    fn new(
        base: Labels,
        counter_family: CounterFamily,
        latency_family: Option<HistogramFamily>,
    ) -> Self {
        Self {
            base,
            counter_family,
            latency_family,
            seen: Vec::new(),
        }
    }

    #[inline]
    fn record(
        &mut self,
        status: u16,
        success: bool,
        error: Option<&'static str>,
        latency: Option<Duration>,
    ) {
        self.record_grpc(status, None, success, error, latency);
    }

    fn record_grpc(
        &mut self,
        status: u16,
        grpc: Option<u32>,
        success: bool,
        error: Option<&'static str>,
        latency: Option<Duration>,
    ) {
        let outcome = self.outcome(status, grpc, success, error);
        outcome.responses.inc();
        if let (Some(histogram), Some(elapsed)) = (&outcome.latency, latency) {
            histogram.observe(elapsed);
        }
    }

    /// The cached outcome, or a new one. Only the new-outcome branch allocates.
    fn outcome(
        &mut self,
        status: u16,
        grpc: Option<u32>,
        success: bool,
        error: Option<&'static str>,
    ) -> &Outcome {
        let found = self.seen.iter().position(|o| {
            o.status == status && o.success == success && o.error == error && o.grpc == grpc
        });
        let index = match found {
            Some(index) => index,
            None => {
                let code = status.to_string();
                let mut labels = self.base.clone().with("status_code", code.clone()).with(
                    "classification",
                    if success { "success" } else { "failure" },
                );
                if let Some(code) = grpc {
                    labels.push("grpc_status", code.to_string());
                }
                if let Some(error) = error {
                    labels.push("error", error);
                }
                let latency = self
                    .latency_family
                    .as_ref()
                    .map(|f| f.series(self.base.clone().with("status_code", code)));
                // Most handles only ever see one or two outcomes: grow by one.
                self.seen.reserve_exact(1);
                self.seen.push(Outcome {
                    status,
                    grpc,
                    success,
                    error,
                    responses: self.counter_family.series(labels),
                    latency,
                });
                self.seen.len() - 1
            }
        };
        &self.seen[index]
    }
}

// === impl AuthorityMetrics ===

/// `request_total`, `response_total` and `response_latency_ms` for one direction and
/// authority, by TLS state: outbound, of the connection to the endpoint the request
/// went to; inbound, of the connection the request came on. Owned by the event loop
/// (in the destination table).
#[derive(Clone, Debug)]
pub struct AuthorityMetrics {
    base: Labels,
    request_family: CounterFamily,
    response_family: CounterFamily,
    latency_family: HistogramFamily,
    /// The TLS states seen so far, each with its request counter and responses.
    by_tls: Vec<(TlsLabel, Counter, Responses)>,
}

/// Which TLS state's series of an [`AuthorityMetrics`] to count in
/// ([`AuthorityMetrics::slot`]): a request looks its state up once and then
/// counts its request and response there without comparing labels again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsSlot(u32);

impl AuthorityMetrics {
    /// The slot of TLS state `tls`, its series made on first use. Most
    /// authorities see one state, so this is usually a one-entry scan.
    #[inline]
    pub fn slot(&mut self, tls: &TlsLabel) -> TlsSlot {
        match self.by_tls.first() {
            Some((first, ..)) if first == tls => TlsSlot(0),
            _ => self.find_or_add(tls),
        }
    }

    #[cold]
    #[inline(never)]
    fn find_or_add(&mut self, tls: &TlsLabel) -> TlsSlot {
        if let Some(index) = self.by_tls.iter().position(|(t, ..)| t == tls) {
            return TlsSlot(index as u32);
        }
        let labels = tls.add_to(self.base.clone());
        let requests = self.request_family.series(labels.clone());
        let responses = Responses::new(
            labels,
            self.response_family.clone(),
            Some(self.latency_family.clone()),
        );
        self.by_tls.push((tls.clone(), requests, responses));
        TlsSlot(self.by_tls.len() as u32 - 1)
    }

    /// Counts a request received for this authority, sent (or to be sent) over a
    /// connection in the TLS state of `slot`.
    #[inline]
    pub fn request(&self, slot: TlsSlot) {
        if let Some((_, requests, _)) = self.by_tls.get(slot.0 as usize) {
            requests.inc();
        }
    }

    /// Counts a response, in the TLS state of `slot`, and records its latency.
    /// `success` is the response class; `error` is a short reason (`timeout`,
    /// `connect`, `unavailable`, `bad_request`, ...) when the proxy made the
    /// response itself, and becomes the `error` label.
    pub fn response(
        &mut self,
        slot: TlsSlot,
        status: u16,
        success: bool,
        error: Option<&'static str>,
        latency: Duration,
    ) {
        if let Some((.., responses)) = self.by_tls.get_mut(slot.0 as usize) {
            responses.record(status, success, error, Some(latency));
        }
    }

    /// [`AuthorityMetrics::response`] for a gRPC response: `grpc` becomes the
    /// `grpc_status` label.
    pub fn response_grpc(
        &mut self,
        slot: TlsSlot,
        status: (u16, Option<u32>),
        success: bool,
        error: Option<&'static str>,
        latency: Duration,
    ) {
        if let Some((.., responses)) = self.by_tls.get_mut(slot.0 as usize) {
            responses.record_grpc(status.0, status.1, success, error, Some(latency));
        }
    }
}

// === impl RouteMetrics ===

/// The `route_*` families for one route of one destination. Owned by the event loop
/// (e.g. beside the route in the router).
#[derive(Clone, Debug)]
pub struct RouteMetrics {
    base: Labels,
    requests: Counter,
    responses: Responses,
    actual_requests: Counter,
    actual_responses: Responses,
    retryable_family: CounterFamily,
    retryable: Option<Counter>,
    retryable_no_budget: Option<Counter>,
}

impl RouteMetrics {
    /// Counts a request that matched this route (once, however many attempts follow).
    pub fn request(&self) {
        self.requests.inc();
    }

    /// Counts the response the client got, after retries and the route timeout, with
    /// its latency over all attempts. `error` as for `AuthorityMetrics::response`.
    pub fn response(
        &mut self,
        status: u16,
        success: bool,
        error: Option<&'static str>,
        latency: Duration,
    ) {
        self.responses.record(status, success, error, Some(latency));
    }

    /// [`RouteMetrics::response`] for a gRPC response (`grpc_status`).
    pub fn response_grpc(
        &mut self,
        status: (u16, Option<u32>),
        success: bool,
        error: Option<&'static str>,
        latency: Duration,
    ) {
        self.responses
            .record_grpc(status.0, status.1, success, error, Some(latency));
    }

    /// Counts one attempt sent upstream (the first one and every retry).
    pub fn actual_request(&self) {
        self.actual_requests.inc();
    }

    /// Counts the response to one attempt.
    pub fn actual_response(&mut self, status: u16, success: bool) {
        self.actual_responses.record(status, success, None, None);
    }

    /// Counts a failed response on a retryable route: a retry was wanted. With
    /// `skipped_no_budget` the budget refused it, and the `skipped="no_budget"` series
    /// counts it instead. Each series appears on first use, so routes that never retry
    /// do not show `route_retryable_total` at all.
    pub fn retryable(&mut self, skipped_no_budget: bool) {
        let (slot, skipped) = if skipped_no_budget {
            (&mut self.retryable_no_budget, true)
        } else {
            (&mut self.retryable, false)
        };
        let counter = slot.get_or_insert_with(|| {
            let mut labels = self.base.clone();
            if skipped {
                labels.push("skipped", "no_budget");
            }
            self.retryable_family.series(labels)
        });
        counter.inc();
    }
}

// === impl ConnectRetryMetrics ===

/// `spoke_connect_retries_total` for one destination. Owned by the event loop
/// (in the destination table).
#[derive(Clone, Debug)]
pub struct ConnectRetryMetrics {
    direction: Direction,
    family: CounterFamily,
    seen: Vec<(ConnFailure, Counter)>,
}

impl ConnectRetryMetrics {
    /// A request to `dst` goes again after connection failure `why`.
    pub fn retry(&mut self, dst: &str, why: ConnFailure) {
        if let Some((_, c)) = self.seen.iter().find(|(f, _)| *f == why) {
            c.inc();
            return;
        }
        let labels = Labels::new()
            .with("direction", self.direction.as_str())
            .with("dst", dst.to_owned())
            .with("reason", why.as_str());
        let c = self.family.series(labels);
        c.inc();
        self.seen.push((why, c));
    }
}

// === impl DiscoveryMetrics ===

/// The `spoke_discovery_*` families for one kind of stream. Each discovery thread owns
/// one (they share series); the event loop owns one per kind for `swap_latency`.
#[derive(Clone, Debug)]
pub struct DiscoveryMetrics {
    labels: Labels,
    streams_opened: Counter,
    messages: Counter,
    reconnects: Counter,
    swap_latency: Histogram,
    errors_family: CounterFamily,
    errors: Vec<(String, Counter)>,
}

impl DiscoveryMetrics {
    /// A stream was opened (the RPC was started).
    pub fn stream_opened(&self) {
        self.streams_opened.inc();
    }

    /// A message arrived on a stream.
    pub fn message(&self) {
        self.messages.inc();
    }

    /// A stream failed with gRPC status `code` (e.g. `Unavailable`); the caller chooses
    /// the spelling and keeps it stable.
    pub fn error(&mut self, code: &str) {
        if let Some((_, counter)) = self.errors.iter().find(|(c, _)| c == code) {
            counter.inc();
            return;
        }
        let counter = self
            .errors_family
            .series(self.labels.clone().with("code", code.to_owned()));
        counter.inc();
        self.errors.push((code.to_owned(), counter));
    }

    /// A stream is being requested again after it ended or failed.
    pub fn reconnect(&self) {
        self.reconnects.inc();
    }

    /// Time from a discovery thread receiving a snapshot to the event loop swapping it in.
    pub fn swap_latency(&self, elapsed: Duration) {
        self.swap_latency.observe(elapsed);
    }
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
