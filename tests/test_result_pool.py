"""Large results come from a pool of memory that earlier results gave back
(bpcheck._arrays.host_buffer): reused only once nothing refers to it any more."""

import gc
import time

import numpy as np
import pytest

import bpcheck
from bpcheck import _arrays
from bpcheck._arrays import host_buffer, to_jax
from bpcheck import release_memory


@pytest.fixture(autouse=True)
def small_pool(monkeypatch):
    monkeypatch.setattr(_arrays, "POOL_MIN", 1 << 12)
    release_memory()
    yield
    release_memory()


def test_a_dropped_result_gives_its_memory_to_the_next_one():
    a = host_buffer((64, 100), np.float32)
    b = host_buffer((64, 100), np.float32)  # a is alive: memory of its own
    assert not np.shares_memory(a, b)
    where = a.ctypes.data
    del a
    c = host_buffer((60, 100), np.float32)  # fits: the block a gave back
    assert c.ctypes.data == where and c.shape == (60, 100) and c.dtype == np.float32
    assert c.ctypes.data % 64 == 0 and c.flags.writeable and c.flags.c_contiguous
    assert host_buffer((64, 100), np.float32).ctypes.data != where  # c still holds it


def test_a_view_of_a_dropped_result_keeps_its_memory_out_of_the_pool():
    a = host_buffer((64, 100), np.float32)
    a[:] = 7.0
    rows = a[10:20]
    where = a.ctypes.data
    del a
    gc.collect()
    b = host_buffer((64, 100), np.float32)
    assert b.ctypes.data != where
    b[:] = -1.0
    assert np.all(rows == 7.0)
    del b
    del rows  # a's block given back last: taken first
    assert host_buffer((64, 100), np.float32).ctypes.data == where


def test_a_jax_array_made_from_a_result_keeps_its_memory():
    pytest.importorskip("jax")
    a = host_buffer((64, 100), np.float32)
    a[:] = 3.0
    j = to_jax(a)
    where = a.ctypes.data
    assert j.unsafe_buffer_pointer() == where  # taken over, not copied
    del a
    b = host_buffer((64, 100), np.float32)
    b[:] = 0.0
    assert b.ctypes.data != where and float(j.sum()) == 3.0 * 6400
    del j
    deadline = time.monotonic() + 10
    while not any(raw.ctypes.data <= where < raw.ctypes.data + 64 for raw in _arrays._FREE):
        assert time.monotonic() < deadline, "the block did not come back after the JAX array went"
        gc.collect()  # JAX may let go of a buffer a moment after its array is deleted
        time.sleep(0.01)
    assert host_buffer((64, 100), np.float32).ctypes.data == where


def test_the_pool_keeps_at_most_its_limit_and_gives_the_rest_back(monkeypatch):
    monkeypatch.setattr(_arrays, "POOL_MAX", 3 * (64 * 100 * 4 + 64))
    blocks = [host_buffer((64, 100), np.float32) for _ in range(5)]
    del blocks
    assert len(_arrays._FREE) == 3 and _arrays._FREE_BYTES[0] == 3 * (64 * 100 * 4 + 64)
    release_memory()
    assert _arrays._FREE == [] and _arrays._FREE_BYTES[0] == 0


def test_the_pool_keeps_at_most_its_count_of_blocks_the_newest(monkeypatch):
    monkeypatch.setattr(_arrays, "POOL_BLOCKS", 2)
    blocks = [host_buffer((64, 100 + i), np.float32) for i in range(4)]
    kept = [b.ctypes.data for b in blocks[2:]]
    for i in range(4):  # given back in order, the first two pushed out by the last two
        blocks[i] = None
    assert [raw.ctypes.data + _arrays._aligned(raw) for raw in _arrays._FREE] == kept
    assert _arrays._FREE_BYTES[0] == sum(raw.nbytes for raw in _arrays._FREE)


def test_of_equal_given_back_blocks_the_last_one_is_taken_first():
    a, b = host_buffer((64, 100), np.float32), host_buffer((64, 100), np.float32)
    where_b = b.ctypes.data
    del a
    del b  # given back last: its pages the likeliest in the cache
    assert host_buffer((64, 100), np.float32).ctypes.data == where_b


def test_per_example_gradients_in_a_loop_reuse_their_memory_and_stay_right():
    rng = np.random.default_rng(0)
    params = bpcheck.init_params([5, 16, 3], seed=0)
    first = None
    for _batch in range(3):
        X = rng.standard_normal((40, 5))
        y = rng.integers(0, 3, 40)
        G = bpcheck.per_example_grads(params, X, y)
        want = np.stack([bpcheck.per_example_grads(params, X[n:n + 1], y[n:n + 1])[0]
                         for n in range(40)])
        np.testing.assert_allclose(G, want, rtol=1e-12, atol=1e-14)
        if first is None:
            first = G.ctypes.data
        else:
            assert G.ctypes.data == first  # the previous batch's memory
        del G
