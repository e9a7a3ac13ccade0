"""fastbpe.lm.checkpoint: round trips, exact resume, corrupt and foreign files, atomic writes
and wrapped (compiled) models."""

import io
import os

import pytest

torch = pytest.importorskip("torch")

from fastbpe.lm import checkpoint as ckpt  # noqa: E402
from fastbpe.lm.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint  # noqa: E402
from fastbpe.lm.nn import TransformerLM, cross_entropy  # noqa: E402

VOCAB, CTX = 40, 8


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make(seed=0):
    torch.manual_seed(seed)
    model = TransformerLM(VOCAB, CTX, d_model=16, num_layers=2, num_heads=2, d_ff=24)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    return model, opt


def batches(n, seed=123):
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(0, VOCAB, (n, 4, CTX + 1), generator=g)
    return [(d[:, :-1], d[:, 1:]) for d in data]


def step(model, opt, x, y):
    opt.zero_grad()
    loss = cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss.item()


def assert_same_state(model_a, opt_a, model_b, opt_b):
    sa, sb = model_a.state_dict(), model_b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    oa, ob = opt_a.state_dict(), opt_b.state_dict()
    assert oa["param_groups"] == ob["param_groups"]
    assert oa["state"].keys() == ob["state"].keys() and len(oa["state"]) > 0
    for i in oa["state"]:
        for k in oa["state"][i]:
            assert torch.equal(torch.as_tensor(oa["state"][i][k]), torch.as_tensor(ob["state"][i][k])), (i, k)


@pytest.fixture
def trained():
    model, opt = make(0)
    for x, y in batches(3):
        step(model, opt, x, y)
    return model, opt


@pytest.mark.parametrize("target", ["path", "str", "bytesio"])
def test_round_trip(tmp_path, trained, target):
    model, opt = trained
    if target == "bytesio":
        dest = io.BytesIO()
    else:
        dest = tmp_path / "ckpt.pt" if target == "path" else str(tmp_path / "ckpt.pt")
    save_checkpoint(model, opt, 3, dest, rng_state=torch.Generator().manual_seed(9).get_state(), note="hi")
    if target == "bytesio":
        dest.seek(0)
    model2, opt2 = make(1)
    assert load_checkpoint(dest, model2, opt2) == 3
    assert_same_state(model, opt, model2, opt2)
    if target == "bytesio":
        dest.seek(0)
    obj = read_checkpoint(dest)
    assert obj["iteration"] == 3 and obj["note"] == "hi"
    assert torch.equal(obj["rng_state"], torch.Generator().manual_seed(9).get_state())
    if target != "bytesio":
        assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")] == []


def test_iteration_is_a_plain_int_and_model_only_checkpoints(tmp_path, trained):
    model, _ = trained
    path = tmp_path / "m.pt"
    save_checkpoint(model, None, torch.tensor(17), path)
    obj = read_checkpoint(path)
    assert obj["iteration"] == 17 and type(obj["iteration"]) is int
    assert obj["optimizer"] is None
    model2, opt2 = make(1)
    before = opt2.state_dict()
    assert load_checkpoint(path, model2, opt2) == 17  # no optimizer state saved: optimizer untouched
    assert opt2.state_dict() == before
    for k, v in model.state_dict().items():
        assert torch.equal(v, model2.state_dict()[k])


def test_resume_is_bit_identical(tmp_path):
    data = batches(8)
    model, opt = make(0)
    for x, y in data[:3]:
        step(model, opt, x, y)
    path = tmp_path / "mid.pt"
    save_checkpoint(model, opt, 3, path)
    straight = [step(model, opt, x, y) for x, y in data[3:]]

    model2, opt2 = make(5)  # different initialization, fresh optimizer state
    it = load_checkpoint(path, model2, opt2)
    assert it == 3
    resumed = [step(model2, opt2, x, y) for x, y in data[it:]]
    assert resumed == straight  # exactly, not approximately
    for k, v in model.state_dict().items():
        assert torch.equal(v, model2.state_dict()[k]), k


def test_truncated_file_raises_checkpoint_error_naming_the_file(tmp_path, trained):
    model, opt = trained
    path = tmp_path / "cut.pt"
    save_checkpoint(model, opt, 3, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_checkpoint(path, *make(1))
    with pytest.raises(CheckpointError, match="cut.pt"):
        read_checkpoint(str(path))
    # A truncated in-memory buffer too.
    with pytest.raises(CheckpointError):
        read_checkpoint(io.BytesIO(data[: len(data) // 2]))


def test_garbage_file_raises_checkpoint_error(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="garbage.pt"):
        read_checkpoint(path)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt"):
        read_checkpoint(empty)
    assert issubclass(CheckpointError, ValueError)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "nothing.pt")


def test_foreign_torch_file_raises_checkpoint_error(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"a": 1}, path)
    with pytest.raises(CheckpointError, match="other.pt"):
        load_checkpoint(path, *make(1))
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="other.pt"):
        read_checkpoint(path)
    # A bare state dict (what torch.save(model.state_dict()) writes) is not a checkpoint either.
    torch.save(make(0)[0].state_dict(), path)
    with pytest.raises(CheckpointError, match="other.pt"):
        read_checkpoint(path)


def test_other_version_raises_checkpoint_error(tmp_path):
    path = tmp_path / "v99.pt"
    torch.save({"format": ckpt.FORMAT, "version": 99, "iteration": 0, "model": {}, "optimizer": None}, path)
    with pytest.raises(CheckpointError, match="version"):
        read_checkpoint(path)


def test_loading_runs_no_code_from_the_file(tmp_path):
    """weights_only: a pickle that would call a function is refused, not executed."""
    path = tmp_path / "evil.pt"
    marker = tmp_path / "ran"
    torch.save({"format": ckpt.FORMAT, "version": ckpt.VERSION, "x": _Evil(str(marker))}, path)
    with pytest.raises(CheckpointError):
        read_checkpoint(path)
    assert not marker.exists()


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_failed_write_leaves_previous_checkpoint_intact(tmp_path, trained, monkeypatch):
    model, opt = trained
    path = tmp_path / "ckpt.pt"
    save_checkpoint(model, opt, 3, path)
    good = path.read_bytes()

    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])  # half written, then the "crash"
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    model2, opt2 = make(1)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(model2, opt2, 4, path)
    monkeypatch.undo()

    assert path.read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"]  # no .tmp- leftovers
    model3, opt3 = make(2)
    assert load_checkpoint(path, model3, opt3) == 3
    assert_same_state(model, opt, model3, opt3)


