"""fastbpe.lm.data: token files written by Tokenizer.encode_file, random batches (shapes,
shift, uniform offsets, determinism, flat memory), the prefetching loader and resume, and
sequential evaluation batches."""

import json
import os
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastbpe  # noqa: E402
from fastbpe.lm.data import BatchLoader, get_batch, open_tokens, sequential_batches  # noqa: E402

TEXT = (
    "The quick brown fox jumps over the lazy dog. <|endoftext|> "
    "Once upon a time there was a little robot who loved to read books.\n"
    "It read every book in the library, twice, and then it wrote its own.\n"
) * 20


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_tokens(path, values, dtype, byteorder="little"):
    arr = np.asarray(values, dtype=np.dtype(dtype).newbyteorder("<" if byteorder == "little" else ">"))
    arr.tofile(path)
    with open(str(path) + ".json", "w") as f:
        json.dump({"format": "fastbpe.tokens", "version": 1, "dtype": np.dtype(dtype).name,
                   "byteorder": byteorder, "num_tokens": len(arr)}, f)
    return path


# ---------------------------------------------------------------- token files


@pytest.fixture(scope="module")
def tok():
    return fastbpe.train(iter([TEXT]), 300)


def test_open_tokens_reads_what_encode_file_wrote(tmp_path, tok):
    src = tmp_path / "text.txt"
    src.write_text(TEXT, encoding="utf-8")
    out = tmp_path / "text.bin"
    tok.encode_file(src, out)
    meta = json.loads((tmp_path / "text.bin.json").read_text())
    assert meta["dtype"] == "uint16"
    data = open_tokens(out)
    assert isinstance(data, np.memmap)
    assert data.dtype == np.uint16
    assert data.tolist() == list(tok.encode(TEXT))
    assert len(data) == meta["num_tokens"]
    # Batches drawn from it are real windows of the encoded text.
    x, y = get_batch(data, 4, 8, "cpu", generator=torch.Generator().manual_seed(0))
    ids = np.asarray(tok.encode(TEXT))
    for row_x, row_y in zip(x.numpy(), y.numpy()):
        starts = [s for s in range(len(ids) - 8) if np.array_equal(ids[s : s + 8], row_x)]
        assert any(np.array_equal(ids[s + 1 : s + 9], row_y) for s in starts)


def test_open_tokens_uses_the_dtype_in_the_json(tmp_path):
    values = [0, 1, 65535, 65536, 100_000, 2**32 - 1]
    path = write_tokens(tmp_path / "big.bin", values, np.uint32)
    data = open_tokens(path)
    assert data.dtype == np.uint32
    assert data.tolist() == values
    # Read as uint16 it would be garbage (and twice as long): the json is what prevents that.
    assert len(np.fromfile(path, dtype=np.uint16)) == 2 * len(values)


def test_open_tokens_big_endian(tmp_path):
    values = [1, 258, 70_000]
    data = open_tokens(write_tokens(tmp_path / "be.bin", values, np.uint32, byteorder="big"))
    assert data.tolist() == values
    x, y = get_batch(data, 1, 2, "cpu")  # the only window
    assert x.tolist() == [[1, 258]] and y.tolist() == [[258, 70_000]]


def test_open_tokens_explicit_dtype_needs_no_json(tmp_path):
    path = tmp_path / "raw.bin"
    np.arange(10, dtype=np.uint16).tofile(path)
    assert open_tokens(path, dtype=np.uint16).tolist() == list(range(10))


def test_open_tokens_without_json_raises(tmp_path):
    path = tmp_path / "raw.bin"
    np.arange(10, dtype=np.uint16).tofile(path)
    with pytest.raises(FileNotFoundError, match=r"\.json"):
        open_tokens(path)


def test_open_tokens_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.bin"):
        open_tokens(tmp_path / "nope.bin")


# ---------------------------------------------------------------- get_batch


def test_get_batch_shapes_dtype_and_shift():
    dataset = (np.arange(1000) * 7 % 997).astype(np.uint16)  # values do not reveal positions trivially
    B, T = 8, 16
    x, y = get_batch(dataset, B, T, "cpu", generator=torch.Generator().manual_seed(0))
    assert x.shape == (B, T) and y.shape == (B, T)
    assert x.dtype == torch.int64 and y.dtype == torch.int64
    assert x.device.type == "cpu"
    # Find each row's start in the dataset (positions map to distinct values here).
    pos = {int(v): i for i, v in enumerate(dataset[:997])}
    for row_x, row_y in zip(x.numpy(), y.numpy()):
        start = pos[int(row_x[0])]
        assert 0 <= start <= len(dataset) - T - 1
        np.testing.assert_array_equal(row_x, dataset[start : start + T])
        np.testing.assert_array_equal(row_y, dataset[start + 1 : start + T + 1])


