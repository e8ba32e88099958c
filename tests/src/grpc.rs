//! gRPC clients of the tests.

use tonic::transport::Channel;

/// A plaintext HTTP/2 channel to `address` (`host:port`), connected now.
pub async fn channel(address: &str) -> Channel {
    Channel::from_shared(format!("http://{address}"))
        .expect("an http:// URI")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect over gRPC to {address}: {e}"))
}
