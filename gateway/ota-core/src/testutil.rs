//! Builders shared by the unit tests.

use crate::chunk::{ChunkIndex, IndexBuilder};
use crate::release::{ReleaseInfo, Running, Variant, Waves};
use crate::state::{BootFacts, Slot};
use crate::{Sha256Digest, Version};

pub fn v(s: &str) -> Version {
    s.parse().unwrap()
}

pub fn x86() -> Variant {
    Variant::new(Variant::X86_64_RTX).unwrap()
}

pub fn running(version: &str) -> Running {
    Running {
        version: v(version),
        variant: x86(),
    }
}

/// Deterministic bytes (xorshift64*), distinct per `seed`.
pub fn image(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

pub fn index_of(data: &[u8], chunk_size: u32) -> ChunkIndex {
    let mut b = IndexBuilder::new(chunk_size).unwrap();
    b.update(data);
    b.finish().unwrap()
}

/// A release of an image of `len` bytes whose hash is `sha`.
pub fn release_with(version: &str, len: u64, sha: Sha256Digest) -> ReleaseInfo {
    ReleaseInfo {
        version: v(version),
        variant: x86(),
        min_version: None,
        image_target: format!("nusa-x86_64-rtx-{version}.img"),
        image_len: len,
        image_sha256: sha,
        chunk_index_target: format!("nusa-x86_64-rtx-{version}.cix"),
        waves: Waves::default(),
    }
}

/// The release of `image(RELEASE_LEN, seed)` for `version`.
pub fn release(version: &str) -> ReleaseInfo {
    let data = image(RELEASE_LEN, 7);
    release_with(version, RELEASE_LEN as u64, Sha256Digest::of(&data))
}

/// 10.5 chunks of 64 KiB.
pub const RELEASE_LEN: usize = 10 * 65536 + 32768;

/// Running `version` on `booted`, marked good, the other slot bootable.
pub fn facts(booted: Slot, version: &str) -> BootFacts {
    BootFacts {
        booted,
        running: running(version),
        next_boot: booted,
        booted_good: true,
        inactive_tries_left: None,
        inactive_bootable: true,
    }
}

fn brake_with(version: &str, yank: bool) -> crate::Brake {
    let mut b = crate::Brake::default();
    let entry = crate::BrakeEntry {
        version: v(version),
        variant: None,
        reason: "bad GPU driver".into(),
        by: "alice".into(),
        at: 1_699_999_000,
    };
    if yank {
        b.yank(entry).unwrap();
    } else {
        b.pause(entry).unwrap();
    }
    b.sequence = 1;
    b
}

/// A brake pausing `version` (every variant).
pub fn pausing(version: &str) -> crate::Brake {
    brake_with(version, false)
}

/// A brake yanking `version` (every variant).
pub fn yanking(version: &str) -> crate::Brake {
    brake_with(version, true)
}
