//! A body sent as the frames it was encoded into, so that tensor bytes go
//! to the socket without being joined first: the ingress's responses and
//! `engine-remote`'s requests to a region. Both sides of HTTP use it, so it
//! sits below both (`nusa-proto`'s `Frames` is the decoding side's buffer
//! and knows no HTTP).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

#[derive(Default)]
pub struct FramesBody {
    /// Never holds an empty frame.
    frames: VecDeque<Bytes>,
    remaining: u64,
    /// Dropped with the body: what must live until hyper has written it
    /// (the ingress's `send` span).
    _keep: Option<Box<dyn Send + Sync>>,
}

impl FramesBody {
    pub fn new(frames: Vec<Bytes>) -> FramesBody {
        let frames: VecDeque<Bytes> = frames.into_iter().filter(|f| !f.is_empty()).collect();
        let remaining = frames.iter().map(|f| f.len() as u64).sum();
        FramesBody {
            frames,
            remaining,
            _keep: None,
        }
    }

    pub fn empty() -> FramesBody {
        FramesBody::default()
    }

    /// Keeps `value` until the body is dropped, which hyper does once it
    /// has written the body (or given up on it).
    pub fn keeping(mut self, value: impl Send + Sync + 'static) -> FramesBody {
        self._keep = Some(Box::new(value));
        self
    }
}

impl std::fmt::Debug for FramesBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FramesBody")
            .field("frames", &self.frames.len())
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
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
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

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
        assert!(FramesBody::new(vec![Bytes::new()]).is_end_stream());
    }

    #[test]
    fn what_it_keeps_lives_until_the_body_is_dropped() {
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let body = FramesBody::new(vec![Bytes::from_static(b"x")]).keeping(Flag(dropped.clone()));
        assert!(!dropped.load(Ordering::SeqCst));
        drop(body);
        assert!(dropped.load(Ordering::SeqCst));
    }
}
