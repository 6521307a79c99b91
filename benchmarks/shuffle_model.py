"""The two-pass shuffle's cost model, computed from the engine's own plan, and a check of it.

    python benchmarks/shuffle_model.py                       # the table for ARCHITECTURE.md
    python benchmarks/shuffle_model.py --check FILE --memory 8M [--jobs 2]

The model takes the input size S, the budget M, the workers J and the mean record length L
(20-200-byte lines: about 110 bytes with the newline) and asks ``kxtool.shuffle.plan`` what the
engine will do: the work unit, the pile count P, the run size and so the run count R. From those:

- bytes moved: the input read once, the runs written once and read once, the output written
  once (4 S), plus 2 S' for the piles S' that pass 2 must scatter again because they outgrew
  their worker's share of the budget (pass 2 then reads and writes them once more);
- system calls: pass 1 reads the input in blocks of half a unit and writes each run with two
  `pwrite`s (keys, then bytes) after one `posix_fallocate`; pass 2 reads every non-empty
  (run, pile) segment with two `pread`s and writes each pile with one to three `pwrite`s
  (the block-aligned middle around the page cache for outputs of 256 MiB or more);
- segments: pass 2 reads ranges of G consecutive piles from every run at once (G piles fill a
  quarter of a worker's pass-2 budget), so it reads R x P / G segments (two calls each) of
  S G / (R P) bytes; without the ranges it would be R x P segments, which grows as S^2 / M^2;
- memory: the pile index, 8 bytes per (run, pile), kept within an eighth of M by the plan;
- open files per process: its input, its run file, the other workers' run files, the output.

``--check`` runs ``kxtool shuffle FILE --memory M -o TMP --json`` under ``bash`` and reads the
process tree's I/O counters from ``/proc/<bash>/io`` (a reaped child's counters are added to its
parent's), and prints them beside the model's prediction for that file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from kxtool.shuffle import plan  # noqa: E402
from kxtool.textio import format_size, parse_size  # noqa: E402

MEAN_RECORD = 110.0


def _drain_cost(
    nbytes: float, runs: int, piles: int, b: float, mean: float, per_byte: float
) -> tuple[float, float, float, int]:
    """Reads, writes, bytes moved and segments of pass 2 over ``nbytes`` in ``runs`` runs of
    ``piles`` piles with ``b`` bytes of budget per worker, following ``output._drain``: piles
    that fit are read in ranges of consecutive piles; a pile that does not is read run by run
    (in parts of b/8), scattered again into sub-runs of its own, and drained the same way."""
    pile = nbytes / piles
    work = plan._work_memory(pile, pile / mean)
    if work <= 0.6 * b:
        alone = work > plan.GROUP_PILE_SHARE * b
        group = 1 if alone else max(1, int(plan.GROUP_SHARE * b / (pile * per_byte)))
        segments = min(runs * math.ceil(piles / group), nbytes / mean)
        return 2 * segments, piles, 2 * nbytes, int(segments)
    # every pile is split again (_drain_pile): its segments read in parts of b/8, a sub-run
    # whenever the parts' work memory reaches b/2
    segment = pile / runs
    part = max(b / 8, segment)
    sub_run = math.ceil((b / 2) / plan._work_memory(part, part / mean)) * part
    sub_runs = max(1, math.ceil(pile / sub_run))
    sub_bits = plan._resplit_bits(int(pile), int(pile / mean), int(b))
    reads, writes, moved, segments = _drain_cost(
        pile, sub_runs, 1 << sub_bits, b, mean, per_byte
    )
    return (
        piles * (2 * min(runs, pile / mean) + reads),
        piles * (2 * sub_runs + writes),
        nbytes * 2 + piles * moved,
        int(piles * (min(runs, pile / mean) + segments)),
    )


def model(total: int, budget: int, jobs: int, mean: float = MEAN_RECORD) -> dict[str, float]:
    """What the two-pass route costs for ``total`` bytes with ``budget`` and ``jobs`` workers."""
    per_byte = 1.0 + plan.RECORD_REST / mean
    wpb = plan._work_per_byte(per_byte)
    unit = plan._work_unit(budget, total, jobs)
    bits = plan._pile_bits_for(total, per_byte, unit, budget, jobs)
    piles = 1 << bits
    run_bytes = max(unit / wpb, min(plan.MAX_BLOCK, unit // 2))
    runs = math.ceil(total / run_bytes)
    index = plan._INDEX_ENTRY * runs * piles
    pile_budget = max(budget // 4, budget - index) / jobs
    reads2, writes2, moved2, segments = _drain_cost(
        total, runs, piles, pile_budget, mean, per_byte
    )
    pile = total / piles
    work = plan._work_memory(pile, pile / mean)
    group = (
        1
        if work > plan.GROUP_PILE_SHARE * pile_budget
        else max(1, int(plan.GROUP_SHARE * pile_budget / (pile * per_byte)))
    )
    block = unit // 2
    out_writes = 3 if total >= plan.DIRECT_MIN else 1
    return {
        "S": total,
        "M": budget,
        "unit": unit,
        "piles": piles,
        "group": group,
        "runs": runs,
        "segments": segments,
        "segment_bytes": moved2 / 2 / segments,
        "index": index,
        "resplit": float(work > 0.6 * pile_budget),
        "levels": moved2 / (2 * total),
        "moved": 2 * total + moved2,
        "reads": math.ceil(total / block) + reads2,
        "writes": 2 * runs + writes2 * out_writes,
        "open_files": 3 + jobs,
    }


def table(jobs: int) -> str:
    rows = [
        "| S | M | S/M | unit | piles P | piles per read G | runs R | segments R·P/G | "
        "bytes per segment | pile index | bytes moved | read calls | write calls |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    cases = [
        ("2G", "512M"), ("2G", "8M"), ("12G", "1G"), ("100G", "1G"), ("1T", "1G"),
        ("1T", "100M"), ("10T", "1G"), ("100T", "10G"),
    ]
    for s, m in cases:
        r = model(parse_size(s), parse_size(m), jobs)
        moved = f"{r['moved'] / r['S']:.0f} S"
        if r["levels"] > 1:
            moved += f" ({r['levels']:.0f} levels in pass 2)"
        rows.append(
            f"| {s} | {m} | {r['S'] / r['M']:,.0f} | {format_size(r['unit'])} | "
            f"{r['piles']:,} | {r['group']:,} | {r['runs']:,} | {r['segments']:,.0f} | "
            f"{format_size(int(r['segment_bytes']))} | {format_size(int(r['index']))} | "
            f"{moved} | {r['reads']:,.0f} | {r['writes']:,.0f} |"
        )
    return "\n".join(rows)


def check(path: str, memory: str, jobs: int) -> None:
    total = os.path.getsize(path)
    predicted = model(total, parse_size(memory), jobs)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(path))) as tmp:
        out = os.path.join(tmp, "out.txt")
        cmd = (
            f"{sys.executable} -m kxtool shuffle {path!r} --memory {memory} --jobs {jobs} "
            f"-o {out!r} --json -T {tmp!r} && cat /proc/$$/io"
        )
        done = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, check=True)
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[0])
    io = dict(line.split(": ") for line in lines[1:])
    rchar, wchar = int(io["rchar"]), int(io["wchar"])
    print(f"input {format_size(total)}, --memory {memory}, --jobs {jobs}")
    print(f"{'':24}{'model':>16}{'measured':>16}")
    print(f"{'piles':24}{predicted['piles']:>16,}{result['piles']:>16,}")
    print(f"{'runs':24}{predicted['runs']:>16,}{result['runs']:>16,}")
    print(f"{'bytes moved / S':24}{predicted['moved'] / total:>16.2f}"
          f"{(rchar + wchar) / total:>16.2f}")
    print(f"{'read calls':24}{predicted['reads']:>16,.0f}{int(io['syscr']):>16,}")
    print(f"{'write calls':24}{predicted['writes']:>16,.0f}{int(io['syscw']):>16,}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", metavar="FILE")
    ap.add_argument("--memory", default="8M")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    if args.check:
        check(args.check, args.memory, args.jobs)
    else:
        print(table(args.jobs))


if __name__ == "__main__":
    main()
