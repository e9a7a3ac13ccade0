"""Hugging Face Llama folders: a trained run out (`export_huggingface`), a Llama-shaped model in
(`import_huggingface`).

fastbpe's TransformerLM is Llama's architecture: pre-norm blocks with RMSNorm (eps 1e-5, the
scale applied after normalizing in float32, as `LlamaRMSNorm` does), SwiGLU (`w1` is Llama's
`gate_proj`, `w3` its `up_proj`, `w2` its `down_proj`, SiLU between), multi-head attention
without biases, one key/value head per query head, RoPE with inverse frequencies
theta^(-2k/d_head), and an untied LM head. The one layout difference is RoPE's: ours rotates
adjacent pairs (x[2k], x[2k+1]), Llama's `rotate_half` pairs x[k] with x[k + d_head/2] at the
same frequency. So the rows of each head of q_proj and k_proj are reordered (evens first, then
odds): the attention scores are the same dot products, over reordered dimensions. The reorder is
a permutation, so a model exported and imported back has bit-equal weights.

The folder: config.json (LlamaConfig), model.safetensors, tokenizer.json and tokenizer_config.json
(`Tokenizer.to_huggingface`), generation_config.json. It is built in a temporary folder beside
the target and renamed into place when complete.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile

import torch

from fastbpe import _io
from fastbpe._io import same_file, write_atomic
from fastbpe.lm.nn import RMSNorm, TransformerLM

#: What an export writes; --overwrite replaces a folder that holds nothing else.
EXPORT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                "generation_config.json")

_DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def _safetensors():
    try:
        import safetensors.torch
    except ImportError as e:
        raise ImportError('Hugging Face export and import need safetensors: pip install "fastbpe-rs[hf]"') from e
    return safetensors.torch


# ---- the weights: one table of names, both directions -------------------------------------------

_LAYER = (  # (ours, Llama's) within layer i
    ("ln1.weight", "input_layernorm.weight"),
    ("attn.q_proj.weight", "self_attn.q_proj.weight"),
    ("attn.k_proj.weight", "self_attn.k_proj.weight"),
    ("attn.v_proj.weight", "self_attn.v_proj.weight"),
    ("attn.output_proj.weight", "self_attn.o_proj.weight"),
    ("ln2.weight", "post_attention_layernorm.weight"),
    ("ffn.w1.weight", "mlp.gate_proj.weight"),
    ("ffn.w3.weight", "mlp.up_proj.weight"),
    ("ffn.w2.weight", "mlp.down_proj.weight"),
)
_ROPE_ROWS = ("attn.q_proj.weight", "attn.k_proj.weight")


def weight_names(num_layers: int) -> list[tuple[str, str]]:
    """(our state-dict name, Llama's) for every weight of a model with `num_layers` blocks."""
    names = [("token_embeddings.weight", "model.embed_tokens.weight")]
    for i in range(num_layers):
        names += [(f"layers.{i}.{ours}", f"model.layers.{i}.{theirs}") for ours, theirs in _LAYER]
    return names + [("ln_final.weight", "model.norm.weight"), ("lm_head.weight", "lm_head.weight")]


def to_rotate_half(w: torch.Tensor, num_heads: int) -> torch.Tensor:
    """q/k rows from adjacent RoPE pairs to rotate-half order: within each head, rows 0, 2, 4, ...
    then 1, 3, 5, ..."""
    out_features, in_features = w.shape
    d = out_features // num_heads
    return w.reshape(num_heads, d // 2, 2, in_features).transpose(1, 2).reshape(out_features, in_features)


def from_rotate_half(w: torch.Tensor, num_heads: int) -> torch.Tensor:
    """The inverse of `to_rotate_half`."""
    out_features, in_features = w.shape
    d = out_features // num_heads
    return w.reshape(num_heads, 2, d // 2, in_features).transpose(1, 2).reshape(out_features, in_features)


# ---- export -------------------------------------------------------------------------------------


def _shape(model: TransformerLM) -> dict:
    """The model's hyperparameters, read off its modules; ValueError for what LlamaConfig cannot say."""
    block = model.layers[0]
    attn = block.attn
    if attn.rope is None:
        raise ValueError("the model has no RoPE (rope_theta None): a Llama always rotates queries and keys, so "
                         "it cannot be exported as one")
    eps = {m.eps for m in model.modules() if isinstance(m, RMSNorm)}
    if len(eps) != 1:
        raise ValueError(f"the model's RMSNorms use different eps ({sorted(eps)}): LlamaConfig has one rms_norm_eps")
    thetas = {layer.attn.rope.theta for layer in model.layers if layer.attn.rope is not None}
    if len(thetas) != 1 or any(layer.attn.rope is None for layer in model.layers):
        raise ValueError("the model's layers use different RoPE settings: LlamaConfig has one rope_theta")
    dtypes = {p.dtype for p in model.parameters()}
    if len(dtypes) != 1 or next(iter(dtypes)) not in _DTYPES:
        raise ValueError(f"the model's weights are {sorted(map(str, dtypes))}: export needs them all float32, "
                         "bfloat16 or float16")
    return {
        "vocab_size": model.vocab_size,
        "hidden_size": model.token_embeddings.embedding_dim,
        "intermediate_size": block.ffn.w1.out_features,
        "num_hidden_layers": len(model.layers),
        "num_attention_heads": attn.num_heads,
        "num_key_value_heads": attn.num_heads,
        "head_dim": attn.d_model // attn.num_heads,
        "max_position_embeddings": model.context_length,
        "rms_norm_eps": eps.pop(),
        "rope_theta": float(thetas.pop()),
        "dtype": _DTYPES[dtypes.pop()],
    }


def special_ids(tok) -> dict[str, int]:
    """bos/eos/pad token ids: the run's special tokens that have those roles in the exported
    tokenizer_config.json (fastbpe.formats.huggingface names them)."""
    from fastbpe.formats.huggingface import roles

    found = roles(tok)
    return {f"{role[: -len('_token')]}_token_id": tok.special_token_ids[name]
            for role, name in found.items() if role in ("bos_token", "eos_token", "pad_token")}


def llama_config(model: TransformerLM, tok) -> dict:
    """config.json for `model`, a LlamaConfig that `transformers` builds the same network from."""
    shape = _shape(model)
    ids = special_ids(tok)
    theta = shape.pop("rope_theta")
    dtype = shape.pop("dtype")
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        **shape,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": False,
        "pretraining_tp": 1,
        "initializer_range": 0.02,
        "use_cache": True,
        # Both spellings: transformers 5 reads rope_parameters, earlier releases rope_theta.
        "rope_theta": theta,
        "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": theta},
        "bos_token_id": ids.get("bos_token_id"),
        "eos_token_id": ids.get("eos_token_id"),
        "pad_token_id": ids.get("pad_token_id"),
        "torch_dtype": dtype,
        "dtype": dtype,
    }


def llama_state_dict(model: TransformerLM) -> dict[str, torch.Tensor]:
    """The model's weights under Llama's names, q/k rows in rotate-half order, on the CPU."""
    ours = model.state_dict()
    heads = model.layers[0].attn.num_heads
    out = {}
    for name, hf_name in weight_names(len(model.layers)):
        w = ours[name].detach().cpu()
        if name.endswith(_ROPE_ROWS):
            w = to_rotate_half(w, heads)
        out[hf_name] = w.contiguous()
    return out


def _check_vocab(model: TransformerLM, tok) -> None:
    largest = max([*tok.vocab, *tok.special_token_ids.values()])
    if largest >= model.vocab_size:
        raise ValueError(f"the tokenizer has id {largest}, but the model's vocabulary ends at {model.vocab_size - 1}: "
                         "they are not a pair that was trained together")


def _write_json(path: str, obj: dict) -> None:
    write_atomic(path, (json.dumps(obj, indent=2) + "\n").encode("utf-8"))


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_folder(model: TransformerLM, tok, folder: str) -> None:
    """Write the export's files into `folder`, an existing empty folder."""
    _check_vocab(model, tok)
    config = llama_config(model, tok)  # refuses what LlamaConfig cannot say before anything is written
    tok.to_huggingface(folder + os.sep)  # refuses a pattern HF's regex engine would read otherwise
    _write_json(os.path.join(folder, "config.json"), config)
    gen = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if config[k] is not None}
    _write_json(os.path.join(folder, "generation_config.json"), gen)
    weights = os.path.join(folder, "model.safetensors")
    _safetensors().save_file(llama_state_dict(model), weights, metadata={"format": "pt"})
    _fsync(weights)


