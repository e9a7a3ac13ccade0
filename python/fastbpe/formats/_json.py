"""JSON tokenizer files read strictly: UTF-8, valid JSON, no key twice in one object.

`fastbpe.formats.gpt2` (`vocab.json`), `fastbpe.formats.native` (fastbpe's own file) and
`fastbpe.formats.huggingface` (`tokenizer.json`) read their files with `read_json`, so that a
malformed file is one ValueError naming it, whichever reader meets it.
"""

from __future__ import annotations

import json


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    out = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def read_json(path: str, what: str):
    """The JSON value in `path`; ValueError naming the file if it is not UTF-8 JSON, or if an
    object has a key twice (JSON parsers differ on which one wins)."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not {what}: not UTF-8 (invalid byte at offset {e.start})") from None
    except _DuplicateKey as e:
        raise ValueError(f"{path}: the key {e.args[0]!r} appears twice in one JSON object") from None
    except RecursionError:
        raise ValueError(f"{path} is not {what} (bad JSON: nested too deeply)") from None
    except ValueError as e:
        raise ValueError(f"{path} is not {what} (bad JSON: {e})") from None


def json_type(value) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")

