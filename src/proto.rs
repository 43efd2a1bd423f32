//! Generated protobuf types of Linkerd's destination and identity APIs, and the
//! gRPC method descriptors spoke uses with grpcio.
//!
//! Only `discovery::convert` and `identity::client` (client side) and
//! `controller` (server side) touch these types; everything else sees the domain types of `profile` and
//! `endpoints`. grpcio-compiler does not generate for protobuf 3, so each RPC is a
//! `grpcio::Method` const with protobuf marshallers.

#![allow(clippy::all, missing_docs, unused_qualifications)]

// The generated `mod.rs` declares `destination`, `net`, `http_types`,
// `identity` and `transport_header`; the
// generated files carry inner attributes, which rules out wrapping each one in
// a `mod { include!(..) }` block.
include!(concat!(env!("OUT_DIR"), "/proto/mod.rs"));

use destination::{DestinationProfile, GetDestination, Update};
use protobuf::well_known_types::empty::Empty;

/// The largest message spoke accepts from the control plane: gRPC's default
/// receive limit. The connection runs without gRPC's message-size filter (see
/// `discovery::control`), so the response marshallers apply it.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// `grpcio::pb_de` behind the size limit: a larger message is a decode error,
/// which ends its stream like any malformed message.
fn bounded_de<M: protobuf::Message>(reader: grpcio::MessageReader) -> grpcio::Result<M> {
    check_size(reader.len())?;
    grpcio::pb_de(reader)
}

fn check_size(len: usize) -> grpcio::Result<()> {
    if len > MAX_MESSAGE_BYTES {
        return Err(grpcio::Error::Codec(
            format!("a {len}-byte message exceeds the {MAX_MESSAGE_BYTES}-byte limit").into(),
        ));
    }
    Ok(())
}

/// Full gRPC service name, as Linkerd's control plane registers it.
pub const SERVICE: &str = "io.linkerd.proxy.destination.Destination";

/// `Destination.Get`: a stream of endpoint updates for one `name:port`.
pub const METHOD_GET: grpcio::Method<GetDestination, Update> = grpcio::Method {
    ty: grpcio::MethodType::ServerStreaming,
    name: "/io.linkerd.proxy.destination.Destination/Get",
    req_mar: grpcio::Marshaller {
        ser: grpcio::pb_ser,
        de: grpcio::pb_de,
    },
    resp_mar: grpcio::Marshaller {
        ser: grpcio::pb_ser,
        de: bounded_de,
    },
};

/// `Destination.GetProfile`: a stream of profiles for one `name:port`.
pub const METHOD_GET_PROFILE: grpcio::Method<GetDestination, DestinationProfile> = grpcio::Method {
    ty: grpcio::MethodType::ServerStreaming,
    name: "/io.linkerd.proxy.destination.Destination/GetProfile",
    req_mar: grpcio::Marshaller {
        ser: grpcio::pb_ser,
        de: grpcio::pb_de,
    },
    resp_mar: grpcio::Marshaller {
        ser: grpcio::pb_ser,
        de: bounded_de,
    },
};

/// Full gRPC service name of Linkerd's identity service.
pub const IDENTITY_SERVICE: &str = "io.linkerd.proxy.identity.Identity";

/// `Identity.Certify`: one CSR in, one signed leaf out.
pub const METHOD_CERTIFY: grpcio::Method<identity::CertifyRequest, identity::CertifyResponse> =
    grpcio::Method {
        ty: grpcio::MethodType::Unary,
        name: "/io.linkerd.proxy.identity.Identity/Certify",
        req_mar: grpcio::Marshaller {
            ser: grpcio::pb_ser,
            de: bounded_de,
        },
        resp_mar: grpcio::Marshaller {
            ser: grpcio::pb_ser,
            de: bounded_de,
        },
    };

/// `grpc.health.v1.Health/Check`, asked once of each new control-plane
/// connection to learn that gRPC answers on it (see `discovery::control`).
/// The request is a `HealthCheckRequest` with no service named (the server as
/// a whole), which encodes to zero bytes, like `Empty`; the response's fields
/// are not read. A server without the health service answers UNIMPLEMENTED,
/// which proves as much.
pub const METHOD_HEALTH_CHECK: grpcio::Method<Empty, Empty> = grpcio::Method {
    ty: grpcio::MethodType::Unary,
    name: "/grpc.health.v1.Health/Check",
    req_mar: grpcio::Marshaller {
        ser: grpcio::pb_ser,
        de: grpcio::pb_de,
    },
    resp_mar: grpcio::Marshaller {
        ser: grpcio::pb_ser,
        de: bounded_de,
    },
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_over_the_limit_are_refused() {
        assert!(check_size(0).is_ok());
        assert!(check_size(MAX_MESSAGE_BYTES).is_ok());
        let e = check_size(MAX_MESSAGE_BYTES + 1).unwrap_err();
        assert!(matches!(e, grpcio::Error::Codec(_)), "{e:?}");
        assert!(e.to_string().contains("4194305-byte message"), "{e}");
    }
}
