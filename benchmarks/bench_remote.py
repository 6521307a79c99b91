"""Benchmark `kxtool shuffle` on S3 URLs against the same shuffle on local files.

    python benchmarks/bench_remote.py [--size 100M] [--parts 4] [--repeat 3] [--dir DIR]

Starts moto's S3 server (a Python server, ``pip install 'moto[server]'``) on a free port of
127.0.0.1, cuts a file of random printable lines of 20-200 bytes into ``--parts`` parts, puts
them in a bucket and, in interleaved rounds, runs:

- ``local``: ``kxtool shuffle part-* -o out.txt`` on the local parts;
- ``s3 -> s3``: ``kxtool shuffle 's3://bench/parts/part-*' -o s3://bench/out.txt``;
- ``transfer floor``: the bytes alone through the same server (every part read with s3fs,
  a local file of the same size uploaded), what any shuffle between URLs must move.

The S3 output is checked byte for byte against the local one. Reported: every round, the
median (headline) and the load average before and after. The server is moto, in this process:
the numbers measure kxtool's route over an S3 API, not the speed of S3.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from kxtool.textio import parse_size  # noqa: E402

KXTOOL = [sys.executable, "-m", "kxtool"]


def generate(path: str, total: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    written = 0
    with open(path, "wb") as f:
        while written < total:
            lens = rng.integers(20, 201, 200_000)
            buf = rng.integers(32, 127, int(lens.sum()), dtype=np.uint8)
            ends = np.cumsum(lens) - 1
            buf[ends] = 10
            data = buf.tobytes()[: total - written]
            data = data[: data.rfind(b"\n") + 1] or data
            f.write(data)
            written += len(data)


def cut(path: str, parts: int, directory: str) -> list[str]:
    data = open(path, "rb").read()
    names, start = [], 0
    for i in range(parts):
        end = len(data) if i == parts - 1 else data.index(b"\n", len(data) * (i + 1) // parts) + 1
        name = os.path.join(directory, f"part-{i:03d}.txt")
        with open(name, "wb") as f:
            f.write(data[start:end])
        names.append(name)
        start = end
    return names


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="100M")
    ap.add_argument("--parts", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--memory", default="512M")
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()

    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
    )
    import fsspec

    fs = fsspec.filesystem("s3")
    fs.mkdir("bench")
    work = tempfile.mkdtemp(dir=args.dir)
    try:
        size = parse_size(args.size)
        src = os.path.join(work, "all.txt")
        generate(src, size)
        parts = cut(src, args.parts, work)
        for p in parts:
            fs.put_file(p, f"bench/parts/{os.path.basename(p)}")
        local_out = os.path.join(work, "out.txt")
        common = ["--memory", args.memory, "--seed", "1"]
        commands = {
            "local": [*KXTOOL, "shuffle", *parts, "-o", local_out, *common],
            "s3 -> s3": [*KXTOOL, "shuffle", "s3://bench/parts/part-*", "-o",
                         "s3://bench/out.txt", *common],
        }

        def floor() -> None:
            for p in parts:
                fs.cat_file(f"bench/parts/{os.path.basename(p)}")
            fs.put_file(src, "bench/floor.txt")

        times: dict[str, list[float]] = {name: [] for name in [*commands, "transfer floor"]}
        load_before = os.getloadavg()
        for _ in range(args.repeat):
            for name, cmd in commands.items():
                t = time.perf_counter()
                subprocess.run(cmd, check=True)
                times[name].append(time.perf_counter() - t)
            t = time.perf_counter()
            floor()
            times["transfer floor"].append(time.perf_counter() - t)
        load_after = os.getloadavg()
        same = (
            hashlib.sha256(fs.cat_file("bench/out.txt")).hexdigest()
            == hashlib.sha256(open(local_out, "rb").read()).hexdigest()
        )
        print(f"Input: {size / 2**20:.0f} MiB in {args.parts} parts; --memory {args.memory}; "
              f"{args.repeat} interleaved rounds; load average {load_before[0]:.2f} before, "
              f"{load_after[0]:.2f} after; S3 output identical to the local one: {same}.\n")
        print("| route | median wall s | every round, s | vs local |")
        print("| --- | ---: | ---: | ---: |")
        base = statistics.median(times["local"])
        for name, ts in times.items():
            med = statistics.median(ts)
            rounds = " / ".join(f"{t:.1f}" for t in ts)
            print(f"| {name} | {med:.2f} | {rounds} | {med / base:.2f}x |")
    finally:
        server.stop()
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
