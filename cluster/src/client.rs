//! The service client: what `context.client("user")` returns, a tonic-compatible channel
//! over the same call stack the gateway's doors run. A node whose connection fails before
//! anything was sent is skipped; a call that may have run is retried elsewhere only when
//! its method is safe to repeat (its `idempotency_level`, learnt from the called
//! service's reflection) and the retry budget allows; every call has a deadline (the
//! configured one, or what is left of the call being served, whichever is sooner); with
//! no node of the service it fails at once with UNAVAILABLE naming the service.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use prost_reflect::prost_types::method_options::IdempotencyLevel;
use registry::{Registry, RegistryError, Scope};
use telemetry::prometheus::names;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

use crate::credentials::ClusterCredentials;
use crate::deadline::{serving, timeout_of};
use crate::node::Node;
use crate::schema::Schemas;
use crate::stack::{
    AttemptTrace, Budget, CallError, CallInfo, CallRequest, CallResponse, ReplayBody, RetryMetrics,
    RetryPolicy, grpc_names,
};
use crate::view::{ClusterView, Ejection, MAX_EJECTED_PERCENT, ViewMetrics, ViewOptions};

/// How long the first call of a method may wait to learn, by reflection, whether the
/// method is safe to repeat; past it the call goes on as if it were not.
const LEARN_METHOD_PATIENCE: Duration = Duration::from_secs(1);

/// After reflection failed for a version, how long its methods count as unknown before
/// it is asked again.
const RELEARN_AFTER: Duration = Duration::from_secs(30);

/// How a node calls one other service.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The deadline of a call, unless the call being served has less time left.
    pub timeout: Duration,
    pub retry_budget_percent: f32,
    pub view: ViewOptions,
    /// Where attempt spans go, when the node exports traces.
    pub tracer: Option<telemetry::trace::SdkTracer>,
    /// The called services as the calling crate compiled them in: a method found here is
    /// known at once, without asking the service by reflection.
    pub described: Option<Arc<prost_reflect::DescriptorPool>>,
    /// The traffic rules in force (from the stored route table): which of the service's
    /// nodes take a call, by what it carries.
    pub traffic: Option<crate::traffic::LiveTraffic>,
    /// Whether each method has an adaptive concurrency limit (see [`crate::shed`]).
    pub load_shedding: bool,
}

impl ClientOptions {
    /// The options `[client]` of a node's configuration gives calls to `service`.
    pub fn from_config(
        config: &config::ClientConfig,
        service: &str,
        credentials: ClusterCredentials,
    ) -> Self {
        let ejection = Ejection {
            after_failures: config.eject_after_failures,
            for_how_long: config.eject_for,
            max_ejected_percent: MAX_EJECTED_PERCENT,
        };
        Self {
            timeout: config.timeout_of(service),
            retry_budget_percent: config.retry_budget_percent,
            view: ViewOptions::new(
                ejection,
                config.health_interval,
                credentials,
                ViewMetrics::CLIENT,
            ),
            tracer: None,
            described: None,
            traffic: None,
            load_shedding: config.load_shedding,
        }
    }

    /// Attempts of calls are spans of the node's traces, made with `tracer`.
    pub fn traced_by(mut self, tracer: Option<telemetry::trace::SdkTracer>) -> Self {
        self.tracer = tracer;
        self
    }

    /// Methods described in `pool` (what the calling crate compiled in) are known without
    /// reflection; others are still learnt from the called service.
    pub fn described_by(mut self, pool: Option<Arc<prost_reflect::DescriptorPool>>) -> Self {
        self.described = pool;
        self
    }

    /// Calls follow the traffic rules of `traffic`.
    pub fn steered_by(mut self, traffic: Option<crate::traffic::LiveTraffic>) -> Self {
        self.traffic = traffic;
        self
    }
}

/// A channel to every node of one service, balanced (p2c on in-flight calls and
/// latency), health-checked, following joins and leaves for as long as a clone of it is
/// alive. Wrap it in a generated client: `UserServiceClient::new(channel)`.
#[derive(Clone)]
pub struct ServiceChannel {
    shared: Arc<Shared>,
}

struct Shared {
    service: Arc<str>,
    view: ClusterView,
    timeout: Duration,
    tracer: Option<telemetry::trace::SdkTracer>,
    stack: BoxCloneSyncService<CallRequest, CallResponse, CallError>,
    described: Option<Arc<prost_reflect::DescriptorPool>>,
    traffic: Option<crate::traffic::LiveTraffic>,
    schemas: Schemas,
    methods: Mutex<HashMap<(String, String), Learnt>>,
    /// Ends the view's registry watch when the last clone is dropped.
    stop: CancellationToken,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What is known of one method at one version of the service.
#[derive(Clone, Copy)]
enum Learnt {
    Known(MethodFacts),
    /// Reflection failed at this time: unknown until [`RELEARN_AFTER`] has passed.
    Unknown(Instant),
}

/// What the stack needs of a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MethodFacts {
    /// Safe to run twice (`idempotency_level` is `IDEMPOTENT` or `NO_SIDE_EFFECTS`).
    pub idempotent: bool,
    /// The request is one message (not a client or bidirectional stream).
    pub unary_request: bool,
}

