//! The coded refusal the server answers a frame with.

use crate::protocol::ServerMessage;

/// A frame the server refuses, with the code and human message of the `error` frame
/// that tells the client why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (code {code})")]
pub struct Rejection {
    /// One of [`crate::protocol::codes`].
    pub code: u16,
    /// Human-readable explanation.
    pub message: String,
    /// A suggested wait before reconnecting (only with `7012`).
    pub retry_after_ms: Option<u64>,
}

impl Rejection {
    /// A rejection with `code` and `message`.
    pub(crate) fn new(code: u16, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// The same rejection, suggesting a wait of `ms` milliseconds before reconnecting.
    pub(crate) fn with_retry_after(mut self, ms: u64) -> Self {
        self.retry_after_ms = Some(ms);
        self
    }

    /// The `error` frame for this rejection.
    pub(crate) fn to_message(&self) -> ServerMessage {
        ServerMessage::Error {
            code: self.code,
            message: self.message.clone(),
            retry_after_ms: self.retry_after_ms,
        }
    }
}
