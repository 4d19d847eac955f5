use bytes::Bytes;
use nusa_tensor::{encode_bytes_elements, TensorData};
use proptest::prelude::*;

use super::*;

const ATOL: f64 = 1e-4;
const RTOL: f64 = 1e-3;

fn tensor(name: &str, datatype: DataType, shape: &[i64], data: Vec<u8>) -> Tensor {
    Tensor {
        name: name.into(),
        datatype,
        shape: shape.to_vec(),
        data: data.into(),
    }
}

fn f32s(name: &str, shape: &[i64], v: &[f32]) -> Tensor {
    tensor(
        name,
        DataType::Fp32,
        shape,
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

/// The same bytes cut into segments at `cuts` (element boundaries or not).
fn segmented(t: &Tensor, cuts: &[usize]) -> Tensor {
    let all = t.data.contiguous();
    let mut segs = Vec::new();
    let mut at = 0;
    for &c in cuts {
        let c = c.clamp(at, all.len());
        segs.push(all.slice(at..c));
        at = c;
    }
    segs.push(all.slice(at..));
    Tensor {
        data: TensorData::new(segs),
        ..t.clone()
    }
}

#[test]
fn identical_outputs_agree() {
    let a = [
        f32s("probs", &[2, 3], &[0.1, 0.7, 0.2, 0.5, 0.3, 0.2]),
        f32s("score", &[2, 1], &[1.0, 2.0]),
    ];
    let r = compare(&a, &a, ATOL, RTOL);
    assert_eq!(
        r,
        ShadowResult {
            agree: true,
            max_abs: 0.0,
            max_rel: 0.0,
            argmax_agree: Some(true),
            detail: None,
        }
    );
}

#[test]
fn tolerance_is_numpy_allclose() {
    let s = [f32s("y", &[3], &[1000.0, 2.0, 0.0])];
    // |c - s| <= atol + rtol * |s|: 0.5 <= 1.0001 at 1000.
    let ok = [f32s("y", &[3], &[1000.5, 2.0, 0.00005])];
    let r = compare(&s, &ok, ATOL, RTOL);
    assert!(r.agree, "{r:?}");
    assert!((r.max_abs - 0.5).abs() < 1e-9, "{r:?}");
    let bad = [f32s("y", &[3], &[1002.0, 2.5, 0.0])];
    let r = compare(&s, &bad, ATOL, RTOL);
    assert!(!r.agree);
    assert!((r.max_abs - 2.0).abs() < 1e-9, "{r:?}");
    assert!((r.max_rel - 0.25).abs() < 1e-9, "{r:?}");
    assert_eq!(
        r.detail.as_deref(),
        Some("output 'y': 2 of 3 elements differ beyond atol 0.0001 + rtol 0.001 (largest difference 2 at element 0)")
    );
    // rtol scales with the stable value, not the candidate's.
    let r = compare(&ok, &s, ATOL, RTOL);
    assert!(r.agree);
    let r = compare(
        &[f32s("y", &[1], &[0.0])],
        &[f32s("y", &[1], &[1.0])],
        0.0,
        0.5,
    );
    assert!(!r.agree);
}

#[test]
fn nan_equals_only_nan_and_infinity_only_itself() {
    let s = [f32s(
        "y",
        &[4],
        &[f32::NAN, 1.0, f32::INFINITY, f32::NEG_INFINITY],
    )];
    assert!(compare(&s, &s, 0.0, 0.0).agree);
    for c in [
        [f32::NAN, f32::NAN, f32::INFINITY, f32::NEG_INFINITY],
        [1.0, 1.0, f32::INFINITY, f32::NEG_INFINITY],
        [f32::NAN, 1.0, f32::NEG_INFINITY, f32::NEG_INFINITY],
        [f32::NAN, 1.0, f32::MAX, f32::NEG_INFINITY],
    ] {
        let r = compare(&s, &[f32s("y", &[4], &c)], 1.0, 1.0);
        assert!(!r.agree, "{c:?}");
        assert_eq!(r.max_abs, f64::INFINITY);
    }
}

#[test]
fn argmax_must_agree_row_by_row() {
    // Within a loose tolerance, yet the classifier's answer changes in row 1.
    let s = [f32s("probs", &[2, 2], &[0.9, 0.1, 0.45, 0.55])];
    let c = [f32s("probs", &[2, 2], &[0.9, 0.1, 0.55, 0.45])];
    let r = compare(&s, &c, 0.2, 0.0);
    assert_eq!(r.argmax_agree, Some(false));
    assert!(!r.agree);
    assert_eq!(
        r.detail.as_deref(),
        Some("output 'probs': argmax differs in 1 of 2 rows (row 1: 0 against stable 1)")
    );
    // Ties go to the first index, NaN wins (numpy).
    let s = [f32s("p", &[2, 3], &[0.5, 0.5, 0.1, 0.1, f32::NAN, 0.9])];
    let c = [f32s("p", &[2, 3], &[0.5, 0.4, 0.1, 0.1, f32::NAN, 2.0])];
    let r = compare(&s, &c, 2.0, 0.0);
    assert_eq!(r.argmax_agree, Some(true), "{r:?}");
    // A 1-D score vector is one row.
    let r = compare(
        &[f32s("v", &[3], &[0.0, 1.0, 0.0])],
        &[f32s("v", &[3], &[1.0, 0.0, 0.0])],
        2.0,
        0.0,
    );
    assert_eq!(r.argmax_agree, Some(false));
}

#[test]
fn argmax_only_for_float_scores() {
    let ints = tensor("i", DataType::Int32, &[1, 3], vec![0; 12]);
    let column = f32s("c", &[3, 1], &[1.0, 2.0, 3.0]);
    let scalar = f32s("s", &[], &[1.0]);
    let r = compare(
        &[ints.clone(), column.clone(), scalar.clone()],
        &[ints, column, scalar],
        0.0,
        0.0,
    );
    assert!(r.agree);
    assert_eq!(r.argmax_agree, None);
}

#[test]
fn structure_differences_disagree_with_detail() {
    let y = f32s("y", &[1, 2], &[1.0, 2.0]);
    let z = f32s("z", &[1], &[1.0]);
    let cases = [
        (
            vec![y.clone(), z.clone()],
            vec![y.clone()],
            "output 'z' is missing from the candidate's outputs",
        ),
        (
            vec![y.clone()],
            vec![y.clone(), z.clone()],
            "output 'z' is only in the candidate's outputs",
        ),
        (
            vec![y.clone()],
            vec![Tensor {
                datatype: DataType::Int32,
                ..y.clone()
            }],
            "output 'y': datatype INT32 against stable FP32",
        ),
        (
            vec![y.clone()],
            vec![f32s("y", &[2, 1], &[1.0, 2.0])],
            "output 'y': shape [2, 1] against stable [1, 2]",
        ),
        (
            vec![y.clone()],
            vec![f32s("y", &[1, 2], &[1.0])],
            "output 'y': the candidate's data has 4 bytes, FP32 [1, 2] needs 8",
        ),
        (
            vec![f32s("y", &[-1, 2], &[1.0, 2.0])],
            vec![f32s("y", &[-1, 2], &[1.0, 2.0])],
            "output 'y': [-1, 2] is not a valid shape",
        ),
    ];
    for (s, c, want) in cases {
        let r = compare(&s, &c, ATOL, RTOL);
        assert!(!r.agree, "{want}");
        assert_eq!(r.detail.as_deref(), Some(want));
    }
}

/// `values` encoded as `dt`, little-endian.
fn encode(dt: DataType, values: &[i64]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| -> Vec<u8> {
            match dt {
                DataType::Bool => vec![u8::from(v != 0)],
                DataType::Uint8 => (v as u8).to_le_bytes().to_vec(),
                DataType::Uint16 => (v as u16).to_le_bytes().to_vec(),
                DataType::Uint32 => (v as u32).to_le_bytes().to_vec(),
                DataType::Uint64 => (v as u64).to_le_bytes().to_vec(),
                DataType::Int8 => (v as i8).to_le_bytes().to_vec(),
                DataType::Int16 => (v as i16).to_le_bytes().to_vec(),
                DataType::Int32 => (v as i32).to_le_bytes().to_vec(),
                DataType::Int64 => v.to_le_bytes().to_vec(),
                DataType::Fp16 => half::f16::from_f64(v as f64).to_le_bytes().to_vec(),
                DataType::Fp32 => (v as f32).to_le_bytes().to_vec(),
                DataType::Fp64 => (v as f64).to_le_bytes().to_vec(),
                DataType::Bytes => v.to_string().into_bytes(),
            }
        })
        .collect()
}

#[test]
fn every_numeric_datatype_decodes() {
    for dt in DataType::ALL {
        if dt == DataType::Bytes {
            continue;
        }
        let s = [tensor("y", dt, &[4], encode(dt, &[0, 1, 1, 0]))];
        let same = [tensor("y", dt, &[4], encode(dt, &[0, 1, 1, 0]))];
        let r = compare(&s, &same, 0.0, 0.0);
        assert!(r.agree, "{dt}: {r:?}");
        // One element off by one: beyond atol 0.5, within 1.5.
        let c = [tensor("y", dt, &[4], encode(dt, &[0, 1, 0, 0]))];
        let r = compare(&s, &c, 0.5, 0.0);
        assert!(!r.agree, "{dt}: {r:?}");
        assert_eq!(r.max_abs, 1.0, "{dt}");
        assert!(compare(&s, &c, 1.5, 0.0).agree, "{dt}");
    }
    // Signed values are read as signed, FP16 as half floats.
    let r = compare(
        &[tensor(
            "y",
            DataType::Int8,
            &[1],
            encode(DataType::Int8, &[-3]),
        )],
        &[tensor(
            "y",
            DataType::Int8,
            &[1],
            encode(DataType::Int8, &[3]),
        )],
        0.0,
        0.0,
    );
    assert_eq!(r.max_abs, 6.0);
    let h = |v: f64| half::f16::from_f64(v).to_le_bytes().to_vec();
    let r = compare(
        &[tensor("y", DataType::Fp16, &[1], h(0.5))],
        &[tensor("y", DataType::Fp16, &[1], h(0.75))],
        0.0,
        0.0,
    );
    assert_eq!(r.max_abs, 0.25);
}

#[test]
fn wide_integers_compare_exactly() {
    // As f64 these two are equal; they are not.
    let s = [tensor(
        "id",
        DataType::Int64,
        &[1],
        encode(DataType::Int64, &[i64::MAX]),
    )];
    let c = [tensor(
        "id",
        DataType::Int64,
        &[1],
        encode(DataType::Int64, &[i64::MAX - 1]),
    )];
    let r = compare(&s, &c, 0.5, 0.0);
    assert!(!r.agree);
    assert_eq!(r.max_abs, 1.0);
    let s = [tensor(
        "u",
        DataType::Uint64,
        &[1],
        u64::MAX.to_le_bytes().to_vec(),
    )];
    let c = [tensor(
        "u",
        DataType::Uint64,
        &[1],
        0u64.to_le_bytes().to_vec(),
    )];
    assert_eq!(compare(&s, &c, 0.0, 0.0).max_abs, u64::MAX as f64);
}

#[test]
fn bytes_outputs_compare_byte_equal() {
    let b = |els: &[&[u8]]| {
        tensor(
            "label",
            DataType::Bytes,
            &[els.len() as i64],
            encode_bytes_elements(els.iter().copied()),
        )
    };
    let s = [b(&[b"cat", b"dog"])];
    assert!(compare(&s, &[b(&[b"cat", b"dog"])], 0.0, 0.0).agree);
    let r = compare(&s, &[b(&[b"cat", b"cow"])], 1.0, 1.0);
    assert_eq!(
        r.detail.as_deref(),
        Some("output 'label': 1 of 2 BYTES elements differ (first at element 1)")
    );
    let malformed = Tensor {
        data: vec![9, 0, 0, 0, b'x'].into(),
        ..b(&[b"cat", b"dog"])
    };
    let r = compare(&s, &[malformed], 0.0, 0.0);
    assert!(!r.agree);
    assert!(
        r.detail.as_deref().is_some_and(
            |d| d.starts_with("output 'label': the candidate's BYTES data is malformed")
        ),
        "{r:?}"
    );
    let short = Tensor {
        shape: vec![3],
        ..b(&[b"cat", b"dog"])
    };
    let r = compare(
        std::slice::from_ref(&short),
        std::slice::from_ref(&short),
        0.0,
        0.0,
    );
    assert_eq!(
        r.detail.as_deref(),
        Some("output 'label': the stable's data holds 2 BYTES elements, shape [3] needs 3")
    );
}

#[test]
fn segments_are_read_across_their_boundaries() {
    let s = f32s("probs", &[2, 3], &[0.1, 0.7, 0.2, 0.5, 0.3, 0.2]);
    // Cuts inside elements (3, 6) and on a boundary (12).
    let c = segmented(&s, &[3, 6, 12, 13]);
    assert!(c.data.segments().len() > 3);
    assert_eq!(
        compare(std::slice::from_ref(&s), std::slice::from_ref(&c), 0.0, 0.0).max_abs,
        0.0
    );
    let mut changed = s.data.contiguous().to_vec();
    changed[23] ^= 0x80; // the last element's sign
    let changed = segmented(
        &Tensor {
            data: changed.into(),
            ..s.clone()
        },
        &[1, 2, 22],
    );
    let r = compare(&[c], &[changed], ATOL, RTOL);
    assert!(!r.agree);
    assert!(r.detail.is_some_and(|d| d.contains("1 of 6 elements")));
}

#[test]
fn candidate_failure_is_a_disagreement() {
    let r = ShadowResult::candidate_failed("engine error: out of memory");
    assert!(!r.agree);
    assert_eq!(
        r.detail.as_deref(),
        Some("the candidate failed: engine error: out of memory")
    );
}

fn any_tensor(name: String) -> impl Strategy<Value = Tensor> {
    let dt = proptest::sample::select(DataType::ALL.to_vec());
    let shape = proptest::collection::vec(0i64..4, 0..3);
    (dt, shape)
        .prop_flat_map(move |(dt, shape)| {
            let count = element_count(&shape).unwrap_or(0);
            let data = match dt.element_size() {
                Some(size) => proptest::collection::vec(any::<u8>(), count * size).boxed(),
                None => {
                    proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..4), count)
                        .prop_map(|els| encode_bytes_elements(els.iter().map(Vec::as_slice)))
                        .boxed()
                }
            };
            let cuts = proptest::collection::vec(0usize..40, 0..4);
            (Just(dt), Just(shape), data, cuts)
        })
        .prop_map(move |(dt, shape, data, mut cuts)| {
            cuts.sort_unstable();
            segmented(&tensor(&name, dt, &shape, data), &cuts)
        })
}

