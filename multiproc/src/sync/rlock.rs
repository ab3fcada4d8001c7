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
/// assert_eq!(lock.count(), 2);
/// drop(inner);
/// drop(outer);
/// assert!(!lock.is_owned() && !lock.locked());
///
/// lock.acquire().unwrap(); // guard-less, Python's acquire()/release()
/// assert!(lock.is_owned());
/// lock.release()?;
/// assert_eq!(lock.release(), Err(multiproc::sync::NotOwner));
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
    raw_lock_methods!();

    /// `true` if the calling thread holds the lock (Python's `RLock._is_owned()`).
    pub fn is_owned(&self) -> bool {
        self.count() > 0
    }

    /// How many times the calling thread holds the lock: 0 if it does not (what
    /// CPython's `RLock` shows as `count` in its repr).
    pub fn count(&self) -> u32 {
        super::mutex_of(&self.block).held_by_me()
    }

    /// The lock's shared memory, for values that use it as theirs
    /// ([`Value::with_lock`](crate::shared::Value::with_lock)).
    pub(crate) fn block(&self) -> &Block {
        &self.block
    }
}

handle_serde!(RLock, rlock_kind());
