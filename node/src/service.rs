//! The builder a service's `main` is written with: name, version, what it serves, its own
//! configuration section, and `run()`. Everything else a node does — flags and figment
//! layers, logging, the registry backend, gRPC with health and reflection, registration,
//! membership, signals and drain — happens inside.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, FromArgMatches};
use config::{Flags, Loaded, NoSections, NodeConfig, Validate};
use registry::Registry;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::{Routes, RoutesBuilder};

use crate::backend::Connected;
use crate::cli::CommonArgs;
use crate::{HttpServer, NodeError, NodeSpec};
use cluster::ServiceChannel;
use cluster::credentials::ClusterCredentials;

/// A tonic service a node can serve: what `tonic-build` generates (`GreeterServer<T>`).
pub trait GrpcService:
    tower::Service<
        http::Request<Body>,
        Error = Infallible,
        Response: axum::response::IntoResponse,
        Future: Send + 'static,
    > + NamedService
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> GrpcService for S where
    S: tower::Service<
            http::Request<Body>,
            Error = Infallible,
            Response: axum::response::IntoResponse,
            Future: Send + 'static,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// Any error a service's setup may return; it stops start-up with one line.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
type Setup<S> = Box<dyn FnOnce(Context<S>) -> BoxFuture<Result<Serve, BoxError>> + Send>;

/// A rust-ms service: what it is called, what it serves, and how it starts.
///
/// ```no_run
/// # mod greeter { pub const DESCRIPTORS: &[u8] = &[]; }
/// use node::Service;
///
/// fn main() -> std::process::ExitCode {
///     Service::new("greeter", "1.0.0")
///         .descriptors(greeter::DESCRIPTORS)
///         // .add_service(GreeterServer::new(Greeter)) for each tonic service
///         .run()
/// }
/// ```
pub struct Service<S = NoSections> {
    name: String,
    version: String,
    about: Option<String>,
    serve: Serve,
    /// Descriptor sets of the services this one calls (see [`Service::calls`]).
    calls: Vec<&'static [u8]>,
    setup: Option<Setup<S>>,
    flags: Flags,
}

impl Service<NoSections> {
    /// A service registered as `name` (`user`, `order`) at `version`.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            about: None,
            serve: Serve::new(),
            calls: Vec::new(),
            setup: None,
            flags: Flags::new(),
        }
    }

    /// The service's own configuration sections, typed: `T` is read from the same layers
    /// as the shared keys (file, `MS_` variables), and an unknown key or a bad value in it
    /// stops start-up with the same one-line error that names the key and its source.
    pub fn settings<T>(self) -> Service<T>
    where
        T: Send + 'static,
    {
        let setup = self.setup.map(|setup| -> Setup<T> {
            Box::new(move |context: Context<T>| setup(context.map_settings(|_| NoSections {})))
        });
        Service {
            name: self.name,
            version: self.version,
            about: self.about,
            serve: self.serve,
            calls: self.calls,
            setup,
            flags: self.flags,
        }
    }
}

