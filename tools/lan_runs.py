#!/usr/bin/env python3
"""Repeated peershare transfers over a 1500-byte-MTU veth pair between two namespaces.

The LAN case of `peershare-bench --refs --lan`, one tool and many runs: the sender
(`peershare send --embedded --direct-only`) in one namespace at 192.0.2.1/24, the
recipient (`peershare recv --direct-only --yes`) in the other at 192.0.2.2/24, disk to
disk, every received file compared with the source. For each run it prints the rate
(the recipient's start to its exit), the sender's T3-rtx timeouts (from its
`rtc_sctp::timeouts` log, printed on stderr: each is a stall of at least RTO.Min), the
UDP datagrams each side's kernel dropped for a full socket receive buffer, the peak RSS
of both peers (ru_maxrss) and their CPU time. Needs root (ip netns); creates and
removes its own namespaces and veth pair.

With `--bin` given more than once, the builds take turns, run by run, and each gets
its own summary: two builds compared on a machine whose load changes.

Usage: sudo python3 tools/lan_runs.py [--size 256] [--runs 8] [--bin target/release/peershare ...] [--dir DIR]
"""

import argparse
import filecmp
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

MIB = 1024 * 1024
SENDER_NS = "psl-a"
RECIPIENT_NS = "psl-b"
SENDER_IP = "192.0.2.1"
RECIPIENT_IP = "192.0.2.2"


def ip(*args, check=True):
    subprocess.run(["ip", *args], check=check, stderr=subprocess.DEVNULL)


def teardown():
    ip("netns", "del", SENDER_NS, check=False)
    ip("netns", "del", RECIPIENT_NS, check=False)


def setup():
    teardown()
    ip("netns", "add", SENDER_NS)
    ip("netns", "add", RECIPIENT_NS)
    ip("link", "add", "psl-va", "type", "veth", "peer", "name", "psl-vb")
    ip("link", "set", "psl-va", "netns", SENDER_NS)
    ip("link", "set", "psl-vb", "netns", RECIPIENT_NS)
    ip("-n", SENDER_NS, "addr", "add", f"{SENDER_IP}/24", "dev", "psl-va")
    ip("-n", RECIPIENT_NS, "addr", "add", f"{RECIPIENT_IP}/24", "dev", "psl-vb")
    for ns, dev in ((SENDER_NS, "psl-va"), (RECIPIENT_NS, "psl-vb")):
        ip("-n", ns, "link", "set", dev, "up")
        ip("-n", ns, "link", "set", "lo", "up")


def udp_rcvbuf_errors(ns):
    """The namespace's count of UDP datagrams dropped for a full socket receive buffer."""
    snmp = subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/net/snmp"], capture_output=True, text=True, check=True)
    udp = [line.split()[1:] for line in snmp.stdout.splitlines() if line.startswith("Udp:")]
    return int(udp[1][udp[0].index("RcvbufErrors")])


def spawn(ns, argv, stdout, stderr):
    env = dict(os.environ, PEERSHARE_LOG="rtc_sctp::timeouts=debug")
    # `ip netns exec` execs the program itself, so wait4 reports its usage.
    return subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=stdout, stderr=stderr, env=env)


def reap(proc):
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage


