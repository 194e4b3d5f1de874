"""What crosses the grading sandbox's boundary: data frames, never code.

A submission runs in a sandbox (:mod:`utils.grading_sandbox`); the lab's tests
run in a trusted process (:mod:`utils.grading`) that talks to it through two
pipes. Everything the sandbox sends is **data in this format**, so that reading
it runs none of the submission's code: a JSON tree whose leaves are numbers,
strings and booleans, plus arrays as raw bytes of a fixed list of numeric
dtypes (no pickle, no ``.npy`` parser, no object arrays). JSON also launders
types: a ``str`` or ``float`` subclass with a rigged ``__eq__`` arrives as a
plain ``str`` or ``float``, a tensor subclass as a plain tensor.

Objects that are not data (the student's functions, objects, generators) stay
in the sandbox; the tree names them by a *handle*, an integer that the trusted
side wraps in a proxy (:class:`utils.grading.Remote`). A torch module or
dataset also travels by value, as ``torch.save`` bytes that the trusted side
loads with ``torch.load(weights_only=True)`` (torch's loader for untrusted
files) only if every class in it is a ``Module`` or ``Dataset`` from
``torch.nn``, ``torch.utils.data``, timm or the course package; otherwise, e.g.
for a class the notebook defines, it stays a handle.

A frame is ``<u64 header length><u64 blob length><header JSON><blob>``; the
trusted side refuses frames over its size limits before reading them.

Examples
--------
>>> import numpy as np
>>> tree, blob = encode({"n": 3, "xs": (1.5, None), "a": np.arange(3)})
>>> decode(tree, blob)
{'n': 3, 'xs': (1.5, None), 'a': array([0, 1, 2])}
"""

from __future__ import annotations

import base64
import json
import os
import select
import struct
import time
from collections.abc import Callable

__all__ = ["WireError", "Encoder", "encode", "decode", "load_torch_object", "write_frame", "read_frame"]

#: numpy dtypes that may cross the boundary (by name); everything else stays a handle.
DTYPES = ("bool", "int8", "uint8", "int16", "int32", "int64", "float16", "float32", "float64",
          "complex64", "complex128")
_MAX_DEPTH = 40
_MAX_NODES = 2_000_000
_PREFIX = struct.Struct("<QQ")


class WireError(ValueError):
    """A frame or value that does not follow the wire format."""


# -------------------------------------------------------------------- encode
class Encoder:
    """Values to one ``(tree, blob)``; objects that are not data become handles via ``handle(obj) -> int``.

    ``value(x)`` encodes ``x`` strictly; ``entry(x)`` falls back to a handle
    when ``x`` cannot be encoded (too deep, or its own code raises);
    ``finish(node)`` returns the tree and blob of everything added.
    """

    def __init__(self, handle: Callable[[object], int] | None = None):
        self.handle, self.arrays, self.chunks, self.size, self.nodes = handle, [], [], 0, 0

    def entry(self, x: object) -> object:
        marks = len(self.arrays), len(self.chunks), self.size, self.nodes
        try:
            return self.value(x)
        except Exception:
            del self.arrays[marks[0]:], self.chunks[marks[1]:]
            self.size, self.nodes = marks[2], marks[3]
            if self.handle is None:
                raise
            return {"handle": [self.handle(x), type(x).__name__]}

    def finish(self, node: object) -> tuple[dict, bytes]:
        return {"value": node, "arrays": self.arrays}, b"".join(self.chunks)

    def value(self, x: object, depth: int = 0) -> object:
        self.nodes += 1
        if depth > _MAX_DEPTH or self.nodes > _MAX_NODES:
            raise WireError("value too deeply nested or too large to export")
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        if x is Ellipsis:
            return {"ellipsis": None}
        if isinstance(x, complex):
            return {"complex": [x.real, x.imag]}
        if isinstance(x, (bytes, bytearray)):
            return {"bytes": base64.b64encode(bytes(x)).decode()}
        if isinstance(x, (list, tuple, set, frozenset)):
            kind = next(k for k in (list, tuple, set, frozenset) if isinstance(x, k)).__name__
            return {kind: [self.value(v, depth + 1) for v in x]}
        if isinstance(x, dict):
            return {"dict": [[self.value(k, depth + 1), self.value(v, depth + 1)] for k, v in x.items()]}
        array = self.array(x)
        if array is not None:
            return array
        if self.handle is None:
            raise WireError(f"a {type(x).__name__} is not data")
        saved = _torch_saved(x)
        handle = [self.handle(x), type(x).__name__]
        if saved is None:
            return {"handle": handle}
        self.chunks.append(saved)
        self.arrays.append({"dtype": "uint8", "shape": [len(saved)], "offset": self.size, "nbytes": len(saved),
                            "kind": "bytes", "torch_dtype": None})
        self.size += len(saved)
        return {"object": [len(self.arrays) - 1, *handle]}

    def array(self, x: object) -> dict | None:
        """The node of a numpy array or scalar, a torch tensor or dtype; ``None`` for anything else."""
        import sys

        np = sys.modules.get("numpy")
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(x, torch.dtype):
            return {"torch_dtype": str(x).removeprefix("torch.")}
        if torch is not None and isinstance(x, torch.Tensor):
            if x.layout != torch.strided or x.is_quantized:
                return None
            t = x.detach().cpu().resolve_conj().resolve_neg()
            as_float = t.dtype == torch.bfloat16
            return self.add(t.float().numpy() if as_float else t.numpy(), "tensor", str(t.dtype)[6:])
        if np is not None and isinstance(x, (np.ndarray, np.generic)):
            return self.add(np.asarray(x), "ndarray" if isinstance(x, np.ndarray) else "scalar", None)
        return None

    def add(self, a, kind: str, torch_dtype: str | None) -> dict | None:
        if a.dtype.name not in DTYPES:
            return None
        data = a.tobytes(order="C")
        self.arrays.append({"dtype": a.dtype.name, "shape": list(a.shape), "offset": self.size,
                            "nbytes": len(data), "kind": kind, "torch_dtype": torch_dtype})
        self.chunks.append(data)
        self.size += len(data)
        return {"array": len(self.arrays) - 1}


