"""The parent's reading of the child's frames refuses every malformed frame before doing the
work it would cost, and the limited runner stops work that runs past its limits."""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bpcheck.grade.child.wire import Frames, WireError, load_arrays, parse_header
from bpcheck.grade.sandbox import LimitExceeded, run_limited, start_limited

CORRECT = Path(__file__).resolve().parent / "grade_submissions" / "correct.py"


def npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def frame(head: bytes, body: bytes = b"") -> bytes:
    return struct.pack(">Q", len(head)) + head + struct.pack(">Q", len(body)) + body


def test_plain_arrays_of_any_dtype_and_layout_come_back_as_they_were_sent():
    a = np.arange(6.0).reshape(2, 3)
    got = load_arrays(npz(a=a, f=np.asfortranarray(a), c=a.astype(complex),
                          s=np.zeros(2, dtype=[("x", "f8")])), 100)
    assert np.array_equal(got["a"], a) and np.array_equal(got["f"], a)
    assert got["c"].dtype == np.complex128 and got["s"].dtype.names == ("x",)


def test_a_compressed_member_is_refused_before_it_is_inflated():
    buf = io.BytesIO()
    np.savez_compressed(buf, a=np.zeros(1 << 20))
    with pytest.raises(WireError, match="compressed"):
        load_arrays(buf.getvalue(), 1 << 30)


def test_a_shape_beyond_the_budget_is_refused_before_its_data_is_read():
    with pytest.raises(WireError, match="more than the test's outputs can have"):
        load_arrays(npz(a=np.zeros(11)), 10)
    assert load_arrays(npz(a=np.zeros(10)), 10)["a"].shape == (10,)


def test_a_declared_shape_larger_than_the_data_is_refused():
    raw = io.BytesIO()
    np.save(raw, np.zeros(10))
    forged = raw.getvalue().replace(b"(10,), }" + b" " * 11, b"(1000000000000,), }")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.npy", forged)
    with pytest.raises(WireError, match="elements"):
        load_arrays(buf.getvalue(), 1 << 62)


def test_object_arrays_and_non_archives_are_refused():
    with pytest.raises(WireError, match="objects"):
        load_arrays(npz(a=np.array([1, "x"], dtype=object)), 100)
    with pytest.raises(WireError, match="not an .npz"):
        load_arrays(b"PK\x03\x04garbage", 100)


@pytest.mark.parametrize("head, why", [
    (b"[" * 100_000 + b"]" * 100_000, "not JSON|nested"),
    (b'{"a": [[[[[[1]]]]]]}', "nested too deeply"),
    (b'{"n": ' + b"9" * 5000 + b"}", "not JSON"),
    (b'["not", "an object"]', "not a JSON object"),
    (b"\xff\xfe", "not JSON"),
])
def test_malformed_headers_are_refused_one_frame_at_a_time(head, why):
    with pytest.raises(WireError, match=why):
        parse_header(head)
    frames = Frames(1 << 20)
    frames.feed(frame(head) + frame(json.dumps({"kind": "done"}).encode()))
    got = list(frames.messages())
    assert isinstance(got[0][0], WireError) and got[1][0] == {"kind": "done"}


def test_header_strings_are_capped():
    head = parse_header(json.dumps({"error": "A" * 100_000}).encode())
    assert len(head["error"]) == 2000


def test_lengths_past_the_limits_break_the_stream_before_anything_is_buffered():
    frames = Frames(1 << 20)
    frames.feed(struct.pack(">Q", 1 << 40))
    with pytest.raises(WireError, match="header"):
        list(frames.messages())
    frames = Frames(1 << 20)
    frames.feed(struct.pack(">Q", 2) + b"{}" + struct.pack(">Q", 1 << 30))
    with pytest.raises(WireError, match="body"):
        list(frames.messages())
    with pytest.raises(WireError, match="more than 1 MB"):
        Frames(1 << 20).feed(b"x" * ((1 << 20) + 1))


def _sleep(seconds):
    time.sleep(seconds)
    return "woke"


def _allocate(mb):
    return len(bytearray(mb << 20))


def test_run_limited_returns_the_result_and_stops_work_past_its_limits():
    assert run_limited(_sleep, 0, seconds=30, memory_mb=256) == "woke"
    t0 = time.monotonic()
    with pytest.raises(LimitExceeded, match="more than 1 s"):
        run_limited(_sleep, 60, seconds=1, memory_mb=256)
    assert time.monotonic() - t0 < 10
    with pytest.raises(LimitExceeded, match="more than 64 MB"):
        run_limited(_allocate, 512, seconds=30, memory_mb=64)


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except FileNotFoundError:
        return False