def test_interrupted_write_also_cleans_up(tmp_path, trained, monkeypatch):
    """KeyboardInterrupt (BaseException) during the write: same guarantees."""
    model, opt = trained
    path = tmp_path / "ckpt.pt"
    save_checkpoint(model, opt, 3, path)
    good = path.read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(model, opt, 4, path)
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"]


def test_first_write_that_fails_leaves_nothing(tmp_path, trained, monkeypatch):
    model, opt = trained

    def failing(*args, **kwargs):
        raise OSError("boom")

    monkeypatch.setattr(torch, "save", failing)
    with pytest.raises(OSError):
        save_checkpoint(model, opt, 1, tmp_path / "new.pt")
    assert os.listdir(tmp_path) == []


def test_overwrite_replaces_the_checkpoint(tmp_path, trained):
    model, opt = trained
    path = tmp_path / "ckpt.pt"
    save_checkpoint(model, opt, 3, path)
    save_checkpoint(model, opt, 7, path)
    assert read_checkpoint(path)["iteration"] == 7
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"]


class Wrapped(torch.nn.Module):
    """What torch.compile returns, as far as checkpoints care: the real module in `_orig_mod`,
    whose own state dict would prefix every key with `_orig_mod.`."""

    def __init__(self, inner):
        super().__init__()
        self._orig_mod = inner

    def forward(self, x):
        return self._orig_mod(x)


class PlainWrapper:
    def __init__(self, inner):
        self._orig_mod = inner


@pytest.mark.parametrize("wrapper", [Wrapped, PlainWrapper])
def test_wrapped_model_saves_plain_keys(tmp_path, trained, wrapper):
    model, opt = trained
    if wrapper is Wrapped:
        assert all(k.startswith("_orig_mod.") for k in Wrapped(model).state_dict())
    path = tmp_path / "w.pt"
    save_checkpoint(wrapper(model), opt, 5, path)
    obj = read_checkpoint(path)
    assert set(obj["model"]) == set(model.state_dict())
    # Loads into a plain model and into a wrapped one.
    plain, plain_opt = make(1)
    assert load_checkpoint(path, plain, plain_opt) == 5
    assert_same_state(model, opt, plain, plain_opt)
    inner, inner_opt = make(2)
    assert load_checkpoint(path, wrapper(inner), inner_opt) == 5
    assert_same_state(model, opt, inner, inner_opt)


def test_load_into_a_mismatched_model_fails_loudly(tmp_path, trained):
    model, opt = trained
    path = tmp_path / "ckpt.pt"
    save_checkpoint(model, opt, 3, path)
    torch.manual_seed(0)
    other = TransformerLM(VOCAB, CTX, d_model=16, num_layers=1, num_heads=2, d_ff=24)
    with pytest.raises(RuntimeError):
        load_checkpoint(path, other, None)


def test_run_folder_checkpoints_sort_by_step_and_skip_other_files(tmp_path):
    model, opt = make()
    for step in (9, 10_000_000, 200):  # the last name outgrows its padding
        save_checkpoint(model, opt, step, ckpt.checkpoint_path(str(tmp_path), step))
    (tmp_path / "ckpt_latest.pt").write_bytes(b"")  # not a step: not a checkpoint of the run
    (tmp_path / "notes.txt").write_text("")
    found = ckpt.checkpoints(str(tmp_path))
    assert [os.path.basename(p) for p in found] == ["ckpt_0000009.pt", "ckpt_0000200.pt", "ckpt_10000000.pt"]
    assert [ckpt.checkpoint_step(p) for p in found] == [9, 200, 10_000_000]
    assert ckpt.checkpoint_step(str(tmp_path / "ckpt_latest.pt")) is None


def test_newest_valid_checkpoint_skips_corrupt_ones_with_a_warning(tmp_path):
    model, opt = make()
    for step in (1, 2, 3):
        save_checkpoint(model, opt, step, ckpt.checkpoint_path(str(tmp_path), step))
    newest = tmp_path / "ckpt_0000003.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated by a crash
    with pytest.warns(UserWarning, match="skipping .*ckpt_0000003.pt"):
        path, obj = ckpt.newest_valid_checkpoint(str(tmp_path))
    assert os.path.basename(path) == "ckpt_0000002.pt" and obj["iteration"] == 2
    assert ckpt.newest_valid_checkpoint(str(tmp_path / "empty")) is None
