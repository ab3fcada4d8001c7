//! [`Event`]: a flag processes wait for.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{BODY, Block, block, deadline};
use crate::sys::mem;

const FLAG_AT: usize = BODY;

/// A flag processes wait for (Python's `multiprocessing.Event`).
///
/// ```
/// let ev = multiproc::sync::Event::new()?;
/// assert!(!ev.wait_timeout(std::time::Duration::from_millis(1)));
/// ev.set();
/// assert!(ev.is_set() && ev.wait_timeout(std::time::Duration::ZERO));
/// ev.clear();
/// assert!(!ev.is_set());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Event {
    block: Arc<Block>,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .finish()
    }
}

fn event_kind() -> u64 {
    block::kind::<()>("Event")
}

impl Event {
    /// A new event, not set.
    pub fn new() -> io::Result<Event> {
        Ok(Event {
            block: Arc::new(Block::new(event_kind(), FLAG_AT + 4)?),
        })
    }

    /// `true` once set (until cleared).
    pub fn is_set(&self) -> bool {
        self.block.u32_at(FLAG_AT).load(Ordering::Acquire) != 0
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        let flag = self.block.u32_at(FLAG_AT);
        flag.store(1, Ordering::Release);
        mem::futex_wake_all(flag);
    }

    /// Clears the flag.
    pub fn clear(&self) {
        self.block.u32_at(FLAG_AT).store(0, Ordering::Release);
    }

    /// Waits until the flag is set.
    pub fn wait(&self) {
        self.wait_until(None);
    }

    /// Waits at most `timeout`; `true` if the flag is set (Python's return value).
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(deadline(Some(timeout)))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        let flag = self.block.u32_at(FLAG_AT);
        loop {
            if flag.load(Ordering::Acquire) != 0 {
                return true;
            }
            let left = mem::time_left(deadline);
            if left == Some(Duration::ZERO) {
                return false;
            }
            mem::futex_wait(flag, 0, left);
        }
    }
}

handle_serde!(Event, event_kind());
