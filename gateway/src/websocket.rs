//! Streams of requests over HTTP: a WebSocket upgrade of a method's `/api` path carries
//! a client or bidirectional stream (and a server stream, for a client that prefers one
//! socket) through the same call stack as every other call.
//!
//! Each request message is a JSON text frame, read with the method's input descriptor
//! as `/api` reads a body; an empty text frame ends the requests (a half-close: the
//! replies go on). Each reply message is a JSON text frame. The call's status closes the
//! socket: code 1000 when it succeeded; when it failed, a last text frame
//! `{"error": {"code", "message", "details"}}` and then close code `4000 + grpc code`
//! with the message as the reason. The caller closing the socket, or its connection
//! dropping, cancels the call on the node.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use cluster::stack::ReplayBody;
use futures::StreamExt;
use http_body::Frame;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use tokio::sync::mpsc;
use tonic::Code;
use tonic::codec::Streaming;

use crate::api::{self, MethodPolicy, PolicyOrigin, Resolved, Sending};
use crate::codec;
use crate::failure::Failure;
use crate::observe::{Door, Observed, request_id};
use crate::state::Gateway;
use crate::transcode;

/// The subprotocol the gateway selects when a client offers it; a client that must send
/// a token and cannot set headers (a browser) offers it beside `bearer.<token>`.
pub const PROTOCOL: &str = "rust-ms.json";

/// The prefix of the subprotocol that carries a bearer token.
const BEARER_PROTOCOL: &str = "bearer.";

/// How long a socket may stay silent before the gateway pings it, so that proxies and
/// NATs on the way keep it open.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// Request messages read ahead of the node: past this the gateway stops reading the
/// socket until the node takes one.
const READ_AHEAD: usize = 8;

/// The close code of a failed call: 4000 + its gRPC code (4000–4999 are the
/// application's by RFC 6455).
const FAILED_CLOSE_BASE: u16 = 4000;

/// Whether the request asks for a WebSocket.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"))
}

/// The upgrade of `/api/{service}/{method}`: the method is found before the socket opens
/// (an unknown one is an HTTP error as on `/api`); the call runs once it is open.
pub async fn handle(
    gateway: Arc<Gateway>,
    service: String,
    method: String,
    request: Request,
) -> Response {
    let id = request_id(request.headers());
    let (mut parts, _body) = request.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let mut observed = Observed::start(
        Door::WebSocket,
        &parts,
        &id,
        gateway.tracer.as_ref(),
        &gateway.meters,
        gateway.settings.access_log,
    );
    if !origin_allowed(&parts.headers, &gateway.settings.cors_allow_origins) {
        let failure = Failure::new(
            Code::PermissionDenied,
            "this origin may not open a WebSocket here: list it in gateway.cors_allow_origins",
        );
        observed.finish(failure.status.as_u16(), failure.code, None);
        return failure.into_http(&id);
    }
    let resolved = match api::resolve(&gateway, &service, &method, &mut observed).await {
        Ok(resolved) => resolved,
        Err(failure) => {
            observed.finish(
                failure.status.as_u16(),
                failure.code,
                failure.served_by.as_deref(),
            );
            return failure.into_http(&id);
        }
    };
    let authorization = authorization(&parts.headers);
    let placement = gateway.place(
        &resolved.route,
        &parts.headers,
        parts.uri.query(),
        &parts.extensions,
    );
    // A message may be as large as an /api body; past a few times that the socket drops
    // unread, bounding what one frame can make the gateway hold.
    let max_message = gateway.settings.max_body_bytes;
    upgrade
        .protocols([PROTOCOL])
        .max_message_size(max_message.saturating_mul(4))
        .max_frame_size(max_message.saturating_mul(4))
        .on_upgrade(move |socket| async move {
            let call = Call {
                gateway: &gateway,
                resolved: &resolved,
                authorization,
                placement,
                id: &id,
                max_message,
            };
            let (code, node) = call.run(socket, &mut observed).await;
            tracing::debug!(%service, %method, request_id = %id, ?code, "websocket call ended");
            observed.finish(101, code, node.as_deref());
        })
}

