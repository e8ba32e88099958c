//! The probe service (`probe.proto`), registered as `probe`: streams in both directions
//! and a method that always fails, for what the example services cannot show.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::{Stream, StreamExt};
use registry::Registry;
use tonic::{Request, Response, Status, Streaming};

use crate::in_process::InProcessNode;

pub mod proto {
    tonic::include_proto!("probe.v1");
}

use proto::Note;
use proto::probe_service_server::{ProbeService, ProbeServiceServer};

const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/probe_descriptor.bin"));

/// How many `Busy` calls a probe node serves at once, and how long each takes.
pub const BUSY_WORKERS: usize = 2;
pub const BUSY_FOR: std::time::Duration = std::time::Duration::from_millis(50);
/// How many `Busy` calls reached a probe node of this process.
pub static BUSY_CALLS: AtomicUsize = AtomicUsize::new(0);

/// Counts the Echo calls it served, so a test can tell that no call ran twice.
#[derive(Clone)]
struct Probe {
    echoes: Arc<AtomicUsize>,
    /// The node's workers for `Busy`: more calls wait their turn.
    workers: Arc<tokio::sync::Semaphore>,
    /// How long Echo takes (a slow version of the service).
    echo_delay: std::time::Duration,
    /// Echo fails with INTERNAL (a broken version of the service).
    echo_fails: bool,
}

impl Default for Probe {
    fn default() -> Self {
        Self {
            echoes: Arc::default(),
            workers: Arc::new(tokio::sync::Semaphore::new(BUSY_WORKERS)),
            echo_delay: std::time::Duration::ZERO,
            echo_fails: false,
        }
    }
}

