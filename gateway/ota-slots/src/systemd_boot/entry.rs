//! Our Boot Loader Specification entries: file names with boot counters,
//! their contents, and the order systemd-boot boots them in.
//!
//! Names are `nusa-<slot>[+LEFT[-DONE]].conf`. systemd-boot renames a
//! counted entry on every boot attempt (`+3` -> `+2-1` -> ... -> `+0-3`),
//! and `systemd-bless-boot` drops the counter after a good boot.
//!
//! The `version` line is `<generation>-<release>`: the generation is what
//! makes the armed or preferred slot sort first (systemd-boot orders entries
//! with the same `sort-key` by `version`, newest first, and compares digit
//! runs as numbers), so a downgrade or reinstall still boots next.

use std::cmp::Ordering;

use crate::Slot;

pub(crate) const SORT_KEY: &str = "nusa";

/// The two numbers systemd-boot keeps in a counted entry's file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counter {
    pub left: u32,
    pub done: u32,
}

/// One of our entries as found in `loader/entries/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub slot: Slot,
    /// The file name as found, kept: `+3` and `+3-0` are the same counter
    /// but different files.
    pub file: String,
    pub counter: Option<Counter>,
    pub generation: u64,
    pub release: Option<String>,
}

impl Entry {
    /// Parses a file name; `None` for anything that is not one of ours,
    /// including a name whose counter is malformed.
    pub fn from_file_name(file: &str) -> Option<(Slot, Option<Counter>)> {
        let stem = file.strip_suffix(".conf")?;
        let (base, counter) = match stem.rsplit_once('+') {
            Some((base, c)) => (base, Some(parse_counter(c)?)),
            None => (stem, None),
        };
        let slot = match base.strip_prefix("nusa-")? {
            "a" => Slot::A,
            "b" => Slot::B,
            _ => return None,
        };
        Some((slot, counter))
    }

    /// Tries spent: systemd-boot sorts it last and boots it only when
    /// nothing else is left.
    pub fn is_bad(&self) -> bool {
        self.counter.is_some_and(|c| c.left == 0)
    }

    /// The name `systemd-bless-boot` gives it after a good boot.
    pub fn blessed_name(slot: Slot) -> String {
        format!("nusa-{slot}.conf")
    }

    pub fn counted_name(slot: Slot, tries: u32) -> String {
        format!("nusa-{slot}+{tries}.conf")
    }
}

fn parse_counter(c: &str) -> Option<Counter> {
    let num = |s: &str| -> Option<u32> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    match c.split_once('-') {
        Some((left, done)) => Some(Counter {
            left: num(left)?,
            done: num(done)?,
        }),
        None => Some(Counter {
            left: num(c)?,
            done: 0,
        }),
    }
}

/// The entry file's text. Keys as the Boot Loader Specification names them.
pub(crate) fn render(
    slot: Slot,
    generation: u64,
    release: &str,
    linux: &str,
    initrd: &[String],
    options: &str,
) -> String {
    let fill = |t: &str| t.replace("{slot}", slot.as_str());
    let mut out = format!(
        "# Written by nusa-ota-slots; the file name carries the boot counter.\n\
         title Nusa {release} (slot {slot})\n\
         sort-key {SORT_KEY}\n\
         version {generation}-{release}\n\
         linux {}\n",
        fill(linux)
    );
    for i in initrd {
        out.push_str(&format!("initrd {}\n", fill(i)));
    }
    out.push_str(&format!("options {}\n", fill(options)));
    out
}

/// `(generation, release)` from the `version` line; generation 0 when the
/// line is missing or not ours, so such an entry sorts behind ours.
pub(crate) fn parse_version(text: &str) -> (u64, Option<String>) {
    let value = text.lines().find_map(|l| {
        let (key, value) = l.trim().split_once(char::is_whitespace)?;
        (key == "version").then(|| value.trim())
    });
    let Some((generation, release)) = value.and_then(|v| v.split_once('-')) else {
        return (0, None);
    };
    match generation.parse() {
        Ok(g) => (g, Some(release.to_owned())),
        Err(_) => (0, None),
    }
}

