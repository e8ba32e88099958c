//! A node that fails the worst way for a gateway: it answers its health checks, but
//! drops the connection after reading a call's whole request, so the call may have run.
//! A plain HTTP/2 server (h2), no gRPC framework, so that nothing answers for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The running node: its address and how many calls of the service (reflection aside) it
/// read whole before dropping them.
pub struct DroppingNode {
    pub address: String,
    pub calls_read: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for DroppingNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// grpc.health.v1 `HealthCheckResponse { status: SERVING }` in a gRPC frame.
const SERVING: [u8; 7] = [0, 0, 0, 0, 2, 0x08, 0x01];

impl DroppingNode {
    pub async fn start() -> DroppingNode {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let address = listener.local_addr().expect("local address").to_string();
        let calls_read = Arc::new(AtomicUsize::new(0));
        let counter = calls_read.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve_connection(socket, counter.clone()));
            }
        });
        DroppingNode {
            address,
            calls_read,
            task,
        }
    }
}

async fn serve_connection(socket: tokio::net::TcpStream, calls_read: Arc<AtomicUsize>) {
    let Ok(mut connection) = h2::server::handshake(socket).await else {
        return;
    };
    let (read_whole, mut drop_now) = tokio::sync::mpsc::channel::<()>(1);
    loop {
        let accepted = tokio::select! {
            accepted = connection.accept() => accepted,
            // Dropping the connection and its socket mid-call.
            _ = drop_now.recv() => return,
        };
        let Some(Ok((request, mut respond))) = accepted else {
            return;
        };
        if request.uri().path() == "/grpc.health.v1.Health/Check" {
            let response = http::Response::builder()
                .header("content-type", "application/grpc")
                .body(())
                .expect("a valid response");
            if let Ok(mut stream) = respond.send_response(response, false) {
                let _ = stream.send_data(Bytes::from_static(&SERVING), false);
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                let _ = stream.send_trailers(trailers);
            }
            continue;
        }
        // A gateway asks any node for its schema first: that is no call of the service's.
        let is_call = !request.uri().path().starts_with("/grpc.reflection.");
        let (read_whole, calls_read) = (read_whole.clone(), calls_read.clone());
        tokio::spawn(async move {
            let mut body = request.into_body();
            while let Some(chunk) = body.data().await {
                let Ok(chunk) = chunk else { return };
                let _ = body.flow_control().release_capacity(chunk.len());
            }
            if is_call {
                calls_read.fetch_add(1, Ordering::SeqCst);
            }
            let _ = read_whole.send(()).await;
            // Never answered: the connection goes first.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            drop(respond);
        });
    }
}
