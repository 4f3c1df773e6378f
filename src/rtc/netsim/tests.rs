//! Socket-level tests of the simulator over an in-memory fake socket, in paused tokio
//! time (no real sockets, no wall-clock waits).

use std::collections::VecDeque;

use super::*;

/// An in-memory `AsyncUdpSocket`: records what is sent (with the tokio instant) and
/// returns queued datagrams on receive.
#[derive(Debug, Default)]
struct FakeSocket {
    sent: Mutex<Vec<(tokio::time::Instant, SocketAddr, Vec<u8>)>>,
    inbox: Mutex<VecDeque<(SocketAddr, Vec<u8>)>>,
}

impl AsyncUdpSocket for FakeSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(addr(1000))
    }

    fn poll_send(&self, _cx: &mut Context<'_>, t: &Transmit<'_>) -> Poll<io::Result<usize>> {
        self.sent.lock().unwrap().push((
            tokio::time::Instant::now(),
            t.destination,
            t.contents.to_vec(),
        ));
        Poll::Ready(Ok(t.contents.len()))
    }

    fn poll_recv(
        &self,
        _cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut inbox = self.inbox.lock().unwrap();
        if inbox.is_empty() {
            return Poll::Pending;
        }
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            let Some((from, data)) = inbox.pop_front() else {
                break;
            };
            bufs[n][..data.len()].copy_from_slice(&data);
            let mut m = RecvMeta::default();
            m.addr = from;
            m.len = data.len();
            m.stride = data.len();
            meta[n] = m;
            n += 1;
        }
        Poll::Ready(Ok(n))
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn wrap(model: &NetworkModel) -> (Arc<FakeSocket>, Arc<dyn AsyncUdpSocket>) {
    let fake = Arc::new(FakeSocket::default());
    let sim = model.wrap_socket(fake.clone(), addr(1000)).unwrap();
    (fake, sim)
}

fn send(sock: &dyn AsyncUdpSocket, dst: SocketAddr, data: &[u8]) {
    let t = Transmit {
        destination: dst,
        ecn: None,
        contents: data,
        segment_size: None,
        src_ip: None,
    };
    let mut cx = Context::from_waker(std::task::Waker::noop());
    // The simulated socket never makes the stack wait.
    assert!(matches!(sock.poll_send(&mut cx, &t), Poll::Ready(Ok(n)) if n == data.len()));
}

fn recv_all(sock: &dyn AsyncUdpSocket) -> Vec<Vec<u8>> {
    let mut storage = vec![[0u8; 64]; 4];
    let mut bufs: Vec<IoSliceMut<'_>> = storage.iter_mut().map(|b| IoSliceMut::new(b)).collect();
    let mut meta = [RecvMeta::default(); 4];
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match sock.poll_recv(&mut cx, &mut bufs, &mut meta) {
        Poll::Ready(Ok(n)) => (0..n).map(|i| bufs[i][..meta[i].len].to_vec()).collect(),
        Poll::Ready(Err(e)) => panic!("{e}"),
        Poll::Pending => Vec::new(),
    }
}

#[tokio::test(start_paused = true)]
async fn sim_socket_delay_holds_datagrams_until_due_in_order() {
    let delay = Duration::from_millis(20);
    let model = NetworkModel::new(1, LinkConfig::default().with_delay(delay, Duration::ZERO));
    let (fake, sim) = wrap(&model);
    let t0 = tokio::time::Instant::now();
    for i in 0..10u8 {
        send(&*sim, addr(2000), &[i]);
    }
    assert!(
        fake.sent.lock().unwrap().is_empty(),
        "sent before the delay"
    );
    tokio::time::sleep(delay - Duration::from_millis(1)).await;
    assert!(
        fake.sent.lock().unwrap().is_empty(),
        "sent before the delay"
    );
    tokio::time::sleep(Duration::from_millis(2)).await;
    let sent = fake.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 10);
    for (i, (at, dst, data)) in sent.iter().enumerate() {
        assert_eq!(*at - t0, delay);
        assert_eq!(*dst, addr(2000));
        assert_eq!(data, &[i as u8]);
    }
    let s = model.stats();
    assert_eq!((s.offered, s.sent, s.delayed, s.dropped()), (10, 10, 10, 0));
}

