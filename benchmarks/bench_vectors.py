"""Benchmark: loading a 400k x 300 word2vec text file with kxtool and with gensim.

    python benchmarks/bench_vectors.py                 # 400,000 x 300 (about 1.1 GB of text)
    python benchmarks/bench_vectors.py --words 40000   # a quick run

Generates ``benchmarks/data/vectors-<N>x<D>.txt`` (gitignored; random words and values written
like word2vec's ``%f``, 6 decimals) once, then times in separate fresh processes:

1. kxtool first load: ``load_vectors(path)`` with an empty cache directory (parse + cache write);
2. kxtool cached load: ``load_vectors(path)`` again, plus building the word -> row dict, so the
   result is as ready to use as gensim's;
3. gensim ``KeyedVectors.load_word2vec_format(path, binary=False)``;
4. gensim's own fast path for comparison with (2): ``KeyedVectors.load(path, mmap="r")`` of a
   set saved with ``KeyedVectors.save``.

plus kxtool parsing in one process without cache (``workers=1``). Each load's word count and a
checksum of sampled rows must agree with gensim's. A second, smaller table times the one-process
parse of 20,000 x 300 files whose values are written in three styles: fixed decimals (``%.6f``,
word2vec and Tencent), GloVe-like (``%.5f`` without trailing zeros) and fastText-like (``%.5g``,
a few values with exponents). gensim is a benchmark-only peer (``pip install gensim``), never a
kxtool dependency. With ``--write`` the Markdown goes into the ``vectors`` section of
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = os.path.join(HERE, "data")


def generate(path: str, n: int, dim: int, seed: int = 0) -> None:
    """A word2vec text file: 'n dim' header, then 'word v1 ... vdim' lines, values '%.6f'."""
    rng = np.random.default_rng(seed)
    digits = np.frombuffer(b"0123456789", dtype=np.uint8)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    fill = 0  # removed after assembly
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        f.write(f"{n} {dim}\n".encode())
        step = 10000
        for s in range(0, n, step):
            r = min(step, n - s)
            # word: 3 random letters + the row number (unique), then a space
            idx = np.arange(s, s + r)
            word = np.full((r, 12), fill, dtype=np.uint8)
            word[:, :3] = letters[rng.integers(0, 26, (r, 3))]
            for k in range(8):
                word[:, 10 - k] = digits[(idx // 10**k) % 10]
            word[:, 11] = ord(" ")
            x = np.clip(rng.normal(0.0, 0.4, (r, dim)), -9.999999, 9.999999)
            q = np.rint(np.abs(x) * 1e6).astype(np.int64)
            num = np.full((r, dim, 10), fill, dtype=np.uint8)
            num[:, :, 0] = np.where((x < 0) & (q > 0), ord("-"), fill)
            num[:, :, 1] = digits[q // 1_000_000]
            num[:, :, 2] = ord(".")
            for k in range(6):
                num[:, :, 8 - k] = digits[(q // 10**k) % 10]
            num[:, :, 9] = ord(" ")
            num[:, -1, 9] = ord("\n")
            rows = np.concatenate([word, num.reshape(r, dim * 10)], axis=1).ravel()
            f.write(rows[rows != fill].tobytes())
    os.replace(tmp, path)


def generate_style(path: str, n: int, dim: int, style: str, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.4, (n, dim))
    if style == "fixed":
        fmt = lambda v: format(v, ".6f")  # noqa: E731
    elif style == "glove":
        fmt = lambda v: format(v, ".5f").rstrip("0").rstrip(".") or "0"  # noqa: E731
    else:
        x *= 0.125  # fastText-sized values, written as fastText does (5 significant digits)
        fmt = lambda v: format(v, ".5g")  # noqa: E731
    with open(path + ".part", "w") as f:
        f.write(f"{n} {dim}\n")
        for i, r in enumerate(x):
            f.write(f"w{i} " + " ".join(map(fmt, r.tolist())) + "\n")
    os.replace(path + ".part", path)


CHILD = r"""
import json, os, sys, time
import numpy as np
what, path, ref = sys.argv[1], sys.argv[2], sys.argv[3]
t = time.perf_counter()
if what.startswith("kxtool"):
    from kxtool.vectors import load_vectors
    one = what == "kxtool-1proc"
    v = load_vectors(path, cache=not one, workers=1 if one else None)
    n = len(v.index)
    words, matrix = v.words, v.matrix
elif what == "gensim-text":
    from gensim.models import KeyedVectors
    kv = KeyedVectors.load_word2vec_format(path, binary=False)
    words, matrix = kv.index_to_key, kv.vectors
    if ref != "-":
        kv.save(ref)
elif what == "gensim-native":
    from gensim.models import KeyedVectors
    kv = KeyedVectors.load(ref, mmap="r")
    words, matrix = kv.index_to_key, kv.vectors
