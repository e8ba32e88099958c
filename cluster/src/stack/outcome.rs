//! How a call through the stack failed, classified once: every layer (record, retry, the
//! breaker) and every door reads this, never an error's text.

use std::sync::Arc;
use std::time::Duration;

use tonic::Code;

use crate::classify::Attempt;
use crate::node::Node;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The registry holds no node of the service.
    #[error("no node of {service:?} is registered")]
    NoNode { service: Arc<str> },
    /// Nodes exist but none may take this attempt (all drained with weight 0, or all
    /// tried already).
    #[error("no node of {service:?} left to try ({tried} tried)")]
    NoneLeft { service: Arc<str>, tried: usize },
    /// A traffic rule sent the call to a subset with no node that can take it, and
    /// said not to fall back to the rest of the service.
    #[error(
        "no node of {service:?} with {subset} can take the call (its traffic rule has fallback = false)"
    )]
    NoneInSubset { service: Arc<str>, subset: String },
    /// An attempt on one node brought no reply.
    #[error("node {address} failed: {source}", address = node.instance.address)]
    Attempt {
        attempt: Attempt,
        node: Arc<Node>,
        #[source]
        source: BoxError,
    },
    /// A guard in front of the stack turned the call away before any node saw it (its
    /// credentials, a rate limit, an open circuit): never retried.
    #[error("{reason}")]
    Denied {
        code: Code,
        reason: String,
        /// When the caller may try again, if the guard can tell.
        retry_after: Option<Duration>,
    },
    /// A door put the stack together wrong: a bug, never the network's doing.
    #[error("the call stack is misassembled: {0}")]
    Misassembled(&'static str),
}

/// An attempt that ran past its time.
#[derive(Debug, thiserror::Error)]
#[error("no answer within {0:?}")]
pub struct TimedOut(pub Duration);

impl CallError {
    /// How the attempt ended, for a failure on a node.
    pub fn attempt(&self) -> Option<Attempt> {
        match self {
            CallError::Attempt { attempt, .. } => Some(*attempt),
            _ => None,
        }
    }

    /// The node whose attempt this was.
    pub fn node(&self) -> Option<&Arc<Node>> {
        match self {
            CallError::Attempt { node, .. } => Some(node),
            _ => None,
        }
    }

    /// The gRPC code a caller is told.
    pub fn code(&self) -> Code {
        match self {
            CallError::NoNode { .. }
            | CallError::NoneLeft { .. }
            | CallError::NoneInSubset { .. } => Code::Unavailable,
            CallError::Attempt { attempt, .. } => match attempt {
                Attempt::TimedOut => Code::DeadlineExceeded,
                Attempt::Refused => Code::Internal,
                Attempt::NotSent | Attempt::Lost | Attempt::Answered => Code::Unavailable,
            },
            CallError::Denied { code, .. } => *code,
            CallError::Misassembled(_) => Code::Internal,
        }
    }

    /// The status a gRPC caller is told.
    pub fn to_status(&self) -> tonic::Status {
        tonic::Status::new(self.code(), self.to_string())
    }
}
