//! The gateway's own layers, admit and breaker, each on a mock of what is below it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cluster::stack::{CallError, CallInfo, CallRequest, CallResponse, ReplayBody};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tonic::Code;
use tower::{Layer, Service, ServiceExt};

use super::{AdmitLayer, BreakerLayer, GatewayCall};
use crate::auth::{JwtConfig, JwtVerifier};
use crate::rate_limit::RateLimit;
use crate::resilience::{BreakerConfig, GuardsByService};
use crate::settings::Route;

fn request(route: Route, authorization: Option<&str>) -> CallRequest {
    let mut request = http::Request::new(ReplayBody::whole(bytes::Bytes::from_static(b"m")));
    if let Some(authorization) = authorization {
        request
            .headers_mut()
            .insert("authorization", authorization.parse().unwrap());
    }
    request
        .extensions_mut()
        .insert(CallInfo::new("user", "user.v1.UserService", "Exists"));
    request
        .extensions_mut()
        .insert(GatewayCall::new(Arc::new(route)));
    request
}

/// Below the layer: answers every call with `code` (trailers-only), counting the calls
/// and keeping the headers of the last.
#[derive(Clone, Default)]
struct Below {
    calls: Arc<AtomicUsize>,
    headers: Arc<std::sync::Mutex<http::HeaderMap>>,
}

