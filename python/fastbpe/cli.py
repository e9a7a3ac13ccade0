"""The `fastbpe` command line."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
import warnings


def _message(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror and e.filename is None:
        return e.strerror  # a message that names its file itself: without "[Errno N]"
    return str(e)


def _die(msg) -> None:
    """One line on stderr and exit status 2; `msg` may be an exception."""
    print(f"fastbpe: error: {_message(msg) if isinstance(msg, BaseException) else msg}", file=sys.stderr)
    raise SystemExit(2)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line each, without the source line that raised them."""
    print(f"fastbpe: warning: {message}", file=file or sys.stderr)


class _Parser(argparse.ArgumentParser):
    """Usage errors (a missing argument, a value that is not a number) as one line, exit 2.

    An option the user did not give is left out of the parsed arguments (argument_default
    SUPPRESS): each command is a function whose keyword defaults are its options' defaults, so
    the function owns them, for the command line and for `demo` alike."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("argument_default", argparse.SUPPRESS)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:
        _die(f"{self.prog}: {message} (see {self.prog} --help)")


def _input_file(path: str, what: str = "file") -> None:
    """Exit with one line unless `path` is a file this process can read."""
    if not os.path.exists(path):
        _die(f"no such {what}: {path}")
    if os.path.isdir(path):
        _die(f"{path} is a folder; give a {what} inside it")
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        _die(f"cannot read {path}: {e.strerror or e}")


def _corpus_file(path: str, text_field: str) -> None:
    """Exit with one line unless `path` is a corpus file this process can read: its format
    known (see fastbpe.corpus), and the package that reads it installed."""
    from fastbpe import corpus

    _input_file(path)
    try:
        corpus.check_text_field(text_field)
        corpus.check_readable(path)
    except (ValueError, TypeError, OSError, ImportError) as e:
        _die(e)


def _outputs(outputs: list[tuple[str, str]], inputs: list[tuple[str, str]]) -> None:
    """Exit with one line unless every output can be written without replacing an input or
    another output; runs before any long work. Missing folders are created."""
    from fastbpe import _io

    try:
        _io.refuse_overwrite(outputs, inputs)
        for _, path in outputs:
            _io.check_writable(path, create_folder=True)
    except (ValueError, OSError) as e:
        _die(e)


def _token_outputs(outputs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Token files and their sidecars, which are written too."""
    from fastbpe.token_files import sidecar_path

    return [item for what, p in outputs for item in ((what, p), (f"the sidecar of {what}", sidecar_path(p)))]