def test_start_limited_runs_beside_the_caller_and_survives_a_childs_clean_up():
    from bpcheck.grade import sandbox

    t0 = time.monotonic()
    works = [start_limited(_sleep, 3, seconds=30, memory_mb=256) for _ in range(2)]
    assert all(w.running() for w in works)  # started, not waited for
    # the clean-up after a sandboxed child kills every other child of this process, but
    # not the grader's own checks
    other = subprocess.Popen(["sleep", "30"])
    sandbox._kill_tree(other.pid, set())
    assert other.wait(timeout=10) == -9
    assert all(_alive(w.pid) for w in works)
    assert [w.result() for w in works] == ["woke", "woke"]
    assert time.monotonic() - t0 < 5.5  # the two ran at the same time (one after the other: 6 s)
    assert not any(_alive(w.pid) for w in works) and not sandbox._limited_pids
    late = start_limited(_sleep, 60, seconds=30, memory_mb=256)
    late.cancel()  # a grading that stops early ends what it started
    assert not _alive(late.pid)
    with pytest.raises(RuntimeError, match="already taken"):
        late.result()


def test_rules_checks_start_while_the_child_runs_but_never_two_at_once(monkeypatch):
    from bpcheck.grade import grader, sandbox

    started, overlapping, during = [], [], []
    session = sandbox.run_session

    def watch_session(*args, **kwargs):
        during.append(True)
        try:
            return session(*args, **kwargs)
        finally:
            during.append(False)

    def watch_start(*args, **kwargs):
        overlapping.append(sum(w.running() for w in started))
        work = start_limited(*args, **kwargs)
        work.in_session = during[-1]
        started.append(work)
        return work

    monkeypatch.setattr(grader, "run_session", watch_session)
    monkeypatch.setattr(grader, "start_limited", watch_start)
    report = grader.grade(CORRECT, seed=1)
    assert report.score == report.max_score
    assert len(started) >= 5 and max(overlapping) == 0
    assert any(w.in_session for w in started)  # scored while the child went on


def test_a_check_still_running_after_the_child_is_finished_before_any_other_starts(
        monkeypatch):
    """After the child, the cases were scored in order: a check started while the child
    ran for a later case (the earlier ones arrived while another was running) still ran
    when the checks of those earlier cases started (seen once under load)."""
    from bpcheck.grade import grader, sandbox
    from bpcheck.grade.lecture import hw

    ex = next(e for e in hw.exercises if e.scorer.kind == "rules")
    last = f"{ex.number}.{len(ex.weights())}"
    session = sandbox.run_session
    started, overlapping, seen = [], [], []

    def only_the_last(*args, on_test=None, **kwargs):
        def on_last(test, msg):
            seen.append(test)
            if test == last:
                on_test(test, msg)
        return session(*args, on_test=on_last if on_test else None, **kwargs)

    def slowly(fn):
        def run(*args, **kwargs):
            time.sleep(1.5)  # still running when the child is done
            return fn(*args, **kwargs)
        return run

    def watch_start(fn, *args, **kwargs):
        overlapping.append(sum(w.running() for w in started))
        work = start_limited(slowly(fn) if not started else fn, *args, **kwargs)
        started.append(work)
        return work

    monkeypatch.setattr(grader, "run_session", only_the_last)
    monkeypatch.setattr(grader, "start_limited", watch_start)
    report = grader.grade(CORRECT, seed=1)
    assert last in seen  # the last case's check started while the child ran
    assert report.score == report.max_score
    assert len(started) == len(ex.weights()) and max(overlapping) == 0, overlapping


def _spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return "spun"


def test_a_limited_copy_past_its_time_ends_even_while_nobody_waits_for_it():
    work = start_limited(_spin, 600, seconds=1, memory_mb=256)
    # the grader busy elsewhere (a session still running): nobody calls result(), and the
    # copy's CPU limit (2 s of CPU) ends it by itself, however long a loaded machine takes
    # to give it that much CPU (a fixed 4 s needed half a core throughout)
    end = time.monotonic() + 60
    while work.running() and time.monotonic() < end:
        time.sleep(0.05)
    assert not work.running(), "still spinning 60 s on: no CPU limit"
    assert os.WIFSIGNALED(work.status) and os.WTERMSIG(work.status) == signal.SIGXCPU, \
        work.status  # ended by RLIMIT_CPU, not by anything this test did
    with pytest.raises(LimitExceeded, match="more than 1 s"):
        work.result()


def test_a_limited_copy_that_ended_in_time_is_read_whenever_asked():
    work = start_limited(_sleep, 0.2, seconds=1, memory_mb=256)
    time.sleep(2)  # past its deadline, but it ended long before
    assert work.result() == "woke"


