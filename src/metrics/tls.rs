//! Linkerd's transport TLS labels (`tls`, `server_id`, `client_id`, `no_tls_reason`,
//! `sni`) as a small value type, [`TlsLabel`], that the per-request and per-connection
//! handles (`AuthorityMetrics`, `TcpMetrics`) key their cached series by. Pure; used on
//! the event-loop thread.
//!
//! The values are linkerd2-proxy's (`linkerd/app/core/src/transport/labels.rs`,
//! `TlsAccept` and `TlsConnect`; the reasons are the `Display` of `NoClientTls` in
//! `linkerd/tls/src/client.rs` and `NoServerTls` in `linkerd/tls/src/server.rs`):
//!
//! ```text
//! connect (outbound, peer="dst"):  tls="true",server_id="<id>"
//!                                  tls="no_identity",no_tls_reason="not_provided_by_service_discovery"
//!                                  tls="no_identity",no_tls_reason="loopback"   (inbound to the app)
//!                                  tls="disabled"                               (identity off)
//! accept (peer="src"):             tls="true",client_id="<id>"   (client_id="" without a client cert)
//!                                  tls="no_identity",no_tls_reason="no_tls_from_remote"
//!                                  tls="no_identity",no_tls_reason="port_skipped" (opaque port)
//!                                  tls="no_identity",no_tls_reason="loopback"   (outbound, from the app)
//!                                  tls="opaque",sni="<name>"     (a ClientHello for another name)
//!                                  tls="disabled"                               (identity off)
//! ```
//!
//! Two reasons are spoke's own, for cases linkerd2-proxy has no label for:
//! `no_certificate_yet` (an endpoint to be reached over mTLS while no certificate is in
//! force: the request fails, nothing is sent in plaintext) and `no_endpoint` (a request
//! answered by the proxy before any endpoint was tried, e.g. 503 for an empty endpoint
//! set).

use std::sync::Arc;

use super::Labels;

/// Why a connection or request carries no TLS identity: the `no_tls_reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NoTlsReason {
    /// The local application's side of the proxy (outbound accepted, inbound
    /// connected): never TLS.
    Loopback,
    /// Discovery named no identity for the endpoint.
    NotProvidedByServiceDiscovery,
    /// The client did not send a ClientHello (plaintext, or one spoke cannot read).
    NoTlsFromRemote,
    /// The inbound port skips protocol detection (opaque), so TLS is not looked for.
    PortSkipped,
    /// spoke's own: the endpoint is meshed but no certificate is in force yet.
    NoCertificateYet,
    /// spoke's own: the proxy answered before any endpoint was tried.
    NoEndpoint,
}

impl NoTlsReason {
    pub fn as_str(self) -> &'static str {
        match self {
            NoTlsReason::Loopback => "loopback",
            NoTlsReason::NotProvidedByServiceDiscovery => "not_provided_by_service_discovery",
            NoTlsReason::NoTlsFromRemote => "no_tls_from_remote",
            NoTlsReason::PortSkipped => "port_skipped",
            NoTlsReason::NoCertificateYet => "no_certificate_yet",
            NoTlsReason::NoEndpoint => "no_endpoint",
        }
    }
}

/// The TLS state of a connection (or of the connection a request went over), as its
/// metric labels say it. Cloning costs at most one reference-count increment.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TlsLabel {
    /// Identity is off: `tls="disabled"`.
    Disabled,
    /// `tls="no_identity",no_tls_reason="..."`.
    NoIdentity(NoTlsReason),
    /// An mTLS connection spoke made, to this identity: `tls="true",server_id="..."`.
    ServerId(Arc<str>),
    /// An mTLS connection spoke accepted, with the identity the client proved, if it
    /// presented a certificate: `tls="true",client_id="..."` (`""` when none).
    ClientId(Option<Arc<str>>),
    /// An accepted TLS connection for another name, passed through untouched:
    /// `tls="opaque",sni="..."`.
    Opaque(Arc<str>),
}

impl TlsLabel {
    /// `labels` with this state's labels after them.
    pub fn add_to(&self, mut labels: Labels) -> Labels {
        match self {
            TlsLabel::Disabled => labels.push("tls", "disabled"),
            TlsLabel::NoIdentity(why) => {
                labels.push("tls", "no_identity");
                labels.push("no_tls_reason", why.as_str());
            }
            TlsLabel::ServerId(id) => {
                labels.push("tls", "true");
                labels.push("server_id", id.clone());
            }
            TlsLabel::ClientId(id) => {
                labels.push("tls", "true");
                labels.push("client_id", id.clone().unwrap_or_else(|| Arc::from("")));
            }
            TlsLabel::Opaque(sni) => {
                labels.push("tls", "opaque");
                labels.push("sni", sni.clone());
            }
        }
        labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(tls: TlsLabel) -> String {
        let labels = tls.add_to(Labels::new().with("direction", "inbound"));
        labels
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    #[test]
    fn labels_are_linkerds() {
        let id = || Arc::<str>::from("web.ns.serviceaccount.identity.linkerd.cluster.local");
        assert_eq!(
            text(TlsLabel::Disabled),
            r#"direction="inbound",tls="disabled""#
        );
        assert_eq!(
            text(TlsLabel::ServerId(id())),
            r#"direction="inbound",tls="true",server_id="web.ns.serviceaccount.identity.linkerd.cluster.local""#
        );
        assert_eq!(
            text(TlsLabel::ClientId(Some(id()))),
            r#"direction="inbound",tls="true",client_id="web.ns.serviceaccount.identity.linkerd.cluster.local""#
        );
        assert_eq!(
            text(TlsLabel::ClientId(None)),
            r#"direction="inbound",tls="true",client_id="""#
        );
        assert_eq!(
            text(TlsLabel::Opaque("db.example.com".into())),
            r#"direction="inbound",tls="opaque",sni="db.example.com""#
        );
        for (why, said) in [
            (NoTlsReason::Loopback, "loopback"),
            (
                NoTlsReason::NotProvidedByServiceDiscovery,
                "not_provided_by_service_discovery",
            ),
            (NoTlsReason::NoTlsFromRemote, "no_tls_from_remote"),
            (NoTlsReason::PortSkipped, "port_skipped"),
            (NoTlsReason::NoCertificateYet, "no_certificate_yet"),
            (NoTlsReason::NoEndpoint, "no_endpoint"),
        ] {
            assert_eq!(
                text(TlsLabel::NoIdentity(why)),
                format!(r#"direction="inbound",tls="no_identity",no_tls_reason="{said}""#)
            );
        }
    }
}