class _Terminated(BaseException):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that temporary files are removed."""


@contextlib.contextmanager
def _interruptible():
    """Ctrl-C and SIGTERM end the command with one line and status 130 or 143, after the writers
    have removed their temporary files (a `kill -9` cannot be caught: the next write into the
    same folder removes what it left)."""

    def on_term(signum, frame):
        raise _Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        yield
    except KeyboardInterrupt:
        print("fastbpe: interrupted; unfinished outputs were removed", file=sys.stderr)
        raise SystemExit(130) from None
    except _Terminated:
        print("fastbpe: terminated (SIGTERM); unfinished outputs were removed", file=sys.stderr)
        raise SystemExit(143) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _load_tokenizer(path: str):
    import fastbpe

    _input_file(path, "tokenizer")
    try:
        return fastbpe.Tokenizer.load(path)
    except (ValueError, OSError) as e:
        _die(f"{path}: {e}" if path not in str(e) else str(e))


def _summary(tok, corpus: str, seconds: float, num_merges: int, text_field: str = "text") -> None:
    """Vocabulary size, merges per second, compression ratio and some learned tokens."""
    from fastbpe.corpus import sample_text

    sample = sample_text(corpus, text_field, 1 << 20)
    print(f"corpus            {corpus} ({os.path.getsize(corpus) / 1e6:.1f} MB)")
    print(f"vocabulary        {tok.vocab_size} tokens ({len(tok.merges)} merges, {len(tok.special_tokens)} special)")
    print(f"training time     {seconds:.2f} s ({num_merges / max(seconds, 1e-9):,.0f} merges/s end to end)")
    from fastbpe.simple import compression_ratio

    ratio = compression_ratio(tok, sample) if sample else 0.0
    print(f"compression       {ratio:.2f} bytes/token (on the first MB of the corpus)")
    words = [t for t in tok.vocab.values() if t.strip() and t.decode("utf-8", "replace").strip().isalpha()]
    longest = sorted(words, key=len, reverse=True)[:8]
    last = [tok.vocab[256 + i] for i in range(max(0, len(tok.merges) - 8), len(tok.merges))]
    print("longest words     " + "  ".join(repr(t.decode("utf-8", errors="replace")) for t in longest))
    print("last merges       " + "  ".join(repr(t.decode("utf-8", errors="replace")) for t in last))


def _check_pattern(pattern: str) -> str | None:
    """The --pattern value as train() takes it, checked before any work ("none": no pattern)."""
    from fastbpe import patterns

    if pattern == "none":
        return None
    try:
        return patterns.canonical(pattern)
    except ValueError as e:
        _die(e)


# Each command is a plain function whose keyword arguments are its options (the parser's dest
# names) and whose defaults are the options' defaults: the parser passes only what was given,
# and `demo` calls the same functions.


def train_tokenizer(corpus: list[str], *, vocab_size: int, out: str, special_tokens: list[str] | None = None,
                    pattern: str = "gpt2", threads: int | None = None, text_field: str = "text") -> None:
    """`fastbpe train-tokenizer`: learn a tokenizer from the corpus files, save it to `out` and
    print a summary. `special_tokens` None: <|endoftext|>."""
    import fastbpe

    if special_tokens is None:
        special_tokens = ["<|endoftext|>"]
    for p in corpus:
        _corpus_file(p, text_field)
    pattern = _check_pattern(pattern)
    _outputs([("--out", out)], [("the corpus", p) for p in corpus])
    t0 = time.perf_counter()
    with _interruptible():
        try:
            tok = fastbpe.train(
                corpus,
                vocab_size,
                special_tokens=special_tokens,
                pattern=pattern,
                num_threads=threads,
                text_field=text_field,
            )
            seconds = time.perf_counter() - t0
            tok.save(out)
        except (ValueError, OSError, ImportError) as e:
            _die(e)
    _summary(tok, corpus[0], seconds, len(tok.merges), text_field)
    print(f"saved             {out}")


def compare(file: str, *, text_field: str = "text", tokenizer: str | None = None, vocab_size: int = 4096,
            max_bytes: int = 5_000_000) -> None:
    """The lecture's table: character, byte, word and BPE tokenizers on one file."""
    import fastbpe
    from fastbpe import corpus
    from fastbpe.simple import ByteTokenizer, CharacterTokenizer, WordTokenizer, compression_ratio

    _corpus_file(file, text_field)
    if max_bytes < 1:
        _die(f"--max-bytes must be positive, got {max_bytes}")
    bpe = _load_tokenizer(tokenizer) if tokenizer else None
    try:
        if corpus.detect_format(file).plain_text:
            with open(file, encoding="utf-8", errors="replace", newline="") as f:
                text = f.read(max_bytes)
        else:  # the first documents, one line apart
            text = corpus.sample_text(file, text_field, max_bytes)
    except (ValueError, OSError) as e:
        _die(f"cannot read {file}: {_message(e)}")
    # Word vocabulary and BPE are learned on the first 90% and measured on the whole text, so
    # the word tokenizer meets unseen words as it would in use.
    cut = int(len(text) * 0.9)
    train_part = text[:cut]
    if bpe is None:
        try:
            bpe = fastbpe.train(iter([train_part]), vocab_size, progress=False)
        except ValueError as e:
            _die(f"{file}: {e}")
    tokenizers = [
        ("character", CharacterTokenizer()),
        ("byte", ByteTokenizer()),
        ("word", WordTokenizer(train_part)),
        (f"bpe ({bpe.vocab_size})", bpe),
    ]
    print(f"{file}: {len(text.encode('utf-8')) / 1e6:.2f} MB measured (word and BPE vocabularies from the first 90%)")
    print(f"| tokenizer | vocabulary | bytes/token | unknown tokens | encode time (s) |")
    print(f"|---|---:|---:|---:|---:|")
    for name, tok in tokenizers:
        t0 = time.perf_counter()
        ids = tok.encode(text)
        seconds = time.perf_counter() - t0
        ratio = compression_ratio(tok, text) if ids else 0.0
        unk = getattr(tok, "unk_id", None)
        unk_rate = (sum(1 for i in ids if i == unk) / len(ids)) if (unk is not None and ids) else 0.0
        print(f"| {name} | {tok.vocab_size:,} | {ratio:.2f} | {unk_rate:.2%} | {seconds:.3f} |")


