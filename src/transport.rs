//! The transport seam: a reliable, ordered message channel with a bounded send buffer.
//!
//! [`crate::rtc::RtcChannel`] implements it over a WebRTC data channel; [`memory_pair`]
//! gives an in-process pair so the transfer engine can be tested without WebRTC.

use async_trait::async_trait;
use bytes::BytesMut;
use tokio::sync::{Mutex, mpsc};

/// The channel is closed (locally, by the peer, or with its connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("channel closed")]
pub struct ChannelClosed;

/// A text message arrived where only binary data may come (a job channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a text message on a binary channel")]
pub struct TextMessage;

/// A reliable ordered message channel.
#[async_trait]
pub trait Channel: Send + Sync + 'static {
    /// Queue one message, waiting while the send buffer is above its limit.
    async fn send(&self, data: BytesMut) -> Result<(), ChannelClosed>;
    /// The next message, or `None` once the channel is closed.
    async fn recv(&self) -> Option<BytesMut>;
    /// The next message, which must be binary (channels that mark text messages say
    /// so; a text message is then `Err`), or `None` once the channel is closed.
    async fn recv_binary(&self) -> Option<Result<BytesMut, TextMessage>> {
        self.recv().await.map(Ok)
    }
    /// The next message with whether it is text (batch channels carry both), or `None`
    /// once the channel is closed.
    async fn recv_message(&self) -> Option<(bool, BytesMut)>;
    /// Queue one text message.
    async fn send_text(&self, text: &str) -> Result<(), ChannelClosed>;
    /// Close the channel; pending and future `recv`s on both ends return `None`.
    async fn close(&self);
}

/// One end of an in-memory channel.
pub struct MemoryChannel {
    tx: Mutex<Option<mpsc::Sender<(bool, BytesMut)>>>,
    rx: Mutex<mpsc::Receiver<(bool, BytesMut)>>,
}

/// Two connected in-memory ends; each buffers up to `capacity` messages.
pub fn memory_pair(capacity: usize) -> (MemoryChannel, MemoryChannel) {
    let (a_tx, b_rx) = mpsc::channel(capacity.max(1));
    let (b_tx, a_rx) = mpsc::channel(capacity.max(1));
    (
        MemoryChannel {
            tx: Mutex::new(Some(a_tx)),
            rx: Mutex::new(a_rx),
        },
        MemoryChannel {
            tx: Mutex::new(Some(b_tx)),
            rx: Mutex::new(b_rx),
        },
    )
}

#[async_trait]
impl Channel for MemoryChannel {
    async fn send(&self, data: BytesMut) -> Result<(), ChannelClosed> {
        let tx = self.tx.lock().await.clone().ok_or(ChannelClosed)?;
        tx.send((false, data)).await.map_err(|_| ChannelClosed)
    }

    async fn recv(&self) -> Option<BytesMut> {
        self.recv_message().await.map(|(_, data)| data)
    }

    async fn recv_binary(&self) -> Option<Result<BytesMut, TextMessage>> {
        self.recv_message()
            .await
            .map(|(text, data)| if text { Err(TextMessage) } else { Ok(data) })
    }

    async fn recv_message(&self) -> Option<(bool, BytesMut)> {
        self.rx.lock().await.recv().await
    }

    async fn send_text(&self, text: &str) -> Result<(), ChannelClosed> {
        let tx = self.tx.lock().await.clone().ok_or(ChannelClosed)?;
        tx.send((true, BytesMut::from(text.as_bytes())))
            .await
            .map_err(|_| ChannelClosed)
    }

    async fn close(&self) {
        self.tx.lock().await.take();
        self.rx.lock().await.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_pair_delivers_in_order_then_closes() {
        let (a, b) = memory_pair(2);
        a.send(BytesMut::from(&b"1"[..])).await.unwrap();
        a.send(BytesMut::from(&b"2"[..])).await.unwrap();
        assert_eq!(&b.recv().await.unwrap()[..], b"1");
        assert_eq!(&b.recv().await.unwrap()[..], b"2");
        a.close().await;
        assert!(b.recv().await.is_none());
        assert_eq!(a.send(BytesMut::new()).await, Err(ChannelClosed));
    }
}