/// A browser cannot set headers on a WebSocket: what the page's origin may open is what
/// `gateway.cors_allow_origins` lets it call with `fetch`. A client that sends no
/// `Origin` (not a browser), or a page of the gateway's own origin, is let in.
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok())
    else {
        return true;
    };
    let own = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|host| {
            origin
                .split_once("://")
                .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
        });
    own || allowed.iter().any(|o| o == "*" || o == origin)
}

/// The caller's token: its `Authorization` header, or a `bearer.<token>` subprotocol for
/// a client that cannot set headers.
fn authorization(headers: &HeaderMap) -> Option<HeaderValue> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        return Some(value.clone());
    }
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|protocol| protocol.trim().strip_prefix(BEARER_PROTOCOL))
        .and_then(|token| {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
            value.set_sensitive(true);
            Some(value)
        })
}

/// One call over an open socket.
struct Call<'a> {
    gateway: &'a Gateway,
    resolved: &'a Resolved,
    authorization: Option<HeaderValue>,
    placement: crate::settings::Placement,
    id: &'a str,
    max_message: usize,
}

/// Why a call over a socket ended.
enum Ending {
    /// The service ended the stream with OK.
    Done,
    /// The caller closed the socket or its connection dropped: the call is cancelled.
    Left,
    /// The call failed (or the caller sent what cannot be read): the caller is told.
    Failed(Failure),
}

/// The request side of the call.
enum Requests {
    /// Taking messages: the sender of the call's body.
    Open(mpsc::Sender<Bytes>),
    /// The caller sent the empty frame: no more messages.
    EndedByCaller,
    /// A method that takes one request has it.
    HasItsOne,
}

