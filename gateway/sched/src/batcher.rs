//! The batching policy, with Triton's dynamic batcher semantics.
//!
//! **Invariant:** this module performs no I/O and reads no clock; every
//! method that depends on time takes `now` in microseconds. The driver owns
//! the clock, so the policy is tested under simulated time.

use std::collections::VecDeque;

/// Time in microseconds since an arbitrary origin chosen by the driver.
pub type Micros = u64;

/// Per-model batching and queueing settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Most rows in one batch; 0 disables batching (each request runs alone,
    /// with the shape it came with).
    pub max_batch_size: usize,
    /// How long the oldest queued request may wait for a batch to fill; 0
    /// dispatches whatever is queued as soon as an instance is free.
    pub max_queue_delay_us: u64,
    /// Most queued (not yet dispatched) requests; 0 means unbounded.
    pub max_queue_size: usize,
    /// Queue timeout for requests that name none; 0 means none.
    pub default_timeout_us: u64,
    /// Whether a request's `timeout` parameter replaces the default.
    pub allow_timeout_override: bool,
    /// Number of priority levels (1 = highest). 0 disables priorities.
    pub priority_levels: u32,
    /// The level of a request with priority 0 (or none).
    pub default_priority_level: u32,
    /// Engine instances that run batches concurrently.
    pub instances: usize,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            max_batch_size: 0,
            max_queue_delay_us: 0,
            max_queue_size: 0,
            default_timeout_us: 0,
            allow_timeout_override: true,
            priority_levels: 0,
            default_priority_level: 0,
            instances: 1,
        }
    }
}

/// What the policy needs to know about a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestInfo {
    /// Rows along the batch dimension.
    pub rows: usize,
    /// Requests batch together only when their non-batch dimensions agree;
    /// this key stands for those dimensions.
    pub shape_key: u64,
    /// Triton's `priority`: 1 is highest, 0 means the default level.
    pub priority: u64,
    /// Triton's `timeout` in microseconds; 0 means the model's default.
    pub timeout_us: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// `max_queue_size` requests are already waiting.
    QueueFull { capacity: usize },
    /// The request alone has more rows than a batch may hold.
    TooManyRows { rows: usize, max: usize },
}

/// A request in the queue, handed back with the time it was queued.
#[derive(Debug)]
pub struct Queued<T> {
    pub item: T,
    pub rows: usize,
    pub enqueued: Micros,
}

/// Work the driver should start on `instance`.
#[derive(Debug)]
pub struct Batch<T> {
    pub instance: usize,
    pub items: Vec<Queued<T>>,
}

impl<T> Batch<T> {
    pub fn rows(&self) -> usize {
        self.items.iter().map(|q| q.rows).sum()
    }
}

/// What [`Batcher::poll`] asks the driver to do.
#[derive(Debug)]
pub struct Poll<T> {
    /// Requests whose queue timeout ran out before they were dispatched.
    pub expired: Vec<Queued<T>>,
    pub batches: Vec<Batch<T>>,
    /// Poll again at this time at the latest (a batch window closes or a
    /// timeout runs out), or on the next enqueue or release.
    pub wake_at: Option<Micros>,
}

struct Entry<T> {
    queued: Queued<T>,
    shape_key: u64,
    deadline: Option<Micros>,
}

/// The queue and the batching decision for one model version.
pub struct Batcher<T> {
    policy: Policy,
    /// One FIFO per priority level; index 0 is the highest priority.
    levels: Vec<VecDeque<Entry<T>>>,
    idle: Vec<usize>,
    len: usize,
}

