//! Write flow control: asyncio's `_FlowControlMixin`.
//!
//! A transport's write buffer may grow without bound, since `write` never
//! blocks (docs/design.md D6); flow control tells the protocol when to stop
//! producing. Above the high-water mark the protocol gets `pause_writing`;
//! once the buffer drains to the low-water mark or below, `resume_writing`.
//! The two strictly alternate.

use crate::error::Error;

/// The default high-water mark: 64 KiB. See the example on
/// [`Transport::write_buffer_limits`](crate::Transport::write_buffer_limits).
pub const DEFAULT_HIGH_WATER: usize = 64 * 1024;

/// The watermarks and whether the protocol is paused.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FlowControl {
    high: usize,
    low: usize,
    paused: bool,
}

impl Default for FlowControl {
    fn default() -> Self {
        FlowControl {
            high: DEFAULT_HIGH_WATER,
            low: DEFAULT_HIGH_WATER / 4,
            paused: false,
        }
    }
}

impl FlowControl {
    /// asyncio's `_set_write_buffer_limits`: with neither mark, 64 KiB and
    /// 16 KiB; with only `low`, high is `4 * low`; with no `low`, it is
    /// `high / 4`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidWriteLimits`] if `high < low`; nothing is changed.
    pub(crate) fn set_limits(
        &mut self,
        high: Option<usize>,
        low: Option<usize>,
    ) -> Result<(), Error> {
        let high = match (high, low) {
            (Some(h), _) => h,
            (None, Some(l)) => l.saturating_mul(4),
            (None, None) => DEFAULT_HIGH_WATER,
        };
        let low = low.unwrap_or(high / 4);
        if high < low {
            return Err(Error::InvalidWriteLimits { high, low });
        }
        self.high = high;
        self.low = low;
        Ok(())
    }

    /// `(low, high)`, in asyncio's order.
    pub(crate) fn limits(&self) -> (usize, usize) {
        (self.low, self.high)
    }

    #[allow(dead_code)] // for start_tls and sendfile, which read it
    pub(crate) fn is_paused(&self) -> bool {
        self.paused
    }

    /// Whether to call `pause_writing` now, given the buffer size: the
    /// size is strictly above the high mark and the protocol is not paused.
    pub(crate) fn should_pause(&mut self, size: usize) -> bool {
        if !self.paused && size > self.high {
            self.paused = true;
            true
        } else {
            false
        }
    }

    /// Whether to call `resume_writing` now: paused, and the size is at or
    /// below the low mark.
    pub(crate) fn should_resume(&mut self, size: usize) -> bool {
        if self.paused && size <= self.low {
            self.paused = false;
            true
        } else {
            false
        }
    }

    /// Forgets a pause (the connection is gone; no resume will follow).
    pub(crate) fn reset(&mut self) {
        self.paused = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_asyncio() {
        let mut f = FlowControl::default();
        assert_eq!(f.limits(), (16 * 1024, 64 * 1024));
        f.set_limits(None, Some(16385)).unwrap();
        assert_eq!(f.limits(), (16385, 65540));
        f.set_limits(Some(0), None).unwrap();
        assert_eq!(f.limits(), (0, 0));
        f.set_limits(None, Some(100)).unwrap();
        assert_eq!(f.limits(), (100, 400));
        let err = f.set_limits(Some(1), Some(2)).unwrap_err();
        assert_eq!(err.to_string(), "high (1) must be >= low (2) must be >= 0");
        assert_eq!(f.limits(), (100, 400), "a refused change changes nothing");
    }

    #[test]
    fn pause_and_resume_alternate_at_the_marks() {
        let mut f = FlowControl::default();
        f.set_limits(Some(100), Some(10)).unwrap();
        assert!(!f.should_pause(100), "at the high mark is not above it");
        assert!(f.should_pause(101));
        assert!(!f.should_pause(500), "already paused");
        assert!(!f.should_resume(11));
        assert!(f.should_resume(10));
        assert!(!f.should_resume(0), "already resumed");
    }
}