impl Call<'_> {
    /// Runs the call until it ends; its gRPC code and the node that served it.
    async fn run(self, mut socket: WebSocket, observed: &mut Observed) -> (Code, Option<String>) {
        let method = &self.resolved.method;
        let (sender, receiver) = mpsc::channel::<Bytes>(READ_AHEAD);
        let body = http_body_util::StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(receiver)
                .map(|message| Ok::<_, std::convert::Infallible>(Frame::data(message))),
        );
        let request = match api::grpc_request(method, ReplayBody::shared(body), self.id) {
            Ok(request) => request,
            Err(failure) => {
                let code = failure.code;
                tell(&mut socket, Ending::Failed(failure)).await;
                return (code, None);
            }
        };
        let sending = Sending {
            // A stream is never repeated once any of it left.
            policy: MethodPolicy {
                idempotent: false,
                get: false,
                from: PolicyOrigin::Default,
            },
            authorization: self.authorization.clone(),
            placement: self.placement.clone(),
            stream: true,
        };
        let mut node = None;
        let ending = {
            let call = api::dispatch(self.gateway, self.resolved, request, sending, observed);
            self.pump(&mut socket, call, sender, &mut node).await
        };
        let code = match &ending {
            Ending::Done => Code::Ok,
            Ending::Left => Code::Cancelled,
            Ending::Failed(failure) => failure.code,
        };
        tell(&mut socket, ending).await;
        (code, node)
    }

    /// Moves request frames to the call and reply messages to the socket until one side
    /// ends.
    async fn pump(
        &self,
        socket: &mut WebSocket,
        call: impl Future<Output = Result<(cluster::stack::CallResponse, String), Failure>>,
        sender: mpsc::Sender<Bytes>,
        node: &mut Option<String>,
    ) -> Ending {
        let method = &self.resolved.method;
        let input = method.input();
        let output = method.output();
        let many = method.is_client_streaming();
        let mut requests = Requests::Open(sender);
        // A message read from the socket that the node has not taken yet.
        let mut waiting: Option<Bytes> = None;
        let mut call = std::pin::pin!(call);
        let mut answered = false;
        let mut replies: Option<Streaming<DynamicMessage>> = None;
        loop {
            tokio::select! {
                frame = socket.recv(), if waiting.is_none() => {
                    let text = match frame {
                        None | Some(Ok(Message::Close(_))) => return Ending::Left,
                        Some(Err(error)) => {
                            tracing::debug!(%error, "websocket read failed");
                            return Ending::Left;
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        Some(Ok(Message::Binary(_))) => {
                            return Ending::Failed(Failure::new(
                                Code::InvalidArgument,
                                "send each message as JSON in a text frame (a binary frame was sent)",
                            ));
                        }
                        Some(Ok(Message::Text(text))) => text,
                    };
                    match (&requests, text.is_empty()) {
                        (Requests::Open(_), true) => requests = Requests::EndedByCaller,
                        (Requests::Open(_), false) => {
                            match self.message(text.as_str(), &input) {
                                Ok(framed) => waiting = Some(framed),
                                Err(failure) => return Ending::Failed(failure),
                            }
                        }
                        // Nothing more to end.
                        (_, true) => {}
                        (Requests::EndedByCaller, false) => {
                            return Ending::Failed(Failure::new(
                                Code::InvalidArgument,
                                "a message after the empty frame that ended the requests",
                            ));
                        }
                        (Requests::HasItsOne, false) => {
                            return Ending::Failed(Failure::new(
                                Code::InvalidArgument,
                                format!("{} takes one request message", method.name()),
                            ));
                        }
                    }
                }
                permit = reserve(&requests), if waiting.is_some() => {
                    let sent = match (permit, waiting.take()) {
                        (Some(permit), Some(message)) => {
                            drop(permit.send(message));
                            true
                        }
                        _ => false,
                    };
                    if !sent {
                        // The node stopped reading requests: its reply says why.
                        requests = Requests::EndedByCaller;
                    } else if !many {
                        requests = Requests::HasItsOne;
                    }
                }
                sent = &mut call, if !answered => {
                    answered = true;
                    match sent {
                        Ok((response, by)) => {
                            *node = Some(by.clone());
                            match codec::read_stream(response, output.clone()) {
                                Ok(stream) => replies = Some(stream),
                                Err(status) => {
                                    return Ending::Failed(Failure::of_status(&status).served_by(by));
                                }
                            }
                        }
                        Err(failure) => return Ending::Failed(failure),
                    }
                }
                next = next_reply(&mut replies), if replies.is_some() => {
                    match next {
                        Ok(Some(message)) => {
                            let json = match transcode::to_json(&message) {
                                Ok(json) => json,
                                Err(failure) => return Ending::Failed(failure),
                            };
                            let frame = Message::Text(Utf8Bytes::from(json.to_string()));
                            if socket.send(frame).await.is_err() {
                                return Ending::Left;
                            }
                        }
                        Ok(None) => return Ending::Done,
                        Err(status) => {
                            let failure = Failure::of_status(&status);
                            return Ending::Failed(match node {
                                Some(by) => failure.served_by(by.clone()),
                                None => failure,
                            });
                        }
                    }
                }
                _ = tokio::time::sleep(HEARTBEAT) => {
                    if socket.send(Message::Ping(Bytes::new())).await.is_err() {
                        return Ending::Left;
                    }
                }
            }
        }
    }

    /// A request frame's JSON as the framed gRPC message.
    fn message(&self, text: &str, input: &MessageDescriptor) -> Result<Bytes, Failure> {
        if text.len() > self.max_message {
            return Err(Failure::new(
                Code::ResourceExhausted,
                format!("a message larger than {} bytes", self.max_message),
            ));
        }
        let json = serde_json::from_str(text).map_err(|error| {
            Failure::new(
                Code::InvalidArgument,
                format!("malformed JSON message: {error}"),
            )
        })?;
        let message = transcode::to_message(json, input)?;
        codec::framed(&message).map_err(|status| Failure::new(status.code(), status.message()))
    }
}

/// Room for one more request message; `None` once the request side is closed. The
/// permit owns its sender, so that the request side can change while one is pending.
async fn reserve(requests: &Requests) -> Option<mpsc::OwnedPermit<Bytes>> {
    let sender = match requests {
        Requests::Open(sender) => sender.clone(),
        _ => return None,
    };
    sender.reserve_owned().await.ok()
}

