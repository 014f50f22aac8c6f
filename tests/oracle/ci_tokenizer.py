#!/usr/bin/env python3
"""ci_tokenizer.py — byte-level BPE tokenizers trained and run by the pip `tokenizers`
library (Hugging Face's Rust implementation), for rlrun's tokenizer.json reader and
encoder/decoder tests. Independent of the C code: every id and every decoded string below
is what `tokenizers` itself produces; nothing is computed by a second reading of the format.

Writes under OUT/tokenizer/, one directory per configuration, each with
  tokenizer.json         as the library saves it (qwen2_legacy: rewritten, see below)
  tokenizer_config.json  bos/eos/pad token names, as the checkpoints that ship them
  cases.jsonl            one {"text", "ids", "decoded"} a line, where
                           ids     = tok.encode(text, add_special_tokens=False).ids
                           decoded = tok.decode(ids, skip_special_tokens=False)
                         (qwen2_decode: one {"ids", "decoded", "decoded_skip"} a line, see below)

Configurations (post_processor null in all; the C code never adds specials in encode):
  qwen2         NFC; Sequence[Split(Qwen2 regex, isolated), ByteLevel(no prefix, no regex)];
                specials <|endoftext|> <|im_start|> <|im_end|> (ids vocab_size, +1, +2),
                then the non-special added tokens <think> </think> (normalized=False)
  qwen2_legacy  qwen2's tokenizer.json with model.merges as "a b" strings, "" for
                continuing_subword_prefix / end_of_word_suffix and no ignore_merges key,
                as older Qwen2/Qwen3 checkpoints ship it; checked to load and encode the
                same as qwen2; qwen2's cases
  gpt2          ByteLevel(no prefix, use_regex: the GPT-2 regex) alone; <|endoftext|>
  llama3        Sequence[Split(Llama-3 regex, isolated), ByteLevel(no prefix, no regex)];
                <|begin_of_text|> <|end_of_text|> <|eot_id|>; model.ignore_merges = true
                as the Llama-3 checkpoints ship it (a pre-token that is a whole vocab entry
                is one token, whatever the merges would make of it), and the merges of four
                frequent leaf words (" word" tokens) dropped so that the flag changes ids
  prefix        gpt2's model with ByteLevel(add_prefix_space=True, use_regex=True): every
                segment between added tokens that does not start with " " gets one
  added_norm    qwen2's model and pipeline with added tokens of both matching passes (HF
                finds the normalized=False ones in the raw text, then the normalized=True ones
                in NFC of each piece between): special "bc" (normalized=False) against
                non-special "ab" and "abcd" (normalized=True): "abc" -> a | bc; "café",
                "\u212bngstrom" (ANGSTROM SIGN), "\u1f71λφα" (not NFC as written), "Å!"
                (normalized=True) and "A\u030a!" (normalized=False); lstrip/rstrip on both
                kinds (<|sep|> special, <tool>, <n>, [r], (w)); see ADDED_NORM for what HF does
                with those contents in encode and decode
  single_word   gpt2's model with single_word added tokens "xab", "tok", "<m>", "tag"
                (lstrip+rstrip) and "wrd" (normalized=True), and the plain "ab"; texts where
                they touch letters, digits, marks, ², _, ZWJ/ZWNJ, Ⅻ, punctuation, the ends and
                each other ("xabab", "zxab"); see SINGLE_WORD for HF's word characters
  vocab_special DeepSeek-style: the trainer's special tokens <｜begin▁of▁sentence｜> and
                <｜end▁of▁sentence｜> are model.vocab ids 0 and 1 and added tokens 0 and 1
                (tokenizer_config.json bos/eos), then <｜▁pad▁｜> (special) and <｜User｜>
                <｜Assistant｜> <think> </think> (normalized=True); Llama-3's split regex
  qwen2_decode  qwen2's tokenizer.json and tokenizer_config.json; cases.jsonl holds
                {"ids", "decoded", "decoded_skip"}: decoded = tok.decode(ids,
                skip_special_tokens=False), decoded_skip = the same with True, for targeted
                sequences (byte 0x00's token, characters split over tokens and specials, invalid
                UTF-8: lone continuation bytes, C0/C1, overlong, surrogates, > U+10FFFF), 300
                random ones of 0-20 ids uniform over the whole vocabulary, added tokens
                included, and 100 of 1-12 ids from the single-byte tokens, vocab entries that
                are pieces of characters and the added tokens.
                decoded can hold U+0000 (json \u0000, which jansson refuses without
                JSON_ALLOW_NUL) and U+FFFD, one per maximal invalid subsequence

The BPE models are trained here (no hub access) on a seeded generated corpus of ASCII
words, numbers, whitespace and punctuation runs, Latin accents, Greek, Cyrillic, Arabic,
Hebrew, Devanagari, Thai, CJK, kana, Hangul, emoji, long-s words ("ſtate"), quoted words
("'The") and odd separators (U+00A0, U+0085, U+2028, U+3000, U+FEFF, U+180E, U+200B, U+001C,
...), with the 256 byte-level characters as the initial alphabet, so multi-byte merges exist
and merges that cross a wrong pre-token boundary show in the ids. The cases: a fixed list of
nasty strings, ~450 random strings of 0-80 chars mixing all the pools, 60 corpus lines; the
script checks decoded == text for each (NFC(text) for qwen2; for prefix, a space before each
segment between added tokens that lacks one) and exits 1 on a mismatch; added_norm,
single_word and vocab_special are checked against a second reading of HF's added-token rules
(added_check), qwen2_decode against the ByteLevel decoder's bytes (write_decode_config).
The texts of the new configurations: a targeted list plus random strings from small pools
that make their feature matter (430-500 each). Texts use only code points assigned in
Unicode 9.0 or earlier (the pools are ranges filtered by Unicode 3.2's database, plus
hand-picked emoji of Unicode <= 8.0), no surrogates and no U+0000 (jansson refuses \u0000
by default). The training runs on one thread so the output is the
same every run.
"""
import argparse
import json
import os
import random
import sys
import time
import unicodedata

# One rayon thread: the trainer's output must not depend on scheduling.
os.environ["RAYON_RS_NUM_CPUS"] = "1"
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers  # noqa: E402

QWEN2_RE = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
            r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
