"""Read a PyTorch checkpoint in torch's legacy (pre-1.6, non-zip) format without torch: {name: numpy array}.

The legacy file is a sequence of pickles: a magic number, the protocol version, the writer's sys_info, the state
dict (whose tensors refer to storages by persistent id and are rebuilt by torch._utils._rebuild_tensor_v2), the
list of storage keys, and then, for each key in that order, an int64 little-endian element count followed by the
storage's raw little-endian data. A restricted unpickler stands in for the few torch callables such a state dict
names, so nothing else in the file can run code.
"""

from __future__ import annotations

import collections
import pickle
from pathlib import Path

import numpy as np

from deepflows.errors import UserError

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
PROTOCOL_VERSION = 1001
STORAGE_DTYPES = {"FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "LongStorage": "<i8",
                  "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1",
                  "BoolStorage": "?"}  # fmt: skip


class _StorageType:
    """Stands in for torch.FloatStorage etc.: only its element type matters."""

    def __init__(self, name: str):
        self.dtype = np.dtype(STORAGE_DTYPES[name])


class _Storage:
    """A storage named in the state dict, filled once the data after the pickles has been read."""

    def __init__(self, dtype: np.dtype, numel: int):
        self.dtype, self.numel, self.data = dtype, numel, None


class _Tensor:
    """A tensor awaiting its storage's data: torch._utils._rebuild_tensor_v2's arguments."""

    def __init__(self, storage: tuple[_Storage, int], offset: int, size: tuple, stride: tuple):
        self.storage, view_offset = storage
        self.offset, self.size, self.stride = view_offset + offset, size, stride

    def array(self) -> np.ndarray:
        data = self.storage.data
        if self.size and self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) >= data.size:
            raise ValueError("a tensor reaches past the end of its storage")
        strides = tuple(s * data.itemsize for s in self.stride)
        return np.lib.stride_tricks.as_strided(data[self.offset:], self.size, strides).copy()


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return _Tensor(storage, offset, tuple(size), tuple(stride))


class _Unpickler(pickle.Unpickler):
    """Resolves only an OrderedDict, the tensor rebuilder and the storage types; storages by persistent id."""

    def __init__(self, file, storages: dict[str, _Storage]):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name}")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel, *view = pid
        if kind != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id {kind!r}")
        storage = self.storages.setdefault(str(key), _Storage(storage_type.dtype, int(numel)))
        if view and view[0] is not None:  # (view key, offset, size): a slice of the storage
            return storage, int(view[0][1])
        return storage, 0


def read_torch_checkpoint(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a legacy-format state dict, by name (torch's num_batches_tracked counters included)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    storages: dict[str, _Storage] = {}
    try:
        with open(path, "rb") as f:
            if pickle.load(f) != MAGIC_NUMBER or pickle.load(f) != PROTOCOL_VERSION:
                raise ValueError("no legacy torch magic number and protocol version at its start")
            pickle.load(f)  # sys_info: byte order and type sizes of the writer, little-endian on every torch platform
            state = _Unpickler(f, storages).load()
            for key in _Unpickler(f, storages).load():
                storage = storages[str(key)]
                numel = int(np.frombuffer(f.read(8), "<i8")[0])
                data = np.frombuffer(f.read(numel * storage.dtype.itemsize), storage.dtype)
                if numel != storage.numel or data.size != numel:
                    raise ValueError(f"storage {key} holds {data.size} of {storage.numel} elements")
                storage.data = data
            return {str(name): tensor.array() for name, tensor in state.items()}
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError) as err:
        raise UserError(f"{path}: not a legacy-format PyTorch state dict ({err})") from None