#[tonic::async_trait]
impl ProbeService for Probe {
    async fn echo(&self, request: Request<Note>) -> Result<Response<Note>, Status> {
        self.echoes.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.echo_delay).await;
        if self.echo_fails {
            return Err(Status::internal("this version of the probe is broken"));
        }
        Ok(Response::new(request.into_inner()))
    }

    async fn collect(&self, request: Request<Streaming<Note>>) -> Result<Response<Note>, Status> {
        let mut notes = request.into_inner();
        let mut texts = Vec::new();
        while let Some(note) = notes.message().await? {
            texts.push(note.text);
        }
        Ok(Response::new(Note {
            text: texts.join(" "),
        }))
    }

    type ChatStream = Pin<Box<dyn Stream<Item = Result<Note, Status>> + Send>>;

    async fn chat(
        &self,
        request: Request<Streaming<Note>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        let replies = request.into_inner().map(|note| {
            note.map(|n| Note {
                text: format!("re: {}", n.text),
            })
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn fail(&self, _request: Request<Note>) -> Result<Response<Note>, Status> {
        Err(Status::internal("the probe always fails here"))
    }

    async fn shout(&self, request: Request<Note>) -> Result<Response<Note>, Status> {
        Err(Status::not_found(request.into_inner().text))
    }

    async fn busy(&self, request: Request<Note>) -> Result<Response<Note>, Status> {
        BUSY_CALLS.fetch_add(1, Ordering::SeqCst);
        let _worker = self
            .workers
            .acquire()
            .await
            .map_err(|_| Status::unavailable("the probe's workers are gone"))?;
        tokio::time::sleep(BUSY_FOR).await;
        Ok(Response::new(request.into_inner()))
    }

    type TickStream = tokio_stream::wrappers::ReceiverStream<Result<Note, Status>>;

    async fn tick(&self, request: Request<Note>) -> Result<Response<Self::TickStream>, Status> {
        let text = request.into_inner().text;
        let (count, fails) = match text.as_str() {
            "fail" => (1, true),
            number => (
                number
                    .parse::<u64>()
                    .map_err(|_| Status::invalid_argument("a count, or fail"))?,
                false,
            ),
        };
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            let mut sent = 0u64;
            while count == 0 || sent < count {
                sent += 1;
                if sender
                    .send(Ok(Note {
                        text: sent.to_string(),
                    }))
                    .await
                    .is_err()
                {
                    // The caller went away: the gateway dropped its side of the call.
                    TICKS_CANCELLED.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            if fails {
                let _ = sender.send(Err(Status::aborted("tick failed"))).await;
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            receiver,
        )))
    }
}

/// How many `Tick` streams ended because their caller went away, in this process.
pub static TICKS_CANCELLED: AtomicUsize = AtomicUsize::new(0);

/// Waits until a `Tick` stream ended because its caller left, `before` being
/// [`TICKS_CANCELLED`] when the stream was opened; fails the test after `patience`.
pub async fn wait_for_a_tick_cancelled_after(before: usize, patience: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + patience;
    while TICKS_CANCELLED.load(Ordering::SeqCst) == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node's stream went on after its caller left"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// One probe node; `readiness`, when given, drives what its health checks answer.
pub async fn start(
    registry: Arc<dyn Registry>,
    readiness: Option<tokio::sync::watch::Receiver<bool>>,
) -> InProcessNode {
    start_counting(registry, readiness).await.0
}

/// A probe node of `version` with `labels` in its registry metadata.
pub async fn start_labelled(
    registry: Arc<dyn Registry>,
    version: &str,
    labels: &[(&str, &str)],
) -> InProcessNode {
    let routes = tonic::service::Routes::new(ProbeServiceServer::new(Probe::default()));
    let mut spec = node::NodeSpec::new("probe", version, routes);
    spec.grpc_services = vec!["probe.v1.ProbeService".to_owned()];
    spec.descriptor_sets = vec![DESCRIPTOR_SET];
    spec.metadata = labels
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
    InProcessNode::start(spec, registry).await
}

/// A probe node of `version` whose Echo takes `delay`, and the number of Echo calls that
/// reached it (counted as they arrive).
pub async fn start_slow(
    registry: Arc<dyn Registry>,
    version: &str,
    delay: std::time::Duration,
) -> (InProcessNode, Arc<AtomicUsize>) {
    start_version(
        registry,
        version,
        Probe {
            echo_delay: delay,
            ..Probe::default()
        },
    )
    .await
}

/// A probe node of `version` whose every Echo fails with INTERNAL, and the number of Echo
/// calls that reached it.
pub async fn start_broken(
    registry: Arc<dyn Registry>,
    version: &str,
) -> (InProcessNode, Arc<AtomicUsize>) {
    start_version(
        registry,
        version,
        Probe {
            echo_fails: true,
            ..Probe::default()
        },
    )
    .await
}

async fn start_version(
    registry: Arc<dyn Registry>,
    version: &str,
    probe: Probe,
) -> (InProcessNode, Arc<AtomicUsize>) {
    let echoes = probe.echoes.clone();
    let routes = tonic::service::Routes::new(ProbeServiceServer::new(probe));
    let mut spec = node::NodeSpec::new("probe", version, routes);
    spec.grpc_services = vec!["probe.v1.ProbeService".to_owned()];
    spec.descriptor_sets = vec![DESCRIPTOR_SET];
    (InProcessNode::start(spec, registry).await, echoes)
}

/// [`start`], and the number of Echo calls the node has served.
pub async fn start_counting(
    registry: Arc<dyn Registry>,
    readiness: Option<tokio::sync::watch::Receiver<bool>>,
) -> (InProcessNode, Arc<AtomicUsize>) {
    let probe = Probe::default();
    let echoes = probe.echoes.clone();
    let routes = tonic::service::Routes::new(ProbeServiceServer::new(probe));
    let mut spec = node::NodeSpec::new("probe", "1.0.0", routes);
    spec.grpc_services = vec!["probe.v1.ProbeService".to_owned()];
    spec.descriptor_sets = vec![DESCRIPTOR_SET];
    spec.readiness = readiness;
    (InProcessNode::start(spec, registry).await, echoes)
}
