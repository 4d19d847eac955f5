use bytes::Bytes;

/// A body as the frames it arrived in. Splitting hands out slices of the
/// frames; bytes are joined only where a caller asks for a contiguous view.
#[derive(Clone, Debug, Default)]
pub struct Frames {
    frames: std::collections::VecDeque<Bytes>,
    len: usize,
}

impl Frames {
    pub fn new(frames: impl IntoIterator<Item = Bytes>) -> Frames {
        let frames: std::collections::VecDeque<Bytes> =
            frames.into_iter().filter(|f| !f.is_empty()).collect();
        let len = frames.iter().map(Bytes::len).sum();
        Frames { frames, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes the first `n` bytes as segments. `n` must be at most `len()`.
    pub fn split_to(&mut self, mut n: usize) -> Vec<Bytes> {
        debug_assert!(n <= self.len);
        let mut out = Vec::new();
        while n > 0 {
            let Some(front) = self.frames.front_mut() else {
                break;
            };
            if front.len() <= n {
                n -= front.len();
                self.len -= front.len();
                if let Some(f) = self.frames.pop_front() {
                    out.push(f);
                }
            } else {
                out.push(front.split_to(n));
                self.len -= n;
                n = 0;
            }
        }
        out
    }

    /// The first `n` bytes as one buffer (copied only when split over frames).
    pub fn split_contiguous(&mut self, n: usize) -> Bytes {
        let segs = self.split_to(n);
        match segs.len() {
            0 => Bytes::new(),
            1 => segs.into_iter().next().unwrap_or_default(),
            _ => {
                let mut v = Vec::with_capacity(n);
                for s in segs {
                    v.extend_from_slice(&s);
                }
                Bytes::from(v)
            }
        }
    }

    pub fn into_contiguous(mut self) -> Bytes {
        let n = self.len;
        self.split_contiguous(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_across_frames_without_copy() {
        let a = Bytes::from_static(b"hello ");
        let b = Bytes::from_static(b"world");
        let mut f = Frames::new([a.clone(), Bytes::new(), b]);
        assert_eq!(f.len(), 11);
        let head = f.split_to(3);
        assert_eq!(head.len(), 1);
        assert_eq!(
            head[0].as_ptr(),
            a.as_ptr(),
            "slice of the frame, not a copy"
        );
        let mid = f.split_to(5);
        assert_eq!(mid.iter().map(|s| s.len()).sum::<usize>(), 5);
        assert_eq!(mid.len(), 2);
        assert_eq!(&f.into_contiguous()[..], b"rld");
    }
}
