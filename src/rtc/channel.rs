//! [`Channel`] over a `webrtc` data channel.
//!
//! `webrtc` 0.21 stops draining *every* data channel of a connection while one registered
//! channel's event queue is full, so each channel must be polled all the time. An
//! [`RtcChannel`] therefore owns a small reader task that polls its channel without pause,
//! keeps open/close state, and hands messages over through a bounded queue: a slow
//! consumer fills the queue, the reader waits, and SCTP's window closes — backpressure that
//! reaches the sender.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::BytesMut;
use tokio::sync::{Mutex, Notify, mpsc, watch};
use webrtc::data_channel::{DataChannel, DataChannelEvent};

use crate::transport::{Channel, ChannelClosed};

/// Messages buffered between the reader task and the consumer.
const RECV_QUEUE: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Open,
    Closed,
}

/// A WebRTC data channel seen through the transport seam. `send` waits while the
/// channel's outstanding bytes exceed the connection's send-buffer limit.
pub struct RtcChannel {
    dc: Arc<dyn DataChannel>,
    rx: Mutex<mpsc::Receiver<(bool, BytesMut)>>,
    state: watch::Receiver<State>,
    drained: Arc<Notify>,
}

impl RtcChannel {
    /// Wrap a data channel and start its reader. `open` says whether it is already open
    /// (channels announced by the remote side are).
    pub fn spawn(dc: Arc<dyn DataChannel>, open: bool) -> Self {
        let (tx, rx) = mpsc::channel(RECV_QUEUE);
        let (state_tx, state) = watch::channel(if open { State::Open } else { State::Connecting });
        let reader_dc = dc.clone();
        let drained = Arc::new(Notify::new());
        let reader_drained = drained.clone();
        tokio::spawn(async move {
            let mut consumer_gone = false;
            while let Some(event) = reader_dc.poll().await {
                match event {
                    DataChannelEvent::OnOpen => {
                        let _ = state_tx.send(State::Open);
                    }
                    DataChannelEvent::OnMessage(msg) => {
                        let delivered =
                            consumer_gone || tx.send((msg.is_string, msg.data)).await.is_ok();
                        if !delivered {
                            consumer_gone = true;
                            let _ = reader_dc.close().await;
                        }
                    }
                    DataChannelEvent::OnClose => break,
                    // The low threshold is 0: fired when every sent byte was acknowledged.
                    DataChannelEvent::OnBufferedAmountLow => reader_drained.notify_waiters(),
                    _ => {}
                }
            }
            let _ = state_tx.send(State::Closed);
        });
        Self {
            dc,
            rx: Mutex::new(rx),
            state,
            drained,
        }
    }

    /// Wait (at most `limit`) until the peer has acknowledged every byte sent so far,
    /// or the channel is closed.
    pub async fn flush(&self, limit: std::time::Duration) {
        let acked = async {
            loop {
                let notified = self.drained.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                match self.dc.outstanding_bytes().await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => notified.await,
                }
            }
        };
        let _ = tokio::time::timeout(limit, async {
            tokio::select! {
                _ = acked => {}
                _ = self.wait_closed() => {}
            }
        })
        .await;
    }

    /// Wait until the channel is open.
    pub async fn wait_open(&self) -> Result<(), ChannelClosed> {
        let mut state = self.state.clone();
        match state.wait_for(|s| *s != State::Connecting).await {
            Ok(s) if *s == State::Open => Ok(()),
            _ => Err(ChannelClosed),
        }
    }

    /// Wait until the channel is closed.
    pub async fn wait_closed(&self) {
        let mut state = self.state.clone();
        let _ = state.wait_for(|s| *s == State::Closed).await;
    }
}

#[async_trait]
impl Channel for RtcChannel {
    async fn send(&self, data: BytesMut) -> Result<(), ChannelClosed> {
        self.dc.send(data).await.map_err(|_| ChannelClosed)
    }

    async fn recv(&self) -> Option<BytesMut> {
        self.recv_message().await.map(|(_, data)| data)
    }

    async fn recv_binary(&self) -> Option<Result<BytesMut, crate::transport::TextMessage>> {
        self.recv_message().await.map(binary_only)
    }

    async fn recv_message(&self) -> Option<(bool, BytesMut)> {
        self.rx.lock().await.recv().await
    }

    async fn send_text(&self, text: &str) -> Result<(), ChannelClosed> {
        self.dc.send_text(text).await.map_err(|_| ChannelClosed)
    }

    async fn close(&self) {
        let _ = self.dc.close().await;
    }
}

impl Drop for RtcChannel {
    fn drop(&mut self) {
        let dc = self.dc.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = dc.close().await;
            });
        }
    }
}

/// The receiving end of a job channel, polled directly by its consumer: no reader task
/// and no extra queue hop per message. Only for a consumer that reads without pause
/// until the end (the download loop does: when it waits, it is on purpose, as
/// backpressure); a dropped stream unregisters the channel so it cannot hold the
/// connection's other channels back.
pub struct RtcStream {
    dc: Arc<dyn DataChannel>,
}

impl RtcStream {
    pub fn new(dc: Arc<dyn DataChannel>) -> Self {
        Self { dc }
    }

    /// Next message with its text flag, or `None` once closed.
    async fn next_message(&self) -> Option<(bool, BytesMut)> {
        loop {
            match self.dc.poll().await? {
                DataChannelEvent::OnMessage(msg) => return Some((msg.is_string, msg.data)),
                DataChannelEvent::OnClose => return None,
                _ => {}
            }
        }
    }
}

#[async_trait]
impl Channel for RtcStream {
    async fn send(&self, data: BytesMut) -> Result<(), ChannelClosed> {
        self.dc.send(data).await.map_err(|_| ChannelClosed)
    }

    async fn recv(&self) -> Option<BytesMut> {
        self.next_message().await.map(|(_, data)| data)
    }

    async fn recv_binary(&self) -> Option<Result<BytesMut, crate::transport::TextMessage>> {
        self.next_message().await.map(binary_only)
    }

    async fn recv_message(&self) -> Option<(bool, BytesMut)> {
        self.next_message().await
    }

    async fn send_text(&self, text: &str) -> Result<(), ChannelClosed> {
        self.dc.send_text(text).await.map_err(|_| ChannelClosed)
    }

    async fn close(&self) {
        let _ = self.dc.close().await;
    }
}

/// A message of a channel that carries only binary data.
fn binary_only((text, data): (bool, BytesMut)) -> Result<BytesMut, crate::transport::TextMessage> {
    if text {
        Err(crate::transport::TextMessage)
    } else {
        Ok(data)
    }
}
