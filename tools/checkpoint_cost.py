#!/usr/bin/env python3
"""What one resume checkpoint costs on this disk, taken as peershare takes it.

Writes a file with O_DIRECT in 1 MiB writes (as the recipient's partial-file writer does)
and after every STEP MiB takes one checkpoint: fdatasync of the file, then a small JSON
record written to a temporary file, fsynced, renamed over the record, and the directory
fsynced (src/transfer/checkpoint.rs, src/store.rs). Prints the checkpoints' median, p90
and maximum time, and the write rate with the checkpoints taken inline.

Usage: python3 tools/checkpoint_cost.py [--dir DIR] [--step 1] [--count 200]
"""

import argparse
import json
import mmap
import os
import statistics
import tempfile
import time

MIB = 1024 * 1024


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", default=None, help="where to write (default: a fresh temporary directory)")
    p.add_argument("--step", type=int, default=1, help="MiB written between two checkpoints")
    p.add_argument("--count", type=int, default=200, help="checkpoints taken")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="checkpoint-cost-") as d:
        part = os.path.join(d, "job.part")
        record = os.path.join(d, "job.json")
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
        dir_fd = os.open(d, os.O_RDONLY)
        buf = mmap.mmap(-1, MIB)  # page-aligned, as O_DIRECT needs
        buf.write(os.urandom(MIB))
        times = []
        offset = 0
        start = time.perf_counter()
        for _ in range(args.count):
            for _ in range(args.step):
                os.write(fd, buf)
                offset += MIB
            t = time.perf_counter()
            os.fdatasync(fd)
            with open(record + ".tmp", "w") as f:
                json.dump({"offset": offset}, f)
                f.flush()
                os.fsync(f.fileno())
            os.rename(record + ".tmp", record)
            os.fsync(dir_fd)
            times.append(time.perf_counter() - t)
        total = time.perf_counter() - start
        os.close(fd)
        os.close(dir_fd)
    times.sort()
    print(
        f"{args.count} checkpoints every {args.step} MiB: median "
        f"{statistics.median(times) * 1000:.2f} ms, p90 {times[int(len(times) * 0.9)] * 1000:.2f} ms, "
        f"max {times[-1] * 1000:.2f} ms; {args.count * args.step / total:.0f} MiB/s written "
        f"with the checkpoints inline"
    )


if __name__ == "__main__":
    main()
