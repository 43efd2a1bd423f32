//! The Destination API server side: the embedded, file-backed controller
//! (`embedded`), its file model (`mesh`), the gRPC server and stream hub
//! shared with the test harness (`server`), and the Identity service the
//! embedded controller serves beside it (`identity`).

pub mod embedded;
pub mod identity;
pub mod mesh;
pub mod server;
