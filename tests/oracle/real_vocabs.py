#!/usr/bin/env python3
"""real_vocabs.py — the released Qwen2/Qwen3, Llama 3 and GPT-2 vocabularies,
with reference token ids, for tests/test_tokenizer_hf.c's opt-in test
`tokenizer_hf_real_vocabs` (not run in CI: it downloads ~77 MB from PyPI).

Where they come from: llama.cpp ships each model family's vocabulary as a small
GGUF file (models/ggml-vocab-NAME.gguf: the tokens, the merges, the token
types) together with test strings (.inp) and the ids Hugging Face `tokenizers`
gave them with the model's own tokenizer.json (.out, made by llama.cpp's
convert_hf_to_gguf_update.py). The llama-cpp-python source distribution on
PyPI carries that directory and the gguf reader (gguf-py), so:

  pip download llama-cpp-python --no-deps --no-binary :all:   (done here)
  → DIR/NAME/tokenizer.json  (rebuilt from the GGUF: BPE vocab and merges in
                              rank order, control/user tokens as added_tokens,
                              the family's pre-tokenizer regex and normalizer)
  → DIR/NAME/cases.jsonl     ({"text", "ids", "decoded"} per test string)

for NAME in qwen2 (Qwen2 and Qwen3 share it), llama-bpe (Llama 3), gpt-2.
The regexes are the ones each family's tokenizer.json declares (llama.cpp's
GGUF records only the family's name, `tokenizer.ggml.pre`).

  python3 tests/oracle/real_vocabs.py --out /tmp/vocabs
  RLRUN_REAL_VOCABS=/tmp/vocabs build/rlrun-tests tokenizer_hf_real_vocabs
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import unicodedata

FAMILIES = {
    # name: (pre-tokenizer regex or None for GPT-2's ByteLevel(use_regex), NFC, ignore_merges)
    "qwen2": (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
              True, False),
    "llama-bpe": (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
                  False, True),
    "gpt-2": (None, False, False),
}


def tokenizer_json(reader, name):
    pat, nfc, ignore_merges = FAMILIES[name]

    def strings(key):
        f = reader.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    toks = strings("tokenizer.ggml.tokens")
    merges = strings("tokenizer.ggml.merges")
    tf = reader.fields["tokenizer.ggml.token_type"]
    types = [int(tf.parts[i][0]) for i in tf.data]
    vocab, added = {}, []
    for i, (t, ty) in enumerate(zip(toks, types)):
        if ty in (3, 4):  # GGUF CONTROL / USER_DEFINED: tokenizer.json's added tokens
            added.append({"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": ty == 4, "special": ty == 3})
        else:
            vocab[t] = i
    if pat is None:
        pre = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    else:
        pre = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pat}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": {"type": "NFC"} if nfc else None, "pre_tokenizer": pre, "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                      "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": ignore_merges, "vocab": vocab, "merges": merges}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--sdist", help="a llama-cpp-python .tar.gz already downloaded (default: pip download it)")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="real-vocabs-")
    sdist = a.sdist
    if not sdist:
        subprocess.check_call([sys.executable, "-m", "pip", "download", "-q", "llama-cpp-python", "--no-deps",
                               "--no-binary", ":all:", "-d", work])
        sdist = glob.glob(os.path.join(work, "llama_cpp_python-*.tar.gz"))[0]
    with tarfile.open(sdist) as t:
        want = [m for m in t.getmembers() if "/vendor/llama.cpp/gguf-py/" in m.name or
                any(f"/models/ggml-vocab-{n}.gguf" in m.name for n in FAMILIES)]
        t.extractall(work, members=want)
    root = glob.glob(os.path.join(work, "llama_cpp_python-*", "vendor", "llama.cpp"))[0]
    sys.path.insert(0, os.path.join(root, "gguf-py"))
    from gguf import GGUFReader  # noqa: E402 (the sdist's own reader)

    for name, (_, nfc, _) in FAMILIES.items():
        base = os.path.join(root, "models", f"ggml-vocab-{name}.gguf")
        d = os.path.join(a.out, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(tokenizer_json(GGUFReader(base), name), f, ensure_ascii=False)
        texts = open(base + ".inp", encoding="utf-8").read().split("\n__ggml_vocab_test__\n")
        if texts and texts[-1] == "":
            texts.pop()
        outs = open(base + ".out", encoding="utf-8").read().split("\n")
        with open(os.path.join(d, "cases.jsonl"), "w", encoding="utf-8") as f:
            for text, ids in zip(texts, outs):
                f.write(json.dumps({"text": text, "ids": [int(x) for x in ids.split()],
                                    "decoded": unicodedata.normalize("NFC", text) if nfc else text},
                                   ensure_ascii=False) + "\n")
        print(f"{name}: {len(texts)} cases, {d}")


if __name__ == "__main__":
    main()
