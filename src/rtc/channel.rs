//! [`Channel`] over a `webrtc` data channel.
//!
//! `webrtc` 0.21 stops draining *every* data channel of a connection while one registered
//! channel's event queue is full, so each channel must be polled all the time. An
//! [`RtcChannel`] therefore owns a small reader task that polls its channel without pause,
//! keeps open/close state, and hands messages over through a bounded queue: a slow
//! consumer fills the queue, the reader waits, and SCTP's window closes — backpressure that
//! reaches the sender.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
    /// A send went through: the channel's SCTP stream exists (see [`Self::send_early`]).
    sendable: AtomicBool,
    /// The channel was open at some point (it may be closed by now).
    opened: Arc<AtomicBool>,
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
        let opened = Arc::new(AtomicBool::new(open));
        let reader_opened = opened.clone();
        tokio::spawn(async move {
            let mut consumer_gone = false;
            while let Some(event) = reader_dc.poll().await {
                match event {
                    DataChannelEvent::OnOpen => {
                        reader_opened.store(true, Ordering::Release);
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
            sendable: AtomicBool::new(open),
            opened,
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

    /// Send through `send`, which the caller can repeat. The opener of an ordered channel
    /// may send right after its `DATA_CHANNEL_OPEN`, before the peer's
    /// `DATA_CHANNEL_ACK` (RFC 8832 §6), and the stack takes such sends as soon as the
    /// channel's SCTP stream exists: a channel created on an established association
    /// sends its first bytes a round trip sooner than one that waits for the open. A
    /// channel created before the association was up has no stream yet; its first send
    /// then waits for the open and goes again.
    async fn send_early<F, Fut>(&self, send: F) -> Result<(), ChannelClosed>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = webrtc::error::Result<()>>,
    {
        match send().await {
            Ok(()) => {}
            Err(webrtc::error::Error::ErrDataChannelNotOpen) => {
                self.wait_open().await?;
                send().await.map_err(|_| ChannelClosed)?;
            }
            Err(_) => return Err(ChannelClosed),
        }
        self.sendable.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Wait until the channel is open. Also `Ok` for a channel that opened and has
    /// closed again since: with sends before the open (`send_early`), a small
    /// job's recipient may have everything and close the channel right after its open.
    pub async fn wait_open(&self) -> Result<(), ChannelClosed> {
        let mut state = self.state.clone();
        let _ = state.wait_for(|s| *s != State::Connecting).await;
        if self.opened.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(ChannelClosed)
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
        if self.sendable.load(Ordering::Relaxed) {
            return self.dc.send(data).await.map_err(|_| ChannelClosed);
        }
        // Until a first send went through, a copy of the message may have to go again.
        self.send_early(|| self.dc.send(data.clone())).await
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
        self.send_early(|| self.dc.send_text(text)).await
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

#[cfg(test)]
mod tests;