def _torch_saved(x: object) -> bytes | None:
    """``torch.save`` bytes of a torch module or dataset, or ``None`` (anything else, or not savable)."""
    import io
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not isinstance(x, (torch.nn.Module, torch.utils.data.Dataset)):
        return None
    buffer = io.BytesIO()
    try:
        torch.save(x, buffer)
    except Exception:  # a lambda, a local class: the object stays a handle
        return None
    return buffer.getvalue()


#: Where the classes of a module or dataset sent by value may come from.
TRUSTED_PACKAGES = ("torch.nn.modules.", "torch.utils.data.", "timm.", "utils.")


def _trusted_class(name: str):
    """The class ``module.Name`` if it is a torch Module or Dataset of a trusted package, else ``None``."""
    import importlib

    import torch

    module, _, attr = name.rpartition(".")
    if not module.startswith(TRUSTED_PACKAGES) or not attr.isidentifier():
        return None
    try:
        cls = getattr(importlib.import_module(module), attr, None)
    except ImportError:
        return None
    trusted = isinstance(cls, type) and issubclass(cls, (torch.nn.Module, torch.utils.data.Dataset))
    return cls if trusted and cls.__module__ == module else None


def load_torch_object(data: bytes):
    """A module or dataset from ``torch.save`` bytes, if every class in it is trusted; else ``None``.

    Examples
    --------
    >>> import io, torch
    >>> buffer = io.BytesIO()
    >>> torch.save(torch.nn.Linear(2, 1), buffer)
    >>> load_torch_object(buffer.getvalue())
    Linear(in_features=2, out_features=1, bias=True)
    """
    import io

    import torch
    from torch import serialization

    try:
        classes = [_trusted_class(name) for name in serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(data))]
        if not all(classes):
            return None
        with serialization.safe_globals(classes):
            return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception:  # not a checkpoint, or one torch's safe loader refuses
        return None


def encode(value: object, handle: Callable[[object], int] | None = None) -> tuple[dict, bytes]:
    """``value`` as a JSON-able tree and a blob of array bytes.

    Parameters
    ----------
    value : object
        Numbers, strings, bytes, ``None``, ``...``, lists, tuples, sets and
        dicts of them, numpy arrays and scalars, torch tensors and dtypes.
    handle : callable or None
        ``handle(obj) -> int`` names an object that is not data (the sandbox
        keeps it); ``None`` makes such an object a :class:`WireError`.

    Returns
    -------
    tree : dict
        ``{"value": node, "arrays": [array records]}``.
    blob : bytes
        The arrays' bytes, one after another.
    """
    encoder = Encoder(handle)
    return encoder.finish(encoder.value(value))


