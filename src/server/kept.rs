//! The front door's open connections and which of them wait for a request,
//! so that stopping closes those at once and the drain waits only for
//! requests in flight.

use std::collections::HashMap;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use crate::sync::lock;
use crate::wire::Stream;

/// A connection serving a request (or not yet waiting for one).
const BUSY: u8 = 0;
/// A connection waiting for its next request head.
const WAITING: u8 = 1;
/// Closed by `close_waiting` while it waited: it must end without answering.
const CLOSED: u8 = 2;

/// Every connection the front door serves, by a number of its own.
#[derive(Default)]
pub struct KeptAlive {
    next: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Kept>>>,
}

/// One connection: its socket, to close it from another thread, and its state.
struct Kept {
    socket: TcpStream,
    state: AtomicU8,
}

/// A connection's place in [`KeptAlive`], given up when it is dropped.
pub struct Entry<'a> {
    of: &'a KeptAlive,
    id: u64,
    kept: Arc<Kept>,
}

impl KeptAlive {
    /// Count a connection in; None if its socket cannot be shared.
    pub fn enter(&self, stream: &Stream) -> Option<Entry<'_>> {
        let kept = Arc::new(Kept {
            socket: stream.tcp().try_clone().ok()?,
            state: AtomicU8::new(BUSY),
        });
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.conns).insert(id, kept.clone());
        Some(Entry { of: self, id, kept })
    }

    /// Close the reading side of every connection waiting for a request head:
    /// its wait ends as if the client had closed, and its thread, finding it
    /// closed, ends it without a word (the race every keep-alive close has:
    /// clients send again on a new connection). One that took its head first
    /// is busy and left alone.
    pub fn close_waiting(&self) {
        for kept in lock(&self.conns).values() {
            let closed =
                kept.state
                    .compare_exchange(WAITING, CLOSED, Ordering::SeqCst, Ordering::SeqCst);
            if closed.is_ok() {
                let _ = kept.socket.shutdown(Shutdown::Read);
            }
        }
    }
}

impl Entry<'_> {
    /// Mark the connection as waiting for a request head, unless `stopping`
    /// is set; whether it may wait. (Marked first and checked second, while
    /// the server sets the flag first and then closes what waits: one of the
    /// two always sees the other.)
    pub fn wait_unless(&self, stopping: &AtomicBool) -> bool {
        let _ = self
            .kept
            .state
            .compare_exchange(BUSY, WAITING, Ordering::SeqCst, Ordering::SeqCst);
        !stopping.load(Ordering::SeqCst)
    }

    /// The wait for a head is over (a head, or an error): whether the
    /// connection is still the thread's to serve, not closed by the server.
    pub fn take(&self) -> bool {
        let state = &self.kept.state;
        state
            .compare_exchange(WAITING, BUSY, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
            || state.load(Ordering::SeqCst) == BUSY
    }
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        lock(&self.of.conns).remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    #[test]
    fn only_connections_waiting_for_a_head_are_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut served = Stream::Tcp(listener.accept().unwrap().0);
        let kept = KeptAlive::default();
        let stopping = AtomicBool::new(false);
        let entry = kept.enter(&served).unwrap();
        // Busy: left alone.
        kept.close_waiting();
        assert!(entry.take());
        // Waiting: closed, and its thread must not answer.
        assert!(entry.wait_unless(&stopping));
        kept.close_waiting();
        let mut byte = [0u8; 1];
        assert_eq!(served.read(&mut byte).unwrap(), 0);
        assert!(!entry.take());
        // Once stopping, no new wait starts.
        stopping.store(true, Ordering::SeqCst);
        assert!(!entry.wait_unless(&stopping));
        drop(entry);
        assert!(lock(&kept.conns).is_empty());
        drop(client);
    }
}
