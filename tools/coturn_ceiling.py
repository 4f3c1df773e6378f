#!/usr/bin/env python3
"""How fast can coturn forward on this machine, with no WebRTC peer in the way?

Starts a coturn `turnserver` on 127.0.0.1 (the same flags as tests/relay.rs), makes TURN
allocations with TURN REST credentials, binds channels, and then pushes datagrams of one
size through coturn at a paced offered rate from a lean sender (UDP GSO batches, about
one syscall per 32 datagrams) to a lean receiver (UDP GRO). It prints, per topology and
offered rate, what arrived and what coturn's CPU time was.

Topologies (the ones tests/relay.rs measures with real peers):
  sender    - one allocation, on the sender's side: sender -ChannelData-> coturn
              listener -> relay socket -UDP-> receiver
  recipient - one allocation, on the receiver's side: sender -UDP-> coturn relay socket
              -> listener -ChannelData-> receiver
  both      - two allocations: sender -ChannelData-> listener -> relay socket A -UDP->
              relay socket B -> listener -ChannelData-> receiver

Usage: python3 tools/coturn_ceiling.py [--seconds 3] [--size 1200] [--rates 50,100,...]
Only 127.0.0.1 is used.
"""

import argparse
import base64
import hashlib
import hmac
import multiprocessing as mp
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time

MAGIC = 0x2112A442
SECRET = "coturn-ceiling-secret"
REALM = "peershare"
UDP_SEGMENT = 103
UDP_GRO = 104
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32


# --- STUN / TURN messages (RFC 8489, RFC 8656) ------------------------------------------

def attr(kind, value):
    pad = (4 - len(value) % 4) % 4
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * pad


def xor_addr(addr):
    ip, port = addr
    raw = struct.unpack("!I", socket.inet_aton(ip))[0]
    return struct.pack("!BBHI", 0, 1, port ^ (MAGIC >> 16), raw ^ MAGIC)


def parse_xor_addr(value):
    _, _, port, raw = struct.unpack("!BBHI", value[:8])
    return socket.inet_ntoa(struct.pack("!I", raw ^ MAGIC)), port ^ (MAGIC >> 16)


def message(kind, attrs, key=None):
    tid = os.urandom(12)
    body = b"".join(attrs)
    if key is not None:
        # MESSAGE-INTEGRITY covers the header with the length including itself.
        head = struct.pack("!HHI", kind, len(body) + 24, MAGIC) + tid
        mac = hmac.new(key, head + body, hashlib.sha1).digest()
        body += attr(0x0008, mac)
    return struct.pack("!HHI", kind, len(body), MAGIC) + tid + body


def parse(data):
    kind, length, _ = struct.unpack("!HHI", data[:8])
    attrs, pos = {}, 20
    while pos + 4 <= 20 + length:
        t, n = struct.unpack("!HH", data[pos:pos + 4])
        attrs[t] = data[pos + 4:pos + 4 + n]
        pos += 4 + n + (4 - n % 4) % 4
    return kind, attrs


class TurnClient:
    """Allocate, permission and channel binding over one UDP socket."""

    def __init__(self, server, name):
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(2)
        self.username = f"{int(time.time()) + 3600}:{name}".encode()
        password = base64.b64encode(hmac.new(SECRET.encode(), self.username, hashlib.sha1).digest())
        self.key = hashlib.md5(self.username + b":" + REALM.encode() + b":" + password).digest()
        self.nonce = None

    def request(self, kind, attrs):
        for _ in range(3):
            auth = []
            key = None
            if self.nonce is not None:
                auth = [attr(0x0006, self.username), attr(0x0014, REALM.encode()), attr(0x0015, self.nonce)]
                key = self.key
            self.sock.sendto(message(kind, attrs + auth, key), self.server)
            reply, _ = self.sock.recvfrom(2048)
            rkind, rattrs = parse(reply)
            if rkind & 0x0110 == 0x0100:
                return rattrs
            if 0x0015 in rattrs:  # 401 / 438: take the nonce and retry
                self.nonce = rattrs[0x0015]
                continue
            raise RuntimeError(f"TURN request {kind:#x} failed: {rattrs.get(0x0009)!r}")
        raise RuntimeError(f"TURN request {kind:#x}: no success after retries")

    def allocate(self):
        rattrs = self.request(0x0003, [attr(0x0019, bytes([17, 0, 0, 0])), attr(0x000D, struct.pack("!I", 600))])
        return parse_xor_addr(rattrs[0x0016])

    def bind(self, channel, peer):
        self.request(0x0009, [attr(0x000C, struct.pack("!HH", channel, 0)), attr(0x0012, xor_addr(peer))])


# --- the lean sender and receiver --------------------------------------------------------

def receiver(sock, seconds, ready, result):
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
    sock.setsockopt(socket.IPPROTO_UDP, UDP_GRO, 1)
    sock.settimeout(0.5)
    buf = bytearray(1 << 16)
    total = 0
    first = last = None
    ready.set()
    deadline = time.monotonic() + seconds + 3
    while time.monotonic() < deadline:
        try:
            n = sock.recv_into(buf)
        except socket.timeout:
            if first is not None:
                break
            continue
        now = time.monotonic()
        if first is None:
            first = now
        last = now
        total += n
    result.put((total, (last or 0) - (first or 0)))


