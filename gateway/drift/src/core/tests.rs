use bytes::Bytes;
use nusa_tensor::{DataType, Tensor, TensorData};
use proptest::prelude::*;

use super::*;

fn fp32(name: &str, shape: &[i64], values: &[f32]) -> Tensor {
    Tensor {
        name: name.into(),
        datatype: DataType::Fp32,
        shape: shape.to_vec(),
        data: values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>()
            .into(),
    }
}

fn settings() -> Settings {
    Settings {
        window_ms: 1_000,
        baseline_ms: 10_000,
        baseline_min_samples: 20,
        min_window_samples: 10,
        threshold: 0.25,
        max_elements: 4096,
    }
}

use crate::testutil::Normal;

// ---- PSI ----

#[test]
fn psi_of_identical_distributions_is_zero() {
    let p = [0.1, 0.2, 0.3, 0.4];
    assert_eq!(psi(&p, &p), 0.0);
    assert_eq!(psi(&[1.0, 0.0], &[1.0, 0.0]), 0.0);
}

#[test]
fn psi_of_a_known_shift() {
    // (0.25-0.5)·ln(0.25/0.5) + (0.75-0.5)·ln(0.75/0.5)
    // = 0.25·ln 2 + 0.25·ln 1.5 = 0.274653...
    let v = psi(&[0.5, 0.5], &[0.25, 0.75]);
    let hand = 0.25 * 2f64.ln() + 0.25 * 1.5f64.ln();
    assert!((v - hand).abs() < 1e-12, "{v} vs {hand}");
    assert!((v - 0.274_653).abs() < 1e-6);
    // Symmetric in its arguments.
    assert!((psi(&[0.25, 0.75], &[0.5, 0.5]) - hand).abs() < 1e-12);
}

#[test]
fn psi_of_an_empty_bucket_is_finite() {
    // Bucket 1 empty in the baseline: epsilon stands in for 0.
    let v = psi(&[1.0, 0.0], &[0.5, 0.5]);
    let e = PSI_EPSILON;
    let hand = (0.5 - 1.0) * (0.5f64).ln() + (0.5 - e) * (0.5 / e).ln();
    assert!(v.is_finite());
    assert!((v - hand).abs() < 1e-12, "{v} vs {hand}");
    // A missing tail counts as empty, NaN as empty.
    assert_eq!(psi(&[1.0], &[1.0, 0.0]), 0.0);
    assert_eq!(psi(&[1.0, f64::NAN], &[1.0, 0.0]), 0.0);
}

#[test]
fn proportions_of_counts() {
    assert_eq!(proportions(&[0, 0]), None);
    assert_eq!(proportions(&[]), None);
    assert_eq!(proportions(&[1, 3]), Some(vec![0.25, 0.75]));
}

proptest! {
    #[test]
    fn psi_is_never_negative(
        a in proptest::collection::vec(0u64..1000, 1..20),
        b in proptest::collection::vec(0u64..1000, 1..20),
    ) {
        let (Some(pa), Some(pb)) = (proportions(&a), proportions(&b)) else {
            return Ok(());
        };
        let v = psi(&pa, &pb);
        prop_assert!(v >= 0.0 && v.is_finite(), "{v}");
        prop_assert!(psi(&pa, &pa).abs() < 1e-12);
    }

    #[test]
    fn learned_edges_are_increasing_and_buckets_in_range(
        values in proptest::collection::vec(prop_oneof![
            any::<f64>(),
            -1e6f64..1e6,
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(0.0),
        ], 0..300),
        probe in any::<f64>(),
    ) {
        let e = Edges::learn(&values);
        let s = e.as_slice();
        prop_assert!(s.len() <= MAX_EDGES);
        prop_assert!(s.windows(2).all(|w| w[0] < w[1]), "{s:?}");
        prop_assert!(s.iter().all(|x| x.is_finite()));
        if !probe.is_nan() {
            prop_assert!(e.bucket(probe) < e.buckets());
        }
    }
}

// ---- Histograms ----

