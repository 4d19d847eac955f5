use bytes::Bytes;
use nusa_tensor::{DataType, Tensor, TensorData};

use super::*;

fn sample() -> Vec<Tensor> {
    DataType::ALL
        .into_iter()
        .enumerate()
        .map(|(i, d)| Tensor {
            name: format!("out_{i}_é"),
            datatype: d,
            shape: vec![1, i as i64, -1],
            data: TensorData::new(vec![
                Bytes::from(vec![i as u8; i]),
                Bytes::from_static(b"tail"),
            ]),
        })
        .collect()
}

fn key() -> CacheKey {
    CacheKey::from_bytes([7; 32])
}

fn sealed(tensors: &[Tensor], expires_at: u64) -> Vec<u8> {
    let mut bytes = encode(expires_at, tensors).unwrap().bytes.to_vec();
    seal(&key(), &mut bytes);
    bytes
}

#[test]
fn round_trip_keeps_every_field() {
    let tensors = sample();
    let bytes = sealed(&tensors, 1234);
    assert_eq!(bytes.len() as u64, encoded_len(&tensors));
    assert_eq!(bytes[0], FORMAT);
    let record = decode(&key(), Bytes::from(bytes)).unwrap();
    assert_eq!(record.expires_at, 1234);
    assert_eq!(record.tensors.len(), tensors.len());
    for (got, want) in record.tensors.iter().zip(&tensors) {
        assert_eq!(got.name, want.name);
        assert_eq!(got.datatype, want.datatype);
        assert_eq!(got.shape, want.shape);
        assert_eq!(got.data.contiguous(), want.data.contiguous());
    }
}

#[test]
fn empty_answer_round_trips() {
    let bytes = sealed(&[], 5);
    let record = decode(&key(), Bytes::from(bytes)).unwrap();
    assert!(record.tensors.is_empty());
}

#[test]
fn unsealed_or_other_keys_record_fails_the_checksum() {
    let unsealed = encode(9, &sample()).unwrap().bytes;
    assert_eq!(decode(&key(), unsealed).unwrap_err(), DecodeError::Checksum);
    let bytes = sealed(&sample(), 9);
    assert_eq!(
        decode(&CacheKey::from_bytes([8; 32]), Bytes::from(bytes)).unwrap_err(),
        DecodeError::Checksum
    );
}

#[test]
fn every_flipped_byte_is_caught() {
    let bytes = sealed(&sample(), 42);
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x01;
        assert!(
            decode(&key(), Bytes::from(bad)).is_err(),
            "flip at {i} went unnoticed"
        );
    }
}

#[test]
fn every_truncation_is_caught() {
    let bytes = sealed(&sample(), 42);
    for n in 0..bytes.len() {
        assert!(decode(&key(), Bytes::copy_from_slice(&bytes[..n])).is_err());
        // And without the checksum to hide behind, parsing alone refuses it.
        if n >= HEADER {
            assert!(parse(Bytes::copy_from_slice(&bytes[..n])).is_err());
        }
    }
}

#[test]
fn parse_bounds_every_length() {
    let mut head = vec![FORMAT];
    head.extend_from_slice(&0u64.to_le_bytes());
    head.extend_from_slice(&[0; 32]);
    let with = |tail: &[u8]| {
        let mut b = head.clone();
        b.extend_from_slice(tail);
        parse(Bytes::from(b))
    };
    assert_eq!(
        with(&u32::MAX.to_le_bytes()).unwrap_err(),
        DecodeError::TooMany(u32::MAX)
    );
    let mut one = 1u32.to_le_bytes().to_vec();
    one.extend_from_slice(&u32::MAX.to_le_bytes()); // name length
    one.extend_from_slice(&[0; 16]);
    assert_eq!(with(&one).unwrap_err(), DecodeError::Truncated("name"));

    let mut bad_type = 1u32.to_le_bytes().to_vec();
    bad_type.extend_from_slice(&1u32.to_le_bytes());
    bad_type.push(b'x');
    bad_type.push(200); // datatype code
    bad_type.extend_from_slice(&[0; 16]);
    assert_eq!(with(&bad_type).unwrap_err(), DecodeError::Datatype(200));

    let mut huge_data = 1u32.to_le_bytes().to_vec();
    huge_data.extend_from_slice(&1u32.to_le_bytes());
    huge_data.push(b'x');
    huge_data.push(2);
    huge_data.push(0); // rank
    huge_data.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        with(&huge_data).unwrap_err(),
        DecodeError::Truncated(_)
    ));

    let mut trailing = 0u32.to_le_bytes().to_vec();
    trailing.push(0);
    assert_eq!(with(&trailing).unwrap_err(), DecodeError::Trailing(1));

    let mut other = head.clone();
    other[0] = 2;
    other.extend_from_slice(&0u32.to_le_bytes());
    assert_eq!(
        parse(Bytes::from(other)).unwrap_err(),
        DecodeError::Format(2)
    );
}

#[test]
fn garbage_never_panics() {
    // A fixed pseudo-random stream: the same cases on every run.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in 0..512 {
        let mut buf = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf.push(x as u8);
        }
        if let Some(b) = buf.first_mut() {
            *b = FORMAT;
        }
        let _ = parse(Bytes::from(buf.clone()));
        assert!(decode(&key(), Bytes::from(buf)).is_err());
    }
}