def test_get_batch_every_start_is_reachable_and_uniform():
    dataset = np.arange(20)
    T = 4
    g = torch.Generator().manual_seed(123)
    counts = np.zeros(len(dataset), dtype=np.int64)
    for _ in range(1000):
        x, y = get_batch(dataset, 16, T, "cpu", generator=g)
        assert torch.equal(y, x + 1)
        np.add.at(counts, x[:, 0].numpy(), 1)
    valid = counts[: len(dataset) - T]  # starts 0 .. n-T-1: 16 of them
    assert counts[len(dataset) - T :].sum() == 0  # no window runs past the end
    assert (valid > 0).all()
    expected = counts.sum() / len(valid)
    chi2 = ((valid - expected) ** 2 / expected).sum()
    assert chi2 < 50, (chi2, valid)  # 15 degrees of freedom: p ~ 1e-5
    assert valid.min() / valid.max() > 0.75


def test_get_batch_is_deterministic_given_the_generator():
    dataset = np.arange(10_000, dtype=np.uint16)
    a = [get_batch(dataset, 4, 32, "cpu", generator=g) for g in [torch.Generator().manual_seed(5)] * 3]
    b = [get_batch(dataset, 4, 32, "cpu", generator=g) for g in [torch.Generator().manual_seed(5)] * 3]
    c = [get_batch(dataset, 4, 32, "cpu", generator=g) for g in [torch.Generator().manual_seed(6)] * 3]
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not all(torch.equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))
    # Consecutive batches from one generator differ.
    assert not torch.equal(a[0][0], a[1][0])


def test_get_batch_exact_fit_and_too_short():
    dataset = np.arange(5)
    x, y = get_batch(dataset, 3, 4, "cpu")  # n == T + 1: only start 0
    assert x.tolist() == [[0, 1, 2, 3]] * 3 and y.tolist() == [[1, 2, 3, 4]] * 3
    with pytest.raises(ValueError, match="context_length"):
        get_batch(np.arange(4), 1, 4, "cpu")
    with pytest.raises(ValueError):
        get_batch(np.arange(100), 0, 4, "cpu")
    with pytest.raises(ValueError):
        get_batch(np.arange(100).reshape(10, 10), 1, 4, "cpu")


def test_get_batch_invalid_device_raises():
    with pytest.raises(RuntimeError):
        get_batch(np.arange(100), 2, 4, "not-a-device")


def test_get_batch_on_memmap_and_memmap_slices(tmp_path):
    path = write_tokens(tmp_path / "t.bin", np.arange(50_000) % 40_000, np.uint16)
    data = open_tokens(path)
    g = torch.Generator().manual_seed(0)
    for view, first in ((data, 0), (data[30_000:], 30_000), (data[10_000:20_000], 10_000), (data[5:][7:], 12)):
        for _ in range(20):
            x, y = get_batch(view, 8, 16, "cpu", generator=g)
            for row_x, row_y in zip(x.numpy(), y.numpy()):
                # Values are positions (mod 40000), so each row must lie inside the view.
                start = int(row_x[0])
                start_in_file = start if start >= first else start + 40_000
                rel = start_in_file - first
                assert 0 <= rel <= len(view) - 17, (first, start)
                np.testing.assert_array_equal(row_x, view[rel : rel + 16])
                np.testing.assert_array_equal(row_y, view[rel + 1 : rel + 17])
    # A strided view is read as it is.
    strided = data[::2]
    x, y = get_batch(strided, 4, 8, "cpu", generator=g)
    assert ((y - x) == 2).all()


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc (Linux)")
def test_get_batch_memory_stays_flat_over_a_large_memmap(tmp_path):
    n = 100_000_000  # 200 MB of uint16
    path = tmp_path / "big.bin"
    mm = np.memmap(path, dtype=np.uint16, mode="w+", shape=(n,))
    chunk = 10_000_000
    for i in range(0, n, chunk):
        mm[i : i + chunk] = np.arange(i, i + chunk) % 50_000
    mm.flush()
    del mm
    with open(str(path) + ".json", "w") as f:
        json.dump({"dtype": "uint16", "byteorder": "little", "num_tokens": n}, f)
    g = torch.Generator().manual_seed(0)
    B, T = 32, 64
    # Warm up the code path on a small token file, not on the big one: the kernel maps up to
    # 16 neighbouring cached pages per fault, so even 100 batches through one long-lived map
    # would already touch most of the 200 MB and hide the growth this test is about.
    small = write_tokens(tmp_path / "small.bin", np.arange(100_000) % 50_000, np.uint16)
    small_data = open_tokens(small)
    for _ in range(100):
        get_batch(small_data, B, T, "cpu", generator=g)
    data = open_tokens(path)
    before = _rss_bytes()
    t0 = time.monotonic()
    for i in range(5_000):
        x, y = get_batch(data, B, T, "cpu", generator=g)
        if i % 1000 == 0:
            assert torch.equal(y[:, 0], (x[:, 0] + 1) % 50_000)
    grown = _rss_bytes() - before
    # 160k random windows touch every page of the file: had those pages stayed mapped (one
    # long-lived np.memmap), RSS would have grown by ~200 MB.
    assert grown < 50 * 2**20, f"RSS grew by {grown / 2**20:.0f} MB in {time.monotonic() - t0:.1f} s"


