//! Inputs the fuzz targets found crashes with, run as the target runs them
//! (fuzz/fuzz_targets/boot_entries.rs): each must now pass.

/// The boot_entries target's harness: NUL-separated fields, the kernel
/// command line, the nvbootctrl dump, then (file name, entry text) pairs.
fn boot_entries(data: &[u8]) {
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
}

/// `version` lines whose digit run is only zeros against letters made the
/// boot order intransitive, and `sort_by` panicked ("user-provided
/// comparison function does not correctly implement a total order").
#[test]
fn boot_entries_with_a_zero_run_against_letters_sort() {
    boot_entries(include_bytes!("data/boot-entries-crash-10bb742"));
}