#[tokio::test(start_paused = true)]
async fn sim_socket_jitter_and_reorder_deliver_everything_with_overtaking() {
    let cfg = LinkConfig::default()
        .with_delay(Duration::from_millis(20), Duration::from_millis(5))
        .with_reorder(0.2, Duration::from_millis(10));
    let model = NetworkModel::new(3, cfg);
    let (fake, sim) = wrap(&model);
    let t0 = tokio::time::Instant::now();
    for i in 0..200u16 {
        send(&*sim, addr(2000), &i.to_be_bytes());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sent = fake.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 200);
    let order: Vec<u16> = sent
        .iter()
        .map(|(_, _, d)| u16::from_be_bytes([d[0], d[1]]))
        .collect();
    assert!(order.windows(2).any(|w| w[0] > w[1]), "nothing overtaken");
    for (at, _, d) in &sent {
        let i = u16::from_be_bytes([d[0], d[1]]);
        let sent_at = t0 + Duration::from_millis(u64::from(i));
        let delay = *at - sent_at;
        // 20 ± 5 ms, + 10 ms if reordered, + 1 ms timer granularity.
        assert!(
            delay >= Duration::from_millis(15) && delay <= Duration::from_millis(36),
            "{delay:?}"
        );
    }
    let s = model.stats();
    assert_eq!(s.sent, 200);
    assert!(s.reordered > 10 && s.reordered < 80, "{s:?}");
}

#[tokio::test(start_paused = true)]
async fn sim_socket_loss_counts_and_matches_link_model() {
    let cfg = LinkConfig::default().with_loss(Loss::random(0.1));
    let model = NetworkModel::new(5, cfg);
    let (fake, sim) = wrap(&model);
    let n = 2000u32;
    for i in 0..n {
        send(&*sim, addr(2000), &i.to_be_bytes());
    }
    tokio::task::yield_now().await;
    let sent = fake.sent.lock().unwrap().clone();
    let s = model.stats();
    assert_eq!(s.sent as usize, sent.len());
    assert_eq!(s.sent + s.lost, u64::from(n));
    assert!(s.lost > 120 && s.lost < 280, "{s:?}");
    // The socket's decisions are exactly those of a link seeded like it.
    let mut link = Link::seeded(link::socket_seed(5, 1000));
    let expected: Vec<u32> = (0..n).filter(|_| !link.lose(&cfg.loss)).collect();
    let got: Vec<u32> = sent
        .iter()
        .map(|(_, _, d)| u32::from_be_bytes([d[0], d[1], d[2], d[3]]))
        .collect();
    assert_eq!(got, expected);
}

#[tokio::test(start_paused = true)]
async fn sim_socket_cut_drops_both_directions_until_restored() {
    let model = NetworkModel::new(0, LinkConfig::perfect());
    let (fake, sim) = wrap(&model);
    send(&*sim, addr(2000), b"a");
    fake.inbox
        .lock()
        .unwrap()
        .push_back((addr(2000), b"in-a".to_vec()));
    assert_eq!(recv_all(&*sim), vec![b"in-a".to_vec()]);

    model.cut();
    assert!(model.is_blocked());
    send(&*sim, addr(2000), b"b");
    fake.inbox
        .lock()
        .unwrap()
        .push_back((addr(2000), b"in-b".to_vec()));
    assert!(recv_all(&*sim).is_empty());

    model.restore();
    send(&*sim, addr(2000), b"c");
    fake.inbox
        .lock()
        .unwrap()
        .push_back((addr(2000), b"in-c".to_vec()));
    assert_eq!(recv_all(&*sim), vec![b"in-c".to_vec()]);

    let sent: Vec<Vec<u8>> = fake
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|x| x.2.clone())
        .collect();
    assert_eq!(sent, vec![b"a".to_vec(), b"c".to_vec()]);
    let s = model.stats();
    assert_eq!((s.blocked, s.blocked_in, s.sent), (1, 1, 2));
}

