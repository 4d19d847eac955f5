//! The driver's one clock: tokio's monotonic one, so that the driver's
//! tests run on the paused clock. The core only ever sees milliseconds
//! since the driver was made.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

pub(crate) struct Clock {
    start: tokio::time::Instant,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock {
            start: tokio::time::Instant::now(),
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}
