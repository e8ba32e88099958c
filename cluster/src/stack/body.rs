//! A request body that a retry can send again: a unary request's one message, kept whole
//! (any attempt sends it), or a stream shared by the attempts, which only an attempt that
//! failed before reading any of it may hand on.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, tonic::Status>;

pub struct ReplayBody(Kind);

enum Kind {
    /// The whole body, read before the first attempt; `sent` is this copy's own.
    Whole { bytes: Bytes, sent: bool },
    /// One stream for all attempts.
    Shared(Arc<SharedBody>),
}

struct SharedBody {
    body: Mutex<BoxBody>,
    /// Turns true once an attempt polled the body.
    read: AtomicBool,
}

impl SharedBody {
    fn lock(&self) -> std::sync::MutexGuard<'_, BoxBody> {
        self.body.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Clone for ReplayBody {
    /// A fresh copy for the next attempt: the whole body from its start, or a handle on
    /// the same stream.
    fn clone(&self) -> Self {
        Self(match &self.0 {
            Kind::Whole { bytes, .. } => Kind::Whole {
                bytes: bytes.clone(),
                sent: false,
            },
            Kind::Shared(shared) => Kind::Shared(shared.clone()),
        })
    }
}

impl ReplayBody {
    /// Whether the body is held whole (a copy of it can be sent anywhere, any time).
    pub fn is_whole(&self) -> bool {
        matches!(self.0, Kind::Whole { .. })
    }

    /// A body read in full already: every attempt sends all of it.
    pub fn whole(bytes: Bytes) -> Self {
        Self(Kind::Whole { bytes, sent: false })
    }

    /// A body that streams: attempts share it, so only one that never read it may be
    /// followed by another.
    pub fn shared<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        use http_body_util::BodyExt;
        let body = body
            .map_err(|error| tonic::Status::from_error(error.into()))
            .boxed_unsync();
        Self(Kind::Shared(Arc::new(SharedBody {
            body: Mutex::new(body),
            read: AtomicBool::new(false),
        })))
    }

    /// Whether another attempt can still send the whole body.
    pub fn can_be_sent_again(&self) -> bool {
        match &self.0 {
            Kind::Whole { .. } => true,
            Kind::Shared(shared) => !shared.read.load(Ordering::Acquire),
        }
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        match &mut self.0 {
            Kind::Whole { bytes, sent } => {
                if std::mem::replace(sent, true) || bytes.is_empty() {
                    Poll::Ready(None)
                } else {
                    Poll::Ready(Some(Ok(Frame::data(bytes.clone()))))
                }
            }
            Kind::Shared(shared) => {
                shared.read.store(true, Ordering::Release);
                Pin::new(&mut *shared.lock()).poll_frame(cx)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Whole { bytes, sent } => *sent || bytes.is_empty(),
            Kind::Shared(shared) => shared.lock().is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Whole { bytes, sent } => {
                SizeHint::with_exact(if *sent { 0 } else { bytes.len() as u64 })
            }
            Kind::Shared(shared) => shared.lock().size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn a_whole_body_is_sent_in_full_by_every_attempt() {
        let body = ReplayBody::whole(Bytes::from_static(b"message"));
        let first = body.clone().collect().await.unwrap().to_bytes();
        let second = body.clone().collect().await.unwrap().to_bytes();
        assert_eq!(
            (first.as_ref(), second.as_ref()),
            (&b"message"[..], &b"message"[..])
        );
        assert!(body.can_be_sent_again());
    }

    #[tokio::test]
    async fn a_shared_stream_can_go_elsewhere_only_until_an_attempt_reads_it() {
        let body = ReplayBody::shared(http_body_util::Full::new(Bytes::from_static(b"chunk")));
        // An attempt that failed before reading leaves it whole.
        drop(body.clone());
        assert!(body.can_be_sent_again());
        let read = body.clone().collect().await.unwrap().to_bytes();
        assert_eq!(read.as_ref(), b"chunk");
        assert!(
            !body.can_be_sent_again(),
            "a read stream must not be sent again"
        );
    }
}
