"""Benchmark `kxtool shuffle` against GNU shuf and terashuf, interleaved, with honest memory.

    python benchmarks/bench_shuffle.py [--size 2G] [--memory 512M] [--repeat 3] [--update]
                                       [--mode file|parts|small|sample] [--count N]
                                       [--terashuf] [--dir DIR] [--input FILE]

Generates (once, cached in DIR) a file of random printable lines of 20-200 bytes. Modes:

- ``file``: the file itself. Peers: `cat > /dev/null`, the I/O floor (`cp` the input to a
  temporary file and that file to the output: what any two-pass shuffle must move), GNU
  `shuf`, terashuf (``--terashuf``: built from ../shared/peers/terashuf with g++, MEMORY in
  GiB as --memory); kxtool with its default workers and with `--jobs 1` (GNU shuf uses one
  core).
- ``parts``: the file cut into 20 parts, compressed with gzip and with zstd; kxtool on the
  parts against `zcat parts | shuf` and `zstdcat parts | shuf`.
- ``small``: a 300 MB file with kxtool's default budget (in memory, where start-up counts).
- ``sample``: ``-n COUNT`` (default 1,000,000) from the file and from a pipe (``cat file |``),
  against GNU ``shuf -n`` the same two ways, `cat > /dev/null` and `cat | cat > /dev/null`
  (the file read once through a pipe); the verdict gives the throughput against ``shuf -n``
  and the time against reading the file once.

``--input FILE`` takes an existing file instead of generating one (it is only read; outputs
go under ``--dir``).

Every command runs once per round, rounds interleaved, so that drifts in the machine's load hit
all alike. Reported per command: every round's wall time, the **median** (the headline), CPU
(user + system of the whole process tree, median), and the peak memory of the whole process
tree, sampled every 0.2 s (faster sampling slows the measured process: see tools/procmem.py),
as PSS (``/proc/PID/smaps_rollup``: shared pages divided among the processes that map them)
and, for comparison, as a sum of RSS (which counts shared pages once per process). The load
average is printed before and after. ``--update`` writes the table into BENCHMARKS.md under
the mode's section.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))

from procmem import run_measured  # noqa: E402

from kxtool.textio import parse_size  # noqa: E402

PEERS = os.path.join(os.path.dirname(ROOT), "shared", "peers")


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


def _cell(text: str) -> str:
    """Text for a Markdown table cell (a shell pipe must not end the cell)."""
    return text.replace("|", "\\|")


def decimal_size(text: str) -> int:
    """``2G`` is 2 GB (10^9) here, as in the issues; a bare number is bytes."""
    t = text.strip().upper().rstrip("B")
    scale = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}.get(t[-1:], 1)
    return int(float(t[:-1] if scale > 1 else t) * scale)


def count_lines(path: str) -> int:
    n = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            n += block.count(b"\n")
    return n


def make_parts(src: str, directory: str, n: int) -> tuple[list[str], list[str]]:
    """``src`` cut into ``n`` parts of whole lines, each gzip'd and zstd'd (cached)."""
    gz = [os.path.join(directory, f"part-{j:02d}.txt.gz") for j in range(n)]
    zst = [os.path.join(directory, f"part-{j:02d}.txt.zst") for j in range(n)]
    if all(os.path.exists(p) for p in gz + zst):
        return gz, zst
    print(f"cutting {src} into {n} compressed parts ...", file=sys.stderr)
    prefix = os.path.join(directory, "part-")
    subprocess.run(["split", "-n", f"l/{n}", "-d", "-a", "2", src, prefix], check=True)
    for j in range(n):
        plain = f"{prefix}{j:02d}"
        subprocess.run(f"gzip -c {plain} > {gz[j]}.tmp && mv {gz[j]}.tmp {gz[j]}", shell=True,
                       check=True)
        subprocess.run(["zstd", "-q", "-f", plain, "-o", zst[j]], check=True)
        os.unlink(plain)
    return gz, zst


def build_terashuf(directory: str) -> str | None:
    src = os.path.join(PEERS, "terashuf", "terashuf.cc")
    exe = os.path.join(directory, "terashuf")
    if os.path.exists(exe):
        return exe
    if not os.path.exists(src) or shutil.which("g++") is None:
        print("terashuf: no source or no g++, skipped", file=sys.stderr)
        return None
    subprocess.run(["g++", "-std=c++11", "-O3", "-o", exe, src], check=True)
    return exe


def measure(cmd: str) -> tuple[float, float, int, int]:
    """Wall seconds, CPU seconds (user + system, whole tree), peak PSS and peak RSS (KiB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    m = run_measured(["bash", "-c", cmd], stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if m.returncode != 0:
        raise SystemExit(f"failed: {cmd}\n{m.stderr.decode()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return m.seconds, cpu, m.peak_pss, m.peak_rss


def cases_for(args, src: str, directory: str) -> tuple[list[tuple[str, str]], str, str]:
    """The commands of a mode, the peer the headline compares with, and the kxtool case."""
    out = os.path.join(directory, "out.txt")
    tmp = os.path.join(directory, "floor.tmp")
    kx = kx_command(args)
    mem = args.memory
    if args.mode == "parts":
        gz, zst = make_parts(src, directory, args.parts)
        return (
            [
                ("zcat parts | shuf", f"zcat {' '.join(gz)} | shuf -o {out}"),
                ("zstdcat parts | shuf", f"zstdcat {' '.join(zst)} | shuf -o {out}"),
                (f"kxtool shuffle gz parts --memory {mem}",
                 f"{kx} shuffle {' '.join(gz)} --memory {mem} --seed 1 -o {out}"),
                (f"kxtool shuffle zst parts --memory {mem}",
                 f"{kx} shuffle {' '.join(zst)} --memory {mem} --seed 1 -o {out}"),
            ],
            "zcat parts | shuf",
            f"kxtool shuffle gz parts --memory {mem}",
        )
    if args.mode == "sample":
        n = args.count
        return (
            [
                ("cat > /dev/null", f"cat {src} > /dev/null"),
                # reading the file once through a pipe: what the pipe route itself costs
                ("cat | cat > /dev/null", f"cat {src} | cat > /dev/null"),
                (f"GNU shuf -n {n}", f"shuf -n {n} {src} -o {out}"),
                (f"cat | GNU shuf -n {n}", f"cat {src} | shuf -n {n} -o {out}"),
                (f"kxtool shuffle -n {n}", f"{kx} shuffle -n {n} {src} --seed 1 -o {out}"),
                (f"cat | kxtool shuffle -n {n}",
                 f"cat {src} | {kx} shuffle -n {n} --seed 1 -o {out}"),
            ],
            f"GNU shuf -n {n}",
            f"kxtool shuffle -n {n}",
        )
    if args.mode == "small":
        return (
            [
                ("cat > /dev/null", f"cat {src} > /dev/null"),
                ("GNU shuf", f"shuf {src} -o {out}"),
                ("kxtool shuffle (default budget)", f"{kx} shuffle {src} --seed 1 -o {out}"),
            ],
            "GNU shuf",
            "kxtool shuffle (default budget)",
        )
    cases = [
        ("cat > /dev/null", f"cat {src} > /dev/null"),
        ("I/O floor (cp in > tmp, cp tmp > out)", f"cp {src} {tmp} && cp {tmp} {out} && rm {tmp}"),
        ("GNU shuf", f"shuf {src} -o {out}"),
    ]
    if args.terashuf:
        exe = build_terashuf(directory)
        if exe:
            gib = parse_size(mem) / (1 << 30)
            cases.append(
                (f"terashuf MEMORY={gib:g}",
                 f"MEMORY={gib:g} TMPDIR={directory} SEED=1 {exe} < {src} > {out}")
            )
    cases += [
        (f"kxtool shuffle --memory {mem}",
         f"{kx} shuffle {src} --memory {mem} --seed 1 -o {out} -T {directory}"),
        (f"kxtool shuffle --memory {mem} --jobs 1",
         f"{kx} shuffle {src} --memory {mem} --seed 1 --jobs 1 -o {out} -T {directory}"),
    ]
    return cases, "GNU shuf", f"kxtool shuffle --memory {mem}"


def kx_command(args) -> str:
    return args.kxtool or shutil.which("kxtool") or f"{sys.executable} -m kxtool"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default=None, help="input size (default 2G; small mode: 300M)")
    ap.add_argument("--memory", default="512M")
    ap.add_argument("--mode", choices=("file", "parts", "small", "sample"), default="file")
    ap.add_argument("--count", type=int, default=1_000_000, help="-n of the sample mode")
    ap.add_argument("--input", default=None, help="an existing input file (only read)")
    ap.add_argument("--parts", type=int, default=20)
    ap.add_argument("--terashuf", action="store_true", help="also time terashuf (file mode)")
    ap.add_argument("--dir", default=os.path.join(ROOT, "benchmarks", "data"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--update", action="store_true")
    ap.add_argument(
        "--kxtool", default=None,
        help="the kxtool command to time (default: kxtool on PATH); e.g. a regular `pip install .`"
        " in a virtual environment of its own, which is byte-compiled as users have it (an"
        " editable install compiles nothing where PYTHONDONTWRITEBYTECODE is set)",
    )
    args = ap.parse_args()

    size = decimal_size(args.size or ("300M" if args.mode == "small" else "2G"))
    os.makedirs(args.dir, exist_ok=True)
    src = args.input or os.path.join(args.dir, f"lines-{size}.txt")
    if args.input:
        size = os.path.getsize(src)
    elif not os.path.exists(src):
        print(f"generating {src} ...", file=sys.stderr)
        generate(src, size)
    nbytes = os.path.getsize(src)
    directory = os.path.join(args.dir, f"{args.mode}-{size}")
    os.makedirs(directory, exist_ok=True)
    cases, peer, kxcase = cases_for(args, src, directory)
    out = os.path.join(directory, "out.txt")

    load_before = os.getloadavg()
    runs: dict[str, list[tuple[float, float, int, int]]] = {name: [] for name, _ in cases}
    for r in range(args.repeat):
        for name, cmd in cases:
            if os.path.exists(out):
                os.unlink(out)
            res = measure(cmd)
            runs[name].append(res)
            print(f"round {r + 1} {name}: {res[0]:.2f} s, {res[1]:.1f} CPU s, "
                  f"PSS {res[2] / 1024:.0f} MiB, RSS {res[3] / 1024:.0f} MiB", file=sys.stderr)
    if os.path.exists(out):
        os.unlink(out)
    load_after = os.getloadavg()

    def med(name: str, i: int) -> float:
        return statistics.median(x[i] for x in runs[name])

    rows = []
    for name, _ in cases:
        wall = med(name, 0)
        rows.append(
            f"| {_cell(name)} | **{wall:.2f}** | {' / '.join(f'{x[0]:.2f}' for x in runs[name])} | "
            f"{med(name, 1):.1f} | {nbytes / wall / 1e6:.0f} | "
            f"{max(x[2] for x in runs[name]) / 1024:.0f} | "
            f"{max(x[3] for x in runs[name]) / 1024:.0f} | {med(peer, 0) / wall:.2f}x |"
        )
    kx_wall, kx_pss = med(kxcase, 0), max(x[2] for x in runs[kxcase])
    peer_pss = max(x[2] for x in runs[peer])
    verdict = (
        f"Median: {kxcase} is {med(peer, 0) / kx_wall:.2f}x {peer}'s throughput at "
        f"{kx_pss / peer_pss:.2f} of its peak memory (PSS)."
    )
    if args.mode == "sample":
        cat = med("cat > /dev/null", 0)
        piped = med(f"cat | kxtool shuffle -n {args.count}", 0)
        shuf_piped = med(f"cat | GNU shuf -n {args.count}", 0)
        cat_piped = med("cat | cat > /dev/null", 0)
        verdict += (
            f" It takes {kx_wall / cat:.2f}x the time of cat > /dev/null; from a pipe,"
            f" {piped / cat:.2f}x that time ({piped / cat_piped:.2f}x the time of reading the"
            f" file once through the pipe, cat | cat > /dev/null) and"
            f" {shuf_piped / piped:.2f}x the throughput of cat | shuf -n."
        )
    what = {"file": "the file", "parts": f"{args.parts} gzip and zstd parts of the file",
            "small": "the file", "sample": "the file"}[args.mode]
    table = "\n".join(
        [
            f"Input: {what}; {nbytes / 1e9:.2f} GB, {count_lines(src):,} lines of 20-200 random"
            f" printable bytes. Machine: {os.cpu_count()} cores, {platform.machine()}, Python"
            f" {platform.python_version()}; kxtool is `{kx_command(args)}`."
            f" {args.repeat} interleaved rounds; load average"
            f" {load_before[0]:.2f} before, {load_after[0]:.2f} after.",
            "",
            "| command | median wall s | every round, s | CPU s (median) | MB/s (median) |"
            " peak PSS MiB | peak RSS sum MiB | speed vs " + _cell(peer) + " |",
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
        tag = f"shuffle-{args.mode}" + ("" if args.size is None else f"-{args.size}")
        begin, end = f"<!-- section:{tag} -->", f"<!-- /section:{tag} -->"
        command = "python benchmarks/bench_shuffle.py " + " ".join(sys.argv[1:])
        body = f"\nCommand: `{command.strip()}` ({time.strftime('%Y-%m-%d')}).\n\n{table}\n"
        if begin in text:
            a = text.index(begin) + len(begin)
            text = text[:a] + body + text[text.index(end):]
        else:
            text = text.rstrip("\n") + f"\n\n{begin}{body}{end}\n"
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
