"""A checkpoint's metadata without torch, for listing models (``cadx models``) in a fraction of torch's import time.

A checkpoint written by ``torch.save`` is a zip whose ``data.pkl`` holds the dictionary, with each tensor's bytes in
a separate entry. This unpickler reads ``data.pkl`` alone: a tensor becomes a :class:`TensorStub` that reads its
bytes only if asked (``np.asarray``), and any other class the pickle names becomes an inert stand-in. Nothing named
in the file is imported or run (unlike ``torch.load`` with ``weights_only=False``), and a tensor's shape is checked
against its stored bytes before it is read. The metadata goes through the
same :meth:`CheckpointMeta.from_dict` as :func:`cadx.engine.checkpoint.read_meta`; a file that is not such a zip
but a bare pickle (torch's format before 1.6) is read by torch instead.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cadx.engine.meta import CheckpointError, CheckpointMeta, stored_meta

if TYPE_CHECKING:  # numpy is imported only when a stored array is read: a listing reads none
    import numpy as np

_DTYPES = {"FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "LongStorage": "<i8",
           "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
           "BFloat16Storage": "<u2"}
_SAFE = {("collections", "OrderedDict"): OrderedDict, ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
         ("builtins", "slice"): slice, ("builtins", "complex"): complex}


class _StorageRef:
    def __init__(self, archive: zipfile.ZipFile, entry: str, storage_type: str) -> None:
        self.archive, self.entry, self.storage_type = archive, entry, storage_type


class TensorStub:
    """A stored tensor's shape, and its values read from the archive on first use (bf16 is widened to float32)."""

    def __init__(self, storage: _StorageRef, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                 *_rest: Any) -> None:
        self.storage, self.offset, self.shape, self.stride = storage, int(offset), tuple(size), tuple(stride)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        import numpy as np

        code = _DTYPES.get(self.storage.storage_type)
        if code is None:
            raise CheckpointError(f"cannot read a tensor stored as {self.storage.storage_type} without torch")
        flat = np.frombuffer(self.storage.archive.read(self.storage.entry), dtype=code)
        if self.storage.storage_type == "BFloat16Storage":
            flat = (flat.astype(np.uint32) << 16).view(np.float32)
        itemsize = flat.dtype.itemsize
        last = self.offset + sum((n - 1) * st for n, st in zip(self.shape, self.stride, strict=True) if n > 0)
        if min(self.stride, default=0) < 0 or self.offset < 0 or (all(self.shape) and last >= len(flat)):
            raise CheckpointError(f"a stored tensor's shape {self.shape} does not fit its {len(flat)} values")
        values = np.lib.stride_tricks.as_strided(flat[self.offset:], self.shape,
                                                 tuple(s * itemsize for s in self.stride)).copy()
        return values if dtype is None else values.astype(dtype)

    def numpy(self) -> np.ndarray:
        return self.__array__()


class _Inert(dict):
    """Stands in for any class the pickle names (optimizer states, Lightning's containers): it accepts whatever the
    pickle gives it (arguments, state, items) and does nothing."""

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        super().__init__()

    def __setstate__(self, state: Any) -> None:
        self["__state__"] = state

    def append(self, _item: Any) -> None:
        pass

    def extend(self, _items: Any) -> None:
        pass


def _parameter(data: Any, *_rest: Any) -> Any:
    return data


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: Any, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(file)
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE:
            return _SAFE[(module, name)]
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return TensorStub
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _parameter
        if module == "torch" and name.endswith("Storage"):
            return name
        return type(name, (_Inert,), {"__module__": "cadx.engine.checkpoint_peek.inert"})

    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and pid and pid[0] == "storage":
            storage_type, key = pid[1], pid[2]
            return _StorageRef(self.archive, f"{self.prefix}data/{key}", str(storage_type))
        return None


def peek_checkpoint(path: Path) -> dict[str, Any]:
    """The stored dictionary with tensors as :class:`TensorStub` (the archive stays open while they live)."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        with open(path, "rb") as file:
            legacy = file.read(1) == b"\x80"  # a bare pickle: torch's format before 1.6
        if not legacy:
            raise CheckpointError(f"{path}: not a torch checkpoint") from None
        from cadx.engine.checkpoint import read_checkpoint

        return read_checkpoint(path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc.strerror or exc})") from None
    pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise CheckpointError(f"{path}: not a torch checkpoint archive")
    prefix = pickles[0][: -len("data.pkl")]
    try:
        with archive.open(pickles[0]) as file:
            return _Unpickler(file, archive, prefix).load()
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc})") from None


def peek_meta(path: str | Path) -> CheckpointMeta:
    """A checkpoint's metadata as :func:`cadx.engine.checkpoint.read_meta` gives it, without torch (read-only use:
    its out-of-distribution arrays are :class:`TensorStub` objects, which numpy reads)."""
    return stored_meta(peek_checkpoint(Path(path)), path)