#[test]
fn edges_of_constant_data_separate_below_at_and_above() {
    let e = Edges::learn(&[3.0; 100]);
    assert_eq!(e.buckets(), 3);
    assert_eq!(e.bucket(2.9), 0);
    assert_eq!(e.bucket(3.0), 1);
    assert_eq!(e.bucket(3.1), 2);
    let z = Edges::learn(&[0.0; 10]);
    assert_eq!((z.bucket(-1e-300), z.bucket(0.0), z.bucket(1.0)), (0, 1, 2));
}

#[test]
fn edges_are_deciles_with_outer_buckets() {
    let v: Vec<f64> = (0..100).map(f64::from).collect();
    let e = Edges::learn(&v);
    let s = e.as_slice();
    assert_eq!(s.len(), MAX_EDGES);
    assert_eq!(
        &s[..10],
        &[0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0]
    );
    assert!(s[10] > 99.0 && s[10] < 99.001);
    assert_eq!(e.bucket(-5.0), 0);
    assert_eq!(e.bucket(f64::NEG_INFINITY), 0);
    assert_eq!(e.bucket(0.0), 1);
    assert_eq!(e.bucket(99.0), 10);
    assert_eq!(e.bucket(100.0), 11);
    assert_eq!(e.bucket(f64::INFINITY), 11);
}

#[test]
fn empty_and_all_nan_data_give_one_bucket() {
    for v in [&[][..], &[f64::NAN, f64::NAN][..]] {
        let e = Edges::learn(v);
        assert_eq!(e.buckets(), 1);
        assert_eq!(e.bucket(42.0), 0);
    }
}

#[test]
fn nan_is_counted_apart() {
    let e = Edges::learn(&[1.0, 2.0, 3.0]);
    let mut s = Summary {
        counts: vec![0; e.buckets() + 1],
        ..Summary::default()
    };
    for x in [1.0, f64::NAN, 2.5, f64::NAN, f64::INFINITY] {
        s.moments.push(x);
        s.count_value(&e, x);
    }
    assert_eq!(s.counts[e.buckets()], 2);
    assert_eq!(s.values(), 5);
    assert_eq!(s.moments.count(), 2);
    assert_eq!(s.moments.nan(), 2);
    assert_eq!(s.moments.infinite(), 1);
    assert_eq!(s.moments.mean(), Some(1.75));
}

#[test]
fn given_edges_must_increase() {
    assert!(Edges::given(vec![1.0, 2.0]).is_some());
    assert!(Edges::given(vec![]).is_some());
    assert!(Edges::given(vec![2.0, 2.0]).is_none());
    assert!(Edges::given(vec![3.0, 2.0]).is_none());
    assert!(Edges::given(vec![f64::NAN]).is_none());
    assert!(Edges::given(vec![0.0; 65]).is_none());
}

#[test]
fn welford_agrees_with_the_two_pass_formula() {
    let mut g = Normal(7);
    // A large offset: the one-pass sum of squares loses it, Welford not.
    let xs: Vec<f64> = (0..10_000).map(|_| 1e9 + g.next()).collect();
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    let mut m = Moments::default();
    xs.iter().for_each(|&x| m.push(x));
    assert!(
        (m.mean().unwrap() - mean).abs() < 1e-4,
        "{:?} vs {mean}",
        m.mean()
    );
    assert!(
        (m.variance().unwrap() - var).abs() / var < 1e-6,
        "{:?} vs {var}",
        m.variance()
    );
    assert_eq!(m.count(), 10_000);
    assert_eq!(m.min(), xs.iter().copied().reduce(f64::min));
    assert_eq!(m.max(), xs.iter().copied().reduce(f64::max));
    let empty = Moments::default();
    assert_eq!((empty.mean(), empty.std(), empty.min()), (None, None, None));
    let mut one = Moments::default();
    one.push(5.0);
    assert_eq!((one.mean(), one.std()), (Some(5.0), Some(0.0)));
}

// ---- Decoding ----

