//! What the server and `berth share` both speak: the relay's control frames,
//! the TCP or TLS connection each end holds, and bytes copied between two
//! connections. Nothing here knows the server's relay or the CLI.
//!
//! `conn`, `control` and `duplex` are the same on the event loop (tokio),
//! where `share` runs; the server's relay moves there next.

pub mod conn;
pub mod control;
pub mod copy;
pub mod duplex;
pub mod protocol;
pub mod stream;

pub use copy::{splice, splice_until_idle};
pub use stream::{silent_and_open, Stream};
