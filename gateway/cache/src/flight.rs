//! Single flight: identical misses wait for one computation.
//!
//! The first caller for a key becomes the leader and holds a [`Lead`]; later
//! callers get a [`Wait`] on the same watch channel. The leader either
//! publishes a value, or goes away without one: it failed, or its future was
//! dropped. Either way its `Lead` is dropped, which removes the flight and
//! closes the channel, so every waiter wakes up and tries again: one of them
//! becomes the next leader. Nothing is ever poisoned and nobody waits on a
//! leader that no longer exists.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

#[cfg(test)]
mod tests;

pub(crate) struct Flights<K, V> {
    map: Mutex<HashMap<K, Slot<V>>>,
    next_id: AtomicU64,
}

struct Slot<V> {
    /// Tells this flight from a later one for the same key, so that a
    /// leader removes only its own.
    id: u64,
    rx: watch::Receiver<Option<V>>,
    waiters: Arc<AtomicUsize>,
}

pub(crate) enum Role<'a, K: Hash + Eq + Clone, V> {
    Leader(Lead<'a, K, V>),
    Waiter(Wait<V>),
}

pub(crate) struct Lead<'a, K: Hash + Eq + Clone, V> {
    flights: &'a Flights<K, V>,
    key: K,
    id: u64,
    tx: watch::Sender<Option<V>>,
}

pub(crate) struct Wait<V> {
    rx: watch::Receiver<Option<V>>,
    waiters: Arc<AtomicUsize>,
}

impl<K: Hash + Eq + Clone, V: Clone> Flights<K, V> {
    pub fn new() -> Flights<K, V> {
        Flights {
            map: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        }
    }

    pub fn join(&self, key: K) -> Role<'_, K, V> {
        let mut map = self.map.lock();
        if let Some(slot) = map.get(&key) {
            slot.waiters.fetch_add(1, Ordering::Relaxed);
            return Role::Waiter(Wait {
                rx: slot.rx.clone(),
                waiters: slot.waiters.clone(),
            });
        }
        let (tx, rx) = watch::channel(None);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        map.insert(
            key.clone(),
            Slot {
                id,
                rx,
                waiters: Arc::new(AtomicUsize::new(0)),
            },
        );
        Role::Leader(Lead {
            flights: self,
            key,
            id,
            tx,
        })
    }

    /// Callers waiting on the flight for `key` now.
    #[cfg(test)]
    pub fn waiting(&self, key: &K) -> usize {
        self.map
            .lock()
            .get(key)
            .map_or(0, |s| s.waiters.load(Ordering::Relaxed))
    }

    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.map.lock().len()
    }
}

impl<K: Hash + Eq + Clone, V> Lead<'_, K, V> {
    /// Hands `value` to every waiter, present and about to join.
    pub fn complete(self, value: V) {
        // Sending before `drop` removes the slot: a caller that joins in
        // between finds the value already there.
        self.tx.send_replace(Some(value));
    }
}

impl<K: Hash + Eq + Clone, V> Drop for Lead<'_, K, V> {
    fn drop(&mut self) {
        let mut map = self.flights.map.lock();
        if map.get(&self.key).is_some_and(|s| s.id == self.id) {
            map.remove(&self.key);
        }
        // `tx` drops after this, closing the channel for waiters that did
        // not get a value.
    }
}

impl<V: Clone> Wait<V> {
    /// The leader's value, or `None` when it went away without one and the
    /// caller should try again.
    pub async fn wait(mut self) -> Option<V> {
        let value = match self.rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone(),
            Err(_) => None,
        };
        value
    }
}

impl<V> Drop for Wait<V> {
    fn drop(&mut self) {
        self.waiters.fetch_sub(1, Ordering::Relaxed);
    }
}