impl<S: Send + 'static> Service<S> {
    /// One line for `--help`.
    pub fn about(mut self, about: impl Into<String>) -> Self {
        self.about = Some(about.into());
        self
    }

    /// Serves a tonic service (a generated `...Server`); its name goes to health checks and
    /// to the registry, so that callers and the gateway find it.
    pub fn add_service(mut self, service: impl GrpcService) -> Self {
        self.serve = self.serve.add_service(service);
        self
    }

    /// An encoded `FileDescriptorSet` describing the services, served by gRPC reflection
    /// (`rust_ms::include_descriptors!()` after `rust_ms_build::compile_protos`).
    pub fn descriptors(mut self, set: &'static [u8]) -> Self {
        self.serve = self.serve.descriptors(set);
        self
    }

    /// An encoded `FileDescriptorSet` of services this one calls
    /// (`rust_ms::include_called_descriptors!()` after `rust_ms_build::Protos::calls`, or a
    /// client crate's, such as `clients::DESCRIPTORS`). The service client reads from it
    /// which methods are safe to repeat, without asking the called service by reflection.
    /// It is not served: the node's reflection and registered services stay its own.
    pub fn calls(mut self, set: &'static [u8]) -> Self {
        self.calls.push(set);
        self
    }

    /// Work done once the configuration is loaded and the registry connected, before the
    /// node serves: open stores, build clients of other services (`context.client("user")`),
    /// and return what to serve beside what [`Service::add_service`] gave.
    pub fn setup<F, Fut>(mut self, setup: F) -> Self
    where
        F: FnOnce(Context<S>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Serve, BoxError>> + Send + 'static,
    {
        self.setup = Some(Box::new(move |context| Box::pin(setup(context))));
        self
    }

    /// A value for a dotted configuration key, set by a flag of the binary's own
    /// (`flag` is how errors name it): the strongest layer.
    pub fn flag(mut self, key: &str, flag: &str, value: impl Serialize) -> Self {
        self.flags.set(key, flag, value);
        self
    }

    /// The name the service registers under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The command line [`Service::run`] parses: the shared flags, the version, the about.
    fn command(&self) -> clap::Command {
        let version = format!("{} ({})", self.version, crate::FRAMEWORK);
        // Set after the flags: clap takes CommonArgs' doc comment as the command's about,
        // which `--help` would show in place of the service's (or of none).
        let mut command = CommonArgs::augment_args(clap::Command::new(self.name.clone()))
            .version(version)
            .about(None)
            .long_about(None);
        if let Some(about) = &self.about {
            command = command.about(about.clone());
        }
        command
    }

    /// Serves inside a running program, on a backend and configuration the caller holds
    /// (the dev stack, tests), until `launch.shutdown` is cancelled; then leaves and drains.
    pub async fn serve(self, launch: Launch<S>) -> Result<(), NodeError> {
        let Launch {
            config,
            settings,
            backend,
            shutdown,
        } = launch;
        let registry = backend.registry();
        let tracing = telemetry::Tracing::start(&self.name, &self.version, &config.telemetry)
            .map_err(|e| NodeError::Unsupported(e.to_string()))?;
        let mut serve = self.serve;
        // Filled after setup, by the node's own watch or by a service that reads the
        // route table anyway (the gateway); the setup's clients share it either way.
        let traffic = cluster::traffic::LiveTraffic::default();
        let follow_from = backend.clone();
        if let Some(setup) = self.setup {
            let credentials = ClusterCredentials::from_config(&config.security)?;
            let context = Context {
                settings,
                config: config.clone(),
                backend,
                credentials,
                shutdown: shutdown.clone(),
                tracing: tracing.clone(),
                called: called_pool(&self.name, &self.calls)?,
                traffic: traffic.clone(),
            };
            let added = setup(context).await.map_err(|source| NodeError::Setup {
                service: self.name.clone(),
                source,
            })?;
            serve = serve.merge(added);
        }
        if !serve.feeds_traffic_rules {
            crate::traffic::follow(&follow_from, traffic.clone(), &shutdown);
        }
        let mut spec = serve.into_spec(self.name, self.version)?;
        spec.tracing = tracing;
        spec.traffic = Some(traffic);
        crate::run_node(spec, &config, registry, shutdown).await
    }
}

