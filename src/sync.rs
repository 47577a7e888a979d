//! The synchronisation types of the code that other threads reach (the
//! `Remote` inbox, `src/event_loop/remote.rs`), in one place so a model
//! checker can swap them.
//!
//! Normally these are std's types and mio's waker. Built with
//! `RUSTFLAGS="--cfg sloop_loom"`, they are loom's, and the waker is a loom-aware
//! stand-in that counts its rings, so `tests/loom_remote.rs` can explore
//! every interleaving of senders, the loop's drain and `close`. Only the
//! model runs in such a build: a real `EventLoop` cannot.

#[cfg(not(sloop_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, Ordering};
#[cfg(not(sloop_loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};

/// What rings the loop out of its poll: an eventfd through mio.
#[cfg(not(sloop_loom))]
pub(crate) type Waker = mio::Waker;

#[cfg(sloop_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, Ordering};
#[cfg(sloop_loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};

#[cfg(sloop_loom)]
pub(crate) use model_waker::Waker;

#[cfg(sloop_loom)]
mod model_waker {
    use loom::sync::{Condvar, Mutex};
    use std::io;

    /// An eventfd's semantics under loom: `wake` adds one, `wait` blocks
    /// until the count is not zero and takes it. A lost wakeup shows up
    /// as a deadlock that loom reports.
    #[derive(Debug, Default)]
    pub(crate) struct Waker {
        rung: Mutex<usize>,
        cv: Condvar,
    }

    impl Waker {
        pub(crate) fn wake(&self) -> io::Result<()> {
            *self.rung.lock().unwrap() += 1;
            self.cv.notify_one();
            Ok(())
        }

        /// Blocks until rung; returns how many rings it took.
        pub(crate) fn wait(&self) -> usize {
            let mut rung = self.rung.lock().unwrap();
            while *rung == 0 {
                rung = self.cv.wait(rung).unwrap();
            }
            std::mem::take(&mut *rung)
        }

        /// Takes the rings so far without blocking.
        pub(crate) fn take(&self) -> usize {
            std::mem::take(&mut *self.rung.lock().unwrap())
        }
    }

    impl From<mio::Waker> for Waker {
        fn from(_: mio::Waker) -> Waker {
            Waker::default()
        }
    }
}