def test_only_a_normal_exit_counts():
    work = start_limited(_sleep, 30, seconds=60, memory_mb=256)
    os.kill(work.pid, signal.SIGKILL)  # whatever may have been written, it did not finish
    with pytest.raises(LimitExceeded, match="killed"):
        work.result()


def _directory_entries(body: bytes) -> list:
    """Offsets of the directory entries of an archive as np.savez writes it."""
    at, out = body.find(b"PK\x01\x02"), []
    while at >= 0:
        out.append(at)
        at = body.find(b"PK\x01\x02", at + 4)
    return out


@pytest.mark.parametrize("flag", [0x01, 0x20, 0x40, 0x08])
def test_flags_that_zipfile_cannot_read_are_a_wire_error_not_a_crash(flag):
    """Encryption (0x01), patched data (0x20) and strong encryption (0x40) made zipfile raise
    RuntimeError or NotImplementedError, which reached the grader and failed the run."""
    body = bytearray(npz(loss=np.array(0.0)))
    body[_directory_entries(bytes(body))[0] + 8] |= flag
    with pytest.raises(WireError, match="not stored as np.savez stores it"):
        load_arrays(bytes(body), 100)


def _archive(directory: bytes, count: int) -> bytes:
    """``directory`` (from offset 0) and an end record saying it holds ``count`` entries."""
    return directory + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count,
                                   len(directory), 0, 0)


def test_a_directory_of_too_many_entries_is_refused_from_its_end_record_alone():
    """1.3 million entries (a zip64 count) cost the grader 27 s and 590 MB when zipfile built
    them all before the count was checked; 65535 in a plain end record, the same way."""
    entry = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0,
                        0, 0, 0, 0) + b"a"
    t0 = time.perf_counter()
    with pytest.raises(WireError, match="65535 arrays in one result"):
        load_arrays(_archive(entry * 65535, 65535), 100)
    zip64 = entry * 1000 + struct.pack("<4sLQL", b"PK\x06\x07", 0, 0, 1)  # its locator
    with pytest.raises(WireError, match="zip64"):
        load_arrays(_archive(zip64, 0xFFFF), 100)
    assert time.perf_counter() - t0 < 1


def _with_extra(body: bytes, extra: bytes) -> bytes:
    """``body`` (one member) with ``extra`` as its directory entry's extra field."""
    at = _directory_entries(body)[0]
    end = body.rfind(b"PK\x05\x06")
    name_len = struct.unpack_from("<H", body, at + 28)[0]
    entry = bytearray(body[at:at + 46 + name_len])
    struct.pack_into("<H", entry, 30, len(extra))
    directory = bytes(entry) + extra
    tail = bytearray(body[end:])
    struct.pack_into("<L", tail, 12, len(directory))
    return body[:at] + directory + bytes(tail)


def test_long_extra_fields_and_zip64_offsets_are_refused_before_they_are_decoded():
    """zipfile decodes a 64 kB extra field of 4-byte records in quadratic time (about 0.04 s
    each on Python 3.11), and a zip64 offset of 2**64 - 1 raised OverflowError."""
    body = npz(loss=np.array(0.0))
    assert load_arrays(_with_extra(body, b""), 100)["loss"] == 0.0
    with pytest.raises(WireError, match="extra field 65532 bytes"):
        load_arrays(_with_extra(body, b"\x99\x99\x00\x00" * 16383), 100)
    zip64 = struct.pack("<HHQQQ", 1, 24, 8, 8, (1 << 64) - 1)
    got = _with_extra(body, zip64)
    at = _directory_entries(got)[0]
    got = got[:at + 42] + struct.pack("<L", 0xFFFFFFFF) + got[at + 46:]
    with pytest.raises(WireError, match="not where np.savez puts it"):
        load_arrays(got, 100)


def test_members_that_share_their_data_are_refused():
    """512 directory entries on one 64 MB member would have been 32 GB of copies: each member's
    data must follow the previous one's."""
    body = npz(a=np.zeros(3), b=np.ones(3))
    first, second = _directory_entries(body)
    forged = bytearray(body)
    forged[second + 42:second + 46] = body[first + 42:first + 46]  # b's entry points at a
    with pytest.raises(WireError, match="not where np.savez puts it"):
        load_arrays(bytes(forged), 100)


def test_a_damaged_member_or_a_repeated_name_is_refused():
    body = bytearray(npz(a=np.zeros(3)))
    body[body.find(b"\x93NUMPY") + 100] ^= 1  # a data byte: the CRC no longer matches
    with pytest.raises(WireError, match="CRC"):
        load_arrays(bytes(body), 100)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        zf.writestr("a.npy", npz_member(np.zeros(1)))
        zf.writestr("a.npy", npz_member(np.ones(1)))
    with pytest.raises(WireError, match="twice"):
        load_arrays(buf.getvalue(), 100)


