//! Unix signal handlers on the loop: asyncio's `add_signal_handler` and
//! `remove_signal_handler`, and [`run_until_signal`](LoopHandle::run_until_signal)
//! for a server that stops cleanly on Ctrl-C.
//!
//! The signal handler itself (`signal-hook-registry`'s, which runs every
//! registered action) does only async-signal-safe work: each loop's action
//! sets the signal's bit in that loop's pending mask and writes to its
//! eventfd (`SignalTarget::raise`). The loop, woken, finds the mask while
//! draining what other threads sent and queues the callbacks as ordinary
//! callbacks (asyncio's `_process_self_data`), so they run on the loop's
//! thread like any other. The mask is looked at only after a wake: the
//! dispatch path of an iteration is unchanged.
//!
//! Several loops may handle one signal: each registers its own action, and
//! each runs its callback. A process-wide count per signal remembers the
//! disposition from before the first handler; removing the last handler
//! (or closing the last loop with one) puts it back, so SIGINT kills the
//! process again.
//!
//! Unlike asyncio, any thread's loop may add handlers: Linux delivers a
//! process-directed signal to one thread, and the action wakes the loop
//! whichever thread that is.

use std::cell::{Cell, RefCell};
use std::panic::Location;
use std::rc::Rc;
use std::sync::Mutex;

use signal_hook_registry::SigId;

use crate::error::Error;
use crate::event_loop::ext::SignalTarget;
use crate::event_loop::{Handle, LoopHandle};
use crate::sys;

/// The highest signal number (Linux's `SIGRTMAX`).
const MAX_SIGNAL: i32 = 64;

/// What the process-wide table keeps per signal.
#[derive(Clone, Copy, Default)]
struct Disposition {
    /// Loops with a handler for the signal.
    count: usize,
    /// The disposition from before this module's first registration.
    before: Option<libc::sigaction>,
    /// The registry's own handler, saved after its first install: the
    /// registry installs it only once, so it is put back by hand when the
    /// signal is handled again after a restore.
    registry: Option<libc::sigaction>,
}

struct Table(Vec<Disposition>);

static TABLE: Mutex<Table> = Mutex::new(Table(Vec::new()));

fn table() -> std::sync::MutexGuard<'static, Table> {
    TABLE.lock().unwrap_or_else(|e| e.into_inner())
}

/// This loop's registrations, unregistered when the loop closes.
#[derive(Default)]
struct LoopSignals {
    ids: RefCell<Vec<(i32, SigId)>>,
}

impl Drop for LoopSignals {
    fn drop(&mut self) {
        for (signal, id) in self.ids.take() {
            release(signal, id);
        }
    }
}

fn check_signal(signal: i32) -> Result<u32, Error> {
    if !(1..=MAX_SIGNAL).contains(&signal) {
        return Err(Error::InvalidSignal(signal));
    }
    if signal_hook_registry::FORBIDDEN.contains(&signal) {
        return Err(Error::SignalCannotBeCaught(signal));
    }
    Ok(signal as u32)
}

/// EINVAL from `sigaction` means the signal cannot be caught (asyncio's
/// RuntimeError('sig N cannot be caught')).
fn refused(signal: i32) -> impl Fn(std::io::Error) -> Error {
    move |e| {
        if e.raw_os_error() == Some(libc::EINVAL) {
            Error::SignalCannotBeCaught(signal)
        } else {
            Error::Io(e)
        }
    }
}

fn acquire(signal: i32, target: SignalTarget) -> Result<SigId, Error> {
    let mut table = table();
    let i = signal as usize;
    if table.0.len() <= i {
        table.0.resize(i + 1, Disposition::default());
    }
    let entry = &mut table.0[i];
    if entry.count == 0 {
        entry.before = Some(sys::signal_disposition(signal).map_err(refused(signal))?);
    }
    let id = sys::register_signal(signal, target, SignalTarget::raise).map_err(refused(signal))?;
    if entry.count == 0 {
        match entry.registry {
            None => entry.registry = Some(sys::signal_disposition(signal)?),
            Some(ref installed) => {
                if let Err(e) = sys::set_signal_disposition(signal, installed) {
                    signal_hook_registry::unregister(id);
                    return Err(e.into());
                }
            }
        }
    }
    entry.count += 1;
    Ok(id)
}

fn release(signal: i32, id: SigId) {
    signal_hook_registry::unregister(id);
    let mut table = table();
    let Some(entry) = table.0.get_mut(signal as usize) else {
        return;
    };
    entry.count = entry.count.saturating_sub(1);
    if entry.count == 0 {
        if let Some(before) = entry.before {
            if let Err(e) = sys::set_signal_disposition(signal, &before) {
                log::warn!("could not restore the disposition of signal {signal}: {e}");
            }
        }
    }
}