impl<S> Service<S>
where
    S: DeserializeOwned + Serialize + Default + Validate + Send + 'static,
{
    /// The whole life of the binary: parses the command line (`--config`, `--rpc-port`,
    /// `--etcd-addr`, `--registry`, `--advertise-host`, `--admin-listen`, `--print-config`,
    /// `--version`, GO-MS's spellings too), loads the configuration, installs logging, connects the
    /// registry, serves until SIGINT or SIGTERM, then deregisters and drains. A failure
    /// is one line on stderr and a non-zero exit.
    pub fn run(self) -> ExitCode {
        let parsed = self
            .command()
            .try_get_matches()
            .and_then(|matches| CommonArgs::from_arg_matches(&matches));
        match parsed {
            Ok(args) => self.run_with_args(args),
            Err(error) => crate::cli::exit_for(error),
        }
    }

    /// [`Service::run`] for a binary that parsed its own command line around
    /// [`CommonArgs`] (extra flags go in through [`Service::flag`]).
    pub fn run_with_args(self, args: CommonArgs) -> ExitCode {
        let name = self.name.clone();
        crate::cli::run(&name, async move {
            let Some(loaded) = load_from_args::<S>(&args, &self.flags)? else {
                return Ok(());
            };
            let listen = crate::admin::Listen::of(&loaded);
            let launch = Launch::connect(loaded).await?;
            crate::admin::start(&self.name, &launch.config, listen).await?;
            self.serve(launch).await
        })
    }

    /// Runs a one-shot command of the binary (`gateway routes show`) on the same
    /// configuration and registry backend the service would use, instead of serving.
    pub fn run_command<F, Fut>(self, args: CommonArgs, command: F) -> ExitCode
    where
        F: FnOnce(Context<S>) -> Fut,
        Fut: Future<Output = Result<(), BoxError>>,
    {
        let name = self.name.clone();
        crate::cli::run(&name, async move {
            let Some(launch) = Launch::from_args(&args, &self.flags).await? else {
                return Ok(());
            };
            let context = Context {
                credentials: ClusterCredentials::from_config(&launch.config.security)?,
                settings: launch.settings,
                config: launch.config,
                backend: launch.backend,
                shutdown: launch.shutdown,
                tracing: None,
                called: called_pool(&self.name, &self.calls)?,
                traffic: cluster::traffic::LiveTraffic::default(),
            };
            command(context).await.map_err(|source| NodeError::Setup {
                service: self.name.clone(),
                source,
            })
        })
    }
}

/// What a node runs on: its configuration, its service's settings, the registry backend,
/// and the token that stops it.
pub struct Launch<S = NoSections> {
    pub config: NodeConfig,
    pub settings: S,
    pub backend: Connected,
    pub shutdown: CancellationToken,
}

impl<S> Launch<S>
where
    S: DeserializeOwned + Serialize + Default + Validate,
{
    /// Loads the configuration the command line names (`None` after `--print-config`),
    /// connects the configured backend, and cancels the token on SIGINT or SIGTERM.
    pub async fn from_args(args: &CommonArgs, extra: &Flags) -> Result<Option<Self>, NodeError> {
        let Some(loaded) = load_from_args::<S>(args, extra)? else {
            return Ok(None);
        };
        Self::connect(loaded).await.map(Some)
    }

    /// Connects the backend `loaded` configures and cancels the token on SIGINT or SIGTERM.
    async fn connect(loaded: Loaded<S>) -> Result<Self, NodeError> {
        let backend = crate::backend::connect(&loaded.node).await?;
        let shutdown = CancellationToken::new();
        crate::shutdown::cancel_on_signal(shutdown.clone());
        Ok(Self {
            config: loaded.node,
            settings: loaded.service,
            backend,
            shutdown,
        })
    }
}

/// The configuration the command line names, with the binary's `extra` flags; `None`
/// after `--print-config`.
fn load_from_args<S>(args: &CommonArgs, extra: &Flags) -> Result<Option<Loaded<S>>, NodeError>
where
    S: DeserializeOwned + Serialize + Default + Validate,
{
    let mut flags = args.flags();
    flags.extend(extra);
    crate::cli::load_config_with::<S>(args, &flags)
}

/// What a service's setup sees: its settings, the node's configuration, the registry, and
/// a way to call other services by name.
pub struct Context<S = NoSections> {
    settings: S,
    config: NodeConfig,
    backend: Connected,
    credentials: ClusterCredentials,
    shutdown: CancellationToken,
    tracing: Option<telemetry::Tracing>,
    /// What the service's crate compiled in of the services it calls.
    called: Option<Arc<prost_reflect::DescriptorPool>>,
    /// The traffic rules its service clients follow.
    traffic: cluster::traffic::LiveTraffic,
}