/// The next reply message; only polled while there is a stream.
async fn next_reply(
    replies: &mut Option<Streaming<DynamicMessage>>,
) -> Result<Option<DynamicMessage>, tonic::Status> {
    match replies {
        Some(stream) => stream.message().await,
        None => std::future::pending().await,
    }
}

/// Tells the caller how the call ended and closes the socket.
async fn tell(socket: &mut WebSocket, ending: Ending) {
    let close = match ending {
        Ending::Left => return,
        Ending::Done => CloseFrame {
            code: 1000,
            reason: Utf8Bytes::from_static(""),
        },
        Ending::Failed(failure) => {
            let last = serde_json::json!({ "error": failure.body() });
            // The socket may already be gone: then there is no one to tell.
            let _ = socket
                .send(Message::Text(Utf8Bytes::from(last.to_string())))
                .await;
            CloseFrame {
                code: FAILED_CLOSE_BASE + failure.code as u16,
                reason: Utf8Bytes::from(close_reason(&failure.message)),
            }
        }
    };
    if socket.send(Message::Close(Some(close))).await.is_err() {
        return;
    }
    // The closing handshake: read what the caller still sends until its own Close, so the
    // connection ends cleanly. Dropped with unread frames in its buffer, the kernel would
    // reset it, and a browser would see 1006 (abnormal) instead of the code sent.
    let _ = tokio::time::timeout(CLOSING_PATIENCE, async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// How long a closed socket waits for the caller's Close before the connection is dropped.
const CLOSING_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// A close frame's reason holds 123 bytes: the message, cut at a character boundary.
fn close_reason(message: &str) -> String {
    const MAX: usize = 123;
    if message.len() <= MAX {
        return message.to_owned();
    }
    let mut end = MAX;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("a header value"));
        }
        map
    }

    #[test]
    fn a_token_comes_from_the_authorization_header_or_a_bearer_subprotocol() {
        let from_header = authorization(&headers(&[("authorization", "Bearer a.b.c")]));
        assert_eq!(
            from_header.as_ref().map(|v| v.as_bytes()),
            Some(&b"Bearer a.b.c"[..])
        );
        let from_protocol = authorization(&headers(&[(
            "sec-websocket-protocol",
            "rust-ms.json, bearer.x.y.z",
        )]));
        assert_eq!(
            from_protocol.as_ref().map(|v| v.as_bytes()),
            Some(&b"Bearer x.y.z"[..])
        );
        assert!(authorization(&headers(&[("sec-websocket-protocol", "rust-ms.json")])).is_none());
    }

    #[test]
    fn a_page_may_open_a_socket_from_its_own_origin_or_a_listed_one_only() {
        let own = headers(&[
            ("host", "api.example.com"),
            ("origin", "https://api.example.com"),
        ]);
        assert!(origin_allowed(&own, &[]));
        let other = headers(&[
            ("host", "api.example.com"),
            ("origin", "https://evil.example"),
        ]);
        assert!(!origin_allowed(&other, &[]));
        assert!(origin_allowed(&other, &["https://evil.example".to_owned()]));
        assert!(origin_allowed(&other, &["*".to_owned()]));
        assert!(origin_allowed(
            &headers(&[("host", "api.example.com")]),
            &[]
        ));
    }

    #[test]
    fn a_close_reason_is_cut_to_123_bytes_at_a_character_boundary() {
        assert_eq!(close_reason("short"), "short");
        let long = "é".repeat(100);
        let cut = close_reason(&long);
        assert!(cut.len() <= 123);
        assert!(long.starts_with(&cut));
        assert_eq!(cut.len(), 122);
    }

    #[test]
    fn only_an_upgrade_to_websocket_is_one() {
        assert!(is_upgrade(&headers(&[("upgrade", "WebSocket")])));
        assert!(!is_upgrade(&headers(&[("upgrade", "h2c")])));
        assert!(!is_upgrade(&headers(&[])));
    }
}