impl ServiceChannel {
    /// Lists `service` now (so that a registry that cannot be reached says so here), then
    /// follows it until every clone is dropped or `stop` is cancelled.
    pub async fn connect(
        registry: Arc<dyn Registry>,
        service: &str,
        options: ClientOptions,
        stop: &CancellationToken,
    ) -> Result<Self, RegistryError> {
        let (snapshot, watch) = registry.discover(&Scope::service(service)).await?;
        let stop = stop.child_token();
        let view = ClusterView::follow_after(
            registry,
            snapshot,
            watch,
            options.view.clone(),
            stop.clone(),
        );
        Ok(Self::over(view, service, &options, stop))
    }

    /// A channel over a view someone else keeps (tests, a node that follows the cluster
    /// anyway).
    pub fn over(
        view: ClusterView,
        service: &str,
        options: &ClientOptions,
        stop: CancellationToken,
    ) -> Self {
        let retries = RetryPolicy::new(
            Budget::new(options.retry_budget_percent),
            RetryMetrics {
                retries: names::CLIENT_RETRIES,
                budget_exhausted: names::CLIENT_BUDGET_EXHAUSTED,
            },
        );
        let limits = options
            .load_shedding
            .then(|| Arc::new(crate::shed::Limits::new(crate::shed::ShedMetrics::CLIENT)));
        let stack = crate::stack::to_the_nodes(&view, retries, limits);
        Self {
            shared: Arc::new(Shared {
                service: service.into(),
                view,
                timeout: options.timeout,
                tracer: options.tracer.clone(),
                stack: BoxCloneSyncService::new(stack),
                described: options.described.clone(),
                traffic: options.traffic.clone(),
                schemas: Schemas::default(),
                methods: Mutex::default(),
                stop,
            }),
        }
    }

    /// The service this channel calls.
    pub fn service(&self) -> &str {
        &self.shared.service
    }

    /// The live nodes it balances over.
    pub fn nodes(&self) -> Arc<[Arc<Node>]> {
        self.shared.view.nodes_of(&self.shared.service)
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for ServiceChannel {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::Status;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, tonic::Status>> + Send>,
    >;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), tonic::Status>> {
        // Each call picks its node when it runs: the channel itself is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move { shared.call(request).await })
    }
}

impl Shared {
    async fn call(
        &self,
        mut request: http::Request<tonic::body::Body>,
    ) -> Result<http::Response<tonic::body::Body>, tonic::Status> {
        let started = Instant::now();
        // What the call being served carries for the rules goes on with this one, and
        // this service's rules choose its nodes by it.
        crate::traffic::carry_into(request.headers_mut());
        let steer = self.traffic.as_ref().and_then(|live| {
            let table = live.current();
            let rules = table.rules_of(&self.service)?;
            let facts = crate::traffic::Facts {
                headers: request.headers(),
                query: None,
            };
            crate::traffic::steer(rules, &facts)
        });
        let (grpc_service, method) = grpc_names(request.uri().path());
        let end = CallEnd {
            service: self.service.clone(),
            method: method.clone(),
            started,
        };
        let nodes = self.view.nodes_of(&self.service);
        if nodes.is_empty() {
            let error = CallError::NoNode {
                service: self.service.clone(),
            };
            end.record(error.code());
            return Err(error.to_status());
        }
        let deadline = self.deadline(&request, started);
        let facts = self.facts(&nodes, &grpc_service, &method, deadline).await;
        let (parts, body) = request.into_parts();
        let body = match replayable(body, facts, deadline).await {
            Ok(body) => body,
            Err(status) => {
                end.record(status.code());
                return Err(status);
            }
        };
        let mut request = http::Request::from_parts(parts, body);
        request.extensions_mut().insert(CallInfo {
            idempotent: facts.idempotent,
            deadline: Some(deadline),
            attempt_timeout: facts
                .idempotent
                .then(|| deadline.saturating_duration_since(started) / 3),
            steer,
            // Attempts are children of what the node is doing (the call it serves).
            trace: Some(AttemptTrace::new(
                telemetry::trace::TraceContext::current(),
                self.tracer.clone(),
            )),
            ..CallInfo::new(self.service.clone(), grpc_service, method)
        });
        match self.stack.clone().oneshot(request).await {
            Ok(response) => {
                let (parts, body) = response.into_parts();
                let body =
                    telemetry::grpc::OnEnd::new(body, &parts.headers, move |code| end.record(code));
                Ok(http::Response::from_parts(
                    parts,
                    tonic::body::Body::new(body),
                ))
            }
            Err(error) => {
                end.record(error.code());
                Err(error.to_status())
            }
        }
    }