def check_out_dir(out_dir: str, run_dir: str | None, overwrite: bool) -> None:
    """Refuse, before any work, an output folder that is the run folder, a file, or a non-empty
    folder (unless `overwrite`, and then only one that holds nothing but an export's files)."""
    if run_dir is not None and same_file(out_dir, run_dir):
        raise ValueError(f"the output folder {out_dir} is the run folder: give another folder (the export is a "
                         "copy of the run in Hugging Face's format)")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise FileExistsError(errno.EEXIST, f"the output folder {out_dir} is a file: give a folder")
    if not os.path.isdir(out_dir) or not os.listdir(out_dir):
        return
    if not overwrite:
        raise FileExistsError(errno.EEXIST, f"the output folder {out_dir} exists and is not empty: give a new "
                              "folder, or replace an earlier export with --overwrite (overwrite=True)")
    others = sorted(set(os.listdir(out_dir)) - set(EXPORT_FILES))
    if others:
        raise FileExistsError(errno.EEXIST, f"the output folder {out_dir} holds {', '.join(others[:3])}"
                              f"{', ...' if len(others) > 3 else ''}, which an export does not write: overwrite "
                              "replaces only a folder of an earlier export; give a new folder")


def _replace_folder(tmp: str, out_dir: str) -> None:
    """Rename the finished `tmp` to `out_dir`; an earlier export there is moved aside first and
    removed once the new one is in place (back in place if the rename fails)."""
    if not os.path.isdir(out_dir) or not os.listdir(out_dir):
        os.replace(tmp, out_dir)  # onto nothing, or onto an empty folder
        return
    # Not named as a fastbpe temporary: killed between the two renames, the earlier export must
    # stay for the user to find, not be removed by the next write as a dead process's leftover.
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-", dir=os.path.dirname(out_dir))
    os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        os.replace(old, out_dir)
        raise
    shutil.rmtree(old)


