use super::*;

const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn a_valid_traceparent_is_read_and_written_back_as_version_00() {
    let tp = TraceParent::parse(GOOD).unwrap();
    assert_eq!(tp.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
    assert_eq!(tp.parent_id, 0x00f067aa0ba902b7);
    assert!(tp.sampled());
    assert_eq!(tp.to_string(), GOOD);
    assert_eq!(TraceParent::parse(&format!(" {GOOD} ")), Some(tp));
    // A later version: its known fields, as version 00.
    let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes";
    assert_eq!(TraceParent::parse(future).unwrap().to_string(), GOOD);
    let unsampled = TraceParent::parse(&GOOD.replace("-01", "-00")).unwrap();
    assert!(!unsampled.sampled());
}

#[test]
fn garbage_traceparents_are_none() {
    for bad in [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "<script>alert(1)</script>",
        "garbage",
        "",
    ] {
        assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn tracestate_lists_are_kept_whole_or_dropped_whole() {
    assert_eq!(
        tracestate(["congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"]).as_deref(),
        Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
    );
    // Two header lines are one list; empty members are skipped.
    assert_eq!(
        tracestate(["a=1,,", " tenant@sys=x y"]).as_deref(),
        Some("a=1,tenant@sys=x y")
    );
    for bad in [
        "", ",", "novalue", "Upper=1", "a=1,a=2", "a=", "a=b=c", "9abc=1", "@sys=1", "t@=1",
        "a=\u{7f}", "a=é",
    ] {
        assert_eq!(tracestate([bad]), None, "{bad:?}");
    }
    let many = (0..33)
        .map(|i| format!("k{i}=v"))
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(tracestate([many.as_str()]), None);
    let long = format!("a={}", "x".repeat(MAX_TRACESTATE));
    assert_eq!(tracestate([long.as_str()]), None);
}

#[test]
fn ratio_sampling_is_decided_by_the_trace_id_alone() {
    // The low 64 bits, shifted right by one, against ratio * 2^63.
    let low = |x: u64| x as u128 | (0xdead_beef_u128 << 64);
    assert!(by_ratio(low(0), 0.01));
    assert!(!by_ratio(low(u64::MAX), 0.99));
    assert!(by_ratio(low(u64::MAX), 1.0));
    assert!(!by_ratio(low(0), 0.0));
    assert!(!by_ratio(low(0), f64::NAN));
    // Half of 2^64 is the boundary at 0.5; the high bits do not matter.
    assert!(by_ratio(low((1 << 63) - 2), 0.5));
    assert!(!by_ratio(low(1 << 63), 0.5));
    assert_eq!(by_ratio(7 << 64, 0.3), by_ratio(9 << 64, 0.3));
    // About the ratio of a spread of ids.
    let ids = (0..10_000u64).map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) as u128);
    let kept = ids.filter(|&id| by_ratio(id, 0.1)).count();
    assert!((900..1100).contains(&kept), "{kept}");
}

#[test]
fn the_parents_decision_wins_over_the_ratio() {
    let id = u128::MAX; // never sampled below a ratio of 1
    assert!(!head(Parent::Root, id, 0.5));
    assert!(head(Parent::Remote { sampled: true }, id, 0.0));
    assert!(!head(Parent::Remote { sampled: false }, 0, 1.0));
    assert!(head(Parent::Local { sampled: true }, id, 0.0));
    assert!(!head(Parent::Local { sampled: false }, 0, 1.0));
}

#[test]
fn slow_and_failed_requests_are_kept_whatever_the_head_said() {
    let ms = Duration::from_millis;
    let ok = |d| Outcome {
        duration: ms(d),
        slo: Some(ms(50)),
        status: Some(200),
    };
    assert_eq!(verdict(false, &ok(10)), Verdict::Dropped);
    assert_eq!(verdict(true, &ok(10)), Verdict::Sampled);
    assert_eq!(verdict(false, &ok(50)), Verdict::Dropped);
    assert_eq!(verdict(false, &ok(51)), Verdict::Slow);
    let failed = Outcome {
        status: Some(503),
        ..ok(1)
    };
    assert_eq!(verdict(false, &failed), Verdict::Failed);
    assert_eq!(verdict(true, &failed), Verdict::Failed);
    // A 4xx is the caller's: only the head decides.
    let refused = Outcome {
        status: Some(429),
        ..ok(1)
    };
    assert_eq!(verdict(false, &refused), Verdict::Dropped);
    // No objective: never slow.
    let no_slo = Outcome {
        slo: None,
        ..ok(10_000)
    };
    assert_eq!(verdict(false, &no_slo), Verdict::Dropped);
    assert!(Verdict::Slow.keep() && !Verdict::Dropped.keep());
}

#[test]
fn the_pending_buffer_drops_the_oldest_traces_whole_and_counts() {
    let mut p = Pending::new(4);
    assert_eq!(p.push(1, "1a"), 0);
    assert_eq!(p.push(2, "2a"), 0);
    assert_eq!(p.push(1, "1b"), 0);
    assert_eq!(p.push(3, "3a"), 0);
    assert_eq!(p.len(), 4);
    // Full: trace 1 (the oldest) goes whole, both its spans.
    assert_eq!(p.push(4, "4a"), 2);
    assert_eq!(p.take(1), Vec::<&str>::new());
    assert_eq!(p.len(), 3);
    assert_eq!(p.take(2), vec!["2a"]);
    assert_eq!(p.push(3, "3b"), 0);
    assert_eq!(p.take(3), vec!["3a", "3b"]);
    assert_eq!(p.take(4), vec!["4a"]);
    assert!(p.is_empty());
    // Taken traces leave nothing behind in the order either.
    assert!(p.order.is_empty() && p.traces.is_empty());
    let mut none = Pending::new(0);
    assert_eq!(none.push(1, ()), 1);
    assert!(none.is_empty());
}

#[test]
fn server_timing_names_the_parts_that_applied_then_total() {
    let us = Duration::from_micros;
    let hit = Phases {
        cache: Some(us(120)),
        ..Phases::default()
    };
    assert_eq!(
        server_timing(&hit, us(350)),
        "cache;dur=0.120, total;dur=0.350"
    );
    let mut spilled = Phases {
        cache: Some(us(10)),
        ..Phases::default()
    };
    spilled.add_region(us(4_000));
    spilled.add_region(us(2_500));
    assert_eq!(
        server_timing(&spilled, us(7_000)),
        "cache;dur=0.010, region;dur=6.500, total;dur=7.000"
    );
    let local = Phases {
        queue: Some(us(2_300)),
        compute: Some(us(4_000)),
        ..Phases::default()
    };
    assert_eq!(
        server_timing(&local, us(7_100)),
        "queue;dur=2.300, compute;dur=4.000, total;dur=7.100"
    );
    assert_eq!(server_timing(&Phases::default(), us(1)), "total;dur=0.001");
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The buffer never holds more than its cap, and every span pushed
        /// is either taken or counted as dropped.
        #[test]
        fn pending_is_bounded_and_loses_nothing_uncounted(
            cap in 0usize..16,
            ops in proptest::collection::vec((0u128..6, any::<bool>()), 0..200),
        ) {
            let mut p = Pending::new(cap);
            let (mut pushed, mut dropped, mut taken) = (0usize, 0usize, 0usize);
            for (trace, push) in ops {
                if push {
                    pushed += 1;
                    dropped += p.push(trace, ());
                } else {
                    taken += p.take(trace).len();
                }
                prop_assert!(p.len() <= cap);
                prop_assert_eq!(p.order.len(), p.traces.len());
            }
            prop_assert_eq!(pushed, dropped + taken + p.len());
        }

        /// Whatever comes in a traceparent header, what is kept prints back
        /// as itself.
        #[test]
        fn parsed_traceparents_round_trip(s in "\\PC{0,80}") {
            if let Some(tp) = TraceParent::parse(&s) {
                prop_assert_eq!(TraceParent::parse(&tp.to_string()), Some(tp));
            }
        }
    }
}
