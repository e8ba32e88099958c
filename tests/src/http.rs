//! A small keep-alive HTTP/1.1 client for talking to the gateway in tests.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::HeaderMap;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: serde_json::Value,
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

impl HttpClient {
    /// Sends a request; `Err` only when no HTTP reply came back at all.
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Reply, String> {
        let mut request = Request::builder().method(method).uri(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .header("content-type", "application/json")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Ok(Reply {
            status,
            headers,
            body,
            text,
        })
    }

    pub async fn post(&self, url: &str, body: &serde_json::Value) -> Result<Reply, String> {
        self.send("POST", url, &[], Bytes::from(body.to_string()))
            .await
    }

    /// Repeats a JSON POST until it answers `status` (the cluster settling: discovery,
    /// health checks); the last reply when it did, a panic after `patience`.
    pub async fn post_until(
        &self,
        url: &str,
        body: &serde_json::Value,
        status: u16,
        patience: std::time::Duration,
    ) -> Reply {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let reply = self.post(url, body).await;
            match reply {
                Ok(reply) if reply.status == status => return reply,
                other => assert!(
                    tokio::time::Instant::now() < deadline,
                    "POST {url} never answered {status} within {patience:?}; last: {other:?}"
                ),
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// A JSON POST with an `Authorization` header.
    pub async fn post_authorized(
        &self,
        url: &str,
        authorization: &str,
        body: &serde_json::Value,
    ) -> Result<Reply, String> {
        let headers = [("authorization", authorization)];
        self.send("POST", url, &headers, Bytes::from(body.to_string()))
            .await
    }

    pub async fn get(&self, url: &str) -> Result<Reply, String> {
        self.send("GET", url, &[], Bytes::new()).await
    }
}
