//! A response body made of the frames the API produced (no copy).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

pub struct FramesBody {
    frames: VecDeque<Bytes>,
    remaining: u64,
    /// The request's `send` span (tracing on): it ends, and the request's
    /// span with it, when hyper drops the body it has written.
    _sending: Option<nusa_trace::Sending>,
}

impl FramesBody {
    pub fn new(frames: Vec<Bytes>) -> FramesBody {
        let remaining = frames.iter().map(|f| f.len() as u64).sum();
        FramesBody {
            frames: frames.into_iter().filter(|f| !f.is_empty()).collect(),
            remaining,
            _sending: None,
        }
    }

    pub fn with_sending(mut self, sending: Option<nusa_trace::Sending>) -> FramesBody {
        self._sending = sending;
        self
    }
}

impl Body for FramesBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.frames.pop_front() {
            Some(f) => {
                self.remaining -= f.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(f))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