# -------------------------------------------------------------------- decode
def _array(record: object, blob: bytes | memoryview):
    """One array record of a tree, checked against the blob, as numpy (or torch)."""
    import numpy as np

    if not isinstance(record, dict) or record.get("dtype") not in DTYPES:
        raise WireError(f"bad array record {str(record)[:200]}")
    shape, offset, nbytes = record.get("shape"), record.get("offset"), record.get("nbytes")
    if not (isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape)
            and type(offset) is int and type(nbytes) is int and 0 <= offset <= offset + nbytes <= len(blob)):
        raise WireError(f"bad array record {str(record)[:200]}")
    dtype = np.dtype(record["dtype"])
    if int(np.prod(shape, dtype=object)) * dtype.itemsize != nbytes:
        raise WireError("array record's shape does not match its size")
    array = np.frombuffer(blob, dtype=dtype, count=nbytes // dtype.itemsize, offset=offset).reshape(shape).copy()
    if record.get("kind") == "bytes":
        return array.tobytes()
    if record.get("kind") == "scalar":
        return array[()]
    if record.get("kind") == "tensor":
        import torch

        tensor = torch.from_numpy(array)
        wanted = getattr(torch, str(record.get("torch_dtype")), None)
        return tensor.to(wanted) if isinstance(wanted, torch.dtype) else tensor
    return array


class _Decoder:
    def __init__(self, arrays: list, blob: bytes | memoryview, remote: Callable[[int, str], object] | None):
        self.arrays, self.blob, self.remote = arrays, blob, remote

    def value(self, node: object) -> object:
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if not isinstance(node, dict) or len(node) != 1:
            raise WireError(f"bad node {str(node)[:200]}")
        (tag, body), *_ = node.items()
        if tag in ("list", "tuple", "set", "frozenset") and isinstance(body, list):
            return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[tag](map(self.value, body))
        if tag == "dict" and isinstance(body, list) and all(isinstance(p, list) and len(p) == 2 for p in body):
            return {self.value(k): self.value(v) for k, v in body}
        if tag == "ellipsis":
            return ...
        if tag == "complex" and isinstance(body, list) and len(body) == 2:
            return complex(*(float(v) for v in body))
        if tag == "bytes" and isinstance(body, str):
            return base64.b64decode(body, validate=True)
        if tag == "array" and type(body) is int and 0 <= body < len(self.arrays):
            return _array(self.arrays[body], self.blob)
        if tag == "torch_dtype" and isinstance(body, str):
            import torch

            dtype = getattr(torch, body, None)
            if isinstance(dtype, torch.dtype):
                return dtype
        if tag == "object" and isinstance(body, list) and len(body) == 3 and type(body[0]) is int \
                and 0 <= body[0] < len(self.arrays):
            value = load_torch_object(_array(self.arrays[body[0]], self.blob))
            if value is not None:
                return value
            tag, body = "handle", body[1:]
        if tag == "handle" and isinstance(body, list) and len(body) == 2 and type(body[0]) is int \
                and self.remote is not None:
            return self.remote(body[0], str(body[1])[:80])
        raise WireError(f"bad node {str(node)[:200]}")


def decode(tree: object, blob: bytes | memoryview = b"", remote: Callable[[int, str], object] | None = None):
    """The value of a tree made by :func:`encode`, checked node by node.

    Parameters
    ----------
    tree : dict
        ``{"value": node, "arrays": [...]}``, e.g. parsed from a frame's header.
    blob : bytes
        The arrays' bytes.
    remote : callable or None
        ``remote(handle, type_name)`` makes the proxy of a handle; ``None``
        refuses handles.

    Returns
    -------
    object
        Plain Python, numpy and torch values (and proxies from ``remote``).

    Raises
    ------
    WireError
        For anything that is not a well-formed tree.
    """
    if not isinstance(tree, dict) or not isinstance(tree.get("arrays", []), list):
        raise WireError("a value frame must be a dict with 'value' and 'arrays'")
    try:
        return _Decoder(tree.get("arrays", []), blob, remote).value(tree.get("value"))
    except (TypeError, ValueError, RecursionError, OverflowError) as err:
        raise WireError(f"malformed value ({type(err).__name__}: {str(err)[:200]})") from None


# -------------------------------------------------------------------- frames
def write_frame(fd: int, header: dict, blob: bytes = b"") -> None:
    """Write one frame (a JSON header and a blob) to file descriptor ``fd``."""
    text = json.dumps(header).encode()
    data = memoryview(_PREFIX.pack(len(text), len(blob)) + text + blob)
    while data:
        data = data[os.write(fd, data):]


def _read_exactly(fd: int, n: int, deadline: float | None) -> bytes:
    parts, missing = [], n
    while missing:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError("no answer from the submission in time")
        chunk = os.read(fd, min(missing, 1 << 20))
        if not chunk:
            raise EOFError("the submission's process closed its end")
        parts.append(chunk)
        missing -= len(chunk)
    return b"".join(parts)


def read_frame(fd: int, deadline: float | None = None, max_header: int = 32 << 20,
               max_blob: int = 1 << 30) -> tuple[dict, bytes]:
    """Read one frame from ``fd``; ``TimeoutError`` past ``deadline`` (``time.monotonic``).

    Raises
    ------
    WireError
        A frame over the size limits or a header that is not a JSON object.
    EOFError
        The other end closed the pipe.
    """
    header_size, blob_size = _PREFIX.unpack(_read_exactly(fd, _PREFIX.size, deadline))
    if header_size > max_header or blob_size > max_blob:
        raise WireError(f"a frame of {header_size + blob_size:,} bytes is over the limit")
    try:
        header = json.loads(_read_exactly(fd, header_size, deadline))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise WireError(f"a frame header is not JSON ({err})") from None
    if not isinstance(header, dict):
        raise WireError("a frame header must be a JSON object")
    return header, _read_exactly(fd, blob_size, deadline)
