//! The last warnings and errors the log said, kept in memory for the
//! status page and `nusactl status` ("recent errors"). Bounded in count
//! and in each message's length; the log never holds secrets, so neither
//! does this.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// The most events kept; older ones go first.
pub const RECENT_EVENTS: usize = 50;
/// The most bytes of one event's text kept.
pub const RECENT_EVENT_BYTES: usize = 512;

/// One warning or error from the log.
#[derive(Clone, Debug, PartialEq)]
pub struct RecentEvent {
    /// Unix seconds.
    pub time_s: u64,
    /// `WARN` or `ERROR`.
    pub level: &'static str,
    /// The module that said it (`nusa_dispatch`).
    pub target: String,
    /// The message and its fields, as the log line has them.
    pub text: String,
}

/// The ring the log layer writes and the status reads.
pub struct RecentEvents {
    events: Mutex<VecDeque<RecentEvent>>,
}

impl RecentEvents {
    fn new() -> RecentEvents {
        RecentEvents {
            events: Mutex::new(VecDeque::with_capacity(RECENT_EVENTS)),
        }
    }

    /// The process's one ring: the log is the process's too.
    pub fn global() -> &'static RecentEvents {
        static RING: OnceLock<RecentEvents> = OnceLock::new();
        RING.get_or_init(RecentEvents::new)
    }

    /// Newest last.
    pub fn list(&self) -> Vec<RecentEvent> {
        self.events.lock().iter().cloned().collect()
    }

    pub fn push(&self, event: RecentEvent) {
        let mut events = self.events.lock();
        if events.len() == RECENT_EVENTS {
            events.pop_front();
        }
        events.push_back(event);
    }
}

/// A `tracing` layer that keeps every `WARN` and `ERROR` event in
/// [`RecentEvents::global`]; put it beside the log's own layer.
pub fn layer<S: Subscriber>() -> impl Layer<S> {
    RecentLayer
}

struct RecentLayer;

impl<S: Subscriber> Layer<S> for RecentLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let level = match *meta.level() {
            Level::ERROR => "ERROR",
            Level::WARN => "WARN",
            _ => return,
        };
        let mut text = Text::default();
        event.record(&mut text);
        let mut s = text.message;
        if !text.fields.is_empty() {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(&text.fields);
        }
        truncate(&mut s, RECENT_EVENT_BYTES);
        RecentEvents::global().push(RecentEvent {
            time_s: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            level,
            target: meta.target().to_string(),
            text: s,
        });
    }
}

#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.message.len() + self.fields.len() > RECENT_EVENT_BYTES {
            return;
        }
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            if !self.fields.is_empty() {
                self.fields.push(' ');
            }
            let _ = write!(self.fields, "{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if self.message.len() + self.fields.len() > RECENT_EVENT_BYTES {
            return;
        }
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            if !self.fields.is_empty() {
                self.fields.push(' ');
            }
            let _ = write!(self.fields, "{}={value}", field.name());
        }
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut.
fn truncate(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut at = max.saturating_sub(3);
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    s.truncate(at);
    s.push_str("...");
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn warnings_and_errors_are_kept_bounded_and_infos_are_not() {
        let subscriber = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("not kept");
            tracing::warn!(region = "sg", class = "tls", "region probe failed");
            for i in 0..(RECENT_EVENTS + 5) {
                tracing::error!(n = i, "{}", "x".repeat(2000));
            }
        });
        let events = RecentEvents::global().list();
        assert_eq!(events.len(), RECENT_EVENTS);
        assert!(events.iter().all(|e| e.level == "ERROR"), "{events:?}");
        assert!(events
            .iter()
            .all(|e| e.text.len() <= RECENT_EVENT_BYTES && e.text.ends_with("...")));
        // The oldest errors went first: the newest is the last one logged.
        let last = events.last().map(|e| e.text.clone()).unwrap_or_default();
        assert!(last.starts_with("xxx"), "{last}");
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        let mut s = "é".repeat(400);
        truncate(&mut s, 101);
        assert!(s.len() <= 101 && s.ends_with("..."), "{s}");
    }
}
