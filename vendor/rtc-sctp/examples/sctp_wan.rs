//! Congestion-control harness: one SCTP association over a simulated WAN path.
//!
//! Two sans-IO endpoints in memory with a virtual clock (no sockets, no crypto), joined
//! by a link per direction with a bottleneck rate, a drop-tail queue, a one-way delay
//! and random loss. One reliable ordered stream carries `size` MiB client → server.
//! Prints the virtual transfer time, the goodput, its share of the link rate, the
//! queue and random drops, and the association's retransmission counters. The run is
//! deterministic for a given seed.
//!
//! Usage: sctp_wan [rate_mbit] [rtt_ms] [loss] [size_mib] [queue_bdp] [mtu] [rwnd_kib] [seed]
//! (rate 0 = unlimited; queue in bandwidth-delay products)

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc_sctp::{
    Association, AssociationHandle, ClientConfig, CongestionControl, DatagramEvent, Endpoint,
    EndpointConfig, Event, Payload, PayloadProtocolIdentifier, ServerConfig, TransportConfig,
};
use shared::TransportProtocol;

/// Cap on locally buffered user data (the application's send-buffer limit).
fn send_buf_cap() -> usize {
    std::env::var("SEND_BUF_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(4)
        << 20
}
const MSG_LEN: usize = 64 * 1024;

struct Link {
    rate: Option<f64>,
    queue_bytes: f64,
    delay: Duration,
    loss: f64,
    busy_until: Option<Instant>,
    in_flight: VecDeque<(Instant, Bytes)>,
    rng: u64,
    overflow: u64,
    lost: u64,
    sent: u64,
}

impl Link {
    fn random(&mut self) -> f64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn offer(&mut self, now: Instant, pkt: Bytes) {
        self.sent += 1;
        if self.loss > 0.0 && self.random() < self.loss {
            self.lost += 1;
            return;
        }
        let mut at = now;
        if let Some(rate) = self.rate {
            let start = self.busy_until.map_or(now, |b| b.max(now));
            let backlog = start.duration_since(now).as_secs_f64() * rate;
            if backlog + pkt.len() as f64 > self.queue_bytes {
                self.overflow += 1;
                return;
            }
            let done = start + Duration::from_secs_f64(pkt.len() as f64 / rate);
            self.busy_until = Some(done);
            at = done;
        }
        self.in_flight.push_back((at + self.delay, pkt));
    }

    fn due(&mut self, now: Instant, out: &mut VecDeque<Bytes>) {
        while self.in_flight.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, p)) = self.in_flight.pop_front() {
                out.push_back(p);
            }
        }
    }

    fn next(&self) -> Option<Instant> {
        self.in_flight.front().map(|(at, _)| *at)
    }
}

struct Node {
    endpoint: Endpoint,
    peer_addr: SocketAddr,
    handle: Option<AssociationHandle>,
    assoc: Option<Association>,
    connected: bool,
}

impl Node {
    fn drive(&mut self, now: Instant, inbound: &mut VecDeque<Bytes>, link: &mut Link) {
        while let Some(data) = inbound.pop_front() {
            if let Some((ch, event)) = self.endpoint.handle(now, self.peer_addr, None, data) {
                match event {
                    DatagramEvent::NewAssociation(assoc) => {
                        self.handle = Some(ch);
                        self.assoc = Some(assoc);
                    }
                    DatagramEvent::AssociationEvent(event) => {
                        if let Some(assoc) = self.assoc.as_mut() {
                            assoc.handle_event(event);
                        }
                    }
                    _ => {}
                }
            }
        }
        let Some(assoc) = self.assoc.as_mut() else {
            return;
        };
        if assoc.poll_timeout().is_some_and(|t| t <= now) {
            assoc.handle_timeout(now);
        }
        while let Some(event) = assoc.poll() {
            if matches!(event, Event::Connected) {
                self.connected = true;
            }
        }
        while let Some(event) = assoc.poll_endpoint_event() {
            if let Some(ch) = self.handle {
                self.endpoint.handle_event(ch, event);
            }
        }
        while let Some(transmit) = assoc.poll_transmit(now) {
            if let Payload::RawEncode(contents) = transmit.message {
                for content in contents {
                    link.offer(now, content);
                }
            }
        }
    }

    fn timeout(&self) -> Option<Instant> {
        self.assoc.as_ref().and_then(Association::poll_timeout)
    }
}