impl LoopHandle {
    /// Runs `callback` on the loop's thread each time `signal` is caught
    /// (asyncio's `add_signal_handler`). A second call for the same signal
    /// replaces the callback. Signals caught while the loop is busy are
    /// coalesced: the callback runs at least once after the last one.
    ///
    /// The callback runs as an ordinary callback (a panic in it goes to
    /// the exception handler). Several loops may each handle a signal.
    ///
    /// ```
    /// use std::{cell::Cell, rc::Rc};
    ///
    /// let lp = sloop::EventLoop::new()?;
    /// let caught = Rc::new(Cell::new(0));
    /// let (c, handle) = (caught.clone(), lp.handle());
    /// lp.add_signal_handler(libc::SIGUSR2, move || {
    ///     c.set(c.get() + 1);
    ///     handle.stop();
    /// })?;
    /// std::process::Command::new("kill")
    ///     .args(["-USR2", &std::process::id().to_string()])
    ///     .status()?;
    /// lp.run_forever()?;
    /// assert_eq!(caught.get(), 1);
    /// assert!(lp.remove_signal_handler(libc::SIGUSR2)?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSignal`] outside 1..=64;
    /// [`Error::SignalCannotBeCaught`] for SIGKILL, SIGSTOP, the signals of
    /// faults (SIGILL, SIGFPE, SIGSEGV) and those the C library keeps;
    /// [`Error::Closed`] if the loop is closed.
    #[track_caller]
    pub fn add_signal_handler<F: FnMut() + 'static>(
        &self,
        signal: i32,
        callback: F,
    ) -> Result<(), Error> {
        let number = check_signal(signal)?;
        let signals = self.extension::<LoopSignals>().ok_or(Error::Closed)?;
        let handle = Handle::repeating(callback, Location::caller());
        if !self.has_signal_handle(number) {
            let id = acquire(signal, self.signal_target()?)?;
            signals.ids.borrow_mut().push((signal, id));
        }
        let old = self.set_signal_handle(number, Some(handle));
        drop(old);
        Ok(())
    }

    /// Removes the handler of `signal` (asyncio's `remove_signal_handler`):
    /// `true` if there was one. When no loop handles the signal any more,
    /// its disposition from before the first handler comes back (for
    /// SIGINT, usually the default: the process ends). See the example on
    /// [`add_signal_handler`](LoopHandle::add_signal_handler).
    ///
    /// # Errors
    ///
    /// As [`add_signal_handler`](LoopHandle::add_signal_handler), except
    /// that a closed loop has no handlers (`Ok(false)`).
    pub fn remove_signal_handler(&self, signal: i32) -> Result<bool, Error> {
        let number = check_signal(signal)?;
        if !self.has_signal_handle(number) {
            return Ok(false);
        }
        let old = self.set_signal_handle(number, None);
        if let Some(signals) = self.extension::<LoopSignals>() {
            let mut ids = signals.ids.borrow_mut();
            if let Some(at) = ids.iter().position(|(s, _)| *s == signal) {
                let (_, id) = ids.remove(at);
                drop(ids);
                release(signal, id);
            }
        }
        drop(old);
        Ok(true)
    }

    /// Runs the loop until one of `signals` is caught, then removes their
    /// handlers and returns the signal (`None` if the loop was stopped
    /// otherwise). The idiom for a server that stops cleanly on Ctrl-C or
    /// SIGTERM: run until the signal, then close the server and its
    /// connections.
    ///
    /// Handlers already set for these signals are replaced, and removed at
    /// the end.
    ///
    /// ```
    /// let lp = sloop::EventLoop::new()?;
    /// let pid = std::process::id().to_string();
    /// lp.call_soon(move || {
    ///     std::process::Command::new("kill").args(["-WINCH", &pid]).status().unwrap();
    /// })?;
    /// assert_eq!(lp.run_until_signal(&[libc::SIGWINCH])?, Some(libc::SIGWINCH));
    /// # Ok::<(), sloop::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`add_signal_handler`](LoopHandle::add_signal_handler) and
    /// [`run_forever`](LoopHandle::run_forever).
    pub fn run_until_signal(&self, signals: &[i32]) -> Result<Option<i32>, Error> {
        let caught = Rc::new(Cell::new(None));
        let remove_all = |lp: &LoopHandle| {
            for &s in signals {
                let _ = lp.remove_signal_handler(s);
            }
        };
        for &signal in signals {
            let (caught, lp) = (caught.clone(), self.clone());
            if let Err(e) = self.add_signal_handler(signal, move || {
                if caught.get().is_none() {
                    caught.set(Some(signal));
                }
                lp.stop();
            }) {
                remove_all(self);
                return Err(e);
            }
        }
        let run = self.run_forever();
        remove_all(self);
        run?;
        Ok(caught.get())
    }
}
