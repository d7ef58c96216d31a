"""The wire format between the child and the parent; standard library and NumPy only.

The child writes, on the file descriptor named in its plan, a stream of messages: an
8-byte big-endian length and a JSON header made of plain numbers and strings, then an
8-byte length and an ``.npz`` archive written with ``np.savez`` (stored, no pickles).

The parent reads them with :class:`Frames` and trusts none of it, since the submission
runs in the process that writes them and can write anything on that descriptor.  Every
bound is checked before the work it limits: the frame's lengths before it is buffered,
the header's size before it is parsed (and its nesting while it is), each archive
member's declared dtype and shape against the element budget before its data is read,
and the data's length against the declared shape.  Members must be stored, not
compressed, so nothing is inflated.  A frame that breaks a rule raises
:class:`WireError` for that frame only; :meth:`Frames.messages` goes on with the next.
"""

import ast
import io
import json
import os
import struct
import zlib

import numpy as np

HEADER_MAX = 1 << 20
"""Largest JSON header, in bytes (the child's own are under 64 kB)."""
MEMBERS_MAX = 512
"""Most arrays in one frame (exercise 3's deepest test sends 14)."""
TEXT_MAX = 2000
"""Longest string kept from a header."""


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


class WireError(ValueError):
    """One frame broke a rule of the wire format; the message says which."""


class Frames:
    """Incremental parser of the child's length-prefixed messages (the parent's side).

    ``limit``: bytes the child may send in all; a frame whose declared lengths exceed what
    is left is refused before it is buffered, and the stream is then unusable
    (:attr:`broken`); so is a stream of more than ``most`` frames (a flood of tiny frames
    cost the grader 0.4 microseconds a byte to parse, 24 s for 64 MB).  :meth:`messages`
    yields ``(header, body)`` with the body still encoded: decode it with
    :func:`load_arrays` only for a frame the parent expects.
    """

    def __init__(self, limit, most=None):
        self.buf = bytearray()
        self.limit = limit
        self.most = most  # frames in all (None: no bound), checked before a header is parsed
        self.count = 0
        self.total = 0
        self.broken = None

    def feed(self, data):
        self.total += len(data)
        if self.total > self.limit:
            self.broken = f"more than {self.limit >> 20} MB of results"
            raise WireError(self.broken)
        self.buf += data

    def messages(self):
        """``(header, body)`` per complete frame; a malformed header gives ``(WireError, body)``.

        Raises :class:`WireError` when the framing itself is broken (lengths out of bounds):
        nothing after that point can be trusted to start a frame."""
        while True:
            if len(self.buf) < 8:
                return
            (hlen,) = struct.unpack(">Q", self.buf[:8])
            if hlen > HEADER_MAX:
                self.broken = f"a result header of {hlen} bytes (at most {HEADER_MAX})"
                raise WireError(self.broken)
            if len(self.buf) < 16 + hlen:
                return
            (blen,) = struct.unpack(">Q", self.buf[8 + hlen:16 + hlen])
            if blen > self.limit:
                self.broken = f"a result body of {blen} bytes (at most {self.limit})"
                raise WireError(self.broken)
            end = 16 + hlen + blen
            if len(self.buf) < end:
                return
            self.count += 1
            if self.most is not None and self.count > self.most:
                self.broken = f"more than {self.most} messages (the tests need fewer)"
                raise WireError(self.broken)
            head = bytes(self.buf[8:8 + hlen])
            body = bytes(self.buf[16 + hlen:end])
            del self.buf[:end]
            try:
                yield parse_header(head), body
            except WireError as err:
                yield err, body


def parse_header(head: bytes) -> dict:
    """The JSON header as plain data: a dict of at most 64 keys, nested at most 4 deep, of
    strings (capped at :data:`TEXT_MAX`), numbers, booleans, ``None`` and short lists."""
    try:
        value = json.loads(head.decode("utf-8"), parse_int=_short_int)
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        raise WireError(f"a result header is not JSON ({type(err).__name__})") from None
    if not isinstance(value, dict):
        raise WireError("a result header is not a JSON object")
    return _plain(value, 0)


def _short_int(text):
    """An integer of at most 20 digits (Python 3.10 converts long ones in quadratic time)."""
    if len(text) > 20:
        raise ValueError("an integer of more than 20 digits")
    return int(text)


