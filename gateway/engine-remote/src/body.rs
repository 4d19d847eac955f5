use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// A request body sent as the frames it was encoded into, so that tensor
/// bytes go to the socket without being joined first.
#[derive(Debug, Default)]
pub(crate) struct FramesBody {
    frames: VecDeque<Bytes>,
    remaining: u64,
}

impl FramesBody {
    pub(crate) fn new(frames: Vec<Bytes>) -> FramesBody {
        let frames: VecDeque<Bytes> = frames.into_iter().filter(|f| !f.is_empty()).collect();
        let remaining = frames.iter().map(|f| f.len() as u64).sum();
        FramesBody { frames, remaining }
    }

    pub(crate) fn empty() -> FramesBody {
        FramesBody::default()
    }
}

impl Body for FramesBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        Poll::Ready(this.frames.pop_front().map(|f| {
            this.remaining -= f.len() as u64;
            Ok(Frame::data(f))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn yields_every_frame_in_order() {
        let a = Bytes::from_static(b"head");
        let body = FramesBody::new(vec![a.clone(), Bytes::new(), Bytes::from_static(b"tail")]);
        assert_eq!(body.size_hint().exact(), Some(8));
        let mut body = body;
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first.as_ptr(), a.as_ptr(), "the frame itself, not a copy");
        assert_eq!(body.size_hint().exact(), Some(4));
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(&rest[..], b"tail");
        assert!(FramesBody::empty().is_end_stream());
    }
}