# ---------------------------------------------------------------- BatchLoader


def test_batch_loader_yields_the_same_batches_as_get_batch():
    dataset = np.arange(5_000, dtype=np.uint16)
    ref_gen = torch.Generator().manual_seed(42)
    expected = [get_batch(dataset, 4, 16, "cpu", generator=ref_gen) for _ in range(10)]
    with BatchLoader(dataset, 4, 16, "cpu", torch.Generator().manual_seed(42), prefetch=3) as loader:
        got = [next(loader) for _ in range(10)]
    for (xe, ye), (xg, yg) in zip(expected, got):
        assert torch.equal(xe, xg) and torch.equal(ye, yg)


def _wait_until_prefetched(loader, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not loader._queue.full() and time.monotonic() < deadline:
        time.sleep(0.001)


def test_batch_loader_generator_state_resumes_exactly():
    dataset = np.arange(5_000, dtype=np.uint16)
    with BatchLoader(dataset, 4, 16, "cpu", torch.Generator().manual_seed(7), prefetch=4) as loader:
        _wait_until_prefetched(loader)
        initial = loader.generator_state.clone()
        batches, states = [], []
        for _ in range(6):
            batches.append(next(loader))
            # The generator itself has run ahead by the prefetched batches by now.
            _wait_until_prefetched(loader)
            states.append(loader.generator_state.clone())
    # The state before any batch reproduces the first one.
    g = torch.Generator()
    g.set_state(initial)
    x, y = get_batch(dataset, 4, 16, "cpu", generator=g)
    assert torch.equal(x, batches[0][0]) and torch.equal(y, batches[0][1])
    for k in range(5):
        # State after k+1 batches -> batch k+2, despite the batches prefetched beyond it.
        g = torch.Generator()
        g.set_state(states[k])
        x, y = get_batch(dataset, 4, 16, "cpu", generator=g)
        assert torch.equal(x, batches[k + 1][0]) and torch.equal(y, batches[k + 1][1])
    # And a loader resumed from a saved state continues the same sequence.
    g = torch.Generator()
    g.set_state(states[2])
    with BatchLoader(dataset, 4, 16, "cpu", g) as resumed:
        for k in range(3, 6):
            x, y = next(resumed)
            assert torch.equal(x, batches[k][0]) and torch.equal(y, batches[k][1])


def test_batch_loader_surfaces_errors_and_closes():
    with BatchLoader(np.arange(3), 2, 8, "cpu", torch.Generator().manual_seed(0)) as loader:
        with pytest.raises(ValueError, match="context_length"):
            next(loader)
    loader = BatchLoader(np.arange(1000), 2, 8, "cpu", torch.Generator().manual_seed(0), prefetch=1)
    next(loader)
    loader.close()
    assert not loader._thread.is_alive()


# ---------------------------------------------------------------- sequential_batches


@pytest.mark.parametrize("n_tokens,T,B", [(23, 5, 2), (26, 5, 2), (21, 5, 4), (6, 5, 3), (100, 7, 100)])
def test_sequential_batches_cover_all_full_windows_once_in_order(n_tokens, T, B):
    dataset = np.arange(n_tokens, dtype=np.uint16)
    batches = list(sequential_batches(dataset, B, T, "cpu"))
    n_windows = (n_tokens - 1) // T
    assert [len(x) for x, _ in batches] == [min(B, n_windows - i) for i in range(0, n_windows, B)]
    xs = torch.cat([x for x, _ in batches])
    ys = torch.cat([y for _, y in batches])
    assert xs.dtype == torch.int64
    expected = torch.arange(n_windows * T).reshape(n_windows, T)
    assert torch.equal(xs, expected)
    assert torch.equal(ys, expected + 1)


def test_sequential_batches_max_batches_and_too_short(tmp_path):
    dataset = np.arange(101)
    assert len(list(sequential_batches(dataset, 2, 10, "cpu", max_batches=3))) == 3
    assert len(list(sequential_batches(dataset, 2, 10, "cpu", max_batches=0))) == 0
    with pytest.raises(ValueError):
        list(sequential_batches(np.arange(5), 2, 5, "cpu"))
    # On a memmap slice too.
    path = write_tokens(tmp_path / "s.bin", np.arange(1000), np.uint16)
    view = open_tokens(path)[500:]
    xs = torch.cat([x for x, _ in sequential_batches(view, 3, 10, "cpu")])
    assert xs[0, 0].item() == 500 and xs[-1, -1].item() == 500 + len(xs) * 10 - 1