fn any_outputs() -> impl Strategy<Value = Vec<Tensor>> {
    (0usize..4).prop_flat_map(|n| {
        (0..n)
            .map(|i| any_tensor(format!("out{i}")))
            .collect::<Vec<_>>()
    })
}

/// A copy of `outputs` with some changed: new bytes, a new shape, dropped.
fn perturbed(outputs: Vec<Tensor>) -> impl Strategy<Value = (Vec<Tensor>, Vec<Tensor>)> {
    let n = outputs.len();
    let changes = proptest::collection::vec(0u8..5, n);
    let fresh: Vec<_> = (0..n).map(|i| any_tensor(format!("out{i}"))).collect();
    (Just(outputs), changes, fresh).prop_map(|(a, changes, fresh)| {
        let mut b = Vec::new();
        for ((t, change), f) in a.iter().zip(changes).zip(fresh) {
            match change {
                0 => {}
                1 if f.datatype == t.datatype && f.shape == t.shape => b.push(f),
                2 => b.push(f),
                3 => {
                    // Flip one bit of the first byte.
                    let mut d = t.data.contiguous().to_vec();
                    if let Some(x) = d.first_mut() {
                        *x ^= 1;
                    }
                    b.push(Tensor {
                        data: Bytes::from(d).into(),
                        ..t.clone()
                    });
                }
                _ => b.push(t.clone()),
            }
        }
        (a, b)
    })
}

proptest! {
    #[test]
    fn compare_is_reflexive(outputs in any_outputs(), atol in 0.0f64..1.0, rtol in 0.0f64..1.0) {
        let again: Vec<Tensor> = outputs.iter().map(|t| segmented(t, &[5])).collect();
        let r = compare(&outputs, &again, atol, rtol);
        prop_assert!(r.agree, "{:?}", r);
        prop_assert_eq!(r.max_abs, 0.0);
        prop_assert_ne!(r.argmax_agree, Some(false));
    }

    #[test]
    fn agree_is_symmetric_without_rtol(
        (a, b) in any_outputs().prop_flat_map(perturbed),
        atol in prop_oneof![Just(0.0), 0.0f64..10.0, Just(f64::INFINITY)],
    ) {
        let ab = compare(&a, &b, atol, 0.0);
        let ba = compare(&b, &a, atol, 0.0);
        prop_assert_eq!(ab.agree, ba.agree, "{:?} / {:?}", ab, ba);
        prop_assert_eq!(ab.argmax_agree, ba.argmax_agree);
        prop_assert_eq!(ab.max_abs, ba.max_abs);
    }
}