#[test]
fn decodes_every_numeric_datatype() {
    let t = |dt, bytes: Vec<u8>| Tensor {
        name: "t".into(),
        datatype: dt,
        shape: vec![2],
        data: bytes.into(),
    };
    let cases: Vec<(DataType, Vec<u8>, [f64; 2])> = vec![
        (DataType::Bool, vec![0, 7], [0.0, 1.0]),
        (DataType::Uint8, vec![0, 255], [0.0, 255.0]),
        (DataType::Int8, vec![0x80, 1], [-128.0, 1.0]),
        (
            DataType::Uint16,
            [65535u16, 2].iter().flat_map(|v| v.to_le_bytes()).collect(),
            [65535.0, 2.0],
        ),
        (
            DataType::Int16,
            [-300i16, 2].iter().flat_map(|v| v.to_le_bytes()).collect(),
            [-300.0, 2.0],
        ),
        (
            DataType::Uint32,
            [4_000_000_000u32, 2]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            [4e9, 2.0],
        ),
        (
            DataType::Int32,
            [-70_000i32, 2]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            [-70_000.0, 2.0],
        ),
        (
            DataType::Uint64,
            [1u64 << 40, 2]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            [(1u64 << 40) as f64, 2.0],
        ),
        (
            DataType::Int64,
            [-(1i64 << 40), 2]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            [-((1u64 << 40) as f64), 2.0],
        ),
        (
            DataType::Fp16,
            [0.5f64, -2.0]
                .iter()
                .flat_map(|&v| half::f16::from_f64(v).to_le_bytes())
                .collect(),
            [0.5, -2.0],
        ),
        (
            DataType::Fp32,
            [1.25f32, -3.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            [1.25, -3.0],
        ),
        (
            DataType::Fp64,
            [1e300f64, -0.1]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            [1e300, -0.1],
        ),
    ];
    let mut out = Vec::new();
    for (dt, bytes, want) in cases {
        assert!(decode_prefix(&t(dt, bytes), 100, &mut out), "{dt}");
        assert_eq!(out, want, "{dt}");
    }
    let strings = t(
        DataType::Bytes,
        nusa_tensor::encode_bytes_elements([&b"a"[..], b"b"]),
    );
    out.push(1.0);
    assert!(!decode_prefix(&strings, 100, &mut out));
    assert!(out.is_empty());
}

#[test]
fn decodes_elements_split_across_segments_and_stops_at_max() {
    let bytes: Vec<u8> = (0..10)
        .flat_map(|v: i32| (v as f32).to_le_bytes())
        .collect();
    // Cuts inside elements: 3, 1, 6, 2, then the rest.
    let cuts = [0, 3, 4, 10, 12, bytes.len()];
    let segments: Vec<Bytes> = cuts
        .windows(2)
        .map(|w| Bytes::copy_from_slice(&bytes[w[0]..w[1]]))
        .collect();
    let t = Tensor {
        name: "x".into(),
        datatype: DataType::Fp32,
        shape: vec![10],
        data: TensorData::new(segments),
    };
    let mut out = Vec::new();
    decode_prefix(&t, 100, &mut out);
    assert_eq!(out, (0..10).map(f64::from).collect::<Vec<_>>());
    decode_prefix(&t, 4, &mut out);
    assert_eq!(out, vec![0.0, 1.0, 2.0, 3.0]);
    decode_prefix(&t, 0, &mut out);
    assert!(out.is_empty());
    // A short tail is not an element.
    let short = Tensor {
        data: TensorData::from(bytes[..9].to_vec()),
        ..t
    };
    decode_prefix(&short, 100, &mut out);
    assert_eq!(out, vec![0.0, 1.0]);
}

#[test]
fn argmax_picks_the_first_largest_and_skips_nan() {
    assert_eq!(argmax(&[0.1, 0.7, 0.7, 0.2]), Some(1));
    assert_eq!(argmax(&[f64::NAN, -1.0, -2.0]), Some(1));
    assert_eq!(argmax(&[f64::NAN, f64::NAN]), None);
    assert_eq!(argmax(&[]), None);
}

// ---- The monitor ----

/// Learns a baseline from `n` requests with input `x: [1, 8]` and a
/// 3-class output, then fixes it at `at`.
fn learned(n: usize, at: u64) -> Monitor {
    let mut m = Monitor::new("m", 1, settings(), 0);
    let mut g = Normal(1);
    for i in 0..n {
        let x: Vec<f32> = (0..8).map(|_| g.next() as f32).collect();
        let class = i % 3;
        let mut logits = [0.0f32; 3];
        logits[class] = 1.0;
        m.observe(&[fp32("x", &[1, 8], &x)], &[fp32("y", &[1, 3], &logits)]);
    }
    assert_eq!(m.poll(at), Poll::BaselineFixed);
    m
}

#[test]
fn phases_follow_time_and_samples() {
    let mut m = Monitor::new("m", 1, settings(), 1_000);
    assert_eq!(m.phase(), Phase::Warmup);
    let mut g = Normal(3);
    let mut req = |m: &mut Monitor| {
        let x: Vec<f32> = (0..100).map(|_| g.next() as f32).collect();
        m.observe(&[fp32("x", &[100], &x)], &[]);
    };
    // 2048 warm-up values at most 256 a request: 8 requests fix the edges.
    for _ in 0..7 {
        req(&mut m);
    }
    assert_eq!(m.phase(), Phase::Warmup);
    req(&mut m);
    req(&mut m);
    assert_eq!(
        m.phase(),
        Phase::Warmup,
        "100 values a request: 21 requests"
    );
    for _ in 0..12 {
        req(&mut m);
    }
    assert_eq!(m.phase(), Phase::Baseline);
    // Enough samples (21 >= 20) but baseline_ms not over: still learning.
    assert_eq!(m.poll(10_999), Poll::Idle);
    assert_eq!(m.phase(), Phase::Baseline);
    assert_eq!(m.poll(11_000), Poll::BaselineFixed);
    assert_eq!(m.phase(), Phase::Watching);
    let r = m.report();
    assert_eq!((r.baseline_samples, r.samples, r.windows), (21, 21, 0));
    assert_eq!(r.tensors[0].status, WindowStatus::Pending);
    assert_eq!(r.source, Source::Learned);
    // First window ends at 12_000.
    assert_eq!(m.poll(11_999), Poll::Idle);
    for _ in 0..10 {
        req(&mut m);
    }
    assert_eq!(m.poll(12_000), Poll::WindowClosed);
    let t = &m.report().tensors[0];
    assert_eq!(t.status, WindowStatus::Judged);
    assert_eq!(t.samples, 10);
    assert_eq!(t.values, 1000);
    assert!(t.psi.unwrap() < PSI_NO_SHIFT, "{:?}", t.psi);
    assert!(!t.drifted);
    // Three silent windows later: one close, not three, and the window
    // grid is kept (next end 16_000).
    assert_eq!(m.poll(15_500), Poll::WindowClosed);
    let r = m.report();
    assert_eq!(r.windows, 2);
    assert_eq!(r.tensors[0].status, WindowStatus::InsufficientSamples);
    assert_eq!(r.tensors[0].psi, t.psi, "psi stays the last judged one");
    assert_eq!(r.tensors[0].samples, 0);
    assert_eq!(m.poll(15_999), Poll::Idle);
    // 5 requests, under min_window_samples (10): not judged either.
    for _ in 0..5 {
        req(&mut m);
    }
    assert_eq!(m.poll(16_000), Poll::WindowClosed);
    let t = &m.report().tensors[0];
    assert_eq!(
        (t.status, t.samples, t.values),
        (WindowStatus::InsufficientSamples, 5, 500)
    );
    assert!(t.current_mean.is_some());
}

#[test]
fn baseline_waits_for_enough_samples() {
    let mut m = Monitor::new("m", 1, settings(), 0);
    for _ in 0..19 {
        m.observe(&[fp32("x", &[1], &[1.0])], &[]);
    }
    assert_eq!(m.poll(1_000_000), Poll::Idle);
    assert_ne!(m.phase(), Phase::Watching);
    m.observe(&[fp32("x", &[1], &[1.0])], &[]);
    assert_eq!(m.poll(1_000_001), Poll::BaselineFixed);
    // Few values: the edges were fixed from what there was (constant 1.0).
    let b = m.baseline().unwrap();
    assert_eq!(b.tensors[0].edges.len(), 2);
    assert_eq!(b.tensors[0].proportions, vec![0.0, 1.0, 0.0]);
}

#[test]
fn a_shifted_window_drifts_and_an_unshifted_one_does_not() {
    let mut m = learned(300, 10_000);
    let mut g = Normal(99);
    let mut window = |m: &mut Monitor, shift: f64, end: u64| {
        for _ in 0..100 {
            let x: Vec<f32> = (0..8).map(|_| (g.next() + shift) as f32).collect();
            m.observe(&[fp32("x", &[1, 8], &x)], &[]);
        }
        assert_eq!(m.poll(end), Poll::WindowClosed);
        m.report().tensors[0].clone()
    };
    let calm = window(&mut m, 0.0, 11_000);
    assert_eq!(calm.kind, Kind::Input);
    assert!(calm.psi.unwrap() < PSI_NO_SHIFT, "{calm:?}");
    assert!(!calm.drifted);
    let shifted = window(&mut m, 2.0, 12_000);
    assert!(shifted.psi.unwrap() > 0.25, "{shifted:?}");
    assert!(shifted.drifted);
    assert!((shifted.current_mean.unwrap() - 2.0).abs() < 0.2);
    assert!(shifted.baseline_mean.unwrap().abs() < 0.2);
    assert!((shifted.baseline_std.unwrap() - 1.0).abs() < 0.1);
    let back = window(&mut m, 0.0, 13_000);
    assert!(!back.drifted);
    assert_eq!(back.worst_psi, shifted.psi);
}

#[test]
fn argmax_distribution_of_a_classifier() {
    let mut m = learned(300, 10_000);
    let r = m.report();
    let kinds: Vec<(String, Kind)> = r.tensors.iter().map(|t| (t.name.clone(), t.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            ("x".to_string(), Kind::Input),
            ("y".to_string(), Kind::Output),
            ("y".to_string(), Kind::Argmax)
        ]
    );
    let b = m.baseline().unwrap();
    let am = b.tensors.iter().find(|t| t.kind == Kind::Argmax).unwrap();
    assert_eq!(am.proportions, vec![1.0 / 3.0; 3]);
    assert_eq!(am.other, 0.0);
    // Now every row picks class 2: 2 rows a request, batch of 2.
    for _ in 0..50 {
        m.observe(&[], &[fp32("y", &[2, 3], &[0.0, 0.0, 1.0, 0.1, 0.2, 0.3])]);
    }
    m.poll(11_000);
    let t = m
        .report()
        .tensors
        .into_iter()
        .find(|t| t.kind == Kind::Argmax)
        .unwrap();
    assert_eq!((t.samples, t.values), (50, 100));
    let e = PSI_EPSILON;
    let hand = 2.0 * (e - 1.0 / 3.0) * (e * 3.0).ln() + (1.0 - 1.0 / 3.0) * 3f64.ln();
    assert!(
        (t.psi.unwrap() - hand).abs() < 1e-9,
        "{:?} vs {hand}",
        t.psi
    );
    assert!(t.drifted);
}

#[test]
fn classes_past_the_limit_fold_into_other() {
    let mut m = Monitor::new(
        "m",
        1,
        Settings {
            baseline_min_samples: 1,
            max_elements: 8192,
            ..settings()
        },
        0,
    );
    let classes = MAX_CLASSES + 500;
    let mut scores = vec![0.0f32; classes];
    scores[MAX_CLASSES + 10] = 1.0;
    m.observe(&[], &[fp32("p", &[1, classes as i64], &scores)]);
    scores[MAX_CLASSES + 10] = 0.0;
    scores[5] = 1.0;
    m.observe(&[], &[fp32("p", &[1, classes as i64], &scores)]);
    m.poll(10_000);
    let b = m.baseline().unwrap();
    let am = b.tensors.iter().find(|t| t.kind == Kind::Argmax).unwrap();
    assert_eq!(am.proportions.len(), MAX_CLASSES);
    assert_eq!(am.proportions[5], 0.5);
    assert_eq!(am.other, 0.5);
}

#[test]
fn non_classifier_outputs_get_no_argmax() {
    let mut m = Monitor::new(
        "m",
        1,
        Settings {
            baseline_min_samples: 1,
            ..settings()
        },
        0,
    );
    // 1-D, one class, integer, and rows longer than max_elements.
    m.observe(&[], &[fp32("a", &[3], &[1.0, 2.0, 3.0])]);
    m.observe(&[], &[fp32("b", &[3, 1], &[1.0, 2.0, 3.0])]);
    let ints = Tensor {
        name: "c".into(),
        datatype: DataType::Int32,
        shape: vec![1, 2],
        data: [1i32, 2]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>()
            .into(),
    };
    m.observe(&[], &[ints]);
    let mut small = Monitor::new(
        "m",
        1,
        Settings {
            max_elements: 2,
            ..settings()
        },
        0,
    );
    small.observe(&[], &[fp32("d", &[1, 3], &[1.0, 2.0, 3.0])]);
    for r in [m.report(), small.report()] {
        assert!(r.tensors.iter().all(|t| t.kind == Kind::Output), "{r:?}");
    }
}

#[test]
fn tensors_and_elements_are_bounded() {
    let mut m = Monitor::new(
        "m",
        1,
        Settings {
            baseline_min_samples: 1,
            max_elements: 100,
            ..settings()
        },
        0,
    );
    let many: Vec<Tensor> = (0..40)
        .map(|i| fp32(&format!("t{i}"), &[1000], &[1.0; 1000]))
        .collect();
    m.observe(&many, &[]);
    let r = m.report();
    assert_eq!(r.tensors.len(), MAX_TENSORS);
    assert_eq!(r.ignored_tensors, 8);
    assert_eq!(r.tensors[0].name, "t0");
    m.poll(10_000);
    m.observe(&many, &[]);
    m.poll(11_000);
    let r = m.report();
    assert_eq!(r.tensors[0].values, 100, "max_elements of 1000");
    assert_eq!(r.ignored_tensors, 16);
}

#[test]
fn new_tensors_after_the_baseline_are_ignored() {
    let mut m = learned(30, 10_000);
    m.observe(&[fp32("late", &[1], &[1.0])], &[]);
    let r = m.report();
    assert!(r.tensors.iter().all(|t| t.name != "late"));
    assert_eq!(r.ignored_tensors, 1);
}

// ---- Published baselines ----

#[test]
fn a_published_baseline_watches_at_once_and_round_trips() {
    let learned = learned(300, 10_000);
    let b = learned.baseline().unwrap();
    let json = serde_json::to_string(&b).unwrap();
    let back: Baseline = serde_json::from_str(&json).unwrap();
    // serde_json's parse may be an ulp off its print.
    assert_eq!(back.tensors.len(), b.tensors.len());
    for (x, y) in back.tensors.iter().zip(&b.tensors) {
        assert_eq!((&x.name, x.kind, x.samples), (&y.name, y.kind, y.samples));
        let near = |p: &[f64], q: &[f64]| {
            p.len() == q.len()
                && p.iter()
                    .zip(q)
                    .all(|(a, b)| (a - b).abs() <= 1e-12 * b.abs().max(1.0))
        };
        assert!(near(&x.edges, &y.edges) && near(&x.proportions, &y.proportions));
    }
    let mut m = Monitor::with_baseline("m", 2, settings(), &back, 50).unwrap();
    assert_eq!(m.phase(), Phase::Watching);
    assert_eq!(m.report().source, Source::Published);
    assert_eq!(m.report().tensors.len(), 3);
    let mut g = Normal(5);
    for _ in 0..20 {
        let x: Vec<f32> = (0..8).map(|_| (g.next() + 3.0) as f32).collect();
        m.observe(&[fp32("x", &[1, 8], &x)], &[]);
    }
    assert_eq!(m.poll(1_049), Poll::Idle);
    assert_eq!(m.poll(1_050), Poll::WindowClosed);
    let r = m.report();
    assert!(r.tensors[0].drifted);
    // Output tensors saw nothing this window.
    assert_eq!(r.tensors[1].status, WindowStatus::InsufficientSamples);
}

#[test]
fn published_baselines_are_checked() {
    let t = |kind, edges: Vec<f64>, proportions: Vec<f64>| TensorBaseline {
        name: "x".into(),
        kind,
        edges,
        proportions,
        nan: 0.0,
        other: 0.0,
        mean: None,
        std: None,
        samples: 0,
    };
    let one = |t| Baseline { tensors: vec![t] };
    let ok = |b: &Baseline| Monitor::with_baseline("m", 1, settings(), b, 0).map(|_| ());
    assert_eq!(ok(&one(t(Kind::Input, vec![0.0], vec![1.0, 3.0]))), Ok(()));
    assert_eq!(ok(&one(t(Kind::Argmax, vec![], vec![1.0, 3.0]))), Ok(()));
    for bad in [
        t(Kind::Input, vec![0.0], vec![1.0]),
        t(Kind::Input, vec![1.0, 0.0], vec![1.0, 1.0, 1.0]),
        t(Kind::Input, vec![0.0], vec![0.0, 0.0]),
        t(Kind::Input, vec![0.0], vec![-1.0, 2.0]),
        t(Kind::Output, vec![0.0], vec![f64::NAN, 2.0]),
        t(Kind::Argmax, vec![0.0], vec![1.0, 1.0]),
        t(Kind::Argmax, vec![], vec![1.0]),
        t(Kind::Argmax, vec![], vec![1.0; MAX_CLASSES + 1]),
    ] {
        assert!(
            matches!(ok(&one(bad.clone())), Err(BaselineError::Tensor { .. })),
            "{bad:?}"
        );
    }
    let twice = Baseline {
        tensors: vec![
            t(Kind::Input, vec![], vec![1.0]),
            t(Kind::Input, vec![], vec![1.0]),
        ],
    };
    assert!(ok(&twice).is_err());
    let many = Baseline {
        tensors: (0..=MAX_TENSORS)
            .map(|i| TensorBaseline {
                name: format!("t{i}"),
                ..t(Kind::Input, vec![], vec![1.0])
            })
            .collect(),
    };
    assert_eq!(ok(&many), Err(BaselineError::TooManyTensors { count: 33 }));
    let unknown = r#"{"tensors":[{"name":"x","kind":"input","proportions":[1],"bins":[]}]}"#;
    assert!(serde_json::from_str::<Baseline>(unknown).is_err());
}

// ---- Config and sampling ----

#[test]
fn config_defaults_and_unknown_keys() {
    #[derive(serde::Deserialize)]
    struct File {
        drift: DriftConfig,
    }
    let f: File = toml::from_str("[drift]\nwindow_s = 60\n").unwrap();
    assert_eq!(
        f.drift,
        DriftConfig {
            window_s: 60,
            ..DriftConfig::default()
        }
    );
    let d = DriftConfig::default();
    assert!(d.enabled);
    assert_eq!(
        (
            d.sample_every,
            d.window_s,
            d.baseline_s,
            d.min_window_samples,
            d.max_elements
        ),
        (16, 300, 3600, 200, 4096)
    );
    assert_eq!(d.threshold, 0.25);
    assert_eq!(d.check(), Ok(()));
    assert!(toml::from_str::<File>("[drift]\nwindow = 60\n").is_err());
    let bad = DriftConfig {
        sample_every: 0,
        ..DriftConfig::default()
    };
    assert_eq!(
        bad.check().unwrap_err().to_string(),
        "drift.sample_every: must be at least 1"
    );
    assert_eq!(bad.settings().window_ms, 300_000);
    let bad = DriftConfig {
        threshold: f64::NAN,
        window_s: 0,
        ..DriftConfig::default()
    };
    assert!(bad.check().is_err());
    assert_eq!(
        (bad.settings().threshold, bad.settings().window_ms),
        (0.25, 1000)
    );
}

#[test]
fn sampling_is_one_in_n_exactly() {
    let s = Sampler::new(4);
    let picks: Vec<bool> = (0..9).map(|_| s.sample()).collect();
    assert_eq!(
        picks,
        [true, false, false, false, true, false, false, false, true]
    );
    let all = Sampler::new(0);
    assert!((0..5).all(|_| all.sample()));
}
