//! Per-request `request` frames, gathered briefly and sent to each tunnel's client in one write.
//!
//! A frame per request was a write on the server and a wake-up of the client's
//! control thread per request; under load those cost as much as forwarding the
//! request itself. The lines only feed `berth share`'s display, so they may
//! wait `GATHER` for company: one thread sends what gathered for every tunnel.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Duration;

use super::Tunnel;
use crate::sync::lock;
use crate::wire::protocol::Frame;

/// Longest a line waits before it is sent.
pub const GATHER: Duration = Duration::from_millis(20);
/// Bytes of lines a tunnel may have waiting; beyond, lines are dropped (a
/// client that stopped reading its control connection must not grow memory).
pub const MAX_WAITING_BYTES: usize = 256 * 1024;
/// How often an idle sender thread checks that its relay still exists.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Each tunnel with lines waiting, by tunnel id, and the lines' bytes.
type Waiting = HashMap<String, (Arc<Tunnel>, Vec<u8>)>;

/// The lines waiting for each tunnel, by tunnel id.
#[derive(Default)]
pub struct Lines {
    waiting: Mutex<Waiting>,
    wake: Condvar,
    sender: OnceLock<()>,
}

impl Lines {
    /// Queue `frame` for `tunnel`'s client; sent within `GATHER`.
    pub fn send(self: &Arc<Self>, tunnel: &Arc<Tunnel>, frame: &Frame) {
        let Ok(mut line) = serde_json::to_vec(frame) else {
            return;
        };
        line.push(b'\n');
        self.sender.get_or_init(|| {
            let lines = Arc::downgrade(self);
            let _ = std::thread::Builder::new()
                .name("relay-lines".into())
                .spawn(move || send_loop(&lines));
        });
        if self.queue(tunnel, &line) {
            self.wake.notify_one();
        }
    }

    /// Add a line to the tunnel's waiting bytes, within the bound; whether the
    /// sender must be woken (nothing was waiting before).
    fn queue(&self, tunnel: &Arc<Tunnel>, line: &[u8]) -> bool {
        let mut waiting = lock(&self.waiting);
        let was_empty = waiting.is_empty();
        let (_, bytes) = waiting
            .entry(tunnel.id.clone())
            .or_insert_with(|| (tunnel.clone(), Vec::new()));
        if bytes.len() + line.len() <= MAX_WAITING_BYTES {
            bytes.extend_from_slice(line);
        }
        was_empty
    }

    /// Everything waiting, once something is (or `None` after `IDLE_CHECK`).
    fn next_batch(&self) -> Option<Waiting> {
        let waiting = lock(&self.waiting);
        let (waiting, _) = self
            .wake
            .wait_timeout_while(waiting, IDLE_CHECK, |w| w.is_empty())
            .unwrap_or_else(|e| e.into_inner());
        if waiting.is_empty() {
            return None;
        }
        drop(waiting);
        std::thread::sleep(GATHER);
        Some(std::mem::take(&mut *lock(&self.waiting)))
    }
}

/// Send what gathered, every `GATHER` while lines come; ends with the relay.
fn send_loop(lines: &Weak<Lines>) {
    while let Some(lines) = lines.upgrade() {
        let Some(batch) = lines.next_batch() else {
            continue;
        };
        drop(lines);
        for (tunnel, bytes) in batch.into_values() {
            if tunnel.closed.load(Ordering::SeqCst) {
                continue;
            }
            // Queued for the control connection's task; a client that reads
            // nothing has its lines dropped (and its tunnel closed by the task).
            let _ = tunnel.send_bytes(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::{Owner, Relay};

    fn request(path: &str) -> Frame {
        Frame::Request {
            method: "GET".into(),
            path: path.into(),
            status: 200,
            duration_ms: 1,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    #[test]
    fn lines_arrive_in_order_and_a_tunnel_that_does_not_read_is_bounded() {
        let relay = Relay::new("localhost", "http://localhost:8080");
        let tunnel = relay.claim(Some("lines"), Owner::token(1), |_| {}).unwrap();
        let mut outbox = tunnel.take_outbox().unwrap();
        let lines = Arc::new(Lines::default());
        for i in 0..3 {
            lines.send(&tunnel, &request(&format!("/{i}")));
        }
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let bytes = outbox.blocking_recv().expect("lines sent");
            for line in bytes.split(|&b| b == b'\n') {
                if let Ok(Frame::Request { path, .. }) = serde_json::from_slice(line) {
                    seen.push(path);
                }
            }
        }
        assert_eq!(seen, ["/0", "/1", "/2"]);
        // Lines beyond the bound are dropped while none can be sent (a queue
        // with no sender thread: nothing drains it behind the test's back).
        let unsent = Lines::default();
        let line = vec![b'x'; 4000];
        assert!(unsent.queue(&tunnel, &line));
        for _ in 0..(MAX_WAITING_BYTES / line.len() + 10) {
            assert!(!unsent.queue(&tunnel, &line));
        }
        let waiting = lock(&unsent.waiting)[&tunnel.id].1.len();
        assert_eq!(waiting, MAX_WAITING_BYTES / line.len() * line.len());
    }
}