    /// The configured deadline, what is left of the call being served, and the caller's
    /// own `grpc-timeout` (`request.set_timeout`): whichever is soonest.
    fn deadline(&self, request: &http::Request<tonic::body::Body>, now: Instant) -> Instant {
        let own = timeout_of(request.headers()).map(|timeout| now + timeout);
        [serving(), own]
            .into_iter()
            .flatten()
            .fold(now + self.timeout, Instant::min)
    }

    /// What the calling crate compiled in says of the method; else what the newest
    /// version among `nodes` says, learnt once per version; unknown (neither repeated nor
    /// replayed) when that cannot be learnt in time.
    async fn facts(
        &self,
        nodes: &[Arc<Node>],
        grpc_service: &str,
        method: &str,
        deadline: Instant,
    ) -> MethodFacts {
        if let Some(facts) = self.described_facts(grpc_service, method) {
            return facts;
        }
        let Some(node) = nodes
            .iter()
            .filter(|node| node.serves(grpc_service))
            .max_by_key(|node| crate::meta::version_order(&node.instance.version))
        else {
            return MethodFacts::default();
        };
        let key = (
            node.instance.version.clone(),
            format!("{grpc_service}/{method}"),
        );
        let cached = self.lock_methods().get(&key).copied();
        match cached {
            Some(Learnt::Known(facts)) => return facts,
            Some(Learnt::Unknown(at)) if at.elapsed() < RELEARN_AFTER => {
                return MethodFacts::default();
            }
            _ => {}
        }
        let patience =
            LEARN_METHOD_PATIENCE.min(deadline.saturating_duration_since(Instant::now()));
        let learnt = match tokio::time::timeout(patience, self.schemas.of(node)).await {
            Ok(Ok(schema)) => {
                let found = schema
                    .method(method)
                    .filter(|m| m.parent_service().full_name() == grpc_service);
                Learnt::Known(found.map(facts_of).unwrap_or_default())
            }
            Ok(Err(error)) => {
                tracing::debug!(service = %self.service, %error, "cannot learn which methods are safe to repeat");
                Learnt::Unknown(Instant::now())
            }
            Err(_) => Learnt::Unknown(Instant::now()),
        };
        self.lock_methods().insert(key, learnt);
        match learnt {
            Learnt::Known(facts) => facts,
            Learnt::Unknown(_) => MethodFacts::default(),
        }
    }

    fn described_facts(&self, grpc_service: &str, method: &str) -> Option<MethodFacts> {
        let service = self.described.as_ref()?.get_service_by_name(grpc_service)?;
        let found = service.methods().find(|m| m.name() == method)?;
        Some(facts_of(&found))
    }

    fn lock_methods(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Learnt>> {
        self.methods.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The method's `idempotency_level` option, `IDEMPOTENCY_UNKNOWN` when it has none.
pub fn idempotency_level(method: &prost_reflect::MethodDescriptor) -> IdempotencyLevel {
    method
        .method_descriptor_proto()
        .options
        .as_ref()
        .map(|options| options.idempotency_level())
        .unwrap_or(IdempotencyLevel::IdempotencyUnknown)
}

/// What a method's descriptor says about repeating and replaying it.
pub fn facts_of(method: &prost_reflect::MethodDescriptor) -> MethodFacts {
    MethodFacts {
        idempotent: idempotency_level(method) != IdempotencyLevel::IdempotencyUnknown,
        unary_request: !method.is_client_streaming(),
    }
}

/// A unary request's one message, read whole (by the deadline) so that any attempt can
/// send it; a stream is shared by the attempts instead.
async fn replayable(
    body: tonic::body::Body,
    facts: MethodFacts,
    deadline: Instant,
) -> Result<ReplayBody, tonic::Status> {
    if !facts.unary_request {
        return Ok(ReplayBody::shared(body));
    }
    let read: Result<Bytes, tonic::Status> =
        match tokio::time::timeout_at(deadline, body.collect()).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(status)) => Err(status),
            Err(_) => Err(tonic::Status::deadline_exceeded(
                "the request's message was not ready before its deadline",
            )),
        };
    read.map(ReplayBody::whole)
}

/// Counts a call once it ends, with its status.
struct CallEnd {
    service: Arc<str>,
    method: Arc<str>,
    started: Instant,
}

impl CallEnd {
    fn record(self, code: Code) {
        let service = self.service.to_string();
        let method = self.method.to_string();
        metrics::counter!(names::CLIENT_REQUESTS, "service" => service.clone(), "method" => method.clone(), "grpc_code" => telemetry::grpc::code_name(code))
            .increment(1);
        metrics::histogram!(names::CLIENT_DURATION, "service" => service, "method" => method)
            .record(self.started.elapsed().as_secs_f64());
    }
}