LLAMA3_RE = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"""
             r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
VOCAB = 3000
LEAF_DROP = 4  # llama3: leaf words whose merge is dropped (ignore_merges matters)
SEED = 20240917

# ------------------------------------------------------------------ character pools
UCD9 = unicodedata.ucd_3_2_0  # assigned in Unicode 3.2 => assigned in 9.0


def pool(*ranges):
    out = []
    for lo, hi in ranges:
        for cp in range(lo, hi + 1):
            c = chr(cp)
            if cp == 0 or 0xD800 <= cp <= 0xDFFF or UCD9.category(c) in ("Cn", "Cs"):
                continue
            out.append(c)
    return out


POOLS = {
    "ascii": pool((0x20, 0x7E)),
    "ctrl": pool((0x01, 0x08), (0x0B, 0x0C), (0x0E, 0x1F), (0x7F, 0x9F)),
    "latin": pool((0xA0, 0xFF), (0x100, 0x17F), (0x180, 0x24F)),
    "comb": pool((0x300, 0x34E), (0x360, 0x362)),
    "greek": pool((0x386, 0x3CE)),
    "cyrillic": pool((0x400, 0x45F)),
    "arabic": pool((0x621, 0x63A), (0x641, 0x652), (0x660, 0x669), (0x6F0, 0x6F9)),
    "hebrew": pool((0x5D0, 0x5EA)),
    "indic": pool((0x905, 0x939), (0x93E, 0x94D), (0x966, 0x96F)),
    "thai": pool((0xE01, 0xE3A), (0xE40, 0xE59)),
    "space": [" ", "  ", "\t", "\n", "\r\n", "\r", "\x0b", "\x0c", "\x85", "\xa0", "\u1680",
              "\u2000", "\u2003", "\u2009", "\u200a", "\u2028", "\u2029", "\u202f", "\u205f",
              "\u3000", "\ufeff", "\u200b", "\u180e"],
    "punct": pool((0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E), (0x2010, 0x2027),
                  (0x2030, 0x205E), (0x3001, 0x3003), (0xFF01, 0xFF0F)),
    "number": pool((0x30, 0x39), (0xB2, 0xB3), (0xB9, 0xB9), (0xBC, 0xBE), (0x2070, 0x2079),
                   (0x2153, 0x2183), (0x2460, 0x249B), (0xFF10, 0xFF19), (0x1D7CE, 0x1D7FF)),
    "letterlike": pool((0x2100, 0x214F), (0xFB00, 0xFB06), (0x1D400, 0x1D4FF)),
    "jamo": pool((0x1100, 0x1112), (0x1161, 0x1175), (0x11A8, 0x11C2)),
    "kana": pool((0x3041, 0x3094), (0x30A1, 0x30FA), (0xFF66, 0xFF9D)),
    "cjk": pool((0x4E00, 0x9FA5), (0xF900, 0xFA2D), (0x20000, 0x2A6D6)),
    "hangul": pool((0xAC00, 0xD7A3)),
    # Unicode <= 8.0 emoji (blocks fully assigned by then), hand-picked: the 3.2 database
    # does not know them.
    "emoji": ([chr(c) for c in range(0x1F600, 0x1F650)] + [chr(c) for c in range(0x1F300, 0x1F3FB)]
              + [chr(c) for c in range(0x1F400, 0x1F4FF)] + [chr(c) for c in range(0x1F680, 0x1F6C6)]
              + [chr(c) for c in range(0x2600, 0x2700) if UCD9.category(chr(c)) != "Cn"]),
}
SKIN = [chr(c) for c in range(0x1F3FB, 0x1F400)]  # Fitzpatrick modifiers (8.0)
ZWJ_SEQS = ["\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466",  # family
            "\U0001F3F3\ufe0f\u200d\U0001F308",  # rainbow flag
            "\U0001F469\U0001F3FF\u200d\U0001F4BB",  # woman technologist, dark skin
            "\U0001F441\ufe0f\u200d\U0001F5E8\ufe0f",  # eye in speech bubble
            "\u2764\ufe0f", "\U0001F44D\U0001F3FD", "\U0001F1FA\U0001F1F8", "\U0001F1EF\U0001F1F5",
            "\U0001F468\u200d\U0001F4BB", "\u270C\U0001F3FB", "1\ufe0f\u20e3", "#\ufe0f\u20e3"]

WORDS = {
    "en": ("the of and to in is was that for it with as on be at by this had not are but from or "
           "have an they which one you were her all she there would their we him been has when who "
           "will more no if out so said what up its about into than them can only other new some "
           "could time these two may then do first any my now such like our over man me even most "
           "made after also did many before must through back years where much your way well down "
           "should because each just those people Mr how too little state good very make world still "
           "own see men work long get here between both life being under never day same another know "
           "while last might us great old year off come since against go came right used take three "
           "tokenizer encode decode model merges vocabulary byte level unicode normalizer training "
           "Hello World The A I It We They This London Paris Monday January Python Rust").split(),
    "contr": ("don't it's we'll I'm they've she'd you're can't won't isn't I'M WE'LL It'S "
              "THEY'VE she'D You'Re O'Neil's rock'n'roll 'tis y'all").split(),
    "code": ["def", "return", "self", "int", "printf(\"%d\\n\", x);", "{", "}", "==", "->", "//",
             "#include <stdio.h>", "for (i = 0; i < n; i++)", "if x != None:", "&&", "||", "::",
             "std::vector<int>", "0x1F", "/* comment */", "</div>", "<br/>", "x += 1", "**kwargs",
             "self.assertEqual(a, b)", "import numpy as np", "SELECT * FROM t;", "$HOME", "~/.bashrc"],
    "latin": ("café naïve über straße niño façade résumé déjà Zürich São crème brûlée Ångström "
              "Øresund Łódź Dvořák señor garçon Äpfel Öl Übung fiancée œuvre Ærø þorn ðe").split(),
    "longs": "ſtate ſuch ſome ſaid Congreſs beſt firſt Houſe ſo ſhall ſelf ſee ſt ſs".split(),
    "greek": "καλημέρα κόσμε αλφάβητο Ελλάδα λόγος Αθήνα ευχαριστώ νερό ψυχή ΩΜΕΓΑ".split(),
    "cyrillic": "привет мир Москва спасибо хорошо здравствуйте ПРИВЕТ Київ ёлка щука".split(),
    "arabic": ["مرحبا", "السلام", "عليكم", "كتاب", "٣٤٥", "۱۲۳"],
    "hebrew": ["שלום", "עולם", "תודה"],
    "indic": ["नमस्ते", "हिन्दी", "भारत", "१२३"],
    "thai": ["สวัสดี", "ภาษาไทย", "ขอบคุณ"],
    "cjk": ["你好", "世界", "中文", "日本語", "東京", "漢字", "我们", "今天天气很好", "北京", "学习",
            "人工智能", "模型", "。", "，", "！", "「", "」"],
    "kana": ["こんにちは", "ありがとう", "カタカナ", "ひらがな", "トークン", "です", "ます"],
    "hangul": ["안녕하세요", "한국어", "감사합니다", "서울", "세계", "사랑해요", "토큰"],
    "emoji": ["\U0001F600", "\U0001F602", "\U0001F642", "\U0001F44D", "\U0001F389", "\U0001F525",
              "\u2728", "\u2764\ufe0f", "\U0001F680", "\U0001F44D\U0001F3FD"] + ZWJ_SEQS,
}
PUNCT_RUNS = [".", ",", "!", "?", "...", "!!!", "?!", ";", ":", "--", "\u2014", "\u201c", "\u201d",
              "\u00ab", "\u00bb", "(", ")", "[", "]", "\"", "'", "/", "*", "**", "#", "@", "$", "%",
              "&", "==", "=>", "\u2026", "!!!\n\n", ".\n", ":\n\n", "?\r\n", "---\n", "\u3002"]
# Separators that are (or look like, but are not) whitespace to the regexes, so that merges
# with them exist and the cases see how \s classifies them.
ODD_SEP = ["\xa0", "\u3000", "\x85", "\u2028", "\u2029", "\u2009", "\u202f", "\u1680", "\x0b", "\x0c",
           "\ufeff", "\u200b", "\u180e", "\x1c", "\x1f", "\xa0\xa0", " \xa0", "\xa0 ", "\u3000\u3000",
           "\t\x85\n", "\x85\x85", "\u2028\n", " \u2028 ", "\ufeff\ufeff", "\u200b\u200b", "\x1c\x1c", "\u2028\u2028",
           "\u180e\u180e", "\u2029\u2029", "\u2028", "\u180e", "\x85"]
WS_RUNS = [" ", " ", " ", " ", "  ", "   ", "    ", "\t", "\n", "\n\n", "\r\n", " \n", "\t\t", "\n    ",
           "\u00a0", "\u3000", "\r\n\r\n", "        "]


def number(rng):
    k = rng.randrange(7)
    if k == 0:
        return str(rng.randrange(10))
    if k == 1:
        return str(rng.randrange(10 ** rng.randrange(1, 9)))
    if k == 2:
        return f"{rng.uniform(0, 1000):.{rng.randrange(1, 6)}f}"
    if k == 3:
        return str(rng.randrange(1900, 2030))
    if k == 4:
        return f"{rng.randrange(100, 999)}-{rng.randrange(1000, 9999)}"
    if k == 5:
        return f"{rng.randrange(1, 999)},{rng.randrange(0, 999):03d},{rng.randrange(0, 999):03d}"
    return "".join(rng.choice(POOLS["number"]) for _ in range(rng.randrange(1, 5)))


def sentence(rng):
    """One corpus line: words of one or two scripts, numbers, punctuation and whitespace."""
    langs = list(WORDS)
    main = rng.choice(langs + ["en"] * 6 + ["code"] * 2)
    second = rng.choice(langs)
    parts = []
    for _ in range(rng.randrange(3, 18)):
        r = rng.random()
        if r < 0.62:
            w = rng.choice(WORDS[main if rng.random() < 0.8 else second])
            if main == "en" and rng.random() < 0.1:
                w = w.capitalize() if rng.random() < 0.7 else w.upper()
            if rng.random() < 0.04:
                w = "'" + w + ("'" if rng.random() < 0.5 else "")
            parts.append(w)
        elif r < 0.72:
            parts.append(number(rng))
        elif r < 0.82:
            parts.append(rng.choice(PUNCT_RUNS))
        elif r < 0.85:
            parts.append(rng.choice(WS_RUNS))
        else:
            p = rng.choice(list(POOLS))
            parts.append("".join(rng.choice(POOLS[p]) for _ in range(rng.randrange(1, 4))))
        r = rng.random()
        sep = " " if r < 0.76 else rng.choice(ODD_SEP) if r < 0.84 else rng.choice(WS_RUNS + ["", ""])
        parts.append(sep)
    return "".join(parts).rstrip(" ") if rng.random() < 0.7 else "".join(parts)


def corpus(rng, n=12000):
    return [sentence(rng) for _ in range(n)]


# ------------------------------------------------------------------ cases
ALL_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>",
                "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]

FIXED = [
    # empty and whitespace
    "", " ", "  ", "     ", "\t", "\n", "\r", "\r\n", "\n\r", "\r\n\r\n", " \r\n ", "\n\n\n",
    "a\r\nb", "a \r\n b", "a\r \nb", "a\n\r\nb", "\r\n\ta", "\t\ta\t", "a\tb\t\tc", "a   b   ",
    "   a", "a   ", "  a  b  ", "a  \n  b", "x \n\n y", "x  \n", "x\t\t\n\ty", "line1\nline2\n",
    "    def f(x):\n        return x\n", "\n    ", " \n \n ", "a\n", " " * 100, "\n" * 50,
    "\t \t \t", "a \t\n b",
    # contractions
    "I'M", "we'Ll", "it'S", "'s", "'s start", "'S", "'ſ", "it'ſ", "'ſx", "'ſt", "don't", "DON'T",
    "you'RE", "they'Ve", "we'D", "i'm", "I'm", "she'LL", "'ll'll", "''s", "' s", "'", "''", "'''",
    "'S'T'RE'VE'M'LL'D", "'s't're've'm'll'd", "rock 'n' roll", "'tis", "O'Neil's", "l'ſ", "'ﬅ",
    "'\u212a", "'İ", "\u2019s", "it\u2019s", " 's", "  'll", "x'y", "'re'", "'reed", "'vet",
    "'m2", "'d'", "'LLama", "'The", "'There'", "'Some'", "'SELF'", "'Self", "'Dear", "'Me", "'Tis",
    "'ſtate", "'ſome", "'ſuch'", "'ſelf", "it'ſ ſtate", "'\u017fhall", "'Said", "'ReSult", "'Very",
    "'Much", "'Made", "'Long", "'LLoyd", "'DONE", "'the'", "'state'",
    # digits and numbers
    "1234567", "3.14159", "\u0663\u0664\u0665", "\u00bd", "\u216b", "\u00b2\u00b3", "1,000,000",
    "0x1F", "12ab34", "a1b2c3", "\uff11\uff12\uff13", "\u06f1\u06f2\u06f3", "\u0967\u0968\u0969",
    "\U0001D7D9\U0001D7DA\U0001D7DB", "1e-5", " 42", "  42", "x=123456789012", "2024-01-01",
    "\u2460\u2461", "1\u00bd", "Ⅻ12", "٣٤٥678", "007", " 1 2 3 ", "1" * 100, "9" * 7 + "a",
    # punctuation runs
    "!!!\n\n", "...\n", "?!?!\r\n", " !!!", "!!! ", "#!/bin/sh\n", "a.b.c", "<<>>", "--->\n\n\n",
    "\u201cquoted\u201d", "\u00abguillemets\u00bb", "\u00bfQu\u00e9?", "\u00a1Hola!", "!!!\n\n\nabc",
    " ...\r\n\r\n", "a,b;c:d", "(x)", " (x) ", "!@#$%^&*()_+-=[]{}|;:,./<>?`~", "\u2026\u2026",
    "\u3002\u3001", "\uff01\uff1f", "\\n", "\"\"\"", "--", " -- ", "-\n-\n",
    # non-ASCII and odd spaces, controls
    "a\u00a0b", "\u00a0", "a\u3000b", "\u3000\u3000", "a\u2028b", "\u2028", "a\u0085b", "\u0085",
    "a\u2029b", "a\ufeffb", "\ufeffhello", "a\u200bb", "a\u2009b", "a \u00a0 b", "a\u00a0\u00a0b",
    "x\u1680y", "x\u180ey", "\x0b\x0c", "a\x1cb\x1fc", "\x7f", "\x01\x02", "\x1b[31mred\x1b[0m",
    "!\u0085!", "!\u2028!", "!\ufeff!", "!\u00a0!", "!\u180e!", "!\x1c!", "a \u0085 b",
    "\u2028\n", "\n\u2028", "a\u00a0\nb", "x\u202fy\u205fz", "\u00a0\u00a0\u00a0a",
    "the\u00a0\u00a0the", "the\u3000\u3000the", "the\x85\x85the", "the\u2028\u2028the",
    "the\ufeff\ufeffthe", "the\u200b\u200bthe", "the\u180e\u180ethe", "the\x1c\x1cthe",
    "the \u00a0 the", "the \x85 the", "the \u2028 the", "the \ufeff the", "the \u180e the",
    "the\t\x85\nthe", "x\u2029\u2029 y", "!\ufeff\ufeff!", "!\u200b\u200b!", "!\x1c\x1c!",
    # combining sequences and NFC
    "e\u0301", "caf\u00e9", "cafe\u0301", "\u1100\u1161\u11a8", "A\u030a", "\u212b", "\u00c5",
    "\u2126", "q\u0307\u0323", "\u1e0b\u0323", "\u0344", "\uf900", "\u0958", "\u0301", "\u0301\u0301",
    " \u0301", "e\u0301\u0301", "\u03d3", "\u1f71", "\u1112\u1161\u11ab\u1100\u116e\u11a8",
    "\uac00\u11a8", "o\u0308", "A\u0301\u0327", "\u0041\u030a\u0301", "n\u0303o", "\u00f1",
    "a\u0300b\u0301c\u0302", "\u1e9b\u0323", "\u0cca", "\u09cb", "\u0b4b", "Ko\u0308ln",
    # scripts
    "\u4f60\u597d\uff0c\u4e16\u754c\uff01", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
    "\uc548\ub155\ud558\uc138\uc694 \uc138\uacc4", "\u043f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440",
    "\u039a\u03b1\u03bb\u03b7\u03bc\u03ad\u03c1\u03b1", "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\u05e9\u05dc\u05d5\u05dd", "\u0928\u092e\u0938\u094d\u0924\u0947", "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35",
    "\U00020000\U00020001", "\U0001D400\U0001D401", "\uff21\uff22\uff23", "\uff71\uff72",
    "\u00fcber stra\u00dfe", "\u0141\u00f3d\u017a", "Hello, \u4e16\u754c!", "abc\u4e2d\u6587def",
    "\u4e2d 1 \u6587", "123\u4e2d", "\u0391\u0392\u0393abc",
    # emoji
    "\U0001F600", "\U0001F600\U0001F600\U0001F600", "\U0001F44D\U0001F3FD",
    "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466", "\U0001F3F3\ufe0f\u200d\U0001F308",
    "\u2764\ufe0f", "\U0001F1FA\U0001F1F8\U0001F1EF\U0001F1F5", "a\U0001F600b", " \U0001F600",
    "\u2728\U0001F389", "\U0001F469\U0001F3FF\u200d\U0001F4BB", "\U0001F3FB", "\u200d", "\ufe0f",
    "1\ufe0f\u20e3", "\U0001F600" * 30, "I \u2764\ufe0f NY!",
    # added tokens inside text
    "hi<|im_end|>there", "<|endoftext|><|endoftext|>", "<|im_end", "<|im_end|", "im_end|>",
    "<|im_end|>", "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n",
    "<<|im_end|>>", " <|im_end|> ", "<|im_end|><|im_start|>", "<think>", "<think>x</think>",
    "<think>\n\n</think>\n\nOK", "< think>", "<THINK>", "<think", "<|im_end|>\u0301",
    "e<|endoftext|>\u0301", "<|begin_of_text|>Hello", "<|eot_id|>", "<|end_of_text|>",
    "<|begin_of_text|><|begin_of_text|>", "x<|eot_id|>y", "<|eot_id", "<|endoftext|>",
    "<|endoftext|> hi", "hi <|endoftext|>", "\n<|endoftext|>\n", "<|<|endoftext|>|>",
    "<|endoftext|>'s", "'<|endoftext|>s", "<|im_start|>system\nYou are \u4e2d\u6587.<|im_end|>",
    # long
    "a" * 200, "ab" * 80, "supercalifragilisticexpialidocious", "Pneumonoultramicroscopicsilicovolcanoconiosis",
    "the " * 60, "\u4e2d\u6587" * 40, "\uac00" * 50, "x" + " " * 50 + "y", "!" * 64,
]


def random_text(rng, specials):
    """A random string (lengths 0-80 chars) mixing the character pools and word lists."""
    target = rng.choice([0, 1, 2, 3, 5, 8, 13, 20, 30, 45, 60, 80]) if rng.random() < 0.3 else rng.randrange(0, 81)
    pools = rng.sample(list(POOLS), rng.randrange(1, 6))
    out = []
    n = 0
    while n < target:
        r = rng.random()
        if r < 0.35:
            s = rng.choice(POOLS[rng.choice(pools)])
        elif r < 0.55:
            s = rng.choice(WORDS[rng.choice(list(WORDS))])
        elif r < 0.65:
            s = rng.choice(WS_RUNS)
        elif r < 0.72:
            s = rng.choice(PUNCT_RUNS)
        elif r < 0.78:
            s = number(rng)
        elif r < 0.82:
            s = rng.choice(POOLS["comb"]) * rng.randrange(1, 3)
        elif r < 0.86:
            s = rng.choice(ZWJ_SEQS) if rng.random() < 0.5 else rng.choice(POOLS["emoji"]) + rng.choice(SKIN)
        elif r < 0.89:
            s = rng.choice(specials if rng.random() < 0.7 else ALL_SPECIALS)
        elif r < 0.93:
            s = "'" + rng.choice(["s", "S", "t", "T", "re", "RE", "Ve", "m", "M", "ll", "LL", "d", "D", "\u017f"])
        else:
            s = " " * rng.randrange(1, 6)
        out.append(s)
        n += len(s)
    t = "".join(out)
    return t[:target] if rng.random() < 0.5 else t[:max(target, 0) + 8]


def make_cases(rng, specials, corpus_lines, n_random=450, n_corpus=60):
    cases = list(FIXED)
    cases += [random_text(rng, specials) for _ in range(n_random)]
    cases += rng.sample(corpus_lines, n_corpus)
    for t in cases:
        assert "\x00" not in t and not any(0xD800 <= ord(c) <= 0xDFFF for c in t)
    return cases


# ------------------------------------------------------------------ tokenizers
def qwen_style(tok):
    """The ByteLevel flags as Qwen2/Qwen3 files have them (all false; none changes an id or a
    decode: the decoder's add_prefix_space strips nothing)."""
    j = json.loads(tok.to_str())
    j["pre_tokenizer"]["pretokenizers"][1]["trim_offsets"] = False
    j["decoder"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    return Tokenizer.from_str(json.dumps(j))


def train(pre_tok, normalizer, lines, ignore_merges=False, specials=()):
    """A byte-level BPE trained on lines; specials: the trainer's special_tokens (ids 0, 1, ...
    of model.vocab, and added tokens with the same ids)."""
    tok = Tokenizer(models.BPE())
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tok
    tok.decoder = decoders.ByteLevel()  # the Python class ignores keyword arguments
    tr = trainers.BpeTrainer(vocab_size=VOCAB, show_progress=False, special_tokens=list(specials),
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, tr)
    vocab = tok.get_vocab()
    alpha = set(pre_tokenizers.ByteLevel.alphabet())
    assert len(alpha) == 256 and alpha <= set(vocab), "vocabulary lacks byte-level characters"
    got = sorted((i, a.content, a.special, a.normalized) for i, a in tok.get_added_tokens_decoder().items())
    assert got == [(i, s, True, False) for i, s in enumerate(specials)], got
    assert all(vocab[s] == i for i, s in enumerate(specials)), "specials not at ids 0, 1, ..."
    if ignore_merges:
        j = json.loads(tok.to_str())
        m = j["model"]
        m["ignore_merges"] = True
        # A trained vocabulary is reachable by its own merges, so ignore_merges would change
        # nothing: drop the merges of the LEAF_DROP most frequent leaf words (" word" tokens no
        # other merge uses). Those stay in the vocabulary with no merge, as unreachable entries
        # do in real files: encode must give them whole (ignore_merges), not merged pieces.
        parts = {x for pair in m["merges"] for x in pair}
        text = "\n".join(lines)
        leaves = [(text.count(" " + (a + b)[1:]), a + b) for a, b in m["merges"]
                  if a + b not in parts and (a + b)[:1] == "\u0120" and (a + b)[1:].isascii()
                  and (a + b)[1:].isalpha() and len(a + b) >= 5]
        drop = {w for _, w in sorted(leaves, reverse=True)[:LEAF_DROP]}
        m["merges"] = [[a, b] for a, b in m["merges"] if a + b not in drop]
        tok = Tokenizer.from_str(json.dumps(j))
        return tok, sorted(w[1:] for w in drop)
    return tok


def add_tokens(tok, specials, plain):
    """Specials after the BPE vocabulary (ids vocab_size, +1, ...), then the plain added tokens."""
    base = tok.get_vocab_size(with_added_tokens=False)
    for s in specials + plain:
        assert tok.token_to_id(s) is None, f"{s!r} already in the trained vocabulary"
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    tok.add_tokens([AddedToken(s, special=False, normalized=False) for s in plain])
    for i, s in enumerate(specials + plain):
        assert tok.token_to_id(s) == base + i, (s, tok.token_to_id(s), base + i)
    return tok


def expected_decode(cfg, text, added):
    """What decode(encode(text)) must give: the text (NFC for qwen2), and for prefix a space
    before every segment between added tokens that does not start with one."""
    if cfg.startswith("qwen2"):
        return unicodedata.normalize("NFC", text)
    if cfg != "prefix":
        return text
    out, i, seg = [], 0, ""
    while i < len(text):
        m = next((a for a in sorted(added, key=len, reverse=True) if text.startswith(a, i)), None)
        if m is None:
            seg += text[i]
            i += 1
            continue
        out.append(seg if not seg or seg.startswith(" ") else " " + seg)
        out.append(m)
        seg = ""
        i += len(m)
    out.append(seg if not seg or seg.startswith(" ") else " " + seg)
    return "".join(out)


def legacy_json(tok):
    """tokenizer.json as older Qwen2/Qwen3 checkpoints have it: merges as "a b" strings."""
    j = json.loads(tok.to_str())
    m = j["model"]
    for a, b in m["merges"]:
        assert " " not in a and " " not in b, (a, b)
    m["merges"] = [f"{a} {b}" for a, b in m["merges"]]
    m["continuing_subword_prefix"] = ""
    m["end_of_word_suffix"] = ""
    m.pop("ignore_merges", None)
    return json.dumps(j, ensure_ascii=False, indent=2) + "\n"


def jline(obj):
    s = json.dumps(obj, ensure_ascii=False)
    # keep one case a line for readers that split on every Unicode line break
    return s.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").replace("\x85", "\\u0085") + "\n"


def write_config(out, name, tok_json, cfg_json, texts, added, errors, check=None):
    """check: None for the expected_decode check, else check(tok, text, encoding, decoded) ->
    a message when decoded is not what it should be, else None."""
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(tok_json)
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(cfg_json, indent=2, ensure_ascii=False) + "\n")
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))  # the cases come from the file
    lines = []
    for t in texts:
        enc = tok.encode(t, add_special_tokens=False)
        ids = enc.ids
        dec = tok.decode(ids, skip_special_tokens=False)
        if check is not None:
            msg = check(tok, t, enc, dec)
            if msg:
                errors.append(f"{name}: {t!r}: {msg}")
        else:
            want = expected_decode(name, t, added)
            if dec != want:
                errors.append(f"{name}: decode(encode({t!r})) = {dec!r}, expected {want!r}")
        lines.append(jline({"text": t, "ids": ids, "decoded": dec}))
    with open(os.path.join(d, "cases.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(lines)
    j = json.loads(tok_json)
    print(f"ci_tokenizer: {name}: {len(texts)} cases, vocab {tok.get_vocab_size()} "
          f"({len(j['model']['vocab'])} BPE + {len(j['added_tokens'])} added), "
          f"{len(j['model']['merges'])} merges")
    return tok


# ------------------------------------------------------------------ added-token configurations
def byte_level_map():
    """GPT-2's bytes_to_unicode, char -> byte (used only by the self-checks below)."""
    bs = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


U2B = byte_level_map()
assert set(U2B) == set(pre_tokenizers.ByteLevel.alphabet())
# Unicode White_Space (what the Rust regex \s of HF's lstrip/rstrip matches). Not U+200B,
# U+FEFF, U+180E, U+001C-U+001F (Python's str.isspace says yes to the last four).
WHITE_SPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(chr(c) for c in range(0x2000, 0x200B))
               + "\u2028\u2029\u202f\u205f\u3000")


def decoder_bytes(token):
    """The ByteLevel decoder on one token: its byte-level characters as bytes, or, when one
    character is not byte-level (<｜end▁of▁sentence｜>, ἀ), the token's own UTF-8."""
    try:
        return bytes(U2B[c] for c in token)
    except KeyError:
        return token.encode()


def add_defs(tok, defs):
    """Add the AddedTokens in order; each gets the next id after the BPE vocabulary."""
    base = tok.get_vocab_size(with_added_tokens=True)
    for i, a in enumerate(defs):
        assert tok.token_to_id(a.content) is None, f"{a.content!r} already in the vocabulary"
        (tok.add_special_tokens if a.special else tok.add_tokens)([a])
        assert tok.token_to_id(a.content) == base + i, (a.content, tok.token_to_id(a.content), base + i)
    return tok


def is_word(c):
    """The Rust regex \\w that HF's single_word test uses: Alphabetic (L, Nl, Other_Alphabetic:
    mostly marks, which M covers, and the circled letters; the rest of it is not in the
    pools), M, Nd, Pc, Join_Control."""
    cat = unicodedata.category(c)
    return (cat[0] in "LM" or cat in ("Nd", "Nl", "Pc") or c in "\u200c\u200d"
            or 0x24B6 <= ord(c) <= 0x24E9)


def find_added(s, toks):
    """One pass of HF's added-token matching over s: a leftmost-longest, non-overlapping scan
    for the contents (toks: (pattern, AddedToken) pairs); a single_word candidate with a word
    character next to it is dropped (the scan goes on after it); lstrip/rstrip extend a match
    over the White_Space next to it, not into the previous match. Returns [(None, text) or
    (AddedToken, span)] covering s."""
    out, pos, i = [], 0, 0
    while i < len(s):
        cands = [(len(p), p, a) for p, a in toks if s.startswith(p, i)]
        if not cands:
            i += 1
            continue
        _, p, a = max(cands, key=lambda x: x[0])
        start, stop = i, i + len(p)
        i = stop
        if a.single_word and ((start > 0 and is_word(s[start - 1])) or (stop < len(s) and is_word(s[stop]))):
            continue
        if a.lstrip:
            while start > pos and s[start - 1] in WHITE_SPACE:
                start -= 1
        if a.rstrip:
            while stop < len(s) and s[stop] in WHITE_SPACE:
                stop += 1
        if pos < start:
            out.append((None, s[pos:start]))
        out.append((a, s[start:stop]))
        pos = stop
    if pos < len(s):
        out.append((None, s[pos:]))
    return out


def added_check(defs, norm):
    """A check for write_config, from a second reading of the added-token rules (the comments at
    ADDED_NORM and SINGLE_WORD): pass 1 finds the normalized=False tokens in the text; pass 2,
    in norm(piece) for each piece between them, the normalized=True ones by norm(content). The
    added-token ids of the encoding must be the matches, in order, and decoded must be the lossy
    UTF-8 of: norm(piece) for text, decoder_bytes(norm(content)) for a normalized=True token,
    decoder_bytes(content) for the others (whitespace taken by lstrip/rstrip is gone)."""
    raw = [(a.content, a) for a in defs if not a.normalized]
    nrm = [(norm(a.content), a) for a in defs if a.normalized]

    def check(tok, text, enc, dec):
        ids = {tok.token_to_id(a.content): a for a in defs}
        got = [ids[i].content for i in enc.ids if i in ids]
        want, out = [], b""
        for a, piece in find_added(text, raw):
            parts = [(a, piece)] if a is not None else find_added(norm(piece), nrm)
            for b, span in parts:
                if b is None:
                    out += span.encode()
                else:
                    want.append(b.content)
                    out += decoder_bytes(norm(b.content) if b.normalized else b.content)
        if got != want:
            return f"added tokens {got}, expected {want}"
        exp = out.decode("utf-8", "replace")
        return None if dec == exp else f"decoded {dec!r}, expected {exp!r}"
    return check


def nfc(s):
    return unicodedata.normalize("NFC", s)


def random_pieces(rng, bits, lo, hi):
    return "".join(rng.choice(bits) for _ in range(rng.randrange(lo, hi + 1)))


# added_norm: qwen2's model and pipeline (NFC first). HF matches added tokens in two passes:
# the normalized=False ones on the raw text, then, in each piece left between those matches,
# NFC(piece) against the normalized=True ones, whose patterns are NFC(content). A match with
# lstrip/rstrip takes the White_Space next to it inside its piece (pass 1: the raw text).
# What tokenizers 0.23.3 does with a normalized=True token whose content is not NFC
# (U+212B ANGSTROM SIGN, U+1F71 GREEK SMALL LETTER ALPHA WITH OXIA): tokenizer.json keeps the
# content as written; it matches NFC(content) (U+00C5, U+03AC) in NFC(piece), so the sign, the
# precomposed letter and the decomposed pair all give the token; token_to_id knows only the
# content as written; id_to_token and decode give NFC(content). And decode sends every token,
# added or not, through the ByteLevel decoder: a token made only of byte-level characters
# becomes those bytes, so "café" (é = U+00E9 = byte 0xE9) and "Ångstrom" (U+00C5 = 0xC5) decode
# with U+FFFD for the lone lead byte, while "άλφα" (U+03AC is no byte-level character) decodes
# as its UTF-8.
ADDED_NORM = [
    AddedToken("<|endoftext|>", special=True, normalized=False),
    AddedToken("bc", special=True, normalized=False),       # overlaps "ab": "abc" -> a | bc
    AddedToken("<|sep|>", special=True, normalized=False, lstrip=True, rstrip=True),
    AddedToken("<tool>", special=False, normalized=False, rstrip=True),
    AddedToken("A\u030a!", special=False, normalized=False),  # not NFC: raw "A\u030a!" only
    AddedToken("ab", special=False, normalized=True),
    AddedToken("abcd", special=False, normalized=True),     # never matches: pass 1 cuts "bc"
    AddedToken("caf\u00e9", special=False, normalized=True),  # also "cafe\u0301"
    AddedToken("\u212bngstrom", special=False, normalized=True),  # ANGSTROM SIGN: NFC U+00C5
    AddedToken("\u1f71\u03bb\u03c6\u03b1", special=False, normalized=True),  # U+1F71: NFC U+03AC
    AddedToken("\u00c5!", special=False, normalized=True),  # NFC twin of "A\u030a!"
    AddedToken("<n>", special=False, normalized=True, lstrip=True),
    AddedToken("[r]", special=False, normalized=True, rstrip=True),
    AddedToken("(w)", special=False, normalized=True, lstrip=True, rstrip=True),
]
AN_FORMS = ["ab", "bc", "abc", "abcd", "<|endoftext|>", "<|sep|>", "<tool>", "<n>", "[r]", "(w)",
            "caf\u00e9", "cafe\u0301", "Caf\u00e9", "CAFE\u0301", "cafe", "caf", "\u212bngstrom",
            "\u00c5ngstrom", "A\u030angstrom", "\u212b", "ngstrom", "\u1f71\u03bb\u03c6\u03b1",
            "\u03ac\u03bb\u03c6\u03b1", "\u03b1\u0301\u03bb\u03c6\u03b1", "\u1f00\u03bb\u03c6\u03b1",
            "\u03bb\u03c6\u03b1", "A\u030a!", "\u00c5!", "\u212b!", "A\u030a", "\u00c5", "<|sep",
            "|>", "<tool", "<n", "[r", "(w", "a", "b", "c", "d", "e", "x", "A", "!", "<", ">", "|"]
AN_MARKS = ["\u0301", "\u0327", "\u030a", "\u0308", "\u0323", "\u0301\u0327", "\u0345", "\u093e"]
AN_WS = [" ", "  ", "\t", "\n", "\r\n", " \n ", "\x85", "\xa0", "\u3000", "\u2028", "\u2009",
         "\u200b", "\ufeff", "\u180e", "\x1c", "\u1680", "   "]
AN_OTHER = ["\u00e9", "\u00c5", "\u00f1", "\u4e2d", "\u6587", "1", "23", ".", ",", "\U0001F600",
            "\uac00", "\u1100", "\u1161", "\u11a8", "\u0928", "'s", "'", "\u212a", "\uf900", "\u0958"]


def added_norm_cases(rng):
    fixed = [
        "", "abc", "ab", "bc", "abcd", "abcab", "ababc", "aabbcc", "abbc", "xabcx", "a bc", "ab c",
        "abcabcd", "bcab", "abab", "abbcd", "abcdabcd", "ab\u0301", "a\u0301bc", "ab\u0301c",
        "abc\u0301", "b\u0301c", "ab\u0327\u0301", "\u0301ab", "\u0301bc", "ab<|sep|>bc",
        "caf\u00e9", "cafe\u0301", "cafe\u0301\u0301", "cafe\u0301\u0327", "cafe\u0327\u0301",
        "caf\u00e9\u0327", "caf\u00e9bc", "cafe\u0301bc", "Caf\u00e9", "CAF\u00c9", "cafe",
        "caf", "cafe <|sep|>\u0301", "cafe<|sep|>\u0301", "cafe\u0301<tool>", "\u00e9", "e\u0301",
        "cafe\u0301cafe\u0301", "caf\u00e9caf\u00e9", " caf\u00e9 ", "cafe\u0308", "cafe\u0301s",
        "\u212bngstrom", "\u00c5ngstrom", "A\u030angstrom", "\u212bngstrom\u0301", "\u00c5ngstr\u00f6m",
        "\u212b", "\u212b\u212bngstrom", "A\u030a\u030angstrom", "A\u0323\u030angstrom",
        "A\u030a\u0323ngstrom", "\u212bngstromab", "ab\u212bngstrom", "A\u030a!", "\u00c5!",
        "\u212b!", "A\u030a\u0301!", "A\u030a!ngstrom", "A\u030a!!", "\u00c5!!", "A\u030a!bc",
        "\u1f71\u03bb\u03c6\u03b1", "\u03ac\u03bb\u03c6\u03b1", "\u03b1\u0301\u03bb\u03c6\u03b1",
        "\u1f00\u03bb\u03c6\u03b1", "\u03b1\u0313\u03bb\u03c6\u03b1", "\u03ac\u03bb\u03c6\u03b1\u0301",
        "\u03ac\u03bb\u03c6\u03b1\u03ac\u03bb\u03c6\u03b1", " \u1f71\u03bb\u03c6\u03b1",
        "<|sep|>", " <|sep|> ", "  <|sep|>  ", "\t<|sep|>\n", "\xa0<|sep|>\xa0", "\u3000<|sep|>\u2028",
        "\u200b<|sep|>\ufeff", "\x85<|sep|>\x85", "\u180e<|sep|>\u180e", "\x1c<|sep|>\x1c",
        "a <|sep|> b", "<|sep|> <|sep|>", "<|sep|>  <n>", "<|sep|><|sep|>", " <|sep|><n> ",
        "<tool>  x", "<tool>\n\n", " <tool> ", "<tool><tool>", "<tool> <|sep|>", "<tool>\u0301",
        "x <n>", "x  <n> y", "<n>", " <n>", "\n\n<n>", "\xa0<n>", "\u200b <n>", " <n> <n> ",
        "<n>\u0301", "\u0301<n>", "e <n>", "e\u0301 <n>", "e \u0301<n>", "ab <n>", "bc <n>",
        "[r]  y", " [r] ", "[r]\u0301", "[r] \u0301", "[r]\u3000\u3000x", "[r]\u200bx", "[r][r]",
        " (w) ", "(w)(w)", "  (w)  (w)  ", "a(w)b", "\u0301 (w) \u0301", "(w) <|sep|> (w)",
        "<|sep|>\u0301", " \u0301<|sep|>", "<|endoftext|>", "<|endoftext|>ab", "ab<|endoftext|>",
        "a<|endoftext|>bc", "<|endoftext|>\u0301", "e<|endoftext|>\u0301", "<|endoftext|> <n>",
        "abc<tool>abcd", "cafe\u0301<n>\u212bngstrom[r] (w)A\u030a!bc",
        "abcaf\u00e9bc", "abcafe\u0301bc", "\u212bngstrom<|sep|>\u212bngstrom",
        "<|sep|>caf\u00e9<|sep|>", "a\u030a!", "A\u030a\u00a0!", "AB", "aB", "Ab", "BC",
    ]
    cases = list(fixed)
    bits = AN_FORMS * 3 + AN_MARKS * 2 + AN_WS * 2 + AN_OTHER
    cases += [random_pieces(rng, bits, 1, 14) for _ in range(280)]
    cases += [random_pieces(rng, ["ab", "bc", "c", "a", "b", "d", "\u0301", " "], 1, 10) for _ in range(40)]
    return cases


# single_word: gpt2's model and pre-tokenizer. A single_word match is kept only when the text
# before it does not end with, and the text after it does not start with, a word character of
# the Rust regex \w (Alphabetic, M, Nd, Pc, Join_Control): letters, Nl (Ⅻ, 〇), Lm, marks
# (U+0301, U+093E, U+0345), Nd (٣), '_', U+203F, U+FF3F, ZWJ and ZWNJ are; No (², ⁰, ½, ①),
# punctuation, U+00B7, U+00AD, symbols and spaces are not. HF finds candidates with one
# leftmost-longest, non-overlapping scan and drops a rejected one without looking again inside
# it: "xabab" -> x a b | ab (the "ab" at 1 is lost with "xab"), "zxab" -> no match at all. A
# normalized=True single_word token ("wrd") is looked for in pass 2, so its neighbours are those
# inside the piece: "abwrd" -> ab | wrd, where "abtok" keeps "tok" as text.
SINGLE_WORD = [
    AddedToken("<|endoftext|>", special=True, normalized=False),
    AddedToken("xab", special=False, normalized=False, single_word=True),
    AddedToken("ab", special=False, normalized=False),
    AddedToken("tok", special=False, normalized=False, single_word=True),
    AddedToken("wrd", special=False, normalized=True, single_word=True),
    AddedToken("<m>", special=False, normalized=False, single_word=True),
    AddedToken("tag", special=False, normalized=False, single_word=True, lstrip=True, rstrip=True),
]
SW_CHARS = ["a", "Z", "x", "b", "1", "\u0663", "\u0301", "\u093e", "\u0345", "\u00b2", "\u2070",
            "\u00bd", "\u2460", "_", "\u203f", "\uff3f", "\u200d", "\u200c", "\u216b", "\u3007",
            "\u02b0", "\u00aa", "\u00e9", "\u4e2d", "\u00b7", ".", ",", "-", "'", "<", ">", " ",
            "\t", "\n", "\xa0", "\u3000", "\u00ad", "\ufe0f", "\U0001F600", "\u0600", "\u200b"]


def single_word_cases(rng):
    cases = [""]
    for t in ["xab", "tok", "wrd", "<m>"]:
        for c in SW_CHARS:
            cases += [c + t, t + c]
    for c in SW_CHARS[::4]:
        cases += [c + "tag" + c, c + " tag " + c, c + "tok" + c, c + "xab" + c]
    cases += [
        "xabab", "zxab", "abxab", "xxab", "xabxab", "xab xab", "abab", "xab_ab", "xab ab", "ab xab",
        "tokxab", "xabtok", "tok xab", "ab tok", "abtok", "tokab", "abwrd", "wrdab", "abwrdab",
        "xwrd", "wrdx", "wrd wrd", "wrdwrd", "<m>ab", "ab<m>", "a<m>b", "<m><m>", "<m> <m>",
        "x<m>", "<m>x", "<<m>>", "(<m>)", "tok<|endoftext|>", "<|endoftext|>tok", "a<|endoftext|>tok",
        "atok<|endoftext|>", "<|endoftext|>wrd<|endoftext|>", "x<|endoftext|>wrd", "wrd<|endoftext|>x",
        "tok", "xab", "wrd", "tag", " tag", "tag ", "  tag  ", "atag", "taga", "a tag", "tag b",
        "tag\u3000tag", "tag\u200btag", "\xa0tag\xa0", "tagtag", "tag tag", "xabtag", "tok.tok",
        "tok,tok", "tok\u00b2", "\u00b2tok\u00b2", "\u216btok", "tok\u216b", "\u2160\u2161tok",
        "tok\u0301\u0301", "e\u0301tok", "\u200dtok\u200d", "\u200ctok", "_tok_", "tok_1",
        "1tok", "tok1", "\u0663tok", "\u00bdtok", "\u2460tok", "\u00b7tok\u00b7", "\u00adtok",
        "tok\ufe0f", "\U0001F600tok\U0001F600", "\u4e2dtok\u4e2d", "\u00e9tok", "\u02b0tok",
        "Tok", "TOK", "XAB", "xAb", "xab\u0301", "\u0301xab", "xab\u093e", "\u093exab",
    ]
    bits = ["xab", "ab", "tok", "wrd", "<m>", "tag", "<|endoftext|>", "x", "a", "b"] * 3 + SW_CHARS
    cases += [random_pieces(rng, bits, 1, 10) for _ in range(40)]
    return cases


# vocab_special: DeepSeek-style. The trainer's special tokens <｜begin▁of▁sentence｜> and
# <｜end▁of▁sentence｜> (U+FF5C FULLWIDTH VERTICAL LINE, U+2581 LOWER ONE EIGHTH BLOCK: no
# byte-level characters) are model.vocab ids 0 and 1 AND added tokens 0 and 1; then added
# <｜▁pad▁｜> (special) and <｜User｜> <｜Assistant｜> <think> </think> (special=false,
# normalized=true, as DeepSeek-V3/R1 ship them). Llama-3's split regex, no normalizer.
VS_TRAINED = ["<\uff5cbegin\u2581of\u2581sentence\uff5c>", "<\uff5cend\u2581of\u2581sentence\uff5c>"]
VOCAB_SPECIAL = [
    AddedToken("<\uff5c\u2581pad\u2581\uff5c>", special=True, normalized=False),
    AddedToken("<\uff5cUser\uff5c>", special=False, normalized=True),
    AddedToken("<\uff5cAssistant\uff5c>", special=False, normalized=True),
    AddedToken("<think>", special=False, normalized=True),
    AddedToken("</think>", special=False, normalized=True),
]


def vocab_special_cases(rng, corpus_lines):
    bos, eos = VS_TRAINED
    pad, user, asst = (a.content for a in VOCAB_SPECIAL[:3])
    all_vs = VS_TRAINED + [a.content for a in VOCAB_SPECIAL]
    cases = ["", bos, eos, pad, user, asst, bos + eos, eos + bos, bos + bos, "x" + bos + "y",
             " " + bos + " ", "\n" + eos + "\n", bos + "Hello" + eos,
             bos + user + "hi" + asst + "<think>\n\n</think>\n\nHello!" + eos,
             bos + "You are helpful." + user + "2+2?" + asst + "4" + eos + pad + pad,
             "<\uff5cbegin\u2581of\u2581sentence\uff5c", "\uff5cbegin\u2581of\u2581sentence\uff5c>",
             "<|begin\u2581of\u2581sentence|>", "<\uff5cbegin_of_sentence\uff5c>", "<|begin_of_sentence|>",
             "\uff5c", "\u2581", "\u2581\u2581", "\uff5c\uff5c", "<\uff5c", "\uff5c>", "\u2581of\u2581",
             "begin\u2581of\u2581sentence", "<" + bos + ">", "<\uff5c" + eos + "\uff5c>", bos + "\u0301",
             "e" + eos + "\u0301", "'" + bos + "s", bos + "'s", "1" + bos + "2", "\uff5cUser\uff5c",
             "<\uff5cuser\uff5c>", "<\uff5cUser\uff5c", user + user, user + asst, asst + "<think>",
             "<think></think>", "<think>" + bos + "</think>", "\u2581pad\u2581", "<\uff5c\u2581pad\u2581\uff5c",
             "\u4e2d" + bos + "\u6587", "\U0001F600" + eos, bos * 5]
    cases += [random_text(rng, all_vs) for _ in range(300)]
    bits = all_vs * 2 + ["<\uff5c", "\uff5c>", "\uff5c", "\u2581", "<", ">", "|", " ", "\n", "a", "Hello",
                         "\u0301", "\u4e2d", "'s", "123"]
    cases += [random_pieces(rng, bits, 1, 10) for _ in range(60)]
    cases += rng.sample(corpus_lines, 20)
    return cases


# qwen2_decode: decode of id sequences, with and without skip_special_tokens. decoded may hold
# U+0000 (the byte-level token for byte 0x00, "Ā" U+0100): HF returns it in the string as is,
# json.dumps writes \u0000.
def decode_idseqs(rng, tok_json):
    j = json.loads(tok_json)
    vocab = dict(j["model"]["vocab"])
    n = len(vocab) + len(j["added_tokens"])
    by = {b: vocab[c] for c, b in U2B.items()}
    sp = {a["content"]: a["id"] for a in j["added_tokens"]}
    nul, e4, b8, ad = by[0x00], by[0xE4], by[0xB8], by[0xAD]
    im_end, think = sp["<|im_end|>"], sp["<think>"]
    # multi-byte vocab entries that are not UTF-8 by themselves (pieces of characters)
    bad = sorted(i for t, i in vocab.items() if len(t) > 1 and _invalid_utf8(bytes(U2B[c] for c in t)))[:12]
    a, b = vocab["a"], vocab["b"]
    seqs = [[], [nul], [nul, nul], [a, nul, b], [nul, a], [a, nul], [nul] * 5, [e4], [e4, b8],
            [e4, b8, ad], [e4, nul, b8, ad], [e4, b8, nul, ad], [e4, im_end, b8, ad], [e4, b8, im_end, ad],
            [e4, think, b8, ad], [im_end, nul, im_end], [by[0x80]], [by[0xBF]], [by[0xC0], by[0x80]],
            [by[0xC1], by[0xBF]], [by[0xE0], by[0x80], by[0x80]], [by[0xE0], by[0xA0], by[0x80]],
            [by[0xED], by[0xA0], by[0x80]], [by[0xED], by[0x9F], by[0xBF]],
            [by[0xF4], by[0x90], by[0x80], by[0x80]], [by[0xF4], by[0x8F], by[0xBF], by[0xBF]],
            [by[0xF5]], [by[0xFF]], [by[0xFE], by[0xFF]],
            [by[0xF0], by[0x9F], by[0x98]], [by[0xF0], by[0x9F], by[0x98], by[0x80]],
            [by[0xF0], by[0x9F], nul, by[0x98], by[0x80]], [by[0xF0], by[0x80], by[0x80], by[0x80]],
            [by[0xC3]], [by[0xC3], nul], [nul, by[0xA9]], [by[0xE9], by[0xA9], a], [by[0xC3], by[0xA9]],
            [by[0xE2], by[0x80], a], [by[0xE2], by[0x28], by[0xA1]], [by[0xF0], by[0x28], by[0x8C], by[0xBC]],
            [by[0xEF], by[0xBB], by[0xBF]], [by[0xC2], by[0x85]], [by[0xE2], by[0x80], by[0xA8]],
            [by[c] for c in "\u00e9".encode()], [by[c] for c in "\U0001F600".encode()][::-1]]
    seqs += [[i] for i in bad] + [[bad[k], bad[k + 1]] for k in range(0, len(bad) - 1, 2)]
    seqs += [[sp[s]] for s in sorted(sp)]
    seqs += [[rng.randrange(n) for _ in range(rng.randrange(0, 21))] for _ in range(300)]
    small = list(range(256)) + sorted(by.values()) + bad + sorted(sp.values()) * 8 + [nul] * 20
    seqs += [[rng.choice(small) for _ in range(rng.randrange(1, 13))] for _ in range(100)]
    return seqs


def _invalid_utf8(bs):
    try:
        bs.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def write_decode_config(out, name, src, seqs, errors):
    """DIR/name: src's tokenizer.json and tokenizer_config.json, and cases.jsonl with one
    {"ids", "decoded", "decoded_skip"} a line. Checked: decoded is the lossy UTF-8 of the
    tokens' decoder_bytes, without the special ones for decoded_skip."""
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        with open(os.path.join(src, f), "rb") as r, open(os.path.join(d, f), "wb") as w:
            w.write(r.read())
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    j = json.loads(tok.to_str())
    text_of = {i: t for t, i in j["model"]["vocab"].items()}
    special = set()
    for a in j["added_tokens"]:
        text_of[a["id"]] = a["content"]
        if a["special"]:
            special.add(a["id"])
    lines, nnul = [], 0
    for ids in seqs:
        dec = tok.decode(ids, skip_special_tokens=False)
        skip = tok.decode(ids, skip_special_tokens=True)
        for got, sk in ((dec, False), (skip, True)):
            want = b"".join(decoder_bytes(text_of[i]) for i in ids if not (sk and i in special))
            want = want.decode("utf-8", "replace")
            if got != want:
                errors.append(f"{name}: decode({ids}, skip={sk}) = {got!r}, expected {want!r}")
        nnul += "\x00" in dec
        lines.append(jline({"ids": ids, "decoded": dec, "decoded_skip": skip}))
    with open(os.path.join(d, "cases.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(lines)
    print(f"ci_tokenizer: {name}: {len(seqs)} id sequences ({nnul} decode to a U+0000)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out = os.path.join(a.out, "tokenizer")
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    rng = random.Random(SEED)
    lines = corpus(rng)
    errors = []

    # qwen2 + qwen2_legacy
    qsp = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    qplain = ["<think>", "</think>"]
    qbase = qwen_style(train(pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_RE), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]), normalizers.NFC(), lines))
    qwen = add_tokens(Tokenizer.from_str(qbase.to_str()), qsp, qplain)
    qcases = make_cases(random.Random(SEED + 1), qsp + qplain, lines)
    qcfg = {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    qtok = write_config(out, "qwen2", qwen.to_str(pretty=True), qcfg, qcases, qsp + qplain, errors)
    ltok = write_config(out, "qwen2_legacy", legacy_json(qwen), qcfg, qcases, qsp + qplain, errors)
    for t in qcases:
        assert qtok.encode(t, add_special_tokens=False).ids == ltok.encode(t, add_special_tokens=False).ids, t

    # gpt2 + prefix
    gsp = ["<|endoftext|>"]
    gpt2 = train(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), None, lines)
    gbase = Tokenizer.from_str(gpt2.to_str())
    add_tokens(gpt2, gsp, [])
    gcases = make_cases(random.Random(SEED + 2), gsp, lines)
    gcfg = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}
    write_config(out, "gpt2", gpt2.to_str(pretty=True), gcfg, gcases, gsp, errors)
    prefix = Tokenizer.from_str(gpt2.to_str())
    prefix.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    pcases = make_cases(random.Random(SEED + 3), gsp, lines)
    write_config(out, "prefix", prefix.to_str(pretty=True), gcfg, pcases, gsp, errors)

    # llama3
    lsp = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    llama, dropped = train(pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_RE), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]), None, lines, ignore_merges=True)
    add_tokens(llama, lsp, [])
    lcases = make_cases(random.Random(SEED + 4), lsp, lines)
    for w in dropped:
        lcases += [" " + w, w, " " + w + ".", "a " + w + " b", "  " + w, w.upper(), " " + w + w]
    lcfg = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
    ltok3 = write_config(out, "llama3", llama.to_str(pretty=True), lcfg, lcases, lsp, errors)
    j = json.loads(ltok3.to_str())
    j["model"]["ignore_merges"] = False
    off = Tokenizer.from_str(json.dumps(j))
    n = sum(off.encode(t, add_special_tokens=False).ids != ltok3.encode(t, add_special_tokens=False).ids for t in lcases)
    assert n > 0, "ignore_merges changes no llama3 case"
    print(f"ci_tokenizer: llama3: merges dropped for {dropped}: ignore_merges changes {n} cases")

    # added_norm: qwen2's model and pipeline, added tokens of both kinds (see ADDED_NORM)
    an = add_defs(Tokenizer.from_str(qbase.to_str()), ADDED_NORM)
    ancfg = {"bos_token": None, "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    antok = write_config(out, "added_norm", an.to_str(pretty=True), ancfg,
                         added_norm_cases(random.Random(SEED + 5)), None, errors,
                         check=added_check(ADDED_NORM, nfc))
    assert antok.token_to_id("\u212bngstrom") is not None and antok.token_to_id("\u00c5ngstrom") is None
    assert antok.id_to_token(antok.token_to_id("\u212bngstrom")) == "\u00c5ngstrom"

    # single_word: gpt2's model and pre-tokenizer (see SINGLE_WORD)
    sw = add_defs(Tokenizer.from_str(gbase.to_str()), SINGLE_WORD)
    write_config(out, "single_word", sw.to_str(pretty=True), gcfg,
                 single_word_cases(random.Random(SEED + 6)), None, errors,
                 check=added_check(SINGLE_WORD, lambda x: x))

    # vocab_special: specials in model.vocab too (see VOCAB_SPECIAL)
    vs = train(pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_RE), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]), None, lines, specials=VS_TRAINED)
    vs = add_defs(vs, VOCAB_SPECIAL)
    vscfg = {"bos_token": VS_TRAINED[0], "eos_token": VS_TRAINED[1], "pad_token": VOCAB_SPECIAL[0].content}
    vsdefs = [AddedToken(s, special=True, normalized=False) for s in VS_TRAINED] + VOCAB_SPECIAL
    write_config(out, "vocab_special", vs.to_str(pretty=True), vscfg,
                 vocab_special_cases(random.Random(SEED + 7), lines), None, errors,
                 check=added_check(vsdefs, lambda x: x))

    # qwen2_decode: qwen2's files, decode of id sequences
    write_decode_config(out, "qwen2_decode", os.path.join(out, "qwen2"),
                        decode_idseqs(random.Random(SEED + 8), qtok.to_str()), errors)

    for e in errors:
        print("ci_tokenizer: MISMATCH", e, file=sys.stderr)
    if errors:
        sys.exit(1)
    print(f"ci_tokenizer: wrote {out} in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
