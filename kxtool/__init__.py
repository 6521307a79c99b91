"""kxtool: fast, correct tools for the text-data chores of NLP work.

The library API; every ``kxtool`` command is a thin face over one of these functions::

    from kxtool import shuffle_files
    shuffle_files(["big.txt"], "shuffled.txt", memory="1G", seed=7)

Names are imported lazily, so ``import kxtool`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from .errors import KxError  # noqa: E402

_LAZY = {
    "load_vectors": "vectors",
    "default_vectors": "vectors",
    "resolve_vectors": "vectors",
    "Vectors": "vectors",
    "shuffle_files": "shuffle",
    "ShuffleResult": "shuffle",
    "sample_files": "shuffle.sample",
    "repeat_files": "shuffle.repeat",
    "split_files": "shuffle.split",
    "shuffle_permutation": "shuffle.permutation",
    "write_permutation": "shuffle.permutation",
    "count_records": "shuffle.permutation",
    "shuffle_range": "shuffle.ranges",
    "shuffle_echo": "shuffle.ranges",
    "seed_from_file": "shuffle.ranges",
    "estimate_dim": "dim",
    "estimate_dims": "dim",
    "DimEstimate": "dim",
    "count_vocab": "dim",
    "pip_dimension": "dim",
    "PipResult": "dim",
    "Tokenizer": "text",
    "tokenize": "text",
    "wmd": "wmd",
    "wrd": "wmd",
    "wcd": "wmd",
    "rwmd": "wmd",
    "sinkhorn": "wmd",
    "text_distance": "wmd",
    "wmd_pairs": "wmd",
    "wmd_cross": "wmd",
    "wmd_search": "wmd",
    "WmdStats": "wmd",
    "topk": "knn",
    "hubness_report": "hubness",
    "HubnessReport": "hubness",
    "hubness_measures": "hubness",
    "k_occurrence": "hubness",
    "reduce_hubness": "hubness",
    "hubness_prior_sample": "hubness",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kxtool' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["KxError", "__version__", *_LAZY]
