"""Bytes in and out, shared by every engine.

- ``-`` means stdin (inputs) or stdout (outputs).
- Inputs compressed with gzip, bzip2, xz or zstd are detected by their magic bytes and read
  transparently.
- What an output name stands for decides how it is written: a regular file atomically (a
  temporary file beside it, put in place only when everything was written), a symlink
  followed, a device or FIFO written through (see :class:`AtomicOutputs`).
- URLs (``s3://bucket/key``, ``gs://``, ``memory://``...) are read and written through fsspec
  (the ``remote`` extra); ``file://`` URLs are local paths (see :mod:`.remote`).
- Every ``OSError`` the user can act on becomes a one-line :class:`KxError` naming the file.

Modules: :mod:`.names` (messages and OS errors), :mod:`.inputs`, :mod:`.outputs`, :mod:`.sizes`,
:mod:`.remote`.
"""

from __future__ import annotations

from .inputs import (
    _sniff,  # noqa: F401  (tests)
    check_readable,
    compression_of,
    input_size,
    open_filler,
    open_input,
    read_blocks,
    stdin_as_file,
)
from .names import (
    _ALIASES,  # noqa: F401  (tests)
    STDIO,
    display_name,
    os_error,
)
from .outputs import (
    DIRECT_ALIGN,
    AtomicOutputs,
    PositionalWriter,
    atomic_output,
    check_output,
    compression_for_name,
    place_file,
    written_through,
)
from .remote import (
    expand_inputs,
    is_remote,
    is_url,
    local_path,
    open_url,
    staged_input,
)
from .sizes import (
    PREALLOCATE_MIN,
    format_size,
    free_space,
    parse_size,
    preallocate,
    temp_dir,
)

__all__ = [
    "check_readable",
    "compression_of",
    "input_size",
    "open_filler",
    "open_input",
    "read_blocks",
    "stdin_as_file",
    "STDIO",
    "display_name",
    "os_error",
    "DIRECT_ALIGN",
    "AtomicOutputs",
    "PositionalWriter",
    "atomic_output",
    "check_output",
    "compression_for_name",
    "place_file",
    "written_through",
    "expand_inputs",
    "is_remote",
    "is_url",
    "local_path",
    "open_url",
    "staged_input",
    "PREALLOCATE_MIN",
    "format_size",
    "free_space",
    "parse_size",
    "preallocate",
    "temp_dir",
]