def npz_member(a) -> bytes:
    raw = io.BytesIO()
    np.save(raw, a)
    return raw.getvalue()


def test_no_change_of_a_few_bytes_makes_the_reader_raise_anything_but_a_wire_error():
    """Every byte of a result is the submission's to choose: the reader answers with arrays
    or a WireError, never another exception."""
    rng = np.random.default_rng(0)
    good = npz(a=np.arange(6.0).reshape(2, 3), loss=np.array(1.5), s=np.zeros(2, dtype=[("x", "<f4")]))
    outcomes = {"arrays": 0, "WireError": 0}
    for _ in range(3000):
        body = bytearray(good)
        for at in rng.integers(0, len(body), rng.integers(1, 6)):
            body[at] = rng.integers(0, 256)
        if rng.random() < 0.2:
            cut = rng.integers(0, len(body))
            body = body[:cut] if rng.random() < 0.5 else body[cut:]
        try:
            load_arrays(bytes(body), 1000)
            outcomes["arrays"] += 1
        except WireError:
            outcomes["WireError"] += 1
    assert outcomes["arrays"] > 0 and outcomes["WireError"] > 1000, outcomes


def _npy_with_header(header: str, data: bytes = b"") -> bytes:
    text = header.encode("latin1")
    text += b" " * (-(10 + len(text) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + data


def _stored(members) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, raw in members:
            zf.writestr(name, raw)
    return buf.getvalue()


def test_headers_np_save_never_writes_are_refused_without_numpys_python_2_pass():
    """NumPy's reader sends a header it cannot parse through a tokenizer pass meant for
    Python 2 files (18 ms a member): 512 such members cost the grader 9 s a frame."""
    fields = "[" + ",".join(f"('{i}','b',(1L,))" for i in range(40)) + "]"
    py2 = "{'descr': " + fields + ", 'fortran_order': False, 'shape': (0L,), }"
    body = _stored([(f"{i}.npy", _npy_with_header(py2)) for i in range(512)])
    t0 = time.perf_counter()
    with pytest.raises(WireError, match="not the Python literal np.save writes"):
        load_arrays(body, 10)
    assert time.perf_counter() - t0 < 0.5
    for header, why in (("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), 'x': 1}",
                         "not the dictionary"),
                        ("{'descr': '<f8', 'fortran_order': 0, 'shape': (2,)}", "shape or order"),
                        ("{'descr': '<f8', 'fortran_order': False, 'shape': (2.0,)}",
                         "shape or order"),
                        ("{'descr': '<f8', 'fortran_order': False, 'shape': (" + "1," * 600 + ")}",
                         "a header of")):
        with pytest.raises(WireError, match=why):
            load_arrays(_stored([("a.npy", _npy_with_header(header, bytes(16)))]), 100)
    ok = _npy_with_header("{'descr': '<f8', 'fortran_order': True, 'shape': (2, 1), }",
                          np.arange(2.0).tobytes())
    assert load_arrays(_stored([("a.npy", ok)]), 100)["a"].tolist() == [[0.0], [1.0]]


def test_the_budget_counts_numbers_of_eight_bytes_not_records_or_strings():
    with pytest.raises(WireError, match="more than the test's outputs can have"):
        load_arrays(npz(a=np.zeros(1, dtype=[("v", "<f8", (1000,))])), 10)
    with pytest.raises(WireError, match="more than the test's outputs can have"):
        load_arrays(npz(a=np.array("x" * 1000)), 10)
    assert load_arrays(npz(a=np.zeros(10, np.float32)), 10)["a"].shape == (10,)


def test_a_member_whose_own_header_says_compressed_or_encrypted_is_refused():
    body = bytearray(npz(a=np.zeros(3)))
    body[6] |= 0x01  # the local header's flags: encrypted
    with pytest.raises(WireError, match="not where np.savez puts it"):
        load_arrays(bytes(body), 100)
    body = bytearray(npz(a=np.zeros(3)))
    body[8] = 8  # the local header's method: deflate
    with pytest.raises(WireError, match="not where np.savez puts it"):
        load_arrays(bytes(body), 100)


def test_a_flood_of_tiny_frames_breaks_the_stream_at_the_frame_count():
    """A million 18-byte frames, each parsed as a header, cost the grader 6 s per 15 MB."""
    frames = Frames(64 << 20, most=100)
    frames.feed(frame(b"{}") * 1000)
    t0 = time.perf_counter()
    with pytest.raises(WireError, match="more than 100 messages"):
        list(frames.messages())
    assert time.perf_counter() - t0 < 0.5 and frames.broken
