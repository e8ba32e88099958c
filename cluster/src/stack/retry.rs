//! The retry layer: tower's `Retry` under a policy that sends an attempt that never left
//! to another node always, one that may have run (lost in transit, out of time) only when
//! the method is safe to repeat and the retry budget allows, and nothing past the call's
//! deadline. Every call deposits in the budget once; every retry of a call that may have
//! run withdraws.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::retry::budget::{Budget as _, TpsBudget};
use tower::{Layer, Service};

use super::{CallError, CallRequest, CallResponse, Tried, info_of};
use crate::classify::Attempt;

/// The share of calls that may be retried after they may have run, over ten seconds, and
/// ten retries a second besides.
#[derive(Clone)]
pub struct Budget(Arc<TpsBudget>);

impl Budget {
    /// `percent` of calls (0 to 1000) may be retried.
    pub fn new(percent: f32) -> Self {
        let ratio = percent.clamp(0.0, 1000.0) / 100.0;
        Self(Arc::new(TpsBudget::new(Duration::from_secs(10), 10, ratio)))
    }
}

/// The counters a retry is reported under (the gateway's or the service client's).
#[derive(Debug, Clone, Copy)]
pub struct RetryMetrics {
    pub retries: &'static str,
    pub budget_exhausted: &'static str,
}

#[derive(Clone)]
pub struct RetryPolicy {
    budget: Budget,
    /// `None`: retries are not counted (a mirror's copies, which no caller waits for).
    metrics: Option<RetryMetrics>,
}

impl RetryPolicy {
    pub fn new(budget: Budget, metrics: RetryMetrics) -> Self {
        Self {
            budget,
            metrics: Some(metrics),
        }
    }

    /// A policy whose retries no counter reports: for calls that are not callers' calls.
    pub fn uncounted(budget: Budget) -> Self {
        Self {
            budget,
            metrics: None,
        }
    }

    /// Whether the failed attempt of `request` goes to another node; remembers the node
    /// as tried when it does.
    fn another_attempt(&self, request: &mut CallRequest, error: &CallError) -> bool {
        let Some((attempt, node)) = error.attempt().zip(error.node()) else {
            return false;
        };
        let Ok(info) = info_of(request) else {
            return false;
        };
        if info.is_past_deadline() || !request.body().can_be_sent_again() {
            return false;
        }
        let service = info.service.to_string();
        let again = match attempt {
            Attempt::NotSent => true,
            Attempt::Lost | Attempt::TimedOut if info.idempotent => {
                let allowed = self.budget.0.withdraw();
                if !allowed && let Some(names) = &self.metrics {
                    metrics::counter!(names.budget_exhausted, "service" => service.clone())
                        .increment(1);
                }
                allowed
            }
            Attempt::Lost | Attempt::TimedOut | Attempt::Answered | Attempt::Refused => false,
        };
        if again {
            if let Some(names) = &self.metrics {
                metrics::counter!(names.retries, "service" => service).increment(1);
            }
            tracing::debug!(address = %node.instance.address, ?attempt, %error, "trying another node");
            let id = node.instance.id.clone();
            request
                .extensions_mut()
                .get_or_insert_default::<Tried>()
                .0
                .push(id);
        }
        again
    }
}

impl tower::retry::Policy<CallRequest, CallResponse, CallError> for RetryPolicy {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        request: &mut CallRequest,
        result: &mut Result<CallResponse, CallError>,
    ) -> Option<Self::Future> {
        let error = result.as_ref().err()?;
        self.another_attempt(request, error)
            .then(|| std::future::ready(()))
    }

    fn clone_request(&mut self, request: &CallRequest) -> Option<CallRequest> {
        let mut copy = http::Request::new(request.body().clone());
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.version_mut() = request.version();
        *copy.headers_mut() = request.headers().clone();
        *copy.extensions_mut() = request.extensions().clone();
        Some(copy)
    }
}

#[derive(Clone)]
pub struct RetryLayer {
    policy: RetryPolicy,
}

impl RetryLayer {
    pub fn new(policy: RetryPolicy) -> Self {
        Self { policy }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retrying<S>;

    fn layer(&self, inner: S) -> Retrying<S> {
        Retrying {
            budget: self.policy.budget.clone(),
            inner: tower::retry::Retry::new(self.policy.clone(), inner),
        }
    }
}

/// tower's `Retry`, with each call's deposit in the budget.
#[derive(Clone)]
pub struct Retrying<S> {
    budget: Budget,
    inner: tower::retry::Retry<RetryPolicy, S>,
}

impl<S> Service<CallRequest> for Retrying<S>
where
    S: Service<CallRequest, Response = CallResponse, Error = CallError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = CallResponse;
    type Error = CallError;
    type Future = tower::retry::future::ResponseFuture<RetryPolicy, S, CallRequest>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: CallRequest) -> Self::Future {
        self.budget.0.deposit();
        self.inner.call(request)
    }
}
