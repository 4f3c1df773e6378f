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
}

impl Rejection {
    /// A rejection with `code` and `message`.
    pub(crate) fn new(code: u16, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
        }
    }

    /// The `error` frame for this rejection.
    pub(crate) fn to_message(&self) -> ServerMessage {
        ServerMessage::Error {
            code: self.code,
            message: self.message.clone(),
        }
    }
}