def _plain(value, depth):
    if isinstance(value, str):
        return value[:TEXT_MAX]
    if value is None or isinstance(value, (bool, int, float)):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 1 << 62:
            raise WireError("a result header holds an integer out of range")
        return value
    if depth >= 4:
        raise WireError("a result header is nested too deeply")
    if isinstance(value, list):
        if len(value) > 64:
            raise WireError("a result header holds a list of more than 64 items")
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, dict):
        if len(value) > 512:
            raise WireError("a result header holds more than 512 keys")
        return {str(k)[:200]: _plain(v, depth + 1) for k, v in value.items()}
    raise WireError(f"a result header holds a {type(value).__name__}")  # pragma: no cover


_END = struct.Struct("<4s4H2LH")
"""The archive's end record: signature, disk numbers, entry counts, the directory's size
and offset, the comment's length (22 bytes)."""
_ENTRY = struct.Struct("<4s6H3L5H2L")
"""A directory entry (46 bytes): signature, versions, flags, method, time, date, CRC,
sizes, the lengths of name, extra field and comment, disk, attributes, the member's offset."""
_LOCAL = struct.Struct("<4s5H3L2H")
"""A member's own header (30 bytes), before its name, extra field and data."""
EXTRA_MAX = 64
"""Longest extra field of a member (``np.savez`` writes 20 bytes, in the member's own
header only)."""
NAME_MAX = 204
"""Longest member name: a 200-character result name and ``.npy``."""


