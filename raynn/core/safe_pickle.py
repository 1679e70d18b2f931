"""Pickled arrays read without running code: CIFAR-10's python batches.

``pickle.load`` calls whatever a file names, so a crafted ``data_batch_1`` could run a shell
command the moment ``raynn validate`` read it. :func:`load_arrays` admits only what numpy
arrays and plain containers are made of (numpy's array, dtype and scalar reconstruction,
``_codecs.encode`` for the latin-1 bytes of protocol-2 pickles, and the builtin containers);
any other name is refused with :class:`pickle.UnpicklingError` before it is imported.
"""

from __future__ import annotations

import codecs
import importlib.util
import pickle
from typing import IO, Any

# numpy 2 moved numpy.core to numpy._core (pickles name either, numpy.core with a warning)
_CORE = "numpy._core" if importlib.util.find_spec("numpy._core") is not None else "numpy.core"
_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    (f"{_CORE}.multiarray", "_reconstruct"),
    (f"{_CORE}.multiarray", "scalar"),
    (f"{_CORE}.numeric", "_frombuffer"),
    *(("builtins", c) for c in ("list", "tuple", "dict", "set", "frozenset", "bytearray")),
}


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    """Protocol 2's way of pickling bytes (``_codecs.encode(text, 'latin1')``), and no other."""
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"refused _codecs.encode to {encoding!r}")
    return codecs.encode(text, "latin1")


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays and plain containers, and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith(("numpy.core.", "numpy._core.")):
            module = f"{_CORE}.{module.split('.', 2)[2]}"
        elif module == "__builtin__":  # python 2's name (protocol 2 writes it too)
            module = "builtins"
        if (module, name) == ("_codecs", "encode"):
            return _latin1
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(
                f"it names {module}.{name}, which is neither a numpy array nor a plain "
                "container; refused unread"
            )
        return super().find_class(module, name)


def load_arrays(fh: IO[bytes]) -> Any:
    """Unpickle ``fh`` (a python-2 pickle's strings as bytes, as CIFAR-10's batches need),
    admitting only numpy arrays and plain containers.

    Raises:
        pickle.UnpicklingError: the file names anything else, or is not a pickle.
        EOFError: the file is truncated.
    """
    return ArrayUnpickler(fh, encoding="bytes").load()
