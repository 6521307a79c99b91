"""Benchmark `kxtool shuffle` against GNU shuf, cat and cp on one generated file.

    python benchmarks/bench_shuffle.py [--size 2G] [--memory 512M] [--dir DIR] [--update]

Generates (once, cached in DIR) a file of random printable lines of 20-200 bytes, then times in
one run: `cat FILE > /dev/null`, `cp FILE`, GNU `shuf FILE -o OUT` and
`kxtool shuffle FILE --memory M -o OUT` (with its default workers, and with `--jobs 1`), each
for wall time and the peak resident memory of all its processes together. Prints a
Markdown table; `--update` also writes it into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from kxtool.textio import parse_size  # noqa: E402


def generate(path: str, total: int, seed: int = 0) -> None:
    """Random printable lines of 20-200 bytes (newline included), ``total`` bytes in all."""
    rng = np.random.default_rng(seed)
    tmp = path + ".part"
    written = 0
    with open(tmp, "wb") as f:
        while written < total:
            lens = rng.integers(20, 201, 500_000)
            buf = rng.integers(32, 127, int(lens.sum()), dtype=np.uint8)
            buf[np.cumsum(lens) - 1] = 10
            data = buf.tobytes()
            if written + len(data) > total:
                data = data[: data.rfind(b"\n", 0, total - written) + 1]
                if not data:
                    break
            f.write(data)
            written += len(data)
    os.replace(tmp, path)


def count_lines(path: str) -> int:
    n = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            n += block.count(b"\n")
    return n


def _tree_rss_kib(root: int) -> int:
    """Resident memory of ``root`` and all its descendants, in KiB (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ppid = int(fields[1])
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") // 1024
            children.setdefault(ppid, []).append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


def timed(cmd: str) -> tuple[float, int, float]:
    """Wall seconds, peak resident memory (KiB) and CPU seconds (user + system) of a shell
    command and all its processes. Memory is sampled every 20 ms and summed over processes
    (pages they share count once each, so it errs high)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(["bash", "-c", cmd], stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss_kib(proc.pid))
        time.sleep(0.02)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {cmd}\n{proc.stderr.read().decode()}")
    return wall, peak, cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="2G")
    ap.add_argument("--memory", default="512M")
    ap.add_argument("--dir", default=os.path.join(ROOT, "benchmarks", "data"))
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--update", action="store_true")
    args = ap.parse_args()

    size = parse_size(args.size)
    if size >= 1 << 30:
        size = int(size / (1 << 30) * 1e9)  # "2G" means 2 GB here, as in the issue
    os.makedirs(args.dir, exist_ok=True)
    src = os.path.join(args.dir, f"lines-{size}.txt")
    if not os.path.exists(src):
        print(f"generating {src} ...", file=sys.stderr)
        generate(src, size)
    nbytes = os.path.getsize(src)
    out = os.path.join(args.dir, "out.txt")
    kxtool = shutil.which("kxtool") or f"{sys.executable} -m kxtool"
    cases = [
        ("cat > /dev/null", f"cat {src} > /dev/null"),
        ("cp", f"cp {src} {out}"),
        ("GNU shuf", f"shuf {src} -o {out}"),
        (f"kxtool shuffle --memory {args.memory}",
         f"{kxtool} shuffle {src} --memory {args.memory} --seed 1 -o {out}"),
        (f"kxtool shuffle --memory {args.memory} --jobs 1",
         f"{kxtool} shuffle {src} --memory {args.memory} --seed 1 --jobs 1 -o {out}"),
    ]
    load = os.getloadavg()[0]
    rows = []
    results: dict[str, tuple[float, int, float]] = {}
    walls: dict[str, list[float]] = {name: [] for name, _ in cases}
    # rounds: every command once per round, so that drifts in the machine's load hit all alike
    for _ in range(args.repeat):
        for name, cmd in cases:
            if os.path.exists(out):
                os.unlink(out)
            wall, rss, cpu = timed(cmd)
            walls[name].append(wall)
            best = results.get(name)
            if best is None or wall < best[0]:
                results[name] = (wall, rss, cpu)
            print(f"{name}: {wall:.2f} s, {rss / 1024:.0f} MiB, {cpu:.1f} CPU s", file=sys.stderr)
    if os.path.exists(out):
        os.unlink(out)
    shuf_wall, shuf_rss, _shuf_cpu = results["GNU shuf"]
    for name, _ in cases:
        wall, rss, cpu = results[name]
        rows.append(
            f"| {name} | {wall:.2f} | {' / '.join(f'{w:.1f}' for w in walls[name])} | "
            f"{cpu:.1f} | {nbytes / wall / 1e6:.0f} | {rss / 1024:.0f} | "
            f"{shuf_wall / wall:.2f}x | {rss / shuf_rss:.2f} |"
        )
    kx_wall, kx_rss, _kx_cpu = results[f"kxtool shuffle --memory {args.memory}"]
    verdict = (
        f"kxtool: {shuf_wall / kx_wall:.2f}x GNU shuf's throughput at "
        f"{kx_rss / shuf_rss:.2f} of its peak memory (target: >= 1.5x at <= 0.25)."
    )
    table = "\n".join(
        [
            f"File: {nbytes / 1e9:.2f} GB, {count_lines(src):,} lines of 20-200 "
            f"random printable bytes. Machine: {os.cpu_count()} cores, {platform.machine()}, "
            f"Python {platform.python_version()}; {args.repeat} rounds (each command once per "
            f"round), best round shown; load average before the run {load:.2f}. CPU is user +"
            " system seconds of all the command's processes in its best round; peak RSS is"
            " summed over them.",
            "",
            "| command | wall s | every round, s | CPU s | MB/s | peak RSS MiB | speed vs shuf |"
            " memory vs shuf |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            *rows,
            "",
            verdict,
        ]
    )
    print(table)
    if args.update:
        path = os.path.join(ROOT, "BENCHMARKS.md")
        text = open(path, encoding="utf-8").read()
        start = text.index("<!-- section:shuffle -->") + len("<!-- section:shuffle -->")
        end = text.index("<!-- /section:shuffle -->")
        command = "python benchmarks/bench_shuffle.py " + " ".join(sys.argv[1:])
        body = (
            "\n## `kxtool shuffle`\n\n"
            f"Command: `{command.strip()}` ({time.strftime('%Y-%m-%d')}).\n\n{table}\n"
        )
        with open(path, "w", encoding="utf-8") as f:
            f.write(text[:start] + body + text[end:])


if __name__ == "__main__":
    main()
