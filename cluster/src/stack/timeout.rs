//! The per-attempt timeout layer: an attempt ends at the call's deadline or after the
//! call's attempt timeout, whichever is sooner, and tells the node the call's deadline
//! (`grpc-timeout`), which the node enforces on its side.

use tokio::time::Instant;

use super::{Around, Below, CallError, CallRequest, Step, TimedOut, info_of, picked_of};
use crate::classify::Attempt;

#[derive(Clone, Copy, Default)]
pub struct AttemptTimeoutLayer;

crate::around_layer!(AttemptTimeoutLayer);

impl Around for AttemptTimeoutLayer {
    type Future<S: Below> = Step<S::Future>;

    fn around<S: Below>(&self, mut request: CallRequest, below: &mut S) -> Step<S::Future> {
        let now = Instant::now();
        let limits = info_of(&request).and_then(|info| {
            let attempt_ends = info.attempt_timeout.map(|timeout| now + timeout);
            let ends = match (info.deadline, attempt_ends) {
                (Some(deadline), Some(attempt)) => Some(deadline.min(attempt)),
                (one, other) => one.or(other),
            };
            Ok((ends, info.deadline, picked_of(&request)?))
        });
        let (ends, deadline, node) = match limits {
            Ok(limits) => limits,
            Err(error) => return Step::decided(Err(error)),
        };
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(now);
            if let Ok(value) = grpc_timeout(left).parse() {
                request
                    .headers_mut()
                    .insert(crate::deadline::GRPC_TIMEOUT, value);
            }
        }
        // No deadline (the rpc port's caller set none): the call below as it is.
        let Some(ends) = ends else {
            return Step::below(below.call(request));
        };
        let timed_out = move || CallError::Attempt {
            attempt: Attempt::TimedOut,
            node,
            source: Box::new(TimedOut(ends.saturating_duration_since(now))),
        };
        // No time left sends nothing: the timer, rounded up to its next tick, would
        // otherwise let a fast node answer a call that had none.
        if ends <= now {
            return Step::decided(Err(timed_out()));
        }
        let called = below.call(request);
        Step::around(Box::pin(async move {
            match tokio::time::timeout_at(ends, called).await {
                Ok(outcome) => outcome,
                Err(_) => Err(timed_out()),
            }
        }))
    }
}

/// `grpc-timeout` as the gRPC spec writes it: at most 8 digits and a unit. Rounded up to
/// a whole millisecond: a node must never be told less time than the caller gives.
pub(crate) fn grpc_timeout(left: std::time::Duration) -> String {
    let millis = left.as_micros().div_ceil(1000).max(1);
    if millis < 100_000_000 {
        format!("{millis}m")
    } else {
        format!("{}S", left.as_secs().min(99_999_999))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn grpc_timeout_is_never_shorter_than_the_time_left_and_fits_eight_digits() {
        assert_eq!(grpc_timeout(Duration::from_micros(1)), "1m");
        assert_eq!(grpc_timeout(Duration::from_micros(1_500)), "2m");
        assert_eq!(grpc_timeout(Duration::from_secs(5)), "5000m");
        assert_eq!(
            grpc_timeout(Duration::from_secs(10 * 86_400 * 365)),
            "99999999S"
        );
    }
}
