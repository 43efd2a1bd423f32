//! Generated protobuf types of Linkerd's destination API, and the gRPC method
//! descriptors spoke uses with grpcio.
//!
//! Only `discovery::convert` (client side) and `controller` (server side) touch
//! these types; everything else sees the domain types of `profile` and
//! `endpoints`. grpcio-compiler does not generate for protobuf 3, so each RPC is a
//! `grpcio::Method` const with protobuf marshallers.

#![allow(clippy::all, missing_docs, unused_qualifications)]

// The generated `mod.rs` declares `destination`, `net` and `http_types`; the
// generated files carry inner attributes, which rules out wrapping each one in
// a `mod { include!(..) }` block.
include!(concat!(env!("OUT_DIR"), "/proto/mod.rs"));

use destination::{DestinationProfile, GetDestination, Update};

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
        de: grpcio::pb_de,
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
        de: grpcio::pb_de,
    },
};
