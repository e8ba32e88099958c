//! The deadline of the call a node is serving, so that the calls its handler makes to
//! other services end no later: the node's server sets it for each call it serves (from
//! the caller's `grpc-timeout`), the service client reads it.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

tokio::task_local! {
    static SERVING_UNTIL: Option<Instant>;
}

/// Runs `serve` (a handler's work) with `deadline` as the deadline of the call it serves.
pub fn serving_until<F: Future>(
    deadline: Option<Instant>,
    serve: F,
) -> impl Future<Output = F::Output> {
    SERVING_UNTIL.scope(deadline, serve)
}

/// The deadline of the call being served here, if it has one. Work spawned onto other
/// tasks does not inherit it.
pub fn serving() -> Option<Instant> {
    SERVING_UNTIL.try_with(|deadline| *deadline).ok().flatten()
}

/// The header a gRPC call's deadline travels in.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// The timeout a request's `grpc-timeout` header gives, when it is one the spec allows.
pub fn timeout_of(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get(GRPC_TIMEOUT)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout)
}

/// A `grpc-timeout` value (`100m`, `5S`, `1H`), as the gRPC spec writes them.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.is_empty() || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_are_read_in_every_unit_and_garbage_is_none() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "m", "10", "10x", "-1S", "123456789S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_deadline_being_served_is_seen_inside_the_handler_only() {
        let deadline = Instant::now() + Duration::from_secs(3);
        assert_eq!(serving(), None);
        let seen = serving_until(Some(deadline), async { serving() }).await;
        assert_eq!(seen, Some(deadline));
        assert_eq!(serving(), None);
    }
}