dt = time.perf_counter() - t
check = float(np.asarray(matrix[:: max(1, len(words) // 1000)], dtype=np.float64).sum())
print(json.dumps({"seconds": dt, "words": len(words), "dim": int(matrix.shape[1]),
                  "check": check, "first": words[0], "last": words[-1]}))
"""


def child(what: str, path: str, ref: str, env: dict[str, str]) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, what, path, ref],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{what} failed:\n{out.stderr}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["cpu"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return res


def loadavg() -> float:
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except OSError:
        return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--words", type=int, default=400_000)
    ap.add_argument("--dim", type=int, default=300)
    ap.add_argument("--no-gensim", action="store_true")
    ap.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = ap.parse_args()
    os.makedirs(DATA, exist_ok=True)
    path = os.path.join(DATA, f"vectors-{args.words}x{args.dim}.txt")
    if not os.path.exists(path):
        t = time.perf_counter()
        generate(path, args.words, args.dim)
        print(f"generated {path} in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    size = os.path.getsize(path)
    cache = os.path.join(DATA, "cache")
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "KXTOOL_CACHE_DIR": cache, "PYTHONPATH": ROOT}
    res = {}
    load0 = loadavg()
    res["kxtool-1proc"] = child("kxtool-1proc", path, "-", env)
    res["kxtool-first"] = child("kxtool-first", path, "-", env)
    res["kxtool-cached"] = child("kxtool-cached", path, "-", env)
    if not args.no_gensim:
        native = os.path.join(DATA, "gensim-native.kv")
        res["gensim-text"] = child("gensim-text", path, native, env)
        res["gensim-native"] = child("gensim-native", path, native, env)
        for k in res:
            assert (
                res[k]["words"] == args.words
                and abs(res[k]["check"] - res["gensim-text"]["check"]) < 1e-3
            ), (k, res[k])
        for f in os.listdir(DATA):
            if f.startswith("gensim-native"):
                os.unlink(os.path.join(DATA, f))
    shutil.rmtree(cache, ignore_errors=True)
    load1 = loadavg()
    styles = {}
    for style in ("fixed", "glove", "exp"):
        sp = os.path.join(DATA, f"vectors-20000x300-{style}.txt")
        if not os.path.exists(sp):
            generate_style(sp, 20000, 300, style)
        styles[style] = (os.path.getsize(sp), child("kxtool-1proc", sp, "-", env))
    for k, r in res.items():
        print(f"{k:15s} {r['seconds']:8.2f}s  cpu {r['cpu']:8.2f}s", file=sys.stderr)

    g = res.get("gensim-text", {}).get("seconds")
    cpu = platform.processor() or platform.machine()
    ncpu = os.cpu_count()
    lines = [
        f"Loading a {args.words:,} x {args.dim} word2vec text file ({size / 2**30:.2f} GiB, random"
        " words, values written with 6 decimals, file in the page cache), each load in a fresh"
        f" process; {ncpu} cores ({cpu}), Python {platform.python_version()}, numpy"
        f" {np.__version__}" + (f", gensim {_version('gensim')}" if g else "") + "."
        f" The machine was shared with other work (1-minute load average {load0:.1f} at the"
        f" start, {load1:.1f} at the end), so the CPU column (user + system seconds of the"
        " process and its workers, including imports) is the steadier measure.",
        "",
        "| load | wall time | CPU time | wall time vs gensim `load_word2vec_format` |",
        "|---|---:|---:|---:|",
    ]

    def row(label: str, key: str) -> str:
        sec, cpu = res[key]["seconds"], res[key]["cpu"]
        ratio = "1.0x" if key == "gensim-text" else (f"{g / sec:.1f}x faster" if g else "-")
        return f"| {label} | {sec:.2f} s | {cpu:.2f} s | {ratio} |"

    lines.append(row("kxtool `load_vectors`, first load (parse + write cache)", "kxtool-first"))
    lines.append(
        row("kxtool `load_vectors(workers=1, cache=False)`: parse in one process", "kxtool-1proc")
    )
    lines.append(
        row("kxtool `load_vectors`, cached (memory-mapped, incl. word index)", "kxtool-cached")
    )
    if g:
        lines.append(row("gensim `KeyedVectors.load_word2vec_format`", "gensim-text"))
        lines.append(
            row(
                "gensim `KeyedVectors.load(..., mmap='r')` of its own saved format", "gensim-native"
            )
        )
    lines += [
        "",
        "One-process parse (`load_vectors(path, workers=1, cache=False)`) of 20,000 x 300 files"
        " by the style of their values, same run:",
        "",
        "| values | example | file | wall time | CPU time | CPU MB/s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    examples = {
        "fixed": "`-0.123456`",
        "glove": "`0.41`, `-0.12345`",
        "exp": "`-0.0091456`, `1.2346e-05`",
    }
    names = {
        "fixed": "fixed decimals (word2vec `%f`)",
        "glove": "GloVe-like (`%.5f`, trailing zeros cut)",
        "exp": "fastText-like (`%.5g`, some exponents)",
    }
    for style, (sz, r) in styles.items():
        lines.append(
            f"| {names[style]} | {examples[style]} | {sz / 2**20:.0f} MiB | {r['seconds']:.2f} s"
            f" | {r['cpu']:.2f} s | {sz / 2**20 / r['cpu']:.0f} |"
        )
    lines += [
        "",
        "Command: `python benchmarks/bench_vectors.py --write`"
        + (
            f" (`--words {args.words} --dim {args.dim}`)"
            if (args.words, args.dim) != (400_000, 300)
            else ""
        ),
    ]
    table = "\n".join(lines)
    print(table)
    if args.write:
        bm = os.path.join(ROOT, "BENCHMARKS.md")
        text = open(bm, encoding="utf-8").read()
        new, k = re.subn(
            r"(<!-- section:vectors -->\n).*?(<!-- /section:vectors -->)",
            lambda m: m.group(1) + "## Loading word vectors\n\n" + table + "\n" + m.group(2),
            text,
            flags=re.S,
        )
        if k != 1:
            raise SystemExit("BENCHMARKS.md has no vectors section")
        with open(bm, "w", encoding="utf-8") as f:
            f.write(new)
    return 0


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    raise SystemExit(main())