/// The descriptor sets given to [`Service::calls`], as one pool; none when there are none.
fn called_pool(
    service: &str,
    sets: &[&'static [u8]],
) -> Result<Option<Arc<prost_reflect::DescriptorPool>>, NodeError> {
    if sets.is_empty() {
        return Ok(None);
    }
    let mut pool = prost_reflect::DescriptorPool::new();
    for set in sets {
        pool.decode_file_descriptor_set(*set)
            .map_err(|source| NodeError::CalledDescriptors {
                service: service.to_owned(),
                source,
            })?;
    }
    Ok(Some(Arc::new(pool)))
}

impl<S> Context<S> {
    /// The service's own configuration sections.
    pub fn settings(&self) -> &S {
        &self.settings
    }

    /// The keys every node shares (ports, registry, log, security).
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The registry, for discovery beyond [`Context::client`].
    pub fn registry(&self) -> Arc<dyn Registry> {
        self.backend.registry()
    }

    /// The backend itself, for the rare part that needs more than the trait (a store kept
    /// in the same etcd).
    pub fn backend(&self) -> &Connected {
        &self.backend
    }

    /// Cancelled when the node is asked to stop; background work of the service ends with it.
    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// A channel to every node of `service`, balanced, health-checked, following joins
    /// and leaves, its calls carrying this cluster's credentials, each with a deadline
    /// (`[client] timeout`, or what is left of the call being served) and sent on to
    /// another node when a node fails (see [`ServiceChannel`]). Wrap it in the generated
    /// client: `UserServiceClient::new(context.client("user").await?)`.
    pub async fn client(&self, service: &str) -> Result<ServiceChannel, NodeError> {
        let registry = self.registry();
        let options = cluster::ClientOptions::from_config(
            &self.config.client,
            service,
            self.credentials.clone(),
        )
        // Each attempt is a span of the trace of what this node is doing.
        .traced_by(self.tracing().map(|tracing| tracing.tracer().clone()))
        .described_by(self.called.clone())
        .steered_by(Some(self.traffic.clone()));
        connect_client(registry, service, options, &self.shutdown).await
    }

    /// The cluster credentials (call key, mutual TLS) this node signs its calls with.
    pub fn credentials(&self) -> &ClusterCredentials {
        &self.credentials
    }

    /// The traffic rules this node's service clients follow. A service that reads the
    /// stored route table itself fills them (see [`Serve::feeds_traffic_rules`]).
    pub fn traffic_rules(&self) -> &cluster::traffic::LiveTraffic {
        &self.traffic
    }

    /// Where the node's spans go, when `telemetry.otlp_endpoint` is set: for a node that
    /// opens spans of its own (the gateway's calls and attempts).
    pub fn tracing(&self) -> Option<&telemetry::Tracing> {
        self.tracing.as_ref()
    }

    /// Binds a TCP port on the node's `listen_host`, for an HTTP server beside gRPC.
    pub async fn listen(&self, port: u16) -> Result<TcpListener, NodeError> {
        crate::serve::bind(&self.config.listen_host, port).await
    }

    fn map_settings<T>(self, map: impl FnOnce(S) -> T) -> Context<T> {
        Context {
            settings: map(self.settings),
            config: self.config,
            backend: self.backend,
            credentials: self.credentials,
            shutdown: self.shutdown,
            tracing: self.tracing,
            called: self.called,
            traffic: self.traffic,
        }
    }
}

/// What a node serves: tonic services, the descriptors reflection shows, and optionally
/// an HTTP server beside them.
#[derive(Default)]
pub struct Serve {
    routes: RoutesBuilder,
    fallback: Option<axum::Router>,
    grpc_services: Vec<String>,
    descriptor_sets: Vec<&'static [u8]>,
    http: Option<HttpServer>,
    metadata: BTreeMap<String, String>,
    open_to_outside: bool,
    feeds_traffic_rules: bool,
    readiness: Option<tokio::sync::watch::Receiver<bool>>,
    admin_views: Vec<(String, crate::admin::View)>,
    admin_pages: Vec<(String, crate::admin::AdminPage)>,
    join_gate: Option<crate::membership::JoinGate>,
    /// Services added more than once, reported when the node starts.
    duplicates: Vec<String>,
}

impl Serve {
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves a tonic service; see [`Service::add_service`].
    pub fn add_service<Svc: GrpcService>(mut self, service: Svc) -> Self {
        // Routing the same path twice would panic deep in axum: refuse it at start-up.
        if self.grpc_services.iter().any(|name| name == Svc::NAME) {
            self.duplicates.push(Svc::NAME.to_owned());
            return self;
        }
        self.grpc_services.push(Svc::NAME.to_owned());
        self.routes.add_service(service);
        self
    }

    /// Serves `router`'s gRPC paths as the gRPC service `name` (health, the registered
    /// `grpc.services`): a service with no generated server, such as a test's fake.
    #[cfg(feature = "testing")]
    pub(crate) fn add_routes(mut self, name: String, router: axum::Router) -> Self {
        if self.grpc_services.contains(&name) {
            self.duplicates.push(name);
            return self;
        }
        self.grpc_services.push(name);
        let merged = self.routes.routes().into_axum_router().merge(router);
        self.routes = RoutesBuilder::from(merged);
        self
    }

    /// See [`Service::descriptors`].
    pub fn descriptors(mut self, set: &'static [u8]) -> Self {
        self.descriptor_sets.push(set);
        self
    }

    /// Answers every gRPC path no added service claims (the gateway's pass-through).
    ///
    /// Its calls are its own to record: the runtime's call spans, call metrics and
    /// deadline scope cover the added services, not the fallback. The call credential is
    /// checked for both. A node with a fallback and no services of its own serves no
    /// reflection of its own either, so its fallback may answer reflection.
    pub fn fallback(mut self, router: axum::Router) -> Self {
        self.fallback = Some(router);
        self
    }

    /// An HTTP server on `listener` beside gRPC; its address is registered as metadata
    /// `http`.
    pub fn http(mut self, listener: TcpListener, router: axum::Router) -> Self {
        self.http = Some(HttpServer { listener, router });
        self
    }

    /// Extra metadata registered with the node.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Whether the node can do its work right now: `false` makes grpc.health.v1 answer
    /// NOT_SERVING for its services (the gateway then sends it nothing) until `true`.
    pub fn readiness(mut self, readiness: tokio::sync::watch::Receiver<bool>) -> Self {
        self.readiness = Some(readiness);
        self
    }

    /// A JSON view of the node's own on the admin port, as `/admin/{name}` (the gateway
    /// publishes `cluster` and `routes`), made anew on each read.
    pub fn admin_view<F, Fut>(mut self, name: &str, view: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = serde_json::Value> + Send + 'static,
    {
        let view: crate::admin::View = Arc::new(move || Box::pin(view()));
        self.admin_views.push((name.to_owned(), view));
        self
    }

    /// A page of the node's own on the admin port, as `/{name}` (the gateway adds
    /// `api-docs`): `html` compiled in, open like the dashboard, and `routes` answering
    /// what it reads and does under `/admin/{name}/`, behind `admin.token`.
    pub fn admin_page(mut self, name: &str, html: &'static str, routes: axum::Router) -> Self {
        self.admin_pages
            .push((name.to_owned(), crate::admin::AdminPage { html, routes }));
        self
    }

    /// Logs another node's `join` line only once `gate` has run for it: the gateway waits
    /// until the node is in its routing view, so that the line means "callable now".
    pub fn announce_joins_when<F, Fut>(mut self, gate: F) -> Self
    where
        F: Fn(registry::Instance) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.join_gate = Some(Arc::new(move |instance| Box::pin(gate(instance))));
        self
    }

    /// Accepts calls without the cluster's call credential: for a node whose callers are
    /// outside the cluster (the gateway).
    pub fn open_to_callers_outside_the_cluster(mut self) -> Self {
        self.open_to_outside = true;
        self
    }

    /// The service fills [`Context::traffic_rules`] itself from a route table it follows
    /// anyway (the gateway), so the node keeps no second watch of the same key.
    pub fn feeds_traffic_rules(mut self) -> Self {
        self.feeds_traffic_rules = true;
        self
    }

    fn merge(mut self, other: Serve) -> Serve {
        let Serve {
            routes,
            fallback,
            grpc_services,
            descriptor_sets,
            http,
            metadata,
            open_to_outside,
            feeds_traffic_rules,
            readiness,
            admin_views,
            admin_pages,
            join_gate,
            duplicates,
        } = other;
        self.duplicates.extend(duplicates);
        self.duplicates.extend(
            grpc_services
                .iter()
                .filter(|name| self.grpc_services.contains(name))
                .cloned(),
        );
        if !self.duplicates.is_empty() {
            return self;
        }
        let mut merged = self.routes.routes().into_axum_router();
        merged = merged.merge(without_fallback(routes.routes()));
        self.routes = RoutesBuilder::from(merged);
        self.fallback = fallback.or(self.fallback);
        self.grpc_services.extend(grpc_services);
        self.descriptor_sets.extend(descriptor_sets);
        self.http = http.or(self.http);
        self.metadata.extend(metadata);
        self.open_to_outside |= open_to_outside;
        self.feeds_traffic_rules |= feeds_traffic_rules;
        self.readiness = readiness.or(self.readiness);
        self.admin_views.extend(admin_views);
        self.admin_pages.extend(admin_pages);
        self.join_gate = join_gate.or(self.join_gate);
        self
    }

    fn into_spec(self, service: String, version: String) -> Result<NodeSpec, NodeError> {
        if !self.duplicates.is_empty() {
            return Err(NodeError::Unsupported(format!(
                "{service} serves {} more than once",
                self.duplicates.join(", ")
            )));
        }
        let mut spec = NodeSpec::new(service, version, self.routes.routes());
        spec.fallback = self.fallback;
        spec.grpc_services = self.grpc_services;
        spec.descriptor_sets = self.descriptor_sets;
        spec.http = self.http;
        spec.metadata = self.metadata;
        spec.require_call_credential = !self.open_to_outside;
        spec.readiness = self.readiness;
        spec.admin_views = self.admin_views;
        spec.admin_pages = self.admin_pages;
        spec.join_gate = self.join_gate;
        Ok(spec)
    }
}

/// A service client on `registry`: what `Context::client` and `LocalCluster::client` share.
pub(crate) async fn connect_client(
    registry: Arc<dyn Registry>,
    service: &str,
    options: cluster::ClientOptions,
    shutdown: &CancellationToken,
) -> Result<ServiceChannel, NodeError> {
    ServiceChannel::connect(registry.clone(), service, options, shutdown)
        .await
        .map_err(|source| NodeError::Registry {
            backend: registry.describe(),
            source,
        })
}

/// The routes of `routes` without tonic's UNIMPLEMENTED fallback, so that two sets of
/// routes can be merged (axum refuses to merge two fallbacks).
fn without_fallback(routes: Routes) -> axum::Router {
    routes.into_axum_router().reset_fallback()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_shows_the_services_about_or_none_but_never_the_shared_flags_doc_comment() {
        let bare = Service::new("bare", "1.0.0").command().render_long_help();
        let described = Service::new("described", "1.0.0")
            .about("Says what it does")
            .command()
            .render_long_help();
        for help in [bare.to_string(), described.to_string()] {
            assert!(
                !help.contains("Flags shared by every node binary"),
                "{help}"
            );
            assert!(help.contains("--rpc-port"), "{help}");
        }
        assert!(
            described.to_string().starts_with("Says what it does\n"),
            "{described}"
        );
    }
}
