//! What the loop keeps for the modules above it: the callbacks of signal
//! handlers (run from the wakeup channel, asyncio's `_process_self_data`)
//! and one value of per-loop state for each module that asks
//! (the executor's queue, the signal registrations, the children).
//!
//! The loop does not know those modules (docs/design.md D14); it only
//! dispatches signals to [`Handle`]s and drops the extensions when it
//! closes, first, so that their `Drop` can undo what they set up
//! (unregister signal actions, reap children).

use std::any::Any;
use std::rc::Rc;
use std::sync::Arc;

use mio::Waker;

use super::ready::Ready;
use super::remote::Shared;
use super::{Handle, LoopHandle};
use crate::error::Error;

/// What a signal action needs to reach its loop without locking: `Send +
/// Sync`, and [`raise`](SignalTarget::raise) is async-signal-safe.
pub(crate) struct SignalTarget {
    shared: Arc<Shared>,
    waker: Arc<Waker>,
}

impl SignalTarget {
    /// Marks `signal` (1..=64) caught and wakes the loop.
    pub(crate) fn raise(&self, signal: u32) {
        self.shared.raise_signal(&self.waker, signal);
    }
}

impl LoopHandle {
    /// A target for signal actions of this loop.
    pub(crate) fn signal_target(&self) -> Result<SignalTarget, Error> {
        self.check_closed()?;
        let waker = self.inner.shared.signal_waker().ok_or(Error::Closed)?;
        Ok(SignalTarget {
            shared: self.inner.shared.clone(),
            waker,
        })
    }

    /// Sets (or, with `None`, clears) the callback run when `signal` is
    /// caught; returns the previous one.
    pub(crate) fn set_signal_handle(&self, signal: u32, handle: Option<Handle>) -> Option<Handle> {
        let mut handles = self.inner.signal_handles.borrow_mut();
        let i = signal as usize;
        if handles.len() <= i {
            handles.resize(i + 1, None);
        }
        std::mem::replace(&mut handles[i], handle)
    }

    /// Whether `signal` has a callback on this loop.
    pub(crate) fn has_signal_handle(&self, signal: u32) -> bool {
        let handles = self.inner.signal_handles.borrow();
        matches!(handles.get(signal as usize), Some(Some(_)))
    }

    /// Queues the callbacks of the signals in `mask`, lowest number first.
    pub(super) fn queue_signals(&self, mut mask: u64, ready: &mut Vec<Ready>) {
        let handles = self.inner.signal_handles.borrow();
        while mask != 0 {
            let signal = mask.trailing_zeros() as usize + 1;
            mask &= mask - 1;
            if let Some(Some(handle)) = handles.get(signal) {
                if !handle.cancelled() {
                    ready.push(Ready::Callback(handle.clone()));
                }
            }
        }
    }

    /// This loop's value of `T`, made with `T::default()` on first use;
    /// `None` once the loop is closed.
    pub(crate) fn extension<T: Any + Default>(&self) -> Option<Rc<T>> {
        if self.inner.closed.get() {
            return None;
        }
        let mut extensions = self.inner.extensions.borrow_mut();
        for ext in extensions.iter() {
            if let Ok(found) = ext.clone().downcast::<T>() {
                return Some(found);
            }
        }
        let new = Rc::new(T::default());
        extensions.push(new.clone());
        Some(new)
    }
}