def encode(corpus: str, *, tokenizer: str, out: str, text_field: str = "text", eot_token: str | None = None,
           val_out: str | None = None, val_fraction: float = 0.05, threads: int | None = None) -> None:
    """`fastbpe encode`: the corpus as a token file `out` (and its last `val_fraction` in
    `val_out`, split after a separator)."""
    from fastbpe import corpus as corpus_mod
    from fastbpe import token_files

    _corpus_file(corpus, text_field)
    _input_file(tokenizer, "tokenizer")
    if val_out is not None and not 0 < val_fraction < 1:
        _die(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    outputs = [("--out", out)] + ([("--val-out", val_out)] if val_out is not None else [])
    _outputs(_token_outputs(outputs), [("the corpus", corpus), ("--tokenizer", tokenizer)])
    tok = _load_tokenizer(tokenizer)
    t0 = time.perf_counter()
    with _interruptible(), contextlib.ExitStack() as stack:
        # With a validation split, nothing goes under --out before the split: the whole stream
        # is encoded into a scratch file first (removed at the end, whatever happens).
        target = stack.enter_context(token_files.scratch_path(out)) if val_out is not None else out
        try:
            arr = tok.encode_file(corpus, target, num_threads=threads, text_field=text_field,
                                  eot_token=eot_token,
                                  metadata={"tokenizer": os.path.abspath(tokenizer)})
        except (ValueError, OSError, ImportError) as e:
            _die(_message(e).replace(target, out))
        seconds = time.perf_counter() - t0
        n = len(arr)
        del arr
        mb = os.path.getsize(corpus) / 1e6
        print(f"encoded {corpus} ({mb:.1f} MB) into {n:,} tokens in {seconds:.2f} s ({mb / max(seconds, 1e-9):.1f} MB/s)")
        if val_out is not None:
            eot = corpus_mod.eot_id(tok, eot_token)
            try:
                n_train, n_val = token_files.split_tokens(target, out, val_out, val_fraction, eot)
            except (ValueError, OSError) as e:
                _die(f"{corpus}: {e}")
            print(f"split: {n_train:,} training tokens in {out}, {n_val:,} validation tokens in {val_out}")


def verify_tokens(files: list[str]) -> None:
    """`fastbpe verify-tokens`: check token files completely (sidecar, size and checksum) and
    report the largest id."""
    from fastbpe import token_files

    for path in files:
        try:
            scan = token_files.scan_tokens(path)
        except (ValueError, OSError) as e:
            _die(e)
        meta = scan.metadata
        checked = "checksum ok" if scan.checksum_verified else "size ok, no checksum recorded (re-encode to add one)"
        largest = "" if scan.max_id is None else f", largest id {scan.max_id:,}"
        vocab = f" (vocab_size {meta['vocab_size']:,})" if isinstance(meta.get("vocab_size"), int) else ""
        print(f"{path}: {meta['num_tokens']:,} {meta['dtype']} tokens{largest}{vocab}, {checked}")


def _lm():
    try:
        import fastbpe.lm as lm
    except ImportError as e:
        _die(str(e))
    return lm


def _error_text(e: Exception) -> str:
    """An exception as one line: an OSError fastbpe raised carries its whole message in strerror."""
    if isinstance(e, OSError) and e.strerror and not e.filename:
        return e.strerror
    return str(e)


def _check_token_file(flag: str, path: str) -> None:
    """The CLI's words for a path that is not a token file (the reader checks the file itself)."""
    if os.path.isdir(path):
        _die(f"{flag} {path} is a folder: give a token file (made by fastbpe encode)")
    if not os.path.exists(path):
        _die(f"{flag} {path}: no such file (make token files with fastbpe encode)")
    if path.endswith(".json") and os.path.isfile(path[: -len(".json")]):
        _die(f"{flag} {path} is the metadata of the token file {path[: -len('.json')]}: give the token file itself")
    if not os.path.isfile(path + ".json"):
        _die(f"{flag} {path} is not a token file: {path}.json, which fastbpe encode writes beside every token file, "
             "is missing (make token files with fastbpe encode)")


def lm_train(*, train: str, val: str, out: str, preset: str = "tiny", max_steps: int | None = None,
             resume: bool = False, overwrite: bool = False, seed: int | None = None, precision: str | None = None,
             device: str | None = None, compile: bool = False, deterministic: bool = False,
             batch_size: int | None = None, lr: float | None = None, eval_every: int | None = None,
             checkpoint_every: int | None = None, log_every: int | None = None, log: str | None = None) -> None:
    """`fastbpe lm train`: train the preset's model on token files into the run folder `out`;
    None leaves the preset's value."""
    lm = _lm()
    _check_token_file("--train", train)
    _check_token_file("--val", val)
    overrides = {k: v for k, v in {
        "max_steps": max_steps, "seed": seed, "precision": precision, "device": device,
        "compile": compile or None, "batch_size": batch_size, "eval_every": eval_every,
        "checkpoint_every": checkpoint_every, "max_lr": lr, "deterministic": deterministic or None,
        "log_every": log_every, "report": log,
    }.items() if v is not None}
    try:
        config = lm.preset(preset, **overrides)
        if lr is not None:  # the cosine floor keeps the preset's ratio to the peak
            base = lm.preset(preset)
            config = config.replace(min_lr=lr * base.min_lr / base.max_lr)
        config.validate()
        result = lm.train_lm(config, train, val, out, resume=resume, overwrite=overwrite)
    except (ValueError, OSError, ImportError, lm.TrainingDiverged) as e:  # ImportError: --log's missing extra
        _die(_error_text(e))
    if result.first_val_loss is not None and result.last_val_loss is not None:
        print(f"validation loss {result.first_val_loss:.3f} -> {result.last_val_loss:.3f} after {result.steps} steps "
              f"({result.tokens_per_s:,.0f} tokens/s); loss curve: {os.path.join(out, 'loss.png')}")
    if result.stopped_by:
        raise SystemExit(130 if result.stopped_by == "SIGINT" else 143)


def load_run(run_dir: str):
    """(model, tokenizer) of a run folder (fastbpe.lm.load_run), or one line and exit 2."""
    lm = _lm()
    try:
        return lm.load_run(run_dir)
    except (ValueError, OSError) as e:
        _die(_error_text(e))


def lm_export(*, run: str, out: str, overwrite: bool = False) -> None:
    """`fastbpe lm export`: the run as a Hugging Face Llama folder."""
    lm = _lm()
    try:
        out = lm.export_huggingface(run, out, overwrite=overwrite)
    except (ValueError, OSError, ImportError) as e:
        _die(_error_text(e))
    print(f"exported {run} to {out} (Hugging Face Llama: AutoModelForCausalLM.from_pretrained and "
          "AutoTokenizer.from_pretrained load it)")


def lm_generate(*, run: str, prompt: str = "", max_new_tokens: int = 200, temperature: float = 0.8,
                top_p: float = 0.95, top_k: int | None = None, stream: bool = False, samples: int = 1,
                seed: int = 0) -> None:
    """`fastbpe lm generate`: `samples` continuations of `prompt` from the run's newest checkpoint."""
    # The arguments are checked before the model is loaded.
    lm = _lm()
    from fastbpe.lm.sample import check_sampling

    try:
        check_sampling(temperature, top_p, top_k, names=("--temperature", "--top-p", "--top-k"))
    except ValueError as e:
        _die(str(e))
    if max_new_tokens < 0:
        _die(f"--max-new-tokens must be at least 0, got {max_new_tokens}")
    if samples < 1:
        _die(f"--samples must be at least 1, got {samples}")
    import torch

    model, tok = load_run(run)
    gen = torch.Generator().manual_seed(seed)
    on_piece = None
    if stream:
        def on_piece(piece: str) -> None:
            print(piece, end="", flush=True)
    for i in range(samples):
        print(f"--- sample {i + 1}\n{prompt}", end="", flush=True)
        try:
            text = lm.generate(model, tok, prompt, max_new_tokens, temperature=temperature,
                               top_p=top_p, top_k=top_k, generator=gen, stream=on_piece)
        except ValueError as e:
            print(file=sys.stdout)
            _die(str(e))
        print("" if stream else text)


def lm_eval(*, run: str, data: str, batch_size: int = 32, max_batches: int | None = None) -> None:
    """`fastbpe lm eval`: loss, perplexity and bits per byte of a run's newest checkpoint on a
    token file."""
    lm = _lm()
    from fastbpe.lm.data import token_metadata
    from fastbpe.lm.evaluate import evaluate

    _check_token_file("--data", data)
    if batch_size < 1:
        _die(f"--batch-size must be at least 1, got {batch_size}")
    if max_batches is not None and max_batches < 1:
        _die(f"--max-batches must be at least 1, got {max_batches}")
    model, tok = load_run(run)
    path = data
    try:
        want = token_metadata(path).get("tokenizer_sha256")
        if want and want != tok.fingerprint():
            _die(f"{path} was encoded by another tokenizer (sha256 {want}) than the run's "
                 f"({tok.fingerprint()}): encode the text with {os.path.join(run, 'tokenizer.json')}")
        tokens = lm.open_tokens(path)
        if len(tokens) and int(tokens.max()) >= model.vocab_size:
            _die(f"{path} holds token id {int(tokens.max())}, outside the model's vocabulary of {model.vocab_size}")
        r = evaluate(model, tokens, batch_size, model.context_length, "cpu", tokenizer=tok,
                     max_batches=max_batches)
    except (ValueError, OSError) as e:
        _die(_error_text(e))
    print(f"{path}: {r.tokens:,} predicted tokens, {r.bytes:,} bytes")
    bpb = "n/a (the predicted tokens are all special tokens)" if r.bpb is None else f"{r.bpb:.4f}"
    print(f"loss {r.loss:.4f} | perplexity {r.perplexity:.2f} | bits per byte {bpb}")


def napkin(argv: list[str]) -> None:
    """`fastbpe napkin`: its options belong to fastbpe.napkin.napkin_main."""
    from fastbpe.napkin import napkin_main  # plain arithmetic: no torch needed

    napkin_main(argv)


def demo(*, corpus: str | None = None, text_field: str = "text", vocab_size: int = 4096, out: str = "runs/demo",
         preset: str | None = None, max_steps: int | None = None, prompt: str = "ROMEO:",
         tokenizer_only: bool = False) -> None:
    """The main job: corpus -> tokenizer -> token files -> a trained tiny LM -> samples, through
    the commands' own functions (every option not named here keeps its default)."""
    from fastbpe import corpus as corpus_mod

    if not tokenizer_only:
        _lm()  # without torch: say so before any work
    path = corpus or str(corpus_mod.shakespeare())
    os.makedirs(out, exist_ok=True)
    tok_path = os.path.join(out, "tokenizer.json")
    print("== 1/4 train a tokenizer")
    train_tokenizer([path], vocab_size=vocab_size, out=tok_path, text_field=text_field)
    if tokenizer_only:
        return
    print("\n== 2/4 encode train and validation splits")
    train_bin, val_bin = os.path.join(out, "train.bin"), os.path.join(out, "val.bin")
    encode(path, tokenizer=tok_path, out=train_bin, val_out=val_bin, val_fraction=0.05, text_field=text_field)
    print("\n== 3/4 train a language model")
    import torch

    preset = preset or ("small" if torch.cuda.is_available() else "tiny")
    run_dir = os.path.join(out, "run")
    # The demo's own folder: a second demo replaces the first one's run (and says what it removed).
    lm_train(train=train_bin, val=val_bin, out=run_dir, preset=preset, max_steps=max_steps, seed=0, overwrite=True)
    print("\n== 4/4 sample from it")
    lm_generate(run=run_dir, prompt=prompt, max_new_tokens=120, temperature=0.8, top_p=0.95, seed=0, samples=2)


def _version() -> str:
    from fastbpe import __version__

    return __version__


CORPUS_HELP = "UTF-8 text, JSON lines (.jsonl) or Parquet (.parquet); text and JSON lines may be .gz, .xz or .zst"


def build_parser() -> argparse.ArgumentParser:
    """The command line: each (sub)command's `func` is the function it calls with its options."""
    parser = _Parser(prog="fastbpe", description="Byte-level BPE tokenizers and the LM path after them.")
    parser.add_argument("--version", action="version", version=f"fastbpe {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train-tokenizer", help="learn a BPE tokenizer from corpus files")
    p.add_argument("corpus", nargs="+", help=CORPUS_HELP)
    p.add_argument("--text-field",
                   help="the JSON field or Parquet column holding each document's text (default text)")
    p.add_argument("--vocab-size", type=int, required=True, help="256 bytes + merges + special tokens")
    p.add_argument("--out", required=True, help="where to write the tokenizer (JSON)")
    p.add_argument("--special-token", action="append", dest="special_tokens", metavar="SPECIAL_TOKEN",
                   help="repeatable; default: <|endoftext|>")
    p.add_argument("--pattern", help="gpt2, cl100k, o200k (or tiktoken's r50k_base, cl100k_base, o200k_base), none, or a regex (default gpt2)")
    p.add_argument("--threads", type=int, help="default: all cores")
    p.set_defaults(func=train_tokenizer)

    p = sub.add_parser("compare", help="the lecture's table: character, byte, word and BPE tokenizers on a file")
    p.add_argument("file", help=CORPUS_HELP)
    p.add_argument("--text-field",
                   help="the JSON field or Parquet column holding each document's text (default text)")
    p.add_argument("--tokenizer", help="a saved BPE tokenizer or a Hugging Face tokenizer.json (default: train one on the file)")
    p.add_argument("--vocab-size", type=int, help="BPE vocabulary when training one")
    p.add_argument("--max-bytes", type=int, help="read at most this many characters")
    p.set_defaults(func=compare)

    p = sub.add_parser("encode", help="encode a corpus file into a flat token array (np.memmap-ready)")
    p.add_argument("corpus", help=CORPUS_HELP + "; each document of JSON lines or Parquet is followed by <|endoftext|>")
    p.add_argument("--text-field",
                   help="the JSON field or Parquet column holding each document's text (default text)")
    p.add_argument("--tokenizer", required=True, help="a tokenizer saved by train-tokenizer, or a Hugging Face tokenizer.json")
    p.add_argument("--eot-token", help="the special token after each document of JSON lines or Parquet "
                   "(default <|endoftext|>; e.g. a tokenizer.json's own end of text)")
    p.add_argument("--out", required=True, help="the token file (its dtype goes to OUT.json)")
    p.add_argument("--val-out", help="also split off the last --val-fraction of the tokens into this file")
    p.add_argument("--val-fraction", type=float)
    p.add_argument("--threads", type=int, help="default: all cores")
    p.set_defaults(func=encode)

    p = sub.add_parser("verify-tokens", help="check token files: sidecar, size, checksum; print the largest id")
    p.add_argument("files", nargs="+", help="token files written by fastbpe encode")
    p.set_defaults(func=verify_tokens)

    p = sub.add_parser("lm", help="train and sample language models")
    lm_sub = p.add_subparsers(dest="lm_command", required=True)
    q = lm_sub.add_parser("train", help="train a TransformerLM on token files")
    q.add_argument("--train", required=True, help="training tokens (from fastbpe encode)")
    q.add_argument("--val", required=True, help="validation tokens")
    q.add_argument("--out", required=True, help="the run folder (checkpoints, metrics.jsonl, loss.png)")
    q.add_argument("--preset", help="tiny, small or gpt2-small (default tiny)")
    q.add_argument("--max-steps", type=int)
    q.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint in --out")
    q.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out (deletes its ckpt_*.pt, metrics.jsonl, loss.png, config.json, "
                   "tokenizer.json; nothing else)")
    q.add_argument("--seed", type=int)
    q.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"])
    q.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when available)")
    q.add_argument("--compile", action="store_true", help="wrap the model in torch.compile")
    q.add_argument("--deterministic", action="store_true",
                   help="reproducible kernels: a run and its --resume repeat bit for bit on the same machine and "
                   "thread count (may be slower)")
    q.add_argument("--batch-size", type=int)
    q.add_argument("--lr", type=float, help="peak learning rate (the floor keeps the preset's ratio to it)")
    q.add_argument("--eval-every", type=int)
    q.add_argument("--checkpoint-every", type=int)
    q.add_argument("--log-every", type=int,
                   help="steps between plain progress lines when stderr is not a terminal (default 50)")
    q.add_argument("--log", choices=["none", "tensorboard", "wandb"],
                   help="also report to TensorBoard (RUN/tb; extra fastbpe-rs[tensorboard]) or Weights & Biases "
                   "(extra fastbpe-rs[wandb]; WANDB_MODE=offline works offline)")
    q.set_defaults(func=lm_train)
    q = lm_sub.add_parser("generate", help="sample text from a trained run")
    q.add_argument("--run", required=True, help="a run folder written by lm train")
    q.add_argument("--prompt", help="text to continue")
    q.add_argument("--max-new-tokens", type=int)
    q.add_argument("--temperature", type=float)
    q.add_argument("--top-p", type=float)
    q.add_argument("--top-k", type=int, help="keep the k most likely tokens (default: all)")
    q.add_argument("--stream", action="store_true", help="print each token as it is sampled")
    q.add_argument("--samples", type=int)
    q.add_argument("--seed", type=int)
    q.set_defaults(func=lm_generate)
    q = lm_sub.add_parser("export", help="write a trained run as a Hugging Face Llama folder")
    q.add_argument("--run", required=True, help="a run folder written by lm train")
    q.add_argument("--out", required=True, help="the folder to write (config.json, model.safetensors, tokenizer)")
    q.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    q.set_defaults(func=lm_export)
    q = lm_sub.add_parser("eval", help="loss, perplexity and bits per byte of a run on a token file")
    q.add_argument("--run", required=True, help="a run folder written by lm train")
    q.add_argument("--data", required=True, help="a token file (from fastbpe encode with the run's tokenizer)")
    q.add_argument("--batch-size", type=int)
    q.add_argument("--max-batches", type=int, help="default: the whole file")
    q.set_defaults(func=lm_eval)

    # napkin's options belong to fastbpe.napkin.napkin_main: they pass through to it, --help included.
    p = sub.add_parser("napkin", help="the lecture's napkin math: training time and memory (see --help)", add_help=False)
    p.set_defaults(func=napkin)

    p = sub.add_parser("demo", help="the main job: tokenizer, token files, a tiny LM and samples, on the default corpus")
    p.add_argument("--corpus", help="a corpus file instead of the default Shakespeare corpus (" + CORPUS_HELP + ")")
    p.add_argument("--text-field",
                   help="the JSON field or Parquet column holding each document's text (default text)")
    p.add_argument("--vocab-size", type=int)
    p.add_argument("--out", help="folder for everything the demo writes")
    p.add_argument("--preset", help="default: tiny on CPU, small on a GPU")
    p.add_argument("--max-steps", type=int, help="default: the preset's")
    p.add_argument("--prompt", help="what the samples continue")
    p.add_argument("--tokenizer-only", action="store_true", help="stop after training the tokenizer")
    p.set_defaults(func=demo)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command != "napkin" and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    # What the user gave, by the command function's keyword names (see _Parser): the rest keeps
    # the function's defaults.
    options = {k: v for k, v in vars(args).items() if k not in ("func", "command", "lm_command")}
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = _show_warning
        if args.func is napkin:
            napkin(rest)
        else:
            args.func(**options)


if __name__ == "__main__":
    main()
