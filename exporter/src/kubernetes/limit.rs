//! A bound on what one API response can make the agent buffer.
//!
//! The API server sends a list page as one JSON document on one line, and a watch as one JSON
//! event per line (kube decodes watches with a line codec). kube buffers a whole page, or a
//! whole line, before decoding it, so the bound that matters is the longest run of bytes
//! without a newline: past it the body fails, the request is an error, and the watch retries
//! with backoff instead of holding a 50 MB object in memory.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// Boxed error of a body, as kube's client stack uses.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body whose lines may be at most `max` bytes long.
pub struct LineLimit<B> {
    inner: B,
    max: usize,
    /// Bytes since the last newline.
    run: usize,
}

impl<B> LineLimit<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, max: usize) -> Self {
        LineLimit { inner, max, run: 0 }
    }
}

/// A line longer than the limit.
#[derive(Debug, thiserror::Error)]
#[error("the API sent a response line longer than {0} bytes (refused)")]
pub struct LineTooLong(usize);

impl<B> Body for LineLimit<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => f,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            self.run = match data.iter().rposition(|&b| b == b'\n') {
                Some(i) => data.len() - i - 1,
                None => self.run + data.len(),
            };
            // The last line of this chunk may have begun before it: the run covers it. Lines
            // wholly inside the chunk are shorter than the chunk, which hyper caps far below
            // the limit.
            if self.run > self.max {
                return Poll::Ready(Some(Err(Box::new(LineTooLong(self.max)))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    fn body(
        chunks: Vec<&'static [u8]>,
    ) -> LineLimit<impl Body<Data = Bytes, Error = BoxError> + Unpin> {
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, BoxError>(Frame::data(Bytes::from_static(c))));
        LineLimit::new(StreamBody::new(futures_util::stream::iter(frames)), 8)
    }

    #[tokio::test]
    async fn long_lines_fail_short_ones_pass() {
        let ok = body(vec![b"abc\n", b"defgh", b"ij\nklmnopqr\n"]);
        assert_eq!(
            ok.collect().await.expect("fits").to_bytes(),
            Bytes::from_static(b"abc\ndefghij\nklmnopqr\n")
        );
        // 2 + 7 bytes without a newline across two chunks.
        let long = body(vec![b"abc\nde", b"fghijkl"]);
        let err = long.collect().await.expect_err("too long");
        assert!(err.to_string().contains("longer than 8 bytes"), "{err}");
    }
}
