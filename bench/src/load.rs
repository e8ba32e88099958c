//! The load generators: gRPC over HTTP/2 without TLS (h2, a prebuilt request frame, many
//! streams per connection), and JSON over HTTP/1.1 (hyper, one call at a time per
//! connection). Both record every call's latency; neither does more work per call than
//! sending bytes and reading the answer, so the proxy stays the bottleneck.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::net::TcpStream;

/// How hard to push.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub connections: usize,
    /// Concurrent calls per connection (HTTP/2 streams; HTTP/1.1 opens this many more
    /// connections instead, so that both loads keep as many calls in flight).
    pub streams: usize,
    pub calls: u64,
    /// The run stops here even if calls remain.
    pub max_time: Duration,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub calls: u64,
    pub failed: u64,
    pub elapsed: Duration,
    /// Every successful call's latency, in microseconds, sorted.
    pub latencies_us: Vec<u32>,
    /// The first failure's description, if any.
    pub first_error: Option<String>,
}

impl Outcome {
    pub fn percentile_us(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * (self.latencies_us.len() - 1) as f64).round() as usize;
        f64::from(self.latencies_us[rank.min(self.latencies_us.len() - 1)])
    }

    pub fn per_second(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn merge(&mut self, other: Worker) {
        self.calls += other.calls;
        self.failed += other.failed;
        self.latencies_us.extend(other.latencies_us);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

#[derive(Default)]
struct Worker {
    calls: u64,
    failed: u64,
    latencies_us: Vec<u32>,
    first_error: Option<String>,
}

impl Worker {
    fn record(&mut self, started: Instant, result: Result<(), String>) {
        self.calls += 1;
        match result {
            Ok(()) => self
                .latencies_us
                .push(started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32),
            Err(error) => {
                self.failed += 1;
                self.first_error.get_or_insert(error);
            }
        }
    }
}

/// Every worker's calls as one outcome, timed from `started`.
async fn gather(workers: Vec<tokio::task::JoinHandle<Worker>>, started: Instant) -> Outcome {
    let mut outcome = Outcome::default();
    for worker in workers {
        if let Ok(worker) = worker.await {
            outcome.merge(worker);
        }
    }
    outcome.elapsed = started.elapsed();
    outcome.latencies_us.sort_unstable();
    outcome
}

/// A gRPC message frame: the 5-byte prefix (uncompressed, length) and the message.
pub fn grpc_frame(message: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    Bytes::from(frame)
}

/// gRPC calls of `path` with the request `frame` to `address`, as `load` says; a call
/// succeeds when it ends with `grpc-status: 0` after at least one message.
pub async fn grpc(
    address: SocketAddr,
    path: &str,
    frame: Bytes,
    load: Load,
) -> Result<Outcome, String> {
    let left = Arc::new(AtomicI64::new(load.calls as i64));
    let deadline = Instant::now() + load.max_time;
    let uri: http::Uri = format!("http://{address}{path}")
        .parse()
        .map_err(|e| format!("{path}: {e}"))?;
    let mut workers = Vec::new();
    let started = Instant::now();
    for _ in 0..load.connections {
        let client = h2_connection(address).await?;
        for _ in 0..load.streams {
            let (mut client, uri, frame, left) =
                (client.clone(), uri.clone(), frame.clone(), left.clone());
            workers.push(tokio::spawn(async move {
                let mut worker = Worker::default();
                while left.fetch_sub(1, Ordering::Relaxed) > 0 && Instant::now() < deadline {
                    let began = Instant::now();
                    let result = one_grpc_call(&mut client, &uri, frame.clone()).await;
                    worker.record(began, result);
                }
                worker
            }));
        }
    }
    Ok(gather(workers, started).await)
}

async fn one_grpc_call(
    client: &mut h2::client::SendRequest<Bytes>,
    uri: &http::Uri,
    frame: Bytes,
) -> Result<(), String> {
    match grpc_exchange(client, uri, frame, None).await? {
        (0, received) if received > 0 => Ok(()),
        (code, received) => Err(format!("grpc-status {code} after {received} bytes")),
    }
}

/// One gRPC call: its status code (a trailers-only answer's, from its headers) and the
/// bytes of its messages; `Err` when no gRPC answer came. `timeout` goes as `grpc-timeout`.
pub(crate) async fn grpc_exchange(
    client: &mut h2::client::SendRequest<Bytes>,
    uri: &http::Uri,
    frame: Bytes,
    timeout: Option<Duration>,
) -> Result<(u32, usize), String> {
    let mut request = http::Request::post(uri.clone())
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(timeout) = timeout {
        request = request.header("grpc-timeout", format!("{}m", timeout.as_millis()));
    }
    let request = request.body(()).map_err(|e| e.to_string())?;
    let mut ready = client.clone().ready().await.map_err(|e| e.to_string())?;
    let (response, mut body) = ready
        .send_request(request, false)
        .map_err(|e| e.to_string())?;
    body.send_data(frame, true).map_err(|e| e.to_string())?;
    *client = ready;
    let response = response.await.map_err(|e| e.to_string())?;
    if response.status() != http::StatusCode::OK {
        return Err(format!("HTTP {}", response.status()));
    }
    let code = |value: Option<&http::HeaderValue>| {
        value
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok())
    };
    // Trailers-only (an error before any message) carries grpc-status in the headers.
    if let Some(status) = code(response.headers().get("grpc-status")) {
        return Ok((status, 0));
    }
    let mut body = response.into_body();
    let mut received = 0;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        received += chunk.len();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body.trailers().await.map_err(|e| e.to_string())?;
    code(trailers.as_ref().and_then(|t| t.get("grpc-status")))
        .map(|status| (status, received))
        .ok_or_else(|| format!("no grpc-status after {received} bytes"))
}

/// One HTTP/1.1 call of the JSON loads: what is sent, and what a good answer holds.
#[derive(Debug, Clone)]
pub struct HttpCall {
    pub method: http::Method,
    /// Path and query.
    pub path: String,
    pub accept: Option<&'static str>,
    pub body: Bytes,
}

impl HttpCall {
    /// `POST path` with a JSON `body`: a call on `/api`.
    pub fn post(path: &str, body: Bytes) -> Self {
        Self {
            method: http::Method::POST,
            path: path.to_owned(),
            accept: None,
            body,
        }
    }

    /// `GET path` (its fields in the query): a REST read.
    pub fn get(path: String) -> Self {
        Self {
            method: http::Method::GET,
            path,
            accept: None,
            body: Bytes::new(),
        }
    }

    /// The same call, asking for Server-Sent Events.
    pub fn as_events(self) -> Self {
        Self {
            accept: Some("text/event-stream"),
            ..self
        }
    }
}

/// JSON POSTs of `body` to `http://address{path}` over HTTP/1.1 keep-alive connections,
/// `load.connections × load.streams` of them, one call at a time each.
pub async fn json(
    address: SocketAddr,
    path: &str,
    body: Bytes,
    load: Load,
) -> Result<Outcome, String> {
    http(address, HttpCall::post(path, body), load).await
}

/// One HTTP/2 connection to `address` (no Nagle, wide flow-control windows), driven in
/// the background; its handle opens streams.
pub async fn h2_connection(address: SocketAddr) -> Result<h2::client::SendRequest<Bytes>, String> {
    let tcp = TcpStream::connect(address)
        .await
        .map_err(|e| format!("connect {address}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(8 << 20)
        .handshake::<_, Bytes>(tcp)
        .await
        .map_err(|e| format!("HTTP/2 handshake with {address}: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// `call` over HTTP/1.1 keep-alive connections, `load.connections × load.streams` of
/// them, one call at a time each; a call succeeds on 200 with a body that holds no
/// error event.
pub async fn http(address: SocketAddr, call: HttpCall, load: Load) -> Result<Outcome, String> {
    let left = Arc::new(AtomicI64::new(load.calls as i64));
    let deadline = Instant::now() + load.max_time;
    let mut workers = Vec::new();
    let started = Instant::now();
    for _ in 0..load.connections * load.streams {
        let tcp = TcpStream::connect(address)
            .await
            .map_err(|e| format!("connect {address}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .map_err(|e| format!("HTTP/1.1 handshake with {address}: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let (call, left) = (call.clone(), left.clone());
        workers.push(tokio::spawn(async move {
            let mut worker = Worker::default();
            while left.fetch_sub(1, Ordering::Relaxed) > 0 && Instant::now() < deadline {
                let began = Instant::now();
                let result = one_http_call(&mut sender, &call).await;
                worker.record(began, result);
            }
            worker
        }));
    }
    Ok(gather(workers, started).await)
}

async fn one_http_call(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    call: &HttpCall,
) -> Result<(), String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let mut request = http::Request::builder()
        .method(call.method.clone())
        .uri(call.path.as_str())
        .header("host", "bench");
    if !call.body.is_empty() {
        request = request.header("content-type", "application/json");
    }
    if let Some(accept) = call.accept {
        request = request.header("accept", accept);
    }
    let request = request
        .body(Full::new(call.body.clone()))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    // A stream that failed after its head is still a 200: its last event says so.
    let failed_stream = body.windows(12).any(|w| w == b"event: error");
    if status == http::StatusCode::OK && !body.is_empty() && !failed_stream {
        Ok(())
    } else {
        Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)))
    }
}
