"""Other libraries' tokenizer files.

- `fastbpe.formats.huggingface`: Hugging Face `tokenizer.json` (and a `transformers` folder).
- `fastbpe.formats.onig`: pre-tokenization regexes rewritten for Oniguruma, the regex engine of
  Hugging Face `tokenizers`, so that they split text exactly as Python's `regex` does.
"""
