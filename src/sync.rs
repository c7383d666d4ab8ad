//! Locking shared by the relay, the front door, the CLI and TLS.

use std::sync::{Mutex, MutexGuard};

/// Lock `mutex`, even if a thread panicked holding it: berth's critical
/// sections are single map, queue or option operations, so what a poisoned
/// lock guards is still consistent.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