#[tokio::test(start_paused = true)]
async fn sim_socket_only_via_passes_relay_traffic_and_blocks_direct() {
    let model = NetworkModel::new(0, LinkConfig::perfect());
    let relay = addr(3478);
    model.only_via([relay]);
    let (fake, sim) = wrap(&model);
    send(&*sim, relay, b"to-relay");
    send(&*sim, addr(2000), b"to-peer");
    {
        let mut inbox = fake.inbox.lock().unwrap();
        inbox.push_back((addr(2000), b"from-peer".to_vec()));
        inbox.push_back((relay, b"from-relay".to_vec()));
        inbox.push_back((addr(2001), b"from-other".to_vec()));
    }
    // The filtered message in front is compacted away.
    assert_eq!(recv_all(&*sim), vec![b"from-relay".to_vec()]);
    let sent: Vec<SocketAddr> = fake.sent.lock().unwrap().iter().map(|x| x.1).collect();
    assert_eq!(sent, vec![relay]);
    let s = model.stats();
    assert_eq!((s.blocked, s.blocked_in), (1, 2));

    model.clear_filter();
    send(&*sim, addr(2000), b"to-peer");
    assert_eq!(fake.sent.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn sim_socket_splits_gso_buffers_into_datagrams() {
    let model = NetworkModel::new(0, LinkConfig::perfect());
    let (fake, sim) = wrap(&model);
    assert_eq!(sim.max_gso_segments(), 1);
    let data: Vec<u8> = (0..25).collect();
    let t = Transmit {
        destination: addr(2000),
        ecn: None,
        contents: &data,
        segment_size: Some(10),
        src_ip: None,
    };
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(matches!(sim.poll_send(&mut cx, &t), Poll::Ready(Ok(25))));
    let lens: Vec<usize> = fake
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|x| x.2.len())
        .collect();
    assert_eq!(lens, vec![10, 10, 5]);
    assert_eq!(model.stats().offered, 3);
}

#[tokio::test(start_paused = true)]
async fn sim_socket_rate_limit_paces_and_overflows() {
    // 100 kB/s: a 1000-byte datagram takes 10 ms; the queue holds 5 of them.
    let model = NetworkModel::new(0, LinkConfig::default().with_rate(100_000, 5000));
    let (fake, sim) = wrap(&model);
    let t0 = tokio::time::Instant::now();
    for _ in 0..8 {
        send(&*sim, addr(2000), &[0u8; 1000]);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let times: Vec<Duration> = fake.sent.lock().unwrap().iter().map(|x| x.0 - t0).collect();
    let expected: Vec<Duration> = (1..=5).map(|i| Duration::from_millis(10 * i)).collect();
    assert_eq!(times, expected);
    assert_eq!(model.stats().overflowed, 3);
}

#[tokio::test(start_paused = true)]
async fn sim_runtime_delegates_and_counts_sockets() {
    let model = NetworkModel::new(0, LinkConfig::perfect());
    let rt = model.runtime(webrtc::runtime::default_runtime().unwrap());
    assert_eq!(rt.name(), "peershare-netsim");
    let std_sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = std_sock.local_addr().unwrap();
    let sock = rt.wrap_udp_socket(std_sock).unwrap();
    assert_eq!(sock.local_addr().unwrap(), local);
    assert_eq!(sock.max_gso_segments(), 1);
    assert_eq!(model.sockets(), 1);
    assert!(format!("{model:?}").contains("NetworkModel"));
}

#[tokio::test(start_paused = true)]
async fn network_model_wait_until_wakes_on_counter_change() {
    let model = NetworkModel::new(0, LinkConfig::perfect());
    let (_fake, sim) = wrap(&model);
    let waiter = {
        let model = model.clone();
        tokio::spawn(async move { model.wait_until(|s| s.blocked >= 3).await })
    };
    tokio::task::yield_now().await;
    model.cut();
    for _ in 0..3 {
        send(&*sim, addr(2000), b"x");
    }
    let stats = waiter.await.unwrap();
    assert_eq!(stats.blocked, 3);
    // Already satisfied: returns at once.
    assert_eq!(model.wait_until(|s| s.blocked >= 1).await.blocked, 3);
}
