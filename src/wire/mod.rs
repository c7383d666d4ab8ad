//! What the server and `berth share` both speak: the relay's control frames,
//! the TCP or TLS connection each end holds, and bytes copied between two
//! connections. Nothing here knows the server's relay or the CLI.

pub mod copy;
pub mod protocol;
pub mod stream;

pub use copy::{pipe, splice, splice_until_idle};
pub use stream::{silent_and_open, Stream};
