//! The mirror layer: a share of a route's calls is also sent, as a copy, to another subset
//! of the service's nodes (a version, labels) or to another service, in the background.
//! The caller's call goes on at once and never waits for the copy; the copy's answer is
//! read and dropped, and only counted (`rustms_gateway_mirrored_total{service,outcome}`:
//! `ok`, `error` for a status other than OK, `failed` for no answer, `skipped`).
//! Only calls whose body the gateway holds whole are copied (`/api` and REST, unary); a
//! stream on the rpc port is not.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cluster::stack::{Around, Below, CallInfo, CallRequest, Step};
use cluster::traffic::Steer;
use http_body_util::BodyExt;
use telemetry::prometheus::names;
use tower::ServiceExt;

use super::{CallStack, GatewayCall};
use crate::settings::Mirror;

/// Copies out at once, at most; past it a call due for a copy is not copied (counted as
/// `skipped`), so that a mirror that hangs holds a bounded number of calls.
pub const MAX_COPIES_OUT: usize = 256;

/// The header a copy carries, so that the nodes (and their logs) can tell it apart.
pub const MIRROR_HEADER: &str = "x-rust-ms-mirror";

#[derive(Clone)]
pub struct MirrorLayer {
    /// Where copies go: the stack below the gateway's guards, without their retries.
    copies: CallStack,
    out: Arc<AtomicUsize>,
}

impl MirrorLayer {
    pub fn new(copies: CallStack) -> Self {
        Self {
            copies,
            out: Arc::default(),
        }
    }
}

cluster::around_layer!(MirrorLayer);

impl Around for MirrorLayer {
    type Future<S: Below> = Step<S::Future>;

    fn around<S: Below>(&self, request: CallRequest, below: &mut S) -> Step<S::Future> {
        if let Some(copy) = self.copy_of(&request) {
            self.send(copy);
        }
        Step::below(below.call(request))
    }
}

impl MirrorLayer {
    /// The copy of `request` its route's mirror asks for, if it is one of the share.
    fn copy_of(&self, request: &CallRequest) -> Option<(CallRequest, Arc<str>)> {
        let mirror: &Mirror = request
            .extensions()
            .get::<GatewayCall>()?
            .route
            .mirror
            .as_ref()?;
        if !request.body().is_whole() || rand::random::<f64>() * 100.0 >= mirror.percent {
            return None;
        }
        let mut info: CallInfo = request.extensions().get::<CallInfo>()?.clone();
        if let Some(service) = &mirror.service {
            info.service = service.as_str().into();
            // Another service's nodes may run other versions than the method's.
            info.versions = None;
        }
        info.steer = mirror.to.clone().map(|subset| Steer {
            subset,
            fallback: false,
        });
        // A copy is sent once, read whole, and traced with nothing.
        info.idempotent = false;
        info.affinity = None;
        info.whole_reply = true;
        info.trace = None;
        let service = info.service.clone();
        let mut copy = http::Request::new(request.body().clone());
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.headers_mut() = request.headers().clone();
        copy.headers_mut().insert(
            http::HeaderName::from_static(MIRROR_HEADER),
            http::HeaderValue::from_static("1"),
        );
        copy.extensions_mut().insert(info);
        Some((copy, service))
    }

    fn send(&self, (copy, service): (CallRequest, Arc<str>)) {
        let count = move |outcome: &'static str| {
            metrics::counter!(names::GATEWAY_MIRRORED,
                "service" => service.to_string(), "outcome" => outcome)
            .increment(1);
        };
        if self.out.fetch_add(1, Ordering::Relaxed) >= MAX_COPIES_OUT {
            self.out.fetch_sub(1, Ordering::Relaxed);
            count("skipped");
            return;
        }
        let (copies, out) = (self.copies.clone(), self.out.clone());
        tokio::spawn(async move {
            let outcome = match copies.oneshot(copy).await {
                Ok(response) => {
                    let (head, body) = response.into_parts();
                    match body.collect().await {
                        // Trailers-only (an error at once) has its status in the head.
                        Ok(whole) => match whole
                            .trailers()
                            .and_then(|t| t.get("grpc-status"))
                            .or_else(|| head.headers.get("grpc-status"))
                        {
                            Some(status) if status == "0" => "ok",
                            _ => "error",
                        },
                        Err(_) => "failed",
                    }
                }
                Err(_) => "failed",
            };
            out.fetch_sub(1, Ordering::Relaxed);
            count(outcome);
        });
    }
}
