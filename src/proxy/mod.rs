//! The data plane: the mio event loop (`event_loop`) and what it drives —
//! client sessions (`conn`), upstream pools (`pool`), the destination table
//! (`destinations`), the inbound side's rules (`inbound`), the admin endpoints
//! (`admin`), timers and buffers.

pub mod admin;
pub mod buffer;
pub mod conn;
pub mod ctx;
pub mod destinations;
pub mod event_loop;
pub mod exchange;
pub mod inbound;
pub mod listen;
pub mod orig_dst;
pub mod pipe;
pub mod pool;
pub mod ready;
pub mod timers;
pub mod token;
pub mod transport;
