"""Tokenizer files: each format has one module that reads it and writes it.

- `fastbpe.formats.gpt2`: GPT-2's `vocab.json` and `merges.txt`, and its byte alphabet.
- `fastbpe.formats.tiktoken`: tiktoken's `.tiktoken` rank files and the merges their rule implies.
- `fastbpe.formats.native`: fastbpe's own tokenizer file (`save` / `load`) and the pickled state.
- `fastbpe.formats.huggingface`: Hugging Face `tokenizer.json` (and a `transformers` folder).
- `fastbpe.formats.onig`: pre-tokenization regexes rewritten for Oniguruma, the regex engine of
  Hugging Face `tokenizers`, so that they split text exactly as Python's `regex` does.
"""
