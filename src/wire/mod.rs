//! What both ends of a tunnel speak and do alike: the async connection,
//! control frames on the event loop, and byte copying between two connections.

pub mod conn;
pub mod control;
pub mod splice;
