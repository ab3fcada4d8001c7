//! [`RLock`]: a lock between processes that its holder may take again.

use std::fmt;
use std::io;
use std::sync::Arc;

use super::{Block, block, new_mutex_block};

/// A re-entrant lock shared by processes (Python's `multiprocessing.RLock`): its holder
/// (a thread of some process) may lock it again; it is free once every guard is gone.
/// Robust like [`Lock`](super::Lock).
///
/// ```
/// let lock = multiproc::sync::RLock::new()?;
/// let outer = lock.lock().unwrap();
/// let inner = lock.lock().unwrap(); // the holder again: fine
/// drop(inner);
/// drop(outer);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct RLock {
    block: Arc<Block>,
}

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RLock")
    }
}

fn rlock_kind() -> u64 {
    block::kind::<()>("RLock")
}

impl RLock {
    /// A new, unlocked re-entrant lock.
    pub fn new() -> io::Result<RLock> {
        Ok(RLock {
            block: Arc::new(new_mutex_block(rlock_kind(), true)?),
        })
    }

    guard_methods!();
}

handle_serde!(RLock, rlock_kind());