def one_run(binary, source, work):
    drops_before = (udp_rcvbuf_errors(SENDER_NS), udp_rcvbuf_errors(RECIPIENT_NS))
    out_dir = os.path.join(work, "out")
    os.makedirs(out_dir, exist_ok=True)
    send_out = open(os.path.join(work, "send.json"), "w+")
    send_err = open(os.path.join(work, "send.err"), "w+")
    sender = spawn(
        SENDER_NS,
        [binary, "send", "--embedded", "--direct-only", "--json", "--bind", SENDER_IP, source],
        send_out,
        send_err,
    )
    ticket = None
    deadline = time.monotonic() + 20
    while ticket is None and time.monotonic() < deadline:
        send_out.seek(0)
        m = re.search(r'"ticket":"([^"]+)"', send_out.read())
        if m:
            ticket = m.group(1)
        else:
            time.sleep(0.05)
    if ticket is None:
        sender.kill()
        reap(sender)
        sys.exit("the sender printed no ticket")
    start = time.monotonic()
    recipient = spawn(
        RECIPIENT_NS,
        [binary, "recv", "--direct-only", "--yes", "--json", "--bind", RECIPIENT_IP, "--out", out_dir, ticket],
        subprocess.DEVNULL,
        subprocess.DEVNULL,
    )
    recv_usage = reap(recipient)
    elapsed = time.monotonic() - start
    send_usage = reap(sender)
    received = os.path.join(out_dir, os.path.basename(source))
    same = recipient.returncode == 0 and os.path.exists(received) and filecmp.cmp(source, received, shallow=False)
    send_err.seek(0)
    t3_lines = [line for line in send_err.read().splitlines() if "T3-rtx timeout" in line]
    if os.path.exists(received):
        os.remove(received)
    drops = (
        udp_rcvbuf_errors(SENDER_NS) - drops_before[0],
        udp_rcvbuf_errors(RECIPIENT_NS) - drops_before[1],
    )
    return {
        "drops": drops,
        "ok": same,
        "rate": os.path.getsize(source) / MIB / elapsed,
        "t3": len(t3_lines),
        "t3_lines": t3_lines,
        "rss_send": send_usage.ru_maxrss / 1024,
        "rss_recv": recv_usage.ru_maxrss / 1024,
        "cpu_send": send_usage.ru_utime + send_usage.ru_stime,
        "cpu_recv": recv_usage.ru_utime + recv_usage.ru_stime,
    }


def summary(label, size, runs):
    rates = [r["rate"] for r in runs]
    send = [r["rss_send"] for r in runs]
    recv = [r["rss_recv"] for r in runs]
    return (
        f"{label}{len(runs)} runs of {size} MiB: {sum(r['ok'] for r in runs)} verified; "
        f"{sum(r['t3'] > 0 for r in runs)} with a T3-rtx timeout; "
        f"MiB/s {min(rates):.1f}–{max(rates):.1f} (median {statistics.median(rates):.1f}); "
        f"peak RSS sender {min(send):.1f}–{max(send):.1f} MiB (median {statistics.median(send):.1f}), "
        f"recipient {min(recv):.1f}–{max(recv):.1f} MiB (median {statistics.median(recv):.1f})"
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256, help="MiB per transfer")
    p.add_argument("--runs", type=int, default=8, help="runs per build")
    p.add_argument(
        "--bin",
        action="append",
        help="the peershare binary (default target/release/peershare); given more than once, the builds take turns",
    )
    p.add_argument("--dir", default=None, help="where the files go (default: a fresh temporary directory)")
    args = p.parse_args()
    binaries = [os.path.abspath(b) for b in (args.bin or ["target/release/peershare"])]
    several = len(binaries) > 1
    runs = {b: [] for b in binaries}
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="lan-runs-") as work:
        source = os.path.join(work, f"src-{args.size}.bin")
        with open(source, "wb") as f:
            for _ in range(args.size):
                f.write(os.urandom(MIB))
        setup()
        try:
            print(
                ("| build " if several else "")
                + "| run | verified | MiB/s | T3-rtx timeouts | UDP receive-buffer drops sender / recipient "
                "| peak RSS sender | peak RSS recipient | CPU s sender | CPU s recipient |"
            )
            print("|---" * (10 if several else 9) + "|")
            for i in range(args.runs):
                for binary in binaries:
                    r = one_run(binary, source, work)
                    runs[binary].append(r)
                    print(
                        (f"| {binary} " if several else "")
                        + f"| {i + 1} | {'yes' if r['ok'] else 'NO'} | {r['rate']:.1f} | {r['t3']} | "
                        f"{r['drops'][0]} / {r['drops'][1]} | "
                        f"{r['rss_send']:.1f} MiB | {r['rss_recv']:.1f} MiB | {r['cpu_send']:.2f} | {r['cpu_recv']:.2f} |",
                        flush=True,
                    )
                    for line in r["t3_lines"]:
                        print(f"  {line}", file=sys.stderr)
        finally:
            teardown()
    print()
    for binary in binaries:
        print(summary(f"{binary}: " if several else "", args.size, runs[binary]))
    return 0 if all(r["ok"] for rs in runs.values() for r in rs) else 1


if __name__ == "__main__":
    sys.exit(main())
