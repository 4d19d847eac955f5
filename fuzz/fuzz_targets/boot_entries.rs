//! The boot entry parsers of nusa-ota-slots: systemd-boot entry file names
//! (boot counters) and `version` lines, and their boot order; the kernel
//! command line's slot; `nvbootctrl dump-slots-info` output.
//!
//! Input: NUL-separated fields; the first is the command line, the second
//! the nvbootctrl dump, then (file name, entry text) pairs (the harness is
//! `nusa_ota_slots::fuzz_boot_entries`, which the crate's regression tests
//! run on the inputs this target found).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| nusa_ota_slots::fuzz_boot_entries(data));
