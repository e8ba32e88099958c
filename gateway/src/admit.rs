//! The admit stage, the same on `/api` and the rpc port: the route's JWT check (its
//! forwarded claims returned as metadata), its rate limit, and, where the call can be
//! judged by its status, its circuit breaker.

use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tonic::Code;

use crate::api::Api;
use crate::auth::claim_header;
use crate::failure::Failure;
use crate::resilience::{Admission, BreakerState, CircuitBreaker, Guards};
use crate::settings::Route;
use telemetry::prometheus::names;

/// A call let through: the claims to forward as metadata, and the service's guards.
pub struct Admitted {
    pub claims: Vec<(String, String)>,
    pub guards: Arc<Guards>,
}

/// What every call to `service` passes first, on `/api` and on the rpc port alike: the
/// route's JWT check (its forwarded claims returned as metadata) and its rate limit.
pub fn admit(
    api: &Api,
    service: &str,
    route: &Route,
    method: &str,
    authorization: Option<&str>,
) -> Result<Admitted, Failure> {
    let mut claims_metadata = Vec::new();
    if route.requires_jwt(method) {
        let claims = api
            .jwt
            .verify(authorization)
            .map_err(|reason| Failure::new(Code::Unauthenticated, reason))?;
        for claim in &route.forward_claims {
            let value = match claims.get(claim) {
                Some(Value::String(text)) => text.clone(),
                Some(other) => other.to_string(),
                None => continue,
            };
            claims_metadata.push((claim_header(claim), value));
        }
    }
    let guards = api
        .guards
        .of(service, route.rate_limit, route.circuit_breaker);
    if let Some((_, bucket)) = &guards.limit
        && let Err(wait) = lock(bucket).take()
    {
        metrics::counter!(names::GATEWAY_RATE_LIMITED, "service" => service.to_owned())
            .increment(1);
        return Err(Failure::new(
            Code::ResourceExhausted,
            format!("rate limit of {service:?} exceeded"),
        )
        .retry_after(wait));
    }
    Ok(Admitted {
        claims: claims_metadata,
        guards,
    })
}
impl Admitted {
    /// Lets the call past the route's circuit breaker, if it has one; the ticket settles
    /// the breaker with the call's outcome.
    pub fn pass_breaker<'a>(&'a self, service: &'a str) -> Result<BreakerTicket<'a>, Failure> {
        let Some((_, breaker)) = &self.guards.breaker else {
            return Ok(BreakerTicket(None));
        };
        let admission = lock(breaker).admit().map_err(|wait| {
            metrics::counter!(names::GATEWAY_CIRCUIT_REFUSED, "service" => service.to_owned())
                .increment(1);
            Failure::new(
                Code::Unavailable,
                format!("circuit open for {service:?}: its calls keep failing"),
            )
            .retry_after(wait)
        })?;
        Ok(BreakerTicket(Some((breaker, admission, service))))
    }
}

/// A call let through the breaker, to be settled with its outcome.
pub struct BreakerTicket<'a>(Option<(&'a Mutex<CircuitBreaker>, Admission, &'a str)>);

impl BreakerTicket<'_> {
    /// Records the outcome: failures that say the service is in trouble count, a
    /// caller's mistakes do not.
    pub fn settle<T>(self, outcome: &Result<T, Failure>) {
        if let Some((breaker, admission, service)) = self.0 {
            let failed = outcome
                .as_ref()
                .err()
                .is_some_and(|f| is_server_failure(f.code));
            let mut breaker = lock(breaker);
            let was_open = breaker.state() != BreakerState::Closed;
            breaker.record(admission, failed);
            let open = breaker.state() != BreakerState::Closed;
            // Only a change is worth a labelled key: most calls leave the circuit as it was.
            if open != was_open {
                metrics::gauge!(names::GATEWAY_CIRCUIT_OPEN, "service" => service.to_owned())
                    .set(if open { 1.0 } else { 0.0 });
            }
        }
    }
}

pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Failures that say the service is in trouble (what a circuit breaker counts), as opposed
/// to a caller's mistake.
fn is_server_failure(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::Unknown
            | Code::DataLoss
    )
}