fn min_opt(x: Option<Instant>, y: Option<Instant>) -> Option<Instant> {
    match (x, y) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rate_mbit: f64 = arg(&args, 0, 100.0);
    let rtt_ms: f64 = arg(&args, 1, 40.0);
    let loss: f64 = arg(&args, 2, 0.0);
    let size_mib: f64 = arg(&args, 3, 64.0);
    let queue_bdp: f64 = arg(&args, 4, 1.0);
    let mtu: u32 = arg(&args, 5, 1191);
    let rwnd_kib: u32 = arg(&args, 6, 4096);
    let seed: u64 = arg(&args, 7, 1);

    let rate = (rate_mbit > 0.0).then_some(rate_mbit * 1e6 / 8.0);
    let delay = Duration::from_secs_f64(rtt_ms / 2e3);
    let bdp = rate.map_or(0.0, |r| r * rtt_ms / 1e3);
    let link = |seed: u64| Link {
        rate,
        queue_bytes: (bdp * queue_bdp).max(3.0 * 1500.0),
        delay,
        loss,
        busy_until: None,
        in_flight: VecDeque::new(),
        rng: seed | 1,
        overflow: 0,
        lost: 0,
        sent: 0,
    };
    let mut c2s = link(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut s2c = link(seed.wrapping_mul(0xBF58_476D_1CE4_E5B9));

    let bbr = std::env::var("SCTP_CC").is_ok_and(|v| v == "bbr");
    let rto_min: Option<u64> = std::env::var("SCTP_RTO_MIN_MS")
        .ok()
        .and_then(|v| v.parse().ok());
    let rwnd_autotune: Option<u32> = std::env::var("SCTP_RWND_AUTOTUNE_KIB")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .map(|kib| kib * 1024);
    let transport = || {
        let mut t = TransportConfig::default()
            .with_max_receive_buffer_size(rwnd_kib * 1024)
            .with_max_message_size(256 * 1024);
        if bbr {
            t = t.with_congestion_control(CongestionControl::Bbr);
        }
        if let Some(ms) = rto_min {
            t = t.with_rto_min(Duration::from_millis(ms));
        }
        if let Some(initial) = rwnd_autotune {
            t = t.with_receive_window_autotune(initial);
        }
        t
    };
    let client_addr: SocketAddr = ([127, 0, 0, 1], 5000).into();
    let server_addr: SocketAddr = ([127, 0, 0, 1], 5001).into();
    let mut endpoint_config = EndpointConfig::default();
    endpoint_config.max_payload_size(rtc_sctp::max_payload_size_for_mtu(mtu));
    let endpoint_config = Arc::new(endpoint_config);
    let mut client = Node {
        endpoint: Endpoint::new(
            client_addr,
            TransportProtocol::UDP,
            endpoint_config.clone(),
            None,
        ),
        peer_addr: server_addr,
        handle: None,
        assoc: None,
        connected: false,
    };
    let mut server = Node {
        endpoint: Endpoint::new(
            server_addr,
            TransportProtocol::UDP,
            endpoint_config,
            Some(Arc::new(ServerConfig::new(transport()))),
        ),
        peer_addr: client_addr,
        handle: None,
        assoc: None,
        connected: false,
    };
    let mut now = Instant::now();
    let (ch, assoc) = client
        .endpoint
        .connect(now, ClientConfig::new(transport()), server_addr)
        .expect("connect");
    client.handle = Some(ch);
    client.assoc = Some(assoc);

    let mut to_client = VecDeque::new();
    let mut to_server = VecDeque::new();
    let total = (size_mib * (1 << 20) as f64) as u64;
    let msg = Bytes::from(vec![0x5au8; MSG_LEN]);
    let (mut sent, mut received) = (0u64, 0u64);
    let mut stream_open = false;
    let mut accepted = false;
    let mut read_buf = vec![0u8; MSG_LEN];
    let mut start = None;
    let limit = now + Duration::from_secs(3600);
    let trace: Option<Duration> = std::env::var("SCTP_WAN_TRACE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis);
    let (mut next_trace, mut traced) = (None::<Instant>, 0u64);

    // `SCTP_WAN_PRELUDE=N`: N small messages, one per round trip, before the bulk data
    // (as a file's request and data-channel open precede it in a real transfer); their
    // samples are what the controller knows of the path when the bulk starts.
    let prelude: u64 = std::env::var("SCTP_WAN_PRELUDE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    const PRELUDE_LEN: u64 = 100;
    let mut prelude_sent = 0u64;
    let total = total + prelude * PRELUDE_LEN;
    let mut sent_bulk = false;

    while received < total {
        s2c.due(now, &mut to_client);
        c2s.due(now, &mut to_server);
        if client.connected && !stream_open {
            if let Some(a) = client.assoc.as_mut() {
                a.open_stream(0, PayloadProtocolIdentifier::Binary)
                    .expect("open");
            }
            stream_open = true;
        }
        if stream_open
            && prelude_sent < prelude
            && received >= prelude_sent * PRELUDE_LEN
            && let Some(a) = client.assoc.as_mut()
        {
            let mut s = a.stream(0).expect("stream");
            s.write_sctp(
                now,
                &msg.slice(..PRELUDE_LEN as usize),
                PayloadProtocolIdentifier::Binary,
            )
            .expect("write");
            sent += PRELUDE_LEN;
            prelude_sent += 1;
        }
        if stream_open
            && prelude_sent == prelude
            && received >= prelude * PRELUDE_LEN
            && let Some(a) = client.assoc.as_mut()
        {
            if !sent_bulk {
                sent_bulk = true;
                start = Some(now);
            }
            let mut s = a.stream(0).expect("stream");
            while sent < total && s.buffered_amount().unwrap_or(usize::MAX) < send_buf_cap() {
                let n = (total - sent).min(MSG_LEN as u64) as usize;
                s.write_sctp(now, &msg.slice(..n), PayloadProtocolIdentifier::Binary)
                    .expect("write");
                sent += n as u64;
            }
        }
        client.drive(now, &mut to_client, &mut c2s);
        server.drive(now, &mut to_server, &mut s2c);
        if let Some(a) = server.assoc.as_mut() {
            if !accepted {
                accepted = a.accept_stream().is_some();
            }
            if accepted && let Ok(mut s) = a.stream(0) {
                while let Some(chunks) = s.read_sctp().unwrap_or(None) {
                    received += chunks.read(&mut read_buf).unwrap_or(0) as u64;
                }
            }
        }
        if let (Some(step), Some(t0)) = (trace, start) {
            let due = next_trace.get_or_insert(t0 + step);
            if now >= *due {
                let mut s = client
                    .assoc
                    .as_ref()
                    .map(Association::stats)
                    .unwrap_or_default();
                println!(
                    "t={:.2}s received={:.1}MiB rate={:.2}MiB/s overflow={} t3={} fast-rtx={}",
                    now.duration_since(t0).as_secs_f64(),
                    received as f64 / (1 << 20) as f64,
                    (received - traced) as f64 / (1 << 20) as f64 / step.as_secs_f64(),
                    c2s.overflow,
                    s.get_num_t3timeouts(),
                    s.get_num_fast_retrans(),
                );
                traced = received;
                *due += step;
            }
        }
        // Packets produced now are due later (delay > 0), or now with no delay.
        let next = [c2s.next(), s2c.next(), client.timeout(), server.timeout()]
            .into_iter()
            .fold(None, min_opt);
        match next {
            Some(t) if t > now => now = t,
            Some(_) => {}
            None if client.connected && !stream_open => {}
            None => panic!(
                "stalled at sent={sent} received={received} connected={}/{} assoc={}/{}",
                client.connected,
                server.connected,
                client.assoc.is_some(),
                server.assoc.is_some()
            ),
        }
        assert!(now < limit, "no progress within an hour of virtual time");
    }
    let elapsed = now.duration_since(start.unwrap_or(now)).as_secs_f64();
    let mib_s = received as f64 / (1 << 20) as f64 / elapsed;
    let link_mib_s = rate.map(|r| r / (1 << 20) as f64);
    let mut stats = client
        .assoc
        .as_ref()
        .map(Association::stats)
        .unwrap_or_default();
    println!(
        "rate={rate_mbit}Mbit rtt={rtt_ms}ms loss={loss} queue={queue_bdp}BDP mtu={mtu} \
         size={size_mib}MiB: {elapsed:.2} s, {mib_s:.2} MiB/s{} | drops: overflow {} random {} of {} | \
         datas {} t3 {} fast-rtx {} sacks {}",
        link_mib_s.map_or(String::new(), |l| format!(" ({:.2} of link)", mib_s / l)),
        c2s.overflow,
        c2s.lost,
        c2s.sent,
        stats.get_num_datas(),
        stats.get_num_t3timeouts(),
        stats.get_num_fast_retrans(),
        stats.get_num_sacks(),
    );
}
