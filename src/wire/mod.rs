//! What the server and `berth share` both speak: the relay's control frames,
//! the TCP or TLS connection each end holds, and bytes copied between two
//! connections. Nothing here knows the server's relay or the CLI.
//!
//! Both run on the event loop (tokio).

pub mod conn;
pub mod control;
pub mod duplex;
pub mod protocol;