def send_paced(sock, dest, frame, rate, seconds, batch=32):
    """Send `frame` repeatedly as GSO batches at `rate` bytes/s (0 = as fast as possible)."""
    sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 16 << 20)
    sock.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, len(frame))
    sock.setblocking(True)
    burst = frame * batch
    sent = 0
    start = time.monotonic()
    end = start + seconds
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if rate and sent > rate * (now - start):
            time.sleep(max(0.0, sent / rate - (now - start)))
            continue
        try:
            sock.sendto(burst, dest)
            sent += len(burst)
        except (BlockingIOError, ConnectionRefusedError):
            pass
    return sent, time.monotonic() - start


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def udp_drops():
    with open("/proc/net/snmp") as f:
        lines = [l.split() for l in f if l.startswith("Udp:")]
    return int(dict(zip(lines[0], lines[1]))["RcvbufErrors"])


# --- coturn -------------------------------------------------------------------------------

def start_coturn():
    binary = shutil.which("turnserver")
    if binary is None:
        raise SystemExit("turnserver (Debian package coturn) is not installed")
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    tmp = tempfile.mkdtemp()
    relay_min = 40000 + port % 20000
    proc = subprocess.Popen(
        [binary, "-n", "--use-auth-secret", f"--static-auth-secret={SECRET}", f"--realm={REALM}",
         "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", f"--listening-port={port}",
         f"--min-port={relay_min}", f"--max-port={relay_min + 200}", "--allow-loopback-peers",
         "--no-tls", "--no-dtls", "--no-tcp", "--no-tcp-relay", "--no-cli", "--no-multicast-peers",
         "--log-file=stdout", "--simple-log", f"--pidfile={tmp}/turnserver.pid"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = ("127.0.0.1", port)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.2)
    for _ in range(50):
        try:
            s.sendto(message(0x0001, []), server)
            s.recvfrom(2048)
            return proc, server
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("turnserver did not come up")


def run_case(topology, server, coturn_pid, size, rate, seconds, batch):
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx_addr = rx.getsockname()
    payload = b"\x17" * size
    if topology == "sender":
        a = TurnClient(server, "sender")
        a.allocate()
        a.bind(0x4000, rx_addr)
        tx, dest, frame = a.sock, server, struct.pack("!HH", 0x4000, size) + payload
        rx_sock = rx
    elif topology == "recipient":
        b = TurnClient(server, "recipient")
        relayed_b = b.allocate()
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.bind(("127.0.0.1", 0))
        b.bind(0x4000, tx.getsockname())
        tx, dest, frame = tx, relayed_b, payload
        rx_sock = b.sock
    else:
        a = TurnClient(server, "sender")
        b = TurnClient(server, "recipient")
        relayed_a, relayed_b = a.allocate(), b.allocate()
        a.bind(0x4000, relayed_b)
        b.bind(0x4000, relayed_a)
        tx, dest, frame = a.sock, server, struct.pack("!HH", 0x4000, size) + payload
        rx_sock = b.sock
    ready, result = mp.Event(), mp.Queue()
    proc = mp.Process(target=receiver, args=(rx_sock, seconds, ready, result))
    proc.start()
    ready.wait()
    drops0, cpu0 = udp_drops(), cpu_seconds(coturn_pid)
    sent, elapsed = send_paced(tx, dest, frame, rate * (1 << 20) * len(frame) / size, seconds, batch)
    got, span = result.get()
    proc.join()
    cpu = cpu_seconds(coturn_pid) - cpu0
    drops = udp_drops() - drops0
    per_datagram = size + (4 if topology != "sender" else 0)
    delivered = got / per_datagram * size
    offered = sent / len(frame) * size
    return {
        "offered": offered / (1 << 20) / elapsed,
        "delivered": delivered / (1 << 20) / max(span, elapsed),
        "lost": 1 - delivered / offered if offered else 0,
        "coturn_cpu": cpu / elapsed,
        "drops": drops,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--size", type=int, default=1200, help="payload bytes per datagram")
    parser.add_argument("--rates", default="50,100,150,200,300,0", help="offered MiB/s of payload, 0 = unpaced")
    parser.add_argument("--topologies", default="sender,recipient,both")
    parser.add_argument("--batch", type=int, default=32, help="datagrams per GSO send (burst size)")
    args = parser.parse_args()
    coturn, server = start_coturn()
    try:
        print(f"coturn {server[0]}:{server[1]}, {os.cpu_count()} cores, payload {args.size} B, "
              f"{args.batch} datagrams per burst, {args.seconds} s per row")
        print("| topology | offered MiB/s | delivered MiB/s | lost | coturn CPU (cores) | UdpRcvbufErrors |")
        print("|---|---|---|---|---|---|")
        for topology in args.topologies.split(","):
            for rate in [float(r) for r in args.rates.split(",")]:
                r = run_case(topology, server, coturn.pid, args.size, rate, args.seconds, args.batch)
                print(f"| {topology} | {r['offered']:.1f}{'' if rate else ' (unpaced)'} | {r['delivered']:.1f} "
                      f"| {100 * r['lost']:.1f} % | {r['coturn_cpu']:.2f} | {r['drops']} |", flush=True)
    finally:
        coturn.kill()
        coturn.wait()


if __name__ == "__main__":
    main()