def save_huggingface(model: TransformerLM, tok, out_dir: str | os.PathLike, overwrite: bool = False,
                     run_dir: str | None = None) -> str:
    """Write `model` and `tok` as a Hugging Face Llama folder at `out_dir` (atomically: built
    beside it, renamed into place); returns its path."""
    out_dir = os.path.abspath(os.fspath(out_dir))
    check_out_dir(out_dir, run_dir, overwrite)
    tmp = _io.temporary_folder(out_dir)
    try:
        write_folder(model, tok, tmp)
        _fsync(tmp)
        _replace_folder(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def export_huggingface(run_dir: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False) -> str:
    """Export a run folder's newest valid checkpoint and its tokenizer as a Hugging Face Llama
    folder that `transformers.AutoModelForCausalLM.from_pretrained(out_dir)` and
    `AutoTokenizer.from_pretrained(out_dir)` load offline. Returns the folder's path.

    Refused before any work: `out_dir` that is the run folder, a file, or a non-empty folder
    (with `overwrite`, one that holds only an earlier export's files is replaced). Errors of
    `load_run` for the run; ValueError for a model or tokenizer Hugging Face cannot represent."""
    from fastbpe.lm.run import load_run

    run_dir, out_dir = os.fspath(run_dir), os.path.abspath(os.fspath(out_dir))
    check_out_dir(out_dir, run_dir, overwrite)
    model, tok = load_run(run_dir)
    return save_huggingface(model, tok, out_dir, overwrite=overwrite, run_dir=run_dir)


# ---- import -------------------------------------------------------------------------------------


def _read_config(folder: str) -> dict:
    path = os.path.join(folder, "config.json")
    if not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, f"no such folder: {folder} (give a Hugging Face model folder)")
    if not os.path.isfile(path):
        raise FileNotFoundError(errno.ENOENT, f"{path} is missing: {folder} is not a Hugging Face model folder")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} is not a JSON object")
    return config


