//! The page size in use: `api.page_size` until the API refuses it.
//!
//! A server that allows fewer records a page than asked answers 400. Until
//! a page has come back at some size, a 400 on a first page is read as
//! that refusal and the size steps down (2000, 1000, 500, 200, 100); the
//! first size that works is kept for every stream of the client and said
//! once, with the key to set. After that a 400 is what it says.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

/// The sizes tried, in order, below the configured one.
const FALLBACK_SIZES: [u32; 5] = [2000, 1000, 500, 200, 100];

/// Shared by every stream of one client.
#[derive(Debug)]
pub(crate) struct PageSizer {
    configured: u32,
    current: AtomicU32,
    /// The size a page came back at; 0 = none yet.
    accepted: AtomicU32,
    /// The first refusal, for the one warning.
    first_refusal: Mutex<Option<String>>,
}

impl PageSizer {
    pub(crate) fn new(configured: u32) -> Self {
        PageSizer {
            configured,
            current: AtomicU32::new(configured),
            accepted: AtomicU32::new(0),
            first_refusal: Mutex::new(None),
        }
    }

    /// The size to ask for now.
    pub(crate) fn current(&self) -> u32 {
        self.current.load(Ordering::Acquire)
    }

    /// A first page asked at `size` was answered 400 (`reason`): the size
    /// to try instead, or `None` when the 400 is not about the size.
    pub(crate) fn refused(&self, size: u32, reason: &str) -> Option<u32> {
        let current = self.current();
        if current < size {
            // Another stream has already stepped down (or found a size that works).
            return Some(current);
        }
        if self.accepted.load(Ordering::Acquire) != 0 {
            return None;
        }
        let smaller = FALLBACK_SIZES.into_iter().find(|&s| s < size)?;
        self.first_refusal
            .lock()
            .expect("poisoned")
            .get_or_insert_with(|| reason.to_string());
        let _ = self
            .current
            .compare_exchange(size, smaller, Ordering::AcqRel, Ordering::Acquire);
        tracing::debug!(
            size,
            smaller,
            reason,
            "page size refused (400): trying a smaller one"
        );
        Some(self.current())
    }

    /// A page came back at `size`.
    pub(crate) fn accepted(&self, size: u32) {
        if self.accepted.load(Ordering::Acquire) != 0
            || self
                .accepted
                .compare_exchange(0, size, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return;
        }
        if size < self.configured {
            let reason = self.first_refusal.lock().expect("poisoned").clone();
            tracing::warn!(
                configured = self.configured,
                using = size,
                refusal = reason.as_deref().unwrap_or(""),
                "the API refused api.page_size = {}; pages of {size} work and are used \
                 from now on (set api.page_size = {size} to skip the probe)",
                self.configured
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_down_until_a_size_works_then_holds_it() {
        let sizer = PageSizer::new(5000);
        assert_eq!(sizer.refused(5000, "400 InvalidPageSize"), Some(2000));
        // A stream that asked 5000 before the step learns the new size.
        assert_eq!(sizer.refused(5000, "400 InvalidPageSize"), Some(2000));
        assert_eq!(sizer.refused(2000, "400 InvalidPageSize"), Some(1000));
        sizer.accepted(1000);
        assert_eq!(sizer.current(), 1000);
        // Once a size works, a 400 at it is a real bad request ...
        assert_eq!(sizer.refused(1000, "400 UnknownEntity"), None);
        // ... but a late answer to a bigger size still gets the working one.
        assert_eq!(sizer.refused(2000, "400 InvalidPageSize"), Some(1000));
    }

    #[test]
    fn gives_up_below_the_smallest_size_and_after_a_success() {
        let sizer = PageSizer::new(100);
        assert_eq!(sizer.refused(100, "400"), None);
        let sizer = PageSizer::new(1000);
        sizer.accepted(1000);
        assert_eq!(sizer.refused(1000, "400 UnknownEntity"), None);
    }
}
