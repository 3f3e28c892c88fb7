"""Build the shipped CLIP tokenizer files (vocab.json, merges.txt) with no Hub access.

The OpenAI BPE table ``bpe_simple_vocab_16e6.txt.gz`` ships inside the
``open_clip_torch`` wheel. This script takes that wheel (downloading it with
``pip download --no-deps`` when no path is given; it is never installed) and
writes the Hugging Face ``CLIPTokenizer`` files into
``src/hf_negationclip/tokenizer/``.

    python scripts/build_tokenizer_files.py [--wheel PATH] [--out DIR]

The conversion follows the original ``clip/simple_tokenizer.py``: merges are
lines[1 : 49152 - 256 - 2 + 1]; the vocabulary is the 256 byte-unicode
characters, the same with ``</w>``, one entry per merge, then
``<|startoftext|>`` and ``<|endoftext|>`` (49408 entries).
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "hf_negationclip" / "tokenizer"


def bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable-unicode table of GPT-2 / CLIP BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def convert(bpe_text: str) -> tuple[dict[str, int], list[str]]:
    merges = bpe_text.split("\n")[1 : 49152 - 256 - 2 + 1]
    pairs = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(p) for p in pairs]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, [" ".join(p) for p in pairs]


def fetch_wheel(dest: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "open_clip_torch", "-d", str(dest)], check=True
    )
    return next(dest.glob("open_clip_torch-*.whl"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help="path to an open_clip_torch wheel (default: pip download it)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or fetch_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            bpe_text = gzip.decompress(zf.read(BPE_MEMBER)).decode("utf-8")
    vocab, merges = convert(bpe_text)
    assert len(vocab) == 49408, len(vocab)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (args.out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {args.out} (from {Path(wheel).name})")


if __name__ == "__main__":
    main()
