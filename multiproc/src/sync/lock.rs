//! [`Lock`]: mutual exclusion between processes, robust against a holder's death.

use std::fmt;
use std::io;
use std::sync::Arc;

use super::{Block, block, new_mutex_block};

/// A lock shared by processes (Python's `multiprocessing.Lock`): mutual exclusion with
/// an RAII guard, robust against a holder's death, reporting re-acquisition by its
/// holder (S16, S29, S39).
///
/// ```
/// let lock = multiproc::sync::Lock::new()?;
/// let held = lock.lock().unwrap();
/// assert!(lock.lock().unwrap_err().to_string().contains("already holds"));
/// drop(held);
/// assert!(lock.try_lock().is_ok());
///
/// // Python's acquire()/release() and locked(), for a hold that spans functions:
/// lock.acquire().unwrap();
/// assert!(lock.locked());
/// lock.release()?;
/// assert!(!lock.locked());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Lock {
    block: Arc<Block>,
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Lock")
    }
}

fn lock_kind() -> u64 {
    block::kind::<()>("Lock")
}

impl Lock {
    /// A new, unlocked lock.
    pub fn new() -> io::Result<Lock> {
        Ok(Lock {
            block: Arc::new(new_mutex_block(lock_kind(), false)?),
        })
    }

    guard_methods!();
    raw_lock_methods!();

    /// The lock's shared memory, for values that use it as theirs
    /// ([`Value::with_lock`](crate::shared::Value::with_lock)).
    pub(crate) fn block(&self) -> &Block {
        &self.block
    }
}

handle_serde!(Lock, lock_kind());