/// systemd-boot's order restricted to entries that share our `sort-key`:
/// entries with no tries left last, then `version` newest first, then the
/// id (name without counter) descending, then more tries left, then fewer
/// tries done. The first entry is the one booted by default.
pub(crate) fn boot_order(a: &Entry, b: &Entry) -> Ordering {
    a.is_bad()
        .cmp(&b.is_bad())
        .then_with(|| verscmp(&version_of(b), &version_of(a)))
        .then_with(|| b.slot.as_str().cmp(a.slot.as_str()))
        .then_with(|| match (a.counter, b.counter) {
            (Some(ca), Some(cb)) => cb.left.cmp(&ca.left).then(ca.done.cmp(&cb.done)),
            // systemd-boot leaves these two unordered; treating them as equal
            // made the order intransitive (`+3` < `+1`, both equal to an
            // uncounted entry), and `sort_by` panics on that (found by the
            // boot_entries fuzz target). The uncounted (blessed) one first.
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
}

fn version_of(e: &Entry) -> String {
    format!("{}-{}", e.generation, e.release.as_deref().unwrap_or(""))
}

/// A version comparison in the manner of systemd's `strverscmp_improved`:
/// digit runs compare as numbers, letter runs as text, `~` sorts before
/// anything, a longer version is newer.
pub(crate) fn verscmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    let valid = |c: &u8| c.is_ascii_alphanumeric() || b"~-^.".contains(c);
    loop {
        while a.first().is_some_and(|c| !valid(c)) {
            a = &a[1..];
        }
        while b.first().is_some_and(|c| !valid(c)) {
            b = &b[1..];
        }
        for sep in [b'~', b'-', b'^', b'.'] {
            if a.first() == Some(&sep) || b.first() == Some(&sep) {
                // The string that has the separator here is the older one.
                let (ha, hb) = (a.first() == Some(&sep), b.first() == Some(&sep));
                let r = hb.cmp(&ha);
                if r != Ordering::Equal {
                    return r;
                }
                (a, b) = (&a[1..], &b[1..]);
            }
            if sep == b'~' && (a.is_empty() || b.is_empty()) {
                return a.len().cmp(&b.len());
            }
        }
        let digits =
            a.first().is_some_and(u8::is_ascii_digit) || b.first().is_some_and(u8::is_ascii_digit);
        let run = |s: &[u8]| {
            s.iter()
                .take_while(|c| {
                    if digits {
                        c.is_ascii_digit()
                    } else {
                        c.is_ascii_alphabetic()
                    }
                })
                .count()
        };
        let (na, nb) = (run(a), run(b));
        let (ra, rb) = (&a[..na], &b[..nb]);
        let r = if digits {
            // A digit run is newer than none, zeros or not: systemd's
            // `strverscmp_improved` trims `0` to nothing first, which makes
            // `0` equal to a letter and the order intransitive (`~%t` <=
            // `~a~` <= `~0a` < `~%t`); `sort_by` panics on that (found by the
            // boot_entries fuzz target). Versions made of digit runs and
            // separators, as ours are, order as systemd orders them.
            let (ta, tb) = (trim_zeros(ra), trim_zeros(rb));
            (na > 0)
                .cmp(&(nb > 0))
                .then_with(|| ta.len().cmp(&tb.len()))
                .then_with(|| ta.cmp(tb))
        } else {
            ra.cmp(rb)
        };
        if r != Ordering::Equal {
            return r;
        }
        (a, b) = (&a[na..], &b[nb..]);
    }
}

/// `007` and `7` are the same number.
fn trim_zeros(s: &[u8]) -> &[u8] {
    &s[s.iter().take_while(|c| **c == b'0').count()..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_with_counters() {
        let c = |left, done| Some(Counter { left, done });
        assert_eq!(Entry::from_file_name("nusa-a.conf"), Some((Slot::A, None)));
        assert_eq!(
            Entry::from_file_name("nusa-b+3.conf"),
            Some((Slot::B, c(3, 0)))
        );
        assert_eq!(
            Entry::from_file_name("nusa-b+2-1.conf"),
            Some((Slot::B, c(2, 1)))
        );
        assert_eq!(
            Entry::from_file_name("nusa-b+0-3.conf"),
            Some((Slot::B, c(0, 3)))
        );
        assert_eq!(
            Entry::from_file_name("nusa-b+3-0.conf"),
            Some((Slot::B, c(3, 0)))
        );
        for not_ours in [
            "nusa-c.conf",
            "nusa-b",
            "nusa-b+.conf",
            "nusa-b+x.conf",
            "nusa-b+3-.conf",
            "nusa-b+-1.conf",
            "nusa-b+1-2-3.conf",
            "nusa-b+99999999999.conf",
            ".nusa-b+3.conf.tmp",
            "debian-6.1.conf",
            "nusa-ab.conf",
        ] {
            assert_eq!(Entry::from_file_name(not_ours), None, "{not_ours}");
        }
    }

    #[test]
    fn rendered_entries_carry_the_slot_and_parse_back() {
        let text = render(
            Slot::B,
            7,
            "1.5.0-rc1",
            "/nusa/{slot}/vmlinuz",
            &["/nusa/{slot}/initrd".into()],
            "root=PARTLABEL=root-{slot} nusa.slot={slot} ro",
        );
        assert!(text.contains("\nlinux /nusa/b/vmlinuz\n"), "{text}");
        assert!(
            text.contains("\noptions root=PARTLABEL=root-b nusa.slot=b ro\n"),
            "{text}"
        );
        assert!(text.contains("\nsort-key nusa\n"), "{text}");
        assert_eq!(parse_version(&text), (7, Some("1.5.0-rc1".into())));
        assert_eq!(parse_version("title x\n"), (0, None));
        assert_eq!(parse_version("version 1.2.3\n"), (0, None));
    }

    #[test]
    fn versions_compare_like_systemd() {
        use Ordering::*;
        assert_eq!(verscmp("10-1.0", "9-2.0"), Greater);
        assert_eq!(verscmp("2-1.4.2", "2-1.4.10"), Less);
        assert_eq!(verscmp("1.0~rc1", "1.0"), Less);
        assert_eq!(verscmp("1.0", "1.0.1"), Less);
        assert_eq!(verscmp("007", "7"), Equal);
        assert_eq!(verscmp("1.0a", "1.0b"), Less);
        assert_eq!(verscmp("123-9", "123.1-1"), Less);
    }

    /// Regression (fuzz target boot_entries): one slot's entries with and
    /// without counters made `sort_by` panic ("does not correctly implement
    /// a total order"), as a damaged or crafted ESP can hold.
    #[test]
    fn boot_order_is_a_total_order() {
        let mut all = Vec::new();
        for slot in [Slot::A, Slot::B] {
            for counter in [None, Some((3, 0)), Some((1, 2)), Some((0, 3)), Some((2, 0))] {
                for (generation, release) in [(0, None), (1, Some("1")), (1, Some("1.0~rc1"))] {
                    all.push(Entry {
                        slot,
                        file: String::new(),
                        counter: counter.map(|(left, done)| Counter { left, done }),
                        generation,
                        release: release.map(str::to_owned),
                    });
                }
            }
        }
        for a in &all {
            assert_eq!(boot_order(a, a), Ordering::Equal);
            for b in &all {
                assert_eq!(boot_order(a, b), boot_order(b, a).reverse());
                for c in &all {
                    if boot_order(a, b).is_le() && boot_order(b, c).is_le() {
                        assert!(boot_order(a, c).is_le(), "{a:?} {b:?} {c:?}");
                    }
                }
            }
        }
        // The fuzzer's input, in short: many entries of slot b, counted
        // and not, with one version.
        let mut many: Vec<Entry> = (0..40)
            .map(|i| Entry {
                slot: Slot::B,
                file: format!("nusa-b+{}.conf", i % 5),
                counter: (i % 3 != 0).then_some(Counter {
                    left: i % 5,
                    done: 0,
                }),
                generation: 0,
                release: None,
            })
            .collect();
        many.sort_by(boot_order);
        assert!(many.windows(2).all(|w| boot_order(&w[0], &w[1]).is_le()));
    }

    #[test]
    fn bad_entries_sort_last_then_newest_version_first() {
        let e = |slot, counter, generation| Entry {
            slot,
            file: String::new(),
            counter,
            generation,
            release: Some("1".into()),
        };
        let good_a = e(Slot::A, None, 1);
        let trial_b = e(Slot::B, Some(Counter { left: 1, done: 2 }), 2);
        let bad_b = e(Slot::B, Some(Counter { left: 0, done: 3 }), 2);
        assert_eq!(boot_order(&trial_b, &good_a), Ordering::Less);
        assert_eq!(boot_order(&bad_b, &good_a), Ordering::Greater);
        let old_b = e(Slot::B, None, 1);
        let new_a = e(Slot::A, None, 3);
        assert_eq!(boot_order(&new_a, &old_b), Ordering::Less);
    }
}

#[cfg(test)]
mod order_is_total {
    use super::*;

    /// Every version string of up to three characters from an alphabet of
    /// digits, letters and separators: `verscmp` is a total order on them
    /// (antisymmetric and transitive), as `sort_by` requires (the
    /// boot_entries fuzz target found a set where it was not).
    #[test]
    fn verscmp_is_a_total_order() {
        let alphabet = ["0", "1", "9", "a", "t", ".", "-", "~", "^", "%"];
        let mut all = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..3 {
            let next: Vec<String> = last
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            all.extend(next.iter().cloned());
            last = next;
        }
        for a in &all {
            for b in &all {
                let ab = verscmp(a, b);
                assert_eq!(ab, verscmp(b, a).reverse(), "{a:?} vs {b:?}");
            }
        }
        // Transitivity over a sorted list: sorting must not panic, and the
        // result must be ordered pairwise.
        let mut sorted = all.clone();
        sorted.sort_by(|a, b| verscmp(a, b));
        for (i, a) in sorted.iter().enumerate() {
            for b in &sorted[i + 1..] {
                assert_ne!(
                    verscmp(a, b),
                    Ordering::Greater,
                    "{a:?} sorted before {b:?}"
                );
            }
        }
    }
}