impl<T> Batcher<T> {
    pub fn new(policy: Policy) -> Batcher<T> {
        let levels = (0..policy.priority_levels.max(1))
            .map(|_| VecDeque::new())
            .collect();
        // Lowest index last so that `pop` hands out instance 0 first.
        let idle = (0..policy.instances.max(1)).rev().collect();
        Batcher {
            policy,
            levels,
            idle,
            len: 0,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Requests waiting (not yet dispatched).
    pub fn queued(&self) -> usize {
        self.len
    }

    /// Rows of each queued request, in the order they would be taken
    /// (priority, then arrival).
    pub fn queued_rows(&self) -> Vec<usize> {
        self.levels
            .iter()
            .flatten()
            .map(|e| e.queued.rows)
            .collect()
    }

    /// Instances not running a batch.
    pub fn idle_instances(&self) -> usize {
        self.idle.len()
    }

    pub fn enqueue(
        &mut self,
        item: T,
        info: RequestInfo,
        now: Micros,
    ) -> Result<(), (T, Rejection)> {
        let max = self.policy.max_batch_size;
        if max > 0 && info.rows > max {
            return Err((
                item,
                Rejection::TooManyRows {
                    rows: info.rows,
                    max,
                },
            ));
        }
        let cap = self.policy.max_queue_size;
        if cap > 0 && self.len >= cap {
            return Err((item, Rejection::QueueFull { capacity: cap }));
        }
        let timeout = match (info.timeout_us, self.policy.allow_timeout_override) {
            (t, true) if t > 0 => t,
            _ => self.policy.default_timeout_us,
        };
        let entry = Entry {
            queued: Queued {
                item,
                rows: info.rows,
                enqueued: now,
            },
            shape_key: info.shape_key,
            deadline: (timeout > 0).then(|| now.saturating_add(timeout)),
        };
        let level = self.level(info.priority);
        self.levels[level].push_back(entry);
        self.len += 1;
        Ok(())
    }

    /// An instance finished its batch and can take another.
    pub fn release(&mut self, instance: usize) {
        debug_assert!(!self.idle.contains(&instance));
        self.idle.push(instance);
    }

    /// Expires timed-out requests and forms every batch that should start now.
    pub fn poll(&mut self, now: Micros) -> Poll<T> {
        let expired = self.expire(now);
        let mut batches = Vec::new();
        let mut wake_at = None;
        while !self.idle.is_empty() {
            match self.next_batch(now) {
                Formed::Ready(items) => {
                    let instance = self.idle.pop().unwrap_or_default();
                    batches.push(Batch { instance, items });
                }
                Formed::WaitUntil(t) => {
                    wake_at = Some(t);
                    break;
                }
                Formed::Empty => break,
            }
        }
        let next_deadline = self
            .levels
            .iter()
            .flatten()
            .filter_map(|e| e.deadline)
            .min();
        let wake_at = match (wake_at, next_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Poll {
            expired,
            batches,
            wake_at,
        }
    }

    fn level(&self, priority: u64) -> usize {
        let n = self.levels.len() as u64;
        let p = if priority == 0 {
            self.policy.default_priority_level as u64
        } else {
            priority
        };
        // Levels count from 1; clamp anything outside the configured range.
        (p.clamp(1, n) - 1) as usize
    }

    fn expire(&mut self, now: Micros) -> Vec<Queued<T>> {
        let mut out = Vec::new();
        for level in &mut self.levels {
            if level.iter().any(|e| e.deadline.is_some_and(|d| d <= now)) {
                let (gone, kept): (VecDeque<_>, VecDeque<_>) = level
                    .drain(..)
                    .partition(|e| e.deadline.is_some_and(|d| d <= now));
                *level = kept;
                out.extend(gone.into_iter().map(|e| e.queued));
            }
        }
        self.len -= out.len();
        out
    }

    /// Chooses the next batch: the oldest request of the highest priority
    /// leads, and requests of the same shape follow in priority-then-arrival
    /// order while they fit.
    fn next_batch(&mut self, now: Micros) -> Formed<T> {
        let Some((lead_level, lead)) = self
            .levels
            .iter()
            .enumerate()
            .find_map(|(i, l)| l.front().map(|e| (i, e)))
        else {
            return Formed::Empty;
        };
        let max = self.policy.max_batch_size;
        if max == 0 {
            let e = self.take(lead_level, 0);
            return Formed::Ready(vec![e]);
        }
        let key = lead.shape_key;
        // Walk candidates without removing them until the decision is made.
        let mut picks: Vec<(usize, usize)> = Vec::new();
        let mut rows = 0;
        let mut full = false;
        let mut oldest = lead.queued.enqueued;
        'walk: for (li, level) in self.levels.iter().enumerate().skip(lead_level) {
            for (ei, e) in level.iter().enumerate() {
                if e.shape_key != key {
                    continue;
                }
                if rows + e.queued.rows > max {
                    full = true;
                    break 'walk;
                }
                rows += e.queued.rows;
                oldest = oldest.min(e.queued.enqueued);
                picks.push((li, ei));
                if rows == max {
                    full = true;
                    break 'walk;
                }
            }
        }
        let window_end = oldest.saturating_add(self.policy.max_queue_delay_us);
        if !full && self.policy.max_queue_delay_us > 0 && now < window_end {
            return Formed::WaitUntil(window_end);
        }
        // Remove from the back so earlier indices stay valid.
        let mut items: Vec<Queued<T>> = picks
            .iter()
            .rev()
            .map(|&(li, ei)| self.take(li, ei))
            .collect();
        items.reverse();
        Formed::Ready(items)
    }

    fn take(&mut self, level: usize, index: usize) -> Queued<T> {
        self.len -= 1;
        match self.levels[level].remove(index) {
            Some(e) => e.queued,
            // Indices come from iterating the same queue just before.
            None => unreachable!("batcher index out of range"),
        }
    }
}

enum Formed<T> {
    Ready(Vec<Queued<T>>),
    WaitUntil(Micros),
    Empty,
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
