"""Column annotations the row dataclasses share (read by :func:`raynn.runs.results.schema_of`).

No imports: the row modules that use it run in worker processes that must not load pyarrow.
"""

from __future__ import annotations

Int64 = int  # a field annotated ``Int64`` is stored as int64 (a plain ``int``: int32)

__all__ = ["Int64"]
