use bytes::Bytes;
use nusa_tensor::{DataType, Tensor, TensorData};

use super::*;

/// A version's file digest (any fixed value).
const W: [u8; 32] = [7; 32];

fn t(name: &str, data: &[u8]) -> Tensor {
    Tensor {
        name: name.into(),
        datatype: DataType::Uint8,
        shape: vec![data.len() as i64],
        data: TensorData::from(data.to_vec()),
    }
}

fn key(inputs: &[Tensor]) -> CacheKey {
    CacheKey::compute("m", 1, &W, None, inputs)
}

#[test]
fn same_request_same_key_and_hex_display() {
    let a = key(&[t("x", b"abc")]);
    assert_eq!(a, key(&[t("x", b"abc")]));
    let hex = a.to_string();
    assert_eq!(hex.len(), 64);
    assert!(hex
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_eq!(CacheKey::from_bytes(*a.as_bytes()), a);
}

#[test]
fn model_and_version_are_part_of_the_key() {
    let i = [t("x", b"abc")];
    let base = CacheKey::compute("m", 1, &W, None, &i);
    assert_ne!(base, CacheKey::compute("m", 2, &W, None, &i));
    assert_ne!(base, CacheKey::compute("n", 1, &W, None, &i));
}

/// Retrained weights under the same version number: another key.
#[test]
fn the_version_files_digest_is_part_of_the_key() {
    let i = [t("x", b"abc")];
    let mut other = W;
    other[31] ^= 1;
    assert_ne!(
        CacheKey::compute("m", 1, &W, None, &i),
        CacheKey::compute("m", 1, &other, None, &i)
    );
}

#[test]
fn all_outputs_differs_from_every_explicit_list() {
    let i = [t("x", b"abc")];
    let all = CacheKey::compute("m", 1, &W, None, &i);
    let empty = CacheKey::compute("m", 1, &W, Some(&[]), &i);
    let y = CacheKey::compute("m", 1, &W, Some(&["y"]), &i);
    let yz = CacheKey::compute("m", 1, &W, Some(&["y", "z"]), &i);
    let zy = CacheKey::compute("m", 1, &W, Some(&["z", "y"]), &i);
    assert_ne!(all, empty);
    assert_ne!(all, y);
    assert_ne!(empty, y);
    assert_ne!(y, yz);
    assert_eq!(yz, zy, "output order does not change the answer");
}

#[test]
fn input_order_does_not_matter_but_every_byte_does() {
    let a = key(&[t("x", b"abc"), t("y", b"de")]);
    assert_eq!(a, key(&[t("y", b"de"), t("x", b"abc")]));
    assert_ne!(a, key(&[t("x", b"abd"), t("y", b"de")]));
    assert_ne!(a, key(&[t("x", b"abc")]));
    let mut other_type = t("x", b"abc");
    other_type.datatype = DataType::Int8;
    assert_ne!(a, key(&[other_type, t("y", b"de")]));
}

#[test]
fn shape_is_part_of_the_key() {
    let mut a = t("x", &[0; 6]);
    a.shape = vec![2, 3];
    let mut b = a.clone();
    b.shape = vec![3, 2];
    let mut c = a.clone();
    c.shape = vec![6];
    assert_ne!(key(&[a.clone()]), key(&[b]));
    assert_ne!(key(&[a]), key(&[c]));
}

#[test]
fn segmenting_does_not_change_the_key() {
    let one = t("x", b"abcdef");
    let two = Tensor {
        data: TensorData::new(vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cdef")]),
        ..one.clone()
    };
    assert_eq!(key(&[one]), key(&[two]));
}

#[test]
fn bytes_cannot_move_between_fields() {
    // Without length prefixes each pair would hash the same byte stream.
    assert_ne!(key(&[t("ab", b"c")]), key(&[t("a", b"bc")]));
    assert_ne!(
        CacheKey::compute("ab", 1, &W, Some(&["c"]), &[]),
        CacheKey::compute("a", 1, &W, Some(&["bc"]), &[])
    );
    assert_ne!(
        CacheKey::compute("m", 1, &W, Some(&["a", "b"]), &[]),
        CacheKey::compute("m", 1, &W, Some(&["ab"]), &[])
    );
    let mut s1 = t("x", &[0; 8]);
    s1.shape = vec![1, 8];
    let mut s2 = t("x", &[0; 8]);
    s2.shape = vec![8];
    assert_ne!(key(&[s1]), key(&[s2]));
}
