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


def test_a_block_given_back_while_one_is_chosen_never_shifts_the_choice():
    """A garbage collection may start at any allocation inside ``_take`` and free a result
    held in a reference cycle, whose block then comes back on the same thread (the lock is
    reentrant).  With the pool full, that dropped the oldest block: every position read
    before moved by one, and a 2.25 MB result was placed in a 1 MB block (written past its
    end: "double free or corruption").  Here a block gives another one back the moment its
    size is read for the choice, as such a collection would; the result gets the best
    fitting block, and the one given back joins the pool after the choice."""
    MB = 1 << 20
    sizes = [MB] * (_arrays.POOL_BLOCKS + 1)
    sizes[5:16] = [3 * MB] * 11  # blocks that fit the request below
    sizes[20] = 2 * MB + MB // 2  # the best fit, beside a 1 MB one
    late = np.empty(MB, np.uint8)

    class GivesBackWhenRead(np.ndarray):
        reads = 0

        @property
        def nbytes(self):
            type(self).reads += 1
            if type(self).reads == 2:  # (1: its fit is tested; 2: the choice among fits)
                _arrays._give_back(late)
            return self.size * self.itemsize

    try:
        release_memory()
        results = [host_buffer((s // 8,), np.float64) for s in sizes]
        kept = results.pop()
        while results:  # all but one given back, oldest first: a full pool
            results.pop(0)
        assert len(_arrays._FREE) == _arrays.POOL_BLOCKS
        best = _arrays._FREE[20]
        assert best.nbytes == 2 * MB + MB // 2 + 64
        _arrays._FREE[5] = _arrays._FREE[5].view(GivesBackWhenRead)  # a 3 MB one, read first
        out = host_buffer(((2 * MB + MB // 4) // 8,), np.float64)
        assert GivesBackWhenRead.reads >= 2  # it did give one back during the choice
        assert out.base.raw is best and out.base.raw.nbytes >= out.nbytes + 64
        out[:] = 1.0
        assert any(raw is late for raw in _arrays._FREE) and not _arrays._LATE
        assert len(_arrays._FREE) == _arrays.POOL_BLOCKS
        del kept
    finally:
        release_memory()


def test_results_alive_at_interpreter_exit_give_their_memory_back_quietly(tmp_path):
    """At exit a result's block may be given back after the module's globals are gone:
    "Exception ignored in: <function _Block.__del__> ... 'NoneType' object is not
    callable" was printed (the guard sat inside the function that was gone)."""
    import subprocess
    import sys

    script = tmp_path / "exit.py"
    script.write_text(
        "import numpy as np, jax.numpy as jnp, bpcheck\n"
        "from bpcheck import _arrays  # (a reference to the module from __main__)\n"
        "W = [64, 128, 128, 10]\n"
        "r = np.random.default_rng(0)\n"
        "ps = [(jnp.asarray(r.standard_normal((d, e)).astype(np.float32) / np.sqrt(e)),\n"
        "       jnp.asarray(r.standard_normal(d).astype(np.float32))) for e, d in zip(W, W[1:])]\n"
        "X = jnp.asarray(r.standard_normal((256, 64)).astype(np.float32))\n"
        "y = jnp.asarray(r.integers(0, 10, 256))\n"
        "G = bpcheck.per_example_grads(ps, X, y)  # filled on the host, handed to JAX\n"
        "H = G * 2.0\n"
        "del G\n"
        "for s in range(4):\n"
        "    Z = bpcheck.per_example_grads(ps, X * (s + 2.0), y)\n"
        "    Zn = bpcheck.per_example_grads([(np.asarray(B), np.asarray(b)) for B, b in ps],\n"
        "                                   np.asarray(X) * (s + 3.0), np.asarray(y))\n"
        "print('done')\n")
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "done", run.stderr
    assert "Exception ignored" not in run.stderr, run.stderr