def _rope_theta(config: dict, path: str) -> float:
    """Llama's rope_theta, refusing scaled RoPE (YaRN, linear, Llama 3's, ...), which ours is not."""
    scaling = config.get("rope_scaling")
    params = config.get("rope_parameters") or {}
    if scaling:
        raise ValueError(f"{path} sets rope_scaling ({scaling!r}): fastbpe's RoPE is unscaled; only a model with "
                         "rope_scaling null can be imported")
    if not isinstance(params, dict):
        raise ValueError(f"{path}: rope_parameters {params!r} is not a single set of parameters (per-layer RoPE "
                         "is not Llama's)")
    kind = params.get("rope_type", params.get("type", "default"))
    if kind != "default":
        raise ValueError(f"{path} uses RoPE type {kind!r}: fastbpe's RoPE is the default (unscaled) one")
    partial = params.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0))
    if partial != 1.0:
        raise ValueError(f"{path} rotates part of each head (partial_rotary_factor {partial!r}): fastbpe's RoPE "
                         "rotates all of it")
    theta = params.get("rope_theta", config.get("rope_theta", 10000.0))
    if not isinstance(theta, (int, float)) or not math.isfinite(theta) or theta <= 0:
        raise ValueError(f"{path}: rope_theta {theta!r} is not a positive number")
    return float(theta)


def _int(config: dict, key: str, path: str) -> int:
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{path}: {key} must be a positive integer, got {value!r}")
    return value


def model_args(config: dict, path: str) -> dict:
    """TransformerLM's arguments (and rms_norm_eps, tie_word_embeddings) for a Llama config.json;
    ValueError naming what is not Llama-shaped the way fastbpe's model is."""
    kind = config.get("model_type")
    if kind != "llama":
        raise ValueError(f"{path} has model_type {kind!r}: only Llama models (model_type 'llama') can be imported")
    act = config.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"{path} uses the activation {act!r}: fastbpe's SwiGLU uses silu")
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key):
            raise ValueError(f"{path} sets {key}: fastbpe's model has no biases")
    d_model, heads = _int(config, "hidden_size", path), _int(config, "num_attention_heads", path)
    kv_heads = config.get("num_key_value_heads") or heads
    if kv_heads != heads:
        raise ValueError(f"{path} uses grouped-query attention ({kv_heads} key/value heads for {heads} query heads): "
                         "fastbpe's attention has one key/value head per query head")
    if d_model % heads:
        raise ValueError(f"{path}: hidden_size {d_model} is not divisible by num_attention_heads {heads}")
    head_dim = config.get("head_dim") or d_model // heads
    if head_dim != d_model // heads:
        raise ValueError(f"{path}: head_dim {head_dim} is not hidden_size / num_attention_heads "
                         f"({d_model // heads}), as fastbpe's attention needs")
    if (d_model // heads) % 2:
        raise ValueError(f"{path}: the head size {d_model // heads} is odd; RoPE needs an even one")
    eps = config.get("rms_norm_eps", 1e-6)
    if not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"{path}: rms_norm_eps {eps!r} is not a positive number")
    return {
        "vocab_size": _int(config, "vocab_size", path),
        "context_length": _int(config, "max_position_embeddings", path),
        "d_model": d_model,
        "num_layers": _int(config, "num_hidden_layers", path),
        "num_heads": heads,
        "d_ff": _int(config, "intermediate_size", path),
        "rope_theta": _rope_theta(config, path),
        "rms_norm_eps": float(eps),
        "tie_word_embeddings": bool(config.get("tie_word_embeddings", False)),  # LlamaConfig's default
    }


def _shards(index: str) -> list[str]:
    """The files a model.safetensors.index.json maps weights to."""
    try:
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f).get("weight_map")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"{index} is not a safetensors index (a JSON object with a weight_map): {e}") from None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ValueError(f"{index} has no weight_map of weight names to file names")
    return sorted(set(weight_map.values()))


