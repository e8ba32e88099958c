//! How a gRPC call ended, read off the response as it passes: the `grpc-status` of its
//! trailers (or of a trailers-only reply's headers), and when its last frame went by.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use tonic::Code;

/// The canonical name of a status code (`OK`, `NOT_FOUND`), as metrics label it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The `grpc-status` a header map carries, if any.
pub fn status_of(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|value| Code::from_bytes(value.as_bytes()))
}

/// What to do once a call has ended, with its status.
pub trait CallEnd {
    fn end(self, code: Code);
}

impl<F: FnOnce(Code)> CallEnd for F {
    fn end(self, code: Code) {
        self(code)
    }
}

pin_project_lite::pin_project! {
    /// A response body that calls `on_end` once, with the call's status, when its last
    /// frame has gone by, when it fails, or when it is dropped unfinished (the caller
    /// went away: `CANCELLED` unless a status was already seen).
    pub struct OnEnd<B, F: CallEnd> {
        #[pin]
        inner: B,
        code: Option<Code>,
        on_end: Option<F>,
    }

    impl<B, F: CallEnd> PinnedDrop for OnEnd<B, F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(on_end) = this.on_end.take() {
                on_end.end(this.code.unwrap_or(Code::Cancelled));
            }
        }
    }
}

impl<B, F: CallEnd> OnEnd<B, F> {
    /// Watches `inner`; `headers` are the response's, which hold the status of a reply
    /// that has no body (trailers-only).
    pub fn new(inner: B, headers: &http::HeaderMap, on_end: F) -> Self {
        Self {
            inner,
            code: status_of(headers),
            on_end: Some(on_end),
        }
    }
}

impl<B: Body, F: CallEnd> Body for OnEnd<B, F> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_of) {
                    *this.code = Some(code);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(on_end) = this.on_end.take() {
                    on_end.end(Code::Unknown);
                }
            }
            Poll::Ready(None) => {
                if let Some(on_end) = this.on_end.take() {
                    // A stream that ended without a status broke the protocol.
                    on_end.end(this.code.unwrap_or(Code::Unknown));
                }
            }
            Poll::Pending => {}
        }
        polled
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
    use super::*;
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;

    struct Frames(Vec<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if self.0.is_empty() {
                Poll::Ready(None)
            } else {
                Poll::Ready(Some(Ok(self.0.remove(0))))
            }
        }
    }

    fn drain<B: Body + Unpin>(mut body: B) {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        while let Poll::Ready(Some(_)) = Pin::new(&mut body).poll_frame(&mut cx) {}
    }

    fn trailers(status: &str) -> Frame<Bytes> {
        let mut map = http::HeaderMap::new();
        map.insert("grpc-status", status.parse().unwrap());
        Frame::trailers(map)
    }

    #[test]
    fn the_status_of_the_trailers_is_reported_once_at_the_end() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let body = OnEnd::new(
            Frames(vec![Frame::data(Bytes::from("x")), trailers("5")]),
            &http::HeaderMap::new(),
            move |code| log.lock().unwrap().push(code),
        );
        drain(body);
        assert_eq!(*seen.lock().unwrap(), vec![Code::NotFound]);
    }

    #[test]
    fn a_body_dropped_before_its_end_reports_cancelled() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let body = OnEnd::new(
            Frames(vec![Frame::data(Bytes::from("x"))]),
            &http::HeaderMap::new(),
            move |code| log.lock().unwrap().push(code),
        );
        drop(body);
        assert_eq!(*seen.lock().unwrap(), vec![Code::Cancelled]);
    }

    #[test]
    fn a_trailers_only_reply_reports_the_status_of_its_headers() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", "14".parse().unwrap());
        drain(OnEnd::new(Frames(vec![]), &headers, move |code| {
            log.lock().unwrap().push(code)
        }));
        assert_eq!(*seen.lock().unwrap(), vec![Code::Unavailable]);
    }
}
