//! The boot entry parsers of nusa-ota-slots: systemd-boot entry file names
//! (boot counters) and `version` lines, and their boot order; the kernel
//! command line's slot; `nvbootctrl dump-slots-info` output.
//!
//! Input: NUL-separated fields; the first is the command line, the second
//! the nvbootctrl dump, then (file name, entry text) pairs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\0');
    let cmdline = fields.next().unwrap_or("");
    let dump = fields.next().unwrap_or("");
    let rest: Vec<&str> = fields.collect();
    let entries: Vec<(&str, &str)> = rest
        .chunks(2)
        .map(|p| (p[0], p.get(1).copied().unwrap_or("")))
        .collect();
    let (order, _, _) = nusa_ota_slots::fuzz_boot_parsers(&entries, cmdline, dump);
    assert!(order.len() <= entries.len());
});
