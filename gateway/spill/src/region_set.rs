//! The regions one request may be sent to.

use std::ops::BitAnd;

/// A set of region indices (bit i: `Spill::regions[i]`). Small and `Copy`,
/// so the driver builds one per request without allocating.
///
/// Only the first [`RegionSet::CAPACITY`] regions can be members: a region
/// past them is in no set, so it never receives a request (the config
/// refuses more regions than that).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RegionSet(u64);

impl RegionSet {
    pub const CAPACITY: usize = 64;
    /// No region: the request stays on this box.
    pub const NONE: RegionSet = RegionSet(0);
    /// Every region, however many there are.
    pub const ALL: RegionSet = RegionSet(u64::MAX);

    pub const fn from_bits(bits: u64) -> RegionSet {
        RegionSet(bits)
    }

    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Regions `0..n`.
    pub fn first(n: usize) -> RegionSet {
        match n {
            n if n >= Self::CAPACITY => Self::ALL,
            n => RegionSet((1u64 << n) - 1),
        }
    }

    /// The regions among `0..n` for which `member` says yes.
    pub fn from_fn(n: usize, mut member: impl FnMut(usize) -> bool) -> RegionSet {
        (0..n.min(Self::CAPACITY))
            .filter(|&i| member(i))
            .fold(Self::NONE, RegionSet::with)
    }

    /// This set and region `i` (unchanged when `i` is past the capacity).
    pub fn with(self, i: usize) -> RegionSet {
        match 1u64.checked_shl(i as u32).filter(|_| i < Self::CAPACITY) {
            Some(bit) => RegionSet(self.0 | bit),
            None => self,
        }
    }

    pub fn contains(self, i: usize) -> bool {
        i < Self::CAPACITY && (self.0 >> i) & 1 == 1
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl BitAnd for RegionSet {
    type Output = RegionSet;

    fn bitand(self, other: RegionSet) -> RegionSet {
        RegionSet(self.0 & other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members() {
        assert_eq!(RegionSet::first(0), RegionSet::NONE);
        assert_eq!(RegionSet::first(3).bits(), 0b111);
        assert_eq!(RegionSet::first(64), RegionSet::ALL);
        assert_eq!(RegionSet::first(200), RegionSet::ALL);
        let s = RegionSet::from_fn(5, |i| i % 2 == 1);
        assert_eq!(s.bits(), 0b01010);
        assert!(s.contains(1) && s.contains(3) && !s.contains(0) && !s.contains(4));
        assert_eq!((s & RegionSet::first(2)).bits(), 0b10);
        assert!((s & RegionSet::NONE).is_empty());
        // Past the capacity: never a member, whatever is asked.
        assert_eq!(RegionSet::NONE.with(64), RegionSet::NONE);
        assert!(!RegionSet::ALL.contains(64));
        assert_eq!(RegionSet::from_fn(100, |_| true), RegionSet::ALL);
        assert!(!RegionSet::from_fn(100, |_| true).contains(99));
    }
}