def load_arrays(body: bytes, max_elements: int) -> dict:
    """The arrays of one frame's ``.npz`` body, checked before anything is decoded.

    The archive is read here, not by :mod:`zipfile`, and must be laid out as ``np.savez``
    writes it: members, then their directory, then the end record, with no comment,
    encryption, zip64 end record or data before the first member.  It holds at most
    :data:`MEMBERS_MAX` stored (not compressed) ``.npy`` files with distinct names, short
    extra fields and intact CRCs, with no Python objects in their dtype, ``max_elements``
    elements in all, and exactly as many data bytes as their header declares.  Any dtype
    and shape within those bounds is returned as it is (the scorer says what was
    expected).  Raises :class:`WireError`, and nothing else, whatever the bytes.

    (:mod:`zipfile` builds every directory entry before a count can be checked, decodes
    extra fields in quadratic time, may follow a zip64 record to a second directory, and
    raises ``RuntimeError``, ``NotImplementedError`` or ``OverflowError`` for flags and
    offsets it does not support.)
    """
    if not body:
        return {}
    try:
        members = _members(body)
    except struct.error:
        raise WireError("the results are not an .npz archive (a record is cut short)") from None
    out, budget = {}, max_elements
    for name, data, crc in members:
        if zlib.crc32(data) != crc:
            raise WireError(f"result {name[:100]!r} is damaged (its CRC does not match)")
        try:
            array = _read_npy(data, budget)
        except WireError as err:
            raise WireError(f"result {name[:-4][:100]!r}: {err}") from None
        except Exception as err:  # whatever NumPy's header parser raises on hostile bytes
            raise WireError(f"result {name[:-4][:100]!r} could not be read "
                            f"({type(err).__name__})") from None
        budget -= array.size * -(-array.dtype.itemsize // 8)
        out[name[:-4]] = array
    return out


def _members(body: bytes) -> list:
    """``[(name, data, crc)]`` of the archive's members (``data`` a view into ``body``),
    from its directory, every length and offset checked against the body before it is
    used."""
    n = len(body)
    end = n - _END.size
    if end < 0 or body[end:end + 4] != b"PK\x05\x06":
        raise WireError("the results are not an .npz archive (no end record where np.savez "
                        "writes it)")
    _, disk, first_disk, here, count, size, offset, comment = _END.unpack_from(body, end)
    if disk or first_disk or here != count or comment or offset + size != end:
        raise WireError("the results are not an .npz archive as np.savez writes it (its end "
                        "record)")
    if end >= 20 and body[end - 20:end - 16] == b"PK\x06\x07":
        raise WireError("the results are not an .npz archive as np.savez writes it (a zip64 "
                        "end record)")
    if count > MEMBERS_MAX:
        raise WireError(f"{count} arrays in one result (at most {MEMBERS_MAX})")
    # members one after the other, in the directory's order, from the start: no byte is
    # read twice (512 entries on one 64 MB member would be 32 GB of copies and CRCs)
    members, names, pos, following = [], set(), offset, 0
    view = memoryview(body)  # each member's data a view: copied once, into its array
    for _ in range(count):
        (sig, _, _, flags, method, _, _, crc, packed, unpacked, name_len, extra_len,
         comment_len, _, _, _, at) = _ENTRY.unpack_from(body, pos)
        name = body[pos + _ENTRY.size:pos + _ENTRY.size + name_len].decode("utf-8", "replace")
        pos += _ENTRY.size + name_len + extra_len + comment_len
        if sig != b"PK\x01\x02" or pos > end:
            raise WireError("the results are not an .npz archive (a damaged directory)")
        if flags & ~0x800 or extra_len > EXTRA_MAX or comment_len:
            raise WireError(f"result {name[:100]!r} is not stored as np.savez stores it "
                            f"(flags {flags:#x}, extra field {extra_len} bytes, comment "
                            f"{comment_len} bytes)")
        if method != 0 or packed != unpacked:
            raise WireError(f"result {name[:100]!r} is compressed (only stored arrays are read)")
        if not name.endswith(".npy") or name_len > NAME_MAX:
            raise WireError(f"result member {name[:100]!r} is not an .npy array")
        if name in names:
            raise WireError(f"result {name[:100]!r} is in the archive twice")
        names.add(name)
        local = _LOCAL.unpack_from(body, at) if at == following and at + _LOCAL.size <= offset \
            else None
        start = None if local is None else at + _LOCAL.size + local[9] + local[10]
        if local is None or local[0] != b"PK\x03\x04" or local[2] & ~0x800 or local[3] or \
                local[10] > EXTRA_MAX or start + packed > offset:
            raise WireError(f"result {name[:100]!r}: its data is not where np.savez puts it "
                            f"(right after the previous member's)")
        members.append((name, view[start:start + packed], crc))
        following = start + packed
    if pos != end or following != offset:
        raise WireError("the results are not an .npz archive (a damaged directory)")
    return members


NPY_HEADER_MAX = 1024
"""Longest ``.npy`` header (``np.save`` writes 128 bytes for an array of up to 32 axes)."""
_NPY_KEYS = {"descr", "fortran_order", "shape"}


def _read_npy(data, budget):
    """The array of one member's bytes ``data`` (a view), its values copied once.  Its
    header is read here as ``np.save`` writes it, a Python literal parsed once: NumPy's own
    reader passes a header it cannot parse through a tokenizer pass for Python 2 files,
    18 ms a member (9 s a frame of 512)."""
    magic = bytes(data[:8])
    if len(magic) != 8 or magic[:6] != b"\x93NUMPY" or magic[6] not in (1, 2, 3) or magic[7]:
        raise WireError("not an .npy array (its magic string)")
    version = magic[6]
    at = 10 if version == 1 else 12  # after the header's length
    if len(data) < at:
        raise WireError("its header is cut short")
    hlen = int.from_bytes(data[8:at], "little")
    if hlen > NPY_HEADER_MAX:
        raise WireError(f"a header of {hlen} bytes (at most {NPY_HEADER_MAX})")
    raw = bytes(data[at:at + hlen])
    if len(raw) != hlen:
        raise WireError("its header is cut short")
    try:
        header = ast.literal_eval(raw.decode("utf-8" if version == 3 else "latin1"))
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        raise WireError("its header is not the Python literal np.save writes") from None
    if type(header) is not dict or set(header) != _NPY_KEYS:
        raise WireError("its header is not the dictionary np.save writes")
    shape, fortran = header["shape"], header["fortran_order"]
    if type(shape) is not tuple or not all(type(n) is int and n >= 0 for n in shape) or \
            type(fortran) is not bool:
        raise WireError("its header's shape or order is not as np.save writes them")
    dtype = np.lib.format.descr_to_dtype(header["descr"])
    if dtype.hasobject:
        raise WireError("holds Python objects (dtype object), which are never loaded")
    if len(shape) > 32:
        raise WireError(f"{len(shape)} axes")
    count = 1
    for n in shape:
        count *= n
    # the budget counts 8-byte numbers: a record of a million fields, or a string of a
    # million characters, is not one element
    if count * -(-dtype.itemsize // 8) > budget:
        raise WireError(f"{count} elements of {dtype.itemsize} bytes, more than the test's "
                        f"outputs can have ({max(budget, 0)} numbers of 8 bytes left)")
    values = data[at + hlen:]
    if len(values) != count * dtype.itemsize:
        raise WireError(f"declares {count} elements of {dtype.itemsize} bytes but holds "
                        f"{len(values)} bytes")
    array = np.frombuffer(values, dtype=dtype).copy()
    return array.reshape(shape[::-1]).T if fortran else array.reshape(shape)