def _read_weights(folder: str) -> dict[str, torch.Tensor]:
    """model.safetensors, or the shards model.safetensors.index.json lists."""
    st = _safetensors()
    single = os.path.join(folder, "model.safetensors")
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(single):
        files = [single]
    elif os.path.isfile(index):
        files = [os.path.join(folder, s) for s in _shards(index)]
    else:
        found = [n for n in ("pytorch_model.bin", "model.pt") if os.path.isfile(os.path.join(folder, n))]
        hint = f" (it has {found[0]}: save the model with safe_serialization=True)" if found else ""
        raise FileNotFoundError(errno.ENOENT, f"{single} is missing: import reads safetensors weights{hint}")
    weights: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            weights.update(st.load_file(path))
        except Exception as e:
            raise ValueError(f"{path} is not a readable safetensors file: {type(e).__name__}: {e}") from None
    return weights


def _our_state_dict(weights: dict[str, torch.Tensor], args: dict, folder: str) -> dict[str, torch.Tensor]:
    """Llama's weights under our names, q/k rows back in adjacent-pair order; ValueError for a
    weight the model lacks or one it would not use."""
    names = weight_names(args["num_layers"])
    if args["tie_word_embeddings"]:
        weights = {**weights, "lm_head.weight": weights.get("model.embed_tokens.weight")}
    # Older transformers saved RoPE's inverse frequencies; they follow from rope_theta.
    unused = sorted(k for k in set(weights) - {theirs for _, theirs in names} if not k.endswith("rotary_emb.inv_freq"))
    if unused:
        bias = [k for k in unused if k.endswith(".bias")]
        why = "biases, which fastbpe's model does not have" if bias else "weights fastbpe's Llama does not have"
        shown = bias or unused
        raise ValueError(f"{folder} holds {why}: {', '.join(shown[:3])}{', ...' if len(shown) > 3 else ''}")
    missing = [theirs for _, theirs in names if weights.get(theirs) is None]
    if missing:
        raise ValueError(f"{folder} lacks the weights {', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}")
    out = {}
    for ours, theirs in names:
        w = weights[theirs]
        if ours.endswith(_ROPE_ROWS):
            if w.shape != (args["d_model"], args["d_model"]):  # before the reshape, which needs it
                raise ValueError(f"{folder}: {theirs} has shape {tuple(w.shape)}, not "
                                 f"{(args['d_model'], args['d_model'])} as config.json says")
            w = from_rotate_half(w, args["num_heads"]).contiguous()
        out[ours] = w  # load_state_dict copies: a tied head becomes a weight of its own
    return out


def _check_shapes(model: TransformerLM, state: dict[str, torch.Tensor], num_layers: int, folder: str) -> None:
    want = model.state_dict()
    for ours, theirs in weight_names(num_layers):
        if state[ours].shape != want[ours].shape:
            raise ValueError(f"{folder}: {theirs} has shape {tuple(state[ours].shape)}, not "
                             f"{tuple(want[ours].shape)} as config.json says")


def import_huggingface(folder: str | os.PathLike) -> TransformerLM:
    """A TransformerLM from a Hugging Face Llama folder (config.json and safetensors weights), on
    the CPU in the weights' dtype. Refused with a ValueError that names it: another model type,
    biases, an activation other than silu, scaled or partial RoPE, grouped-query attention, a
    head_dim of its own. Tied embeddings are read into an untied head holding the same values.
    A model that `export_huggingface` wrote comes back with bit-equal weights."""
    folder = os.fspath(folder)
    config = _read_config(folder)
    args = model_args(config, os.path.join(folder, "config.json"))
    state = _our_state_dict(_read_weights(folder), args, folder)
    dtypes = {w.dtype for w in state.values()}
    if len(dtypes) != 1 or next(iter(dtypes)) not in _DTYPES:
        raise ValueError(f"{folder}: the weights are {sorted(map(str, dtypes))}; import needs them all float32, "
                         "bfloat16 or float16")
    eps = args.pop("rms_norm_eps")
    args.pop("tie_word_embeddings")
    model = TransformerLM(**args, dtype=dtypes.pop())
    _check_shapes(model, state, args["num_layers"], folder)
    model.load_state_dict(state, strict=True)
    for m in model.modules():
        if isinstance(m, RMSNorm):
            m.eps = eps
    return model


__all__ = ["EXPORT_FILES", "export_huggingface", "import_huggingface", "save_huggingface", "llama_config",
           "llama_state_dict", "weight_names", "to_rotate_half", "from_rotate_half"]