impl Below {
    fn answering(
        &self,
        code: Code,
    ) -> impl Service<
        CallRequest,
        Response = CallResponse,
        Error = CallError,
        Future: Send + 'static,
    > + Clone
    + use<> {
        let below = self.clone();
        tower::service_fn(move |request: CallRequest| {
            below.calls.fetch_add(1, Ordering::SeqCst);
            *below.headers.lock().unwrap() = request.headers().clone();
            let response = tonic::Status::new(code, "below").into_http::<tonic::body::Body>();
            std::future::ready(Ok::<_, CallError>(response))
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn verifier(secret: &str) -> Arc<JwtVerifier> {
    let config = JwtConfig {
        hs256_secret: Some(secret.into()),
        rs256_public_key: None,
        issuer: None,
    };
    Arc::new(JwtVerifier::from_config(&config).unwrap())
}

fn token(secret: &str) -> String {
    let exp = registry::unix_millis_now() / 1000 + 60;
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"sub": "bob", "exp": exp}),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn denied_code(outcome: Result<CallResponse, CallError>) -> Option<(Code, Option<Duration>)> {
    match outcome {
        Err(CallError::Denied {
            code, retry_after, ..
        }) => Some((code, retry_after)),
        _ => None,
    }
}

#[tokio::test]
async fn admit_turns_away_a_call_without_a_valid_token_and_forwards_the_claims_of_a_good_one() {
    let below = Below::default();
    let mut admit =
        AdmitLayer::new(verifier("s3cret"), Arc::default()).layer(below.answering(Code::Ok));
    let route = Route {
        jwt: true,
        forward_claims: vec!["sub".into()],
        ..Route::default()
    };
    let without = admit
        .ready()
        .await
        .unwrap()
        .call(request(route.clone(), None))
        .await;
    assert_eq!(
        denied_code(without).map(|d| d.0),
        Some(Code::Unauthenticated)
    );
    let forged = format!("Bearer {}", token("other"));
    let forged = admit
        .ready()
        .await
        .unwrap()
        .call(request(route.clone(), Some(&forged)))
        .await;
    assert_eq!(
        denied_code(forged).map(|d| d.0),
        Some(Code::Unauthenticated)
    );
    assert_eq!(below.calls(), 0, "nothing turned away reaches a node");

    let good = format!("Bearer {}", token("s3cret"));
    let admitted = admit
        .ready()
        .await
        .unwrap()
        .call(request(route, Some(&good)))
        .await;
    assert!(admitted.is_ok());
    assert_eq!(below.headers.lock().unwrap()["x-jwt-sub"], "bob");
}

#[tokio::test(start_paused = true)]
async fn admit_refuses_calls_over_the_rate_limit_saying_when_to_come_back() {
    let below = Below::default();
    let mut admit = AdmitLayer::new(Arc::new(JwtVerifier::without_keys()), Arc::default())
        .layer(below.answering(Code::Ok));
    let route = Route {
        rate_limit: Some(RateLimit {
            per_second: 1.0,
            burst: 2.0,
            per: None,
        }),
        ..Route::default()
    };
    for _ in 0..2 {
        let outcome = admit
            .ready()
            .await
            .unwrap()
            .call(request(route.clone(), None))
            .await;
        assert!(outcome.is_ok());
    }
    let limited = admit
        .ready()
        .await
        .unwrap()
        .call(request(route.clone(), None))
        .await;
    let (code, wait) = denied_code(limited).expect("refused");
    assert_eq!(code, Code::ResourceExhausted);
    assert!(wait.is_some_and(|w| w > Duration::ZERO && w <= Duration::from_secs(1)));
    assert_eq!(below.calls(), 2);
}

#[tokio::test]
async fn the_breaker_opens_on_failures_of_the_service_and_then_sends_nothing() {
    let below = Below::default();
    let guards = Arc::new(GuardsByService::default());
    let stack = tower::ServiceBuilder::new()
        .layer(AdmitLayer::new(
            Arc::new(JwtVerifier::without_keys()),
            guards,
        ))
        .layer(BreakerLayer)
        .service(below.answering(Code::Unavailable));
    let route = Route {
        circuit_breaker: Some(BreakerConfig::for_tests(3)),
        ..Route::default()
    };
    for _ in 0..3 {
        // The breaker judges a reply by the status that ends it.
        let reply = stack
            .clone()
            .oneshot(request(route.clone(), None))
            .await
            .unwrap();
        let _ = http_body_util::BodyExt::collect(reply.into_body()).await;
    }
    let refused = stack.clone().oneshot(request(route, None)).await;
    let (code, wait) = denied_code(refused).expect("the circuit is open");
    assert_eq!(code, Code::Unavailable);
    assert!(wait.is_some());
    assert_eq!(below.calls(), 3, "the open circuit sent nothing");
}

#[tokio::test]
async fn the_breaker_does_not_count_a_callers_mistake_against_the_service() {
    let below = Below::default();
    let stack = tower::ServiceBuilder::new()
        .layer(AdmitLayer::new(
            Arc::new(JwtVerifier::without_keys()),
            Arc::default(),
        ))
        .layer(BreakerLayer)
        .service(below.answering(Code::InvalidArgument));
    let route = Route {
        circuit_breaker: Some(BreakerConfig::for_tests(2)),
        ..Route::default()
    };
    for _ in 0..5 {
        let reply = stack.clone().oneshot(request(route.clone(), None)).await;
        let reply = reply.expect("never refused: the service is fine");
        let _ = http_body_util::BodyExt::collect(reply.into_body()).await;
    }
    assert_eq!(below.calls(), 5);
}

#[tokio::test]
async fn a_route_sticky_by_claim_keys_the_call_by_the_verified_tokens_claim() {
    let seen = Arc::new(std::sync::Mutex::new(None));
    let below = {
        let seen = seen.clone();
        tower::service_fn(move |request: CallRequest| {
            *seen.lock().unwrap() = request
                .extensions()
                .get::<CallInfo>()
                .map(|info| info.affinity);
            std::future::ready(Ok::<_, CallError>(
                tonic::Status::new(Code::Ok, "below").into_http::<tonic::body::Body>(),
            ))
        })
    };
    let mut admit = AdmitLayer::new(verifier("s3cret"), Arc::default()).layer(below);
    let route = Route {
        jwt: true,
        sticky: Some(cluster::affinity::Sticky {
            claim: Some("sub".into()),
            ..Default::default()
        }),
        ..Route::default()
    };
    let good = format!("Bearer {}", token("s3cret"));
    let admitted = admit
        .ready()
        .await
        .unwrap()
        .call(request(route, Some(&good)))
        .await;
    assert!(admitted.is_ok());
    assert_eq!(
        *seen.lock().unwrap(),
        Some(Some(cluster::affinity::key_of(b"bob"))),
        "the key of the token's sub"
    );
}
