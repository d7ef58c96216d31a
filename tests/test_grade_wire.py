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
    works = [start_limited(_sleep, 1, seconds=30, memory_mb=256) for _ in range(2)]
    assert time.monotonic() - t0 < 1  # started, not waited for
    # the clean-up after a sandboxed child kills every other child of this process, but
    # not the grader's own checks
    other = subprocess.Popen(["sleep", "30"])
    sandbox._kill_tree(other.pid, set())
    assert other.wait(timeout=10) == -9
    assert all(_alive(w.pid) for w in works)
    assert [w.result() for w in works] == ["woke", "woke"]
    assert time.monotonic() - t0 < 1.9  # the two ran at the same time
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


def _spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return "spun"


def test_a_limited_copy_past_its_time_ends_even_while_nobody_waits_for_it():
    work = start_limited(_spin, 60, seconds=1, memory_mb=256)
    time.sleep(4)  # the grader busy elsewhere (a session still running)
    assert not work.running()  # its CPU limit ended it
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
