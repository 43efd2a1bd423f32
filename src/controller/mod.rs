//! The Destination API server side: the embedded, file-backed controller
//! (`embedded`), its file model (`mesh`), and the gRPC server and stream hub
//! shared with the test harness (`server`).

pub mod embedded;
pub mod mesh;
pub mod server;
