//! What a failed attempt says, read from the types of its errors, never from their text:
//! whether the node ran the call, whether the node is at fault, whether another node may
//! take it.

use std::error::Error;

/// How an attempt on one node ended, when it did not bring back a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The service answered with a status of its own: its word, whatever the code.
    Answered,
    /// No connection could be opened, or the node refused the stream before reading it:
    /// nothing ran there, so any node may take the call.
    NotSent,
    /// The connection broke after the request may have left: the node may have run it.
    Lost,
    /// The gateway's own client refused what the node sent back (a header list over its
    /// limit, a malformed frame): the call failed, the node and its connection are fine.
    Refused,
    /// The route's deadline passed.
    TimedOut,
}

impl Attempt {
    /// Whether the failure counts against the node (toward setting it aside).
    pub fn is_node_fault(self) -> bool {
        matches!(self, Attempt::NotSent | Attempt::Lost | Attempt::TimedOut)
    }

    /// A status from tonic: one the server sent carries no cause; one made from a
    /// transport error keeps it.
    pub fn of_status(status: &tonic::Status) -> Attempt {
        match std::error::Error::source(status) {
            None => Attempt::Answered,
            Some(cause) => Attempt::of_error(cause),
        }
    }

    /// A transport error, by the types in its chain of causes.
    pub fn of_error(error: &(dyn Error + 'static)) -> Attempt {
        let mut cause = Some(error);
        while let Some(error) = cause {
            if error.is::<tonic::ConnectError>() {
                return Attempt::NotSent;
            }
            if let Some(io) = error.downcast_ref::<std::io::Error>()
                && io.kind() == std::io::ErrorKind::ConnectionRefused
            {
                return Attempt::NotSent;
            }
            if let Some(h2) = error.downcast_ref::<h2::Error>() {
                return of_h2(h2);
            }
            if error.is::<tonic::TimeoutExpired>() {
                return Attempt::TimedOut;
            }
            cause = error.source();
        }
        Attempt::Lost
    }
}

fn of_h2(error: &h2::Error) -> Attempt {
    if error.is_io() || error.is_go_away() {
        return Attempt::Lost;
    }
    if error.is_reset() && error.is_remote() {
        // REFUSED_STREAM promises the request was not processed (RFC 9113, 8.7).
        return match error.reason() {
            Some(h2::Reason::REFUSED_STREAM) => Attempt::NotSent,
            _ => Attempt::Lost,
        };
    }
    if error.is_library() || (error.is_reset() && !error.is_remote()) {
        return Attempt::Refused;
    }
    Attempt::Lost
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_the_service_sent_is_its_answer_whatever_its_text_says() {
        let status = tonic::Status::unavailable("user store: tcp connect error to etcd");
        assert_eq!(Attempt::of_status(&status), Attempt::Answered);
    }

    #[test]
    fn a_failed_connect_was_never_sent() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let connect = tonic::ConnectError(Box::new(refused));
        let status = tonic::Status::from_error(Box::new(connect));
        assert_eq!(Attempt::of_status(&status), Attempt::NotSent);
    }

    #[test]
    fn a_broken_connection_after_sending_is_lost_even_if_its_text_says_connect() {
        let broken = std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection closed before message completed",
        );
        let status = tonic::Status::from_error(Box::new(broken));
        assert_eq!(Attempt::of_status(&status), Attempt::Lost);
        assert!(Attempt::Lost.is_node_fault());
    }

    #[test]
    fn only_transport_failures_count_against_the_node() {
        assert!(!Attempt::Answered.is_node_fault());
        assert!(!Attempt::Refused.is_node_fault());
        assert!(Attempt::NotSent.is_node_fault());
    }
}
