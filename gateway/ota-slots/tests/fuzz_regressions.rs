//! Inputs the fuzz targets found crashes with, run through the targets' own
//! harnesses: each must now pass.

/// `version` lines whose digit run is only zeros against letters made the
/// boot order intransitive, and `sort_by` panicked ("user-provided
/// comparison function does not correctly implement a total order").
#[test]
fn boot_entries_with_a_zero_run_against_letters_sort() {
    nusa_ota_slots::fuzz_boot_entries(include_bytes!("data/boot-entries-crash-10bb742"));
}
