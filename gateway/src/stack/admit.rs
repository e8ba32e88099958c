//! The admit layer: what every call to a service passes first, on `/api` and the rpc port
//! alike. The route's JWT check (the claims it forwards become the request's
//! `x-jwt-<claim>` metadata) and its rate limit; a call turned away never reaches a node.

use std::sync::Arc;

use cluster::stack::{Around, Below, CallError, CallInfo, CallRequest, Step, info_of};
use serde_json::Value;
use telemetry::prometheus::names;
use tonic::Code;

use super::{GatewayCall, gateway_call_of};
use crate::auth::{JwtVerifier, claim_header};
use crate::rate_limit::ClientKey;
use crate::resilience::GuardsByService;

#[derive(Clone)]
pub struct AdmitLayer {
    jwt: Arc<JwtVerifier>,
    guards: Arc<GuardsByService>,
}

impl AdmitLayer {
    pub fn new(jwt: Arc<JwtVerifier>, guards: Arc<GuardsByService>) -> Self {
        Self { jwt, guards }
    }
}

cluster::around_layer!(AdmitLayer);

impl Around for AdmitLayer {
    type Future<S: Below> = Step<S::Future>;

    fn around<S: Below>(&self, mut request: CallRequest, below: &mut S) -> Step<S::Future> {
        match self.admit(&mut request) {
            Ok(()) => Step::below(below.call(request)),
            Err(error) => Step::decided(Err(error)),
        }
    }
}

impl AdmitLayer {
    /// Checks the call against its route; adds the forwarded claims to its headers and
    /// the service's guards to its extensions (the breaker reads them).
    fn admit(&self, request: &mut CallRequest) -> Result<(), CallError> {
        let info = info_of(request)?;
        let call = gateway_call_of(request)?;
        let route = &call.route;
        let (claims, affinity, client_by_claim) = if route.requires_jwt(&info.method) {
            self.forwarded_claims(request, call)?
        } else {
            (Vec::new(), None, None)
        };
        let guards = self.guards.of(
            &info.service,
            route.rate_limit.as_ref(),
            route.circuit_breaker,
        );
        if let Some(limit) = &guards.limit {
            let key = match &limit.config().per {
                Some(ClientKey::Claim(_)) => client_by_claim,
                _ => call.client,
            };
            let taken = limit.take(key.unwrap_or(0), self.guards.gateways(), &info.service);
            let allowance = match &taken {
                Ok(allowance) => *allowance,
                Err(refusal) => refusal.allowance,
            };
            if let Some(slot) = &call.allowance {
                let _ = slot.set(allowance);
            }
            taken.map_err(|refusal| over_the_limit(&info.service, refusal.wait))?;
        }
        for (name, value) in claims {
            request.headers_mut().insert(name, value);
        }
        if let Some(key) = affinity
            && let Some(info) = request.extensions_mut().get_mut::<CallInfo>()
        {
            info.affinity = Some(key);
        }
        if let Some(call) = request.extensions_mut().get_mut::<GatewayCall>() {
            call.guards = Some(guards);
        }
        Ok(())
    }

    /// The verified token's claims the route forwards, as headers, and the sticky key of
    /// the route's claim, when it keys sticky calls by one.
    fn forwarded_claims(
        &self,
        request: &CallRequest,
        call: &GatewayCall,
    ) -> Result<ClaimsOut, CallError> {
        let authorization = call
            .authorization
            .as_ref()
            .or_else(|| request.headers().get(http::header::AUTHORIZATION))
            .and_then(|v| v.to_str().ok());
        let claims = self
            .jwt
            .verify(authorization)
            .map_err(|refused| CallError::Denied {
                code: Code::Unauthenticated,
                reason: refused.to_string(),
                retry_after: None,
            })?;
        let key_of_claim = |claim: &String| {
            claims.get(claim).map(|value| match value {
                Value::String(text) => cluster::affinity::key_of(text.as_bytes()),
                other => cluster::affinity::key_of(other.to_string().as_bytes()),
            })
        };
        let affinity = call
            .route
            .sticky
            .as_ref()
            .and_then(|sticky| sticky.claim.as_ref())
            .and_then(key_of_claim);
        let client = match call.route.rate_limit.as_ref().and_then(|l| l.per.as_ref()) {
            Some(ClientKey::Claim(claim)) => key_of_claim(claim),
            _ => None,
        };
        let mut headers = Vec::new();
        for claim in &call.route.forward_claims {
            let value = match claims.get(claim) {
                Some(Value::String(text)) => text.clone(),
                Some(other) => other.to_string(),
                None => continue,
            };
            if let (Ok(name), Ok(mut value)) = (
                http::HeaderName::from_bytes(claim_header(claim).as_bytes()),
                http::HeaderValue::from_str(&value),
            ) {
                // New with each token: not worth a place in HTTP/2's header table.
                value.set_sensitive(true);
                headers.push((name, value));
            }
        }
        Ok((headers, affinity, client))
    }
}

/// The claims a route forwards, as headers, its sticky key from a claim, and the client
/// key of its rate limit from a claim.
type ClaimsOut = (
    Vec<(http::HeaderName, http::HeaderValue)>,
    Option<u64>,
    Option<u64>,
);

/// The refusal of a call over its client's share of the route's rate limit.
fn over_the_limit(service: &str, wait: std::time::Duration) -> CallError {
    metrics::counter!(names::GATEWAY_RATE_LIMITED, "service" => service.to_owned()).increment(1);
    CallError::Denied {
        code: Code::ResourceExhausted,
        reason: format!("rate limit of {service:?} exceeded"),
        retry_after: Some(wait),
    }
}
