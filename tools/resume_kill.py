#!/usr/bin/env python3
"""How much does a recipient receive twice when `peershare recv` is killed with SIGKILL?

For each run: `peershare send --bind 127.0.0.1 --json FILE` shares a random file;
`peershare recv --bind 127.0.0.1 --yes --json --out OUT TICKET` downloads it and is
killed with SIGKILL once its `download-progress` events reach the run's kill point; what
it printed before it died is read to the end. Then the partial job it left is looked at
(the job record's durable offset, the partial file's length), optionally a byte of the
partial file past the record is flipped (--corrupt), and the same `recv` is run again:
its `download-started` offset is where the resume starts. The file must come out
byte-identical and both commands must exit 0.

Per run it prints:
  reported  highest `download-progress` bytes the killed recv printed
  record    the job record's offset after the kill (what was fsynced)
  on_disk   the partial file's length after the kill
  resumed   the `download-started` offset of the second recv
  again     reported - resumed: bytes the recipient had reported holding and was sent
            again (what the resume loses)
  sender    the sender's `recipient-outcome` bytes_sent minus the file size: everything
            it sent twice, including what was in flight in the network at the kill

Usage: python3 tools/resume_kill.py --bin target/release/peershare [--runs 10]
           [--size 48] [--kill-at 20,23,27,30] [--limit-rate 8M] [--corrupt]
Only 127.0.0.1 is used.
"""

import argparse
import glob
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading

MIB = 1024 * 1024


def lines_of(proc, sink):
    for line in proc.stdout:
        line = line.strip()
        if line:
            sink.append(json.loads(line))


def recv_cmd(args, out, ticket):
    cmd = [args.bin, "recv", "--bind", "127.0.0.1", "--yes", "--json"]
    if args.limit_rate:
        cmd += ["--limit-rate", args.limit_rate]
    return cmd + ["--out", out, ticket]


def env():
    e = dict(os.environ)
    e.pop("PEERSHARE_SERVER", None)
    e.pop("PEERSHARE_CA", None)
    e["XDG_CONFIG_HOME"] = "/nonexistent/peershare-tools"
    return e


def one_run(args, run, kill_at):
    with tempfile.TemporaryDirectory(prefix="resume-kill-") as tmp:
        src = os.path.join(tmp, "file.bin")
        rng = random.Random(run)
        data = b"".join(rng.randbytes(MIB) for _ in range(args.size))
        with open(src, "wb") as f:
            f.write(data)
        digest = hashlib.blake2b(data).hexdigest()
        out = os.path.join(tmp, "out")
        send = subprocess.Popen(
            [args.bin, "send", "--bind", "127.0.0.1", "--json", src],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env())
        ticket = json.loads(send.stdout.readline())["ticket"]
        sent_events = []
        t_send = threading.Thread(target=lines_of, args=(send, sent_events), daemon=True)
        t_send.start()

        first = subprocess.Popen(recv_cmd(args, out, ticket), stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True, env=env())
        reported = 0
        for line in first.stdout:
            ev = json.loads(line)
            if ev.get("event") == "download-completed":
                raise SystemExit(f"run {run}: finished before the kill point")
            if ev.get("event") == "download-progress":
                reported = max(reported, ev["bytes"])
                if ev["bytes"] >= kill_at:
                    break
        first.send_signal(signal.SIGKILL)
        # Everything it printed before it died.
        for line in first.stdout:
            ev = json.loads(line)
            if ev.get("event") == "download-progress":
                reported = max(reported, ev["bytes"])
        first.wait()

        records = glob.glob(os.path.join(out, ".peershare-*.json"))
        parts = glob.glob(os.path.join(out, ".peershare-*.part"))
        record = json.load(open(records[0]))["offset"] if records else None
        on_disk = os.path.getsize(parts[0]) if parts else None
        if args.corrupt and parts and on_disk > record + MIB:
            with open(parts[0], "r+b") as f:
                f.seek(record + MIB + 100)
                b = f.read(1)
                f.seek(record + MIB + 100)
                f.write(bytes([b[0] ^ 0xFF]))

        second = subprocess.run(recv_cmd(args, out, ticket), capture_output=True, text=True,
                                env=env(), timeout=300)
        resumed = None
        for line in second.stdout.splitlines():
            ev = json.loads(line)
            if ev.get("event") == "download-started" and resumed is None:
                resumed = ev["offset"]
        send.wait(timeout=300)
        t_send.join()
        outcome = [e for e in sent_events if e.get("event") == "recipient-outcome"]
        sender_again = outcome[-1]["bytes_sent"] - len(data) if outcome else None
        with open(os.path.join(out, "file.bin"), "rb") as f:
            identical = hashlib.blake2b(f.read()).hexdigest() == digest
        ok = second.returncode == 0 and send.returncode == 0 and identical
        return {
            "run": run, "kill_at": kill_at, "reported": reported, "record": record,
            "on_disk": on_disk, "resumed": resumed,
            "again": None if resumed is None else reported - resumed,
            "sender": sender_again, "ok": ok,
        }


def mib(v):
    return "-" if v is None else f"{v / MIB:.2f}"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", required=True)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--size", type=int, default=48, help="MiB")
    p.add_argument("--kill-at", default="20,23,27,30", help="MiB, used in turn")
    p.add_argument("--limit-rate", default="8M", help="recv's --limit-rate ('' for none)")
    p.add_argument("--corrupt", action="store_true",
                   help="flip a byte 1 MiB + 100 past the record before resuming")
    args = p.parse_args()
    kills = [int(k) * MIB for k in args.kill_at.split(",")]
    print("| run | kill at | reported | record | on disk | resumed | again | sender | ok |")
    print("|---|---|---|---|---|---|---|---|---|")
    results = []
    for run in range(args.runs):
        r = one_run(args, run, kills[run % len(kills)])
        results.append(r)
        print(f"| {run} | {mib(r['kill_at'])} | {mib(r['reported'])} | {mib(r['record'])} | "
              f"{mib(r['on_disk'])} | {mib(r['resumed'])} | {mib(r['again'])} | "
              f"{mib(r['sender'])} | {'yes' if r['ok'] else 'NO'} |", flush=True)
    again = [r["again"] for r in results if r["again"] is not None]
    sender = [r["sender"] for r in results if r["sender"] is not None]
    if again:
        print(f"again (MiB): min {min(again) / MIB:.2f}, median "
              f"{sorted(again)[len(again) // 2] / MIB:.2f}, max {max(again) / MIB:.2f}")
    if sender:
        print(f"sender (MiB): min {min(sender) / MIB:.2f}, median "
              f"{sorted(sender)[len(sender) // 2] / MIB:.2f}, max {max(sender) / MIB:.2f}")
    if not all(r["ok"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
