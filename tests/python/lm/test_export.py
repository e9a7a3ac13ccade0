"""Hugging Face Llama export and import: transformers computes our logits, AutoTokenizer our ids,
and the way back gives bit-equal weights."""

import json
import os
import shutil

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import fastbpe  # noqa: E402
from fastbpe import cli  # noqa: E402
from fastbpe.lm import TrainConfig, TransformerLM, export_huggingface, import_huggingface, load_run, train_lm  # noqa: E402
from fastbpe.lm import huggingface as hf  # noqa: E402

TEXT = ("the cat sat on the mat. the dog sat on the log.\n" * 200
        + "<|endoftext|>".join(f"story {i}: the bird sang {i % 7} songs.\n" for i in range(100)))
SAMPLE = "the cat sat on the log.<|endoftext|>story 12: a bird sang 3 songs, héllo 😀"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run: a few CPU steps, a RoPE theta other than the default so that the mapping shows."""
    d = tmp_path_factory.mktemp("run")
    (d / "corpus.txt").write_text(TEXT)
    tok = fastbpe.train(d / "corpus.txt", 300, progress=False)
    tok.save(d / "tok.json")
    tok.encode_file(d / "corpus.txt", d / "train.bin", metadata={"tokenizer": str(d / "tok.json")})
    cfg = TrainConfig(context_length=16, d_model=32, num_layers=2, num_heads=2, d_ff=64, batch_size=4, max_steps=3,
                      warmup_steps=1, eval_every=3, eval_batches=1, checkpoint_every=3, device="cpu", seed=1,
                      rope_theta=5000.0)
    train_lm(cfg, str(d / "train.bin"), str(d / "train.bin"), str(d / "run"), progress=False, log=lambda *a: None)
    return str(d / "run")


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    return export_huggingface(run, tmp_path_factory.mktemp("hf") / "model")


def hf_model(folder):
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model.eval()


def random_ids(vocab_size, shape=(3, 16)):
    return torch.randint(0, vocab_size, shape, generator=torch.Generator().manual_seed(0))


def test_transformers_computes_our_logits(run, exported):
    ours, _ = load_run(run)
    theirs = hf_model(exported)
    assert isinstance(theirs, transformers.LlamaForCausalLM)
    ids = random_ids(ours.vocab_size)
    with torch.no_grad():
        diff = (ours.eval()(ids) - theirs(ids).logits).abs().max().item()
    assert diff < 1e-4


def test_the_config_says_what_the_model_is(run, exported):
    model, tok = load_run(run)
    config = transformers.AutoConfig.from_pretrained(exported)
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers) == (32, 64, 2)
    assert (config.num_attention_heads, config.num_key_value_heads, config.vocab_size) == (2, 2, model.vocab_size)
    assert config.max_position_embeddings == 16 and config.rms_norm_eps == 1e-5
    assert config.rope_parameters["rope_theta"] == 5000.0 and config.tie_word_embeddings is False
    eot = tok.special_token_ids["<|endoftext|>"]
    assert config.eos_token_id == eot and config.bos_token_id == eot
    gen = json.loads(open(os.path.join(exported, "generation_config.json")).read())
    assert gen["eos_token_id"] == eot
    assert sorted(os.listdir(exported)) == sorted(hf.EXPORT_FILES)


def test_without_reordering_the_rope_rows_the_logits_differ(run, exported, tmp_path, monkeypatch):
    # The check above can fail: exported with the rows in our order, transformers computes another model.
    monkeypatch.setattr(hf, "to_rotate_half", lambda w, heads: w)
    wrong = export_huggingface(run, tmp_path / "wrong")
    ours, _ = load_run(run)
    ids = random_ids(ours.vocab_size)
    with torch.no_grad():
        diff = (ours.eval()(ids) - hf_model(wrong)(ids).logits).abs().max().item()
    assert diff > 1e-3


def test_autotokenizer_gives_our_ids(run, exported):
    _, tok = load_run(run)
    auto = transformers.AutoTokenizer.from_pretrained(exported)
    assert auto(SAMPLE)["input_ids"] == tok.encode(SAMPLE, allowed_special="all")
    assert auto.eos_token_id == tok.special_token_ids["<|endoftext|>"]


def test_the_way_back_is_bit_equal(run, exported):
    ours, _ = load_run(run)
    for back in (import_huggingface(exported), TransformerLM.from_huggingface(exported)):
        a, b = ours.state_dict(), back.state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert back.context_length == 16 and back.layers[0].attn.rope.theta == 5000.0
        ids = random_ids(ours.vocab_size)
        with torch.no_grad():
            assert torch.equal(ours.eval()(ids), back.eval()(ids))


def llama_folder(tmp_path, shard=None, **config):
    """A random Llama saved by transformers itself (in shards of at most `shard`)."""
    base = dict(hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=4, num_hidden_layers=2,
                vocab_size=100, max_position_embeddings=24, rms_norm_eps=1e-6, rope_theta=20000.0)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**base, **config}))
    with torch.no_grad():  # norms away from 1, so that a wrong eps or a misplaced scale shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    model.save_pretrained(tmp_path / "llama", **({"max_shard_size": shard} if shard else {}))
    return str(tmp_path / "llama"), model.eval()


@pytest.mark.parametrize("tied, shard", [(False, None), (True, None), (False, "20KB")])
def test_a_llama_transformers_saved_imports_with_its_logits(tmp_path, tied, shard):
    folder, theirs = llama_folder(tmp_path, shard, tie_word_embeddings=tied)
    assert os.path.isfile(os.path.join(folder, "model.safetensors.index.json")) == (shard is not None)
    ours = import_huggingface(folder).eval()
    assert ours.layers[0].ln1.eps == 1e-6
    ids = random_ids(100, (2, 24))
    with torch.no_grad():
        assert (ours(ids) - theirs(ids).logits).abs().max().item() < 1e-4


@pytest.mark.parametrize("change, message", [
    ({"model_type": "mistral"}, "model_type 'mistral'"),
    ({"hidden_act": "gelu"}, "activation 'gelu'"),
    ({"attention_bias": True}, "attention_bias"),
    ({"mlp_bias": True}, "mlp_bias"),
    ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope_scaling"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}}, "RoPE type 'yarn'"),
    ({"num_key_value_heads": 2}, "grouped-query attention"),
    ({"head_dim": 16}, "head_dim 16"),
])
def test_what_is_not_our_llama_is_refused_by_name(tmp_path, change, message):
    folder, _ = llama_folder(tmp_path)
    path = os.path.join(folder, "config.json")
    config = json.loads(open(path).read())
    config.update(change)
    open(path, "w").write(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        import_huggingface(folder)


def test_biases_in_the_weights_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    folder, _ = llama_folder(tmp_path)
    weights = load_file(os.path.join(folder, "model.safetensors"))
    weights["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(32)
    save_file(weights, os.path.join(folder, "model.safetensors"))
    with pytest.raises(ValueError, match=r"biases.*q_proj\.bias"):
        import_huggingface(folder)


def test_import_of_a_folder_without_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        import_huggingface(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        import_huggingface(tmp_path)


# ---- the output folder ------------------------------------------------------------------------


def test_a_missing_run_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        load_run(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        export_huggingface(tmp_path / "missing", tmp_path / "out")
    assert not os.path.exists(tmp_path / "out")


def test_the_run_folder_is_not_an_output(run):
    before = sorted(os.listdir(run))
    with pytest.raises(ValueError, match="is the run folder"):
        export_huggingface(run, run, overwrite=True)
    assert sorted(os.listdir(run)) == before


def test_an_existing_folder_is_replaced_only_when_asked_and_only_an_export(run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="exists and is not empty.*--overwrite"):
        export_huggingface(run, out)
    with pytest.raises(FileExistsError, match="notes.txt, which an export does not write"):
        export_huggingface(run, out, overwrite=True)
    assert os.listdir(out) == ["notes.txt"]
    os.unlink(out / "notes.txt")
    export_huggingface(run, out)  # an empty folder is no one's
    (out / "config.json").write_text("{}")
    export_huggingface(run, out, overwrite=True)
    assert json.loads((out / "config.json").read_text())["model_type"] == "llama"
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no partial or old folder left beside it


def test_a_failed_export_leaves_nothing(run, tmp_path, monkeypatch):
    def fail(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hf, "_fsync", fail)
    with pytest.raises(OSError, match="No space left"):
        export_huggingface(run, tmp_path / "out")
    assert os.listdir(tmp_path) == []


def test_a_killed_exports_folder_is_removed_by_the_next_export(run, tmp_path):
    """kill -9 in the middle of writing leaves the half-built folder; the next export beside it
    removes it (its process is gone) and says so, and touches nothing else."""
    import signal
    import subprocess
    import sys

    out = tmp_path / "out"
    (tmp_path / "mine").mkdir()
    code = (
        "import os, signal\n"
        "from fastbpe.lm import huggingface as hf\n"
        "def die(*a, **k): os.kill(os.getpid(), signal.SIGKILL)\n"
        "hf._fsync = die\n"
        f"hf.export_huggingface({run!r}, {str(out)!r})\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr
    left = [n for n in os.listdir(tmp_path) if n not in ("mine",)]
    assert len(left) == 1 and os.listdir(tmp_path / left[0]), "the killed export left no half-built folder"
    with pytest.warns(UserWarning, match="killed fastbpe runs"):
        export_huggingface(run, out)
    assert sorted(os.listdir(tmp_path)) == ["mine", "out"]


def test_what_llama_cannot_say_is_refused(run, tmp_path):
    model, tok = load_run(run)
    model.layers[1].ln2.eps = 1e-6
    with pytest.raises(ValueError, match="different eps"):
        hf.save_huggingface(model, tok, tmp_path / "out")
    no_rope = TransformerLM(model.vocab_size, 16, 32, 2, 2, 64, rope_theta=None)
    with pytest.raises(ValueError, match="no RoPE"):
        hf.save_huggingface(no_rope, tok, tmp_path / "out")
    assert os.listdir(tmp_path) == []


# ---- the command line -------------------------------------------------------------------------


def cli_error(capsys, argv) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastbpe: error: "), err
    return err[0]


def test_cli_exports(run, tmp_path, capsys):
    cli.main(["lm", "export", "--run", run, "--out", str(tmp_path / "out")])
    assert "exported" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "out")) == sorted(hf.EXPORT_FILES)
    assert "exists and is not empty" in cli_error(capsys, ["lm", "export", "--run", run, "--out", str(tmp_path / "out")])
    cli.main(["lm", "export", "--run", run, "--out", str(tmp_path / "out"), "--overwrite"])


def test_cli_errors_are_one_line(run, tmp_path, capsys):
    assert "no such run folder" in cli_error(capsys, ["lm", "export", "--run", str(tmp_path / "x"), "--out",
                                                      str(tmp_path / "out")])
    assert "is the run folder" in cli_error(capsys, ["lm", "export", "--run", run, "--out", run])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no checkpoint in" in cli_error(capsys, ["lm", "export", "--run", str(empty), "--out", str(tmp_path / "o")])
    shutil.rmtree(empty)
    assert not os.path.exists(tmp_path / "o")
