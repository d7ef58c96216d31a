"""The wire format between the child and the parent; standard library and NumPy only.

The child writes, on the file descriptor named in its plan, a stream of messages: an
8-byte big-endian length and a JSON header made of plain numbers and strings, then an
8-byte length and an ``.npz`` archive written with ``np.savez`` (no pickles).  The parent
reads them with :class:`Frames` and trusts none of it: sizes are bounded, arrays are
loaded with ``allow_pickle=False`` and must be plain numeric arrays.
"""

import io
import json
import os
import struct

import numpy as np

HEADER_MAX = 1 << 20


def sender(channel):
    """``send(header, arrays=None)`` writing one message to the file descriptor ``channel``.

    Everything it uses is bound now, so call this before the submission runs: what the
    submission patches later (``os.write``, ``json.dumps``, ``np.savez`` ...) is not used.
    """
    _write = os.write
    _dumps = json.dumps
    _savez = np.savez
    _BytesIO = io.BytesIO
    _pack = struct.pack
    _len = len

    def send(header, arrays=None):
        buf = _BytesIO()
        if arrays:
            _savez(buf, **arrays)
        head = _dumps(header).encode()
        body = buf.getvalue()
        msg = _pack(">Q", _len(head)) + head + _pack(">Q", _len(body)) + body
        view = memoryview(msg)
        while view:
            n = _write(channel, view)
            view = view[n:]

    return send


def receiver(fd):
    """``receive() -> (header, body bytes)``: one message read from ``fd`` (blocking); a
    closed pipe reads as ``({"kind": "eof"}, b"")``.  Names bound now, as for :func:`sender`."""
    _read = os.read
    _unpack = struct.unpack
    _loads = json.loads
    _bytes = bytes
    _len = len

    def read_exactly(n):
        buf = bytearray()
        while _len(buf) < n:
            chunk = _read(fd, min(n - _len(buf), 1 << 20))
            if not chunk:
                return None
            buf += chunk
        return _bytes(buf)

    def receive():
        size = read_exactly(8)
        head = size and read_exactly(_unpack(">Q", size)[0])
        size = head is not None and read_exactly(8)
        body = size and read_exactly(_unpack(">Q", size)[0])
        if body is None or body is False:
            return {"kind": "eof"}, b""
        return _loads(head.decode()), body

    return receive


def frame(header: dict, arrays: dict | None = None) -> bytes:
    """One message as bytes (the parent's commands to the child)."""
    buf = io.BytesIO()
    if arrays:
        np.savez(buf, **arrays)
    head = json.dumps(header).encode()
    body = buf.getvalue()
    return struct.pack(">Q", len(head)) + head + struct.pack(">Q", len(body)) + body


class Frames:
    """Incremental parser of the child's length-prefixed messages (the parent's side)."""

    def __init__(self, limit):
        self.buf = bytearray()
        self.limit = limit
        self.total = 0

    def feed(self, data):
        self.total += len(data)
        if self.total > self.limit:
            raise ValueError(f"more than {self.limit >> 20} MB of results")
        self.buf += data

    def messages(self):
        while True:
            if len(self.buf) < 8:
                return
            (hlen,) = struct.unpack(">Q", self.buf[:8])
            if hlen > HEADER_MAX:
                raise ValueError("a result header is too large")
            if len(self.buf) < 16 + hlen:
                return
            (blen,) = struct.unpack(">Q", self.buf[8 + hlen:16 + hlen])
            if blen > self.limit:
                raise ValueError("a result body is too large")
            end = 16 + hlen + blen
            if len(self.buf) < end:
                return
            head = bytes(self.buf[8:8 + hlen])
            body = bytes(self.buf[16 + hlen:end])
            del self.buf[:end]
            header = json.loads(head.decode("utf-8"))
            if not isinstance(header, dict):
                raise ValueError("a result header is not an object")
            yield header, load_arrays(body)


def load_arrays(body: bytes) -> dict:
    """Plain arrays from an ``.npz``: no pickles, numeric dtypes only."""
    if not body:
        return {}
    out = {}
    with np.load(io.BytesIO(body), allow_pickle=False) as npz:
        for key in npz.files:
            arr = npz[key]
            if type(arr) is not np.ndarray or arr.dtype.kind not in "fiub":
                raise ValueError(f"result {key!r} is not a plain numeric array")
            out[key] = arr
    return out
