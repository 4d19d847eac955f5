//! Service notifications (sd_notify(3)) and the watchdog.
//!
//! Every function is a no-op when `NOTIFY_SOCKET` is unset, that is when
//! nusad was not started by systemd as a `Type=notify` service.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::time::{Instant, MissedTickBehavior};

/// Start-up is done: every listener is bound and the models are loaded.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A line for `systemctl status`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// Shutting down: systemd shows the unit as deactivating while open
/// requests drain.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// How often to ping the watchdog: half of `WATCHDOG_USEC`, as
/// sd_watchdog_enabled(3) advises. `None` when systemd set no watchdog for
/// this process (`WATCHDOG_PID` names another one, or `WatchdogSec=` is off).
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|d| !d.is_zero())
        .map(|d| d / 2)
}

/// Pings the watchdog every `every`, for ever.
///
/// Spawn it on the runtime that serves requests: the pings come from a task
/// of that runtime, so when its workers are wedged the pings stop and
/// systemd kills and restarts nusad once `WatchdogSec=` has passed.
pub async fn watchdog(every: Duration) {
    let mut tick = tokio::time::interval(every);
    // After a stall, ping once and go back to the period; a burst of late
    // pings would say nothing more.
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let due = tick.tick().await;
        let late = Instant::now().saturating_duration_since(due);
        if late > every {
            tracing::warn!(
                late_ms = late.as_millis() as u64,
                "the async runtime did not run the watchdog task on time"
            );
        }
        send(&[NotifyState::Watchdog]);
    }
}

/// Whether a failed notification has been logged: one line is enough, the
/// watchdog would repeat it every few seconds.
static FAILED: AtomicBool = AtomicBool::new(false);

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        // Nothing to retry: systemd goes on without the message (and stops a
        // notify service that never gets READY=1 through, after
        // TimeoutStartSec=).
        if !FAILED.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, "sending a notification to systemd (NOTIFY_SOCKET)");
        }
    }
}
