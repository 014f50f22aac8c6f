#!/usr/bin/env python3
"""ci_unicode.py — oracle fixtures for stages/unicode.h from Python's standard
unicodedata (no third-party modules), read by tests/test_unicode.c.

Writes into OUT/unicode/:
  version.txt   unicodedata.unidata_version ("14.0.0" on Python 3.11); the C
                tables were generated from some version too, and the test
                narrows its checks when the two differ
  gc.u8         the general category of every code point 0..0x10FFFF, one byte
                each: the index of the category in this order (enum uni_gc):
                Lu Ll Lt Lm Lo Mn Mc Me Nd Nl No Pc Pd Ps Pe Pi Pf Po Sm Sc Sk So
                Zs Zl Zp Cc Cf Cs Co Cn  (0 = Lu ... 29 = Cn)
  fold.txt      "XXXX YYYY" (hex) for each code point X that is case-insensitively
                equal to a smaller one, Y the smallest of its class; classes are
                the connected sets of X ~ casefold(X) where that is one code
                point, and X ~ lower(X) where that is one code point with the
                same (multi code point) casefold, as ẞ ~ ß
  nfc_cp.txt    "XXXX<TAB>nfc" for each scalar value whose NFC is not itself
  nfc.txt       "input<TAB>nfc" lines: seeded random strings of characters that
                decompose, compose and reorder (Latin, combining marks, Greek,
                Hangul syllables and jamo, Indic nukta and two-part vowels,
                kana voicing marks, CJK compatibility ideographs), with
                unicodedata.normalize("NFC", input)
"""
import argparse
import os
import random
import unicodedata as ud

GC_ORDER = ["Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe", "Pi",
            "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn"]
N_CP = 0x110000


def fold_classes():
    """{cp: smallest cp of its case-insensitive class} for cps that are not the smallest."""
    parent = {}

    def find(x):
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    def union(a, b):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    for cp in range(N_CP):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        f = c.casefold()
        if len(f) == 1:
            union(cp, ord(f))
        else:
            lo = c.lower()
            if len(lo) == 1 and lo.casefold() == f:
                union(cp, ord(lo))
    return {cp: find(cp) for cp in parent if find(cp) != cp}


def pools():
    """(weight, [code points]) to draw characters from."""
    r = lambda a, b: list(range(a, b + 1))
    return [
        (6, r(0x41, 0x5A) + r(0x61, 0x7A)),
        (5, r(0xC0, 0xFF) + r(0x100, 0x24F) + r(0x1E00, 0x1EFF)),
        (10, r(0x300, 0x36F) + [0x323, 0x323, 0x302, 0x301, 0x308, 0x31B, 0x345]),
        (2, r(0x1DC0, 0x1DFF) + r(0x20D0, 0x20F0) + r(0x591, 0x5C7) + r(0x64B, 0x652)),
        (4, r(0x370, 0x3FF) + r(0x1F00, 0x1FFF)),
        (4, r(0x1100, 0x11FF)),
        (3, [random.Random(cp).randrange(0xAC00, 0xD7A4) for cp in range(400)]),
        (3, r(0x915, 0x939) + [0x93C, 0x93C, 0x93E, 0x9BC, 0x9BE, 0x9C7, 0x9D7, 0x995, 0xA21, 0xB47, 0xB3E,
                                0xB56, 0xB57, 0xBC6, 0xBBE, 0xBD7, 0xCC6, 0xCD5, 0xCD6, 0xD46, 0xD3E, 0xD57]),
        (2, r(0x3040, 0x30FF) + [0x3099, 0x309A]),
        (2, r(0xF900, 0xFAFF) + r(0x2F800, 0x2F810)),
        (2, [0x212B, 0x2126, 0x212A, 0x340, 0x341, 0x343, 0x344, 0x374, 0x37E, 0x387, 0xF71, 0xF72, 0xF73,
             0xF80, 0xF81, 0x1D15E, 0x1D165, 0x1D16E, 0x1B05, 0x1B35, 0x110A5, 0x110BA, 0x0CBF, 0x0CD5]),
    ]


def random_strings(n, seed):
    rng = random.Random(seed)
    ps = pools()
    weights = [w for w, _ in ps]
    out = []
    for k in range(n):
        if k % 50 == 49:  # long runs of marks: the merge sort path of canonical ordering
            marks = ps[2][1] + ps[3][1]
            s = [rng.choice([0x61, 0x1100, 0x3B1])] + [rng.choice(marks) for _ in range(rng.randrange(17, 70))]
        else:
            s = []
            for _ in range(rng.randrange(1, 13)):
                s.append(rng.choice(rng.choices(ps, weights)[0][1]))
        out.append("".join(map(chr, s)))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out = os.path.join(a.out, "unicode")
    os.makedirs(out, exist_ok=True)
    idx = {g: i for i, g in enumerate(GC_ORDER)}

    with open(os.path.join(out, "version.txt"), "w") as f:
        f.write(ud.unidata_version + "\n")
    with open(os.path.join(out, "gc.u8"), "wb") as f:
        f.write(bytes(idx[ud.category(chr(cp))] for cp in range(N_CP)))
    with open(os.path.join(out, "fold.txt"), "w") as f:
        for cp, rep in sorted(fold_classes().items()):
            f.write("%04X %04X\n" % (cp, rep))
    with open(os.path.join(out, "nfc_cp.txt"), "w", encoding="utf-8") as f:
        for cp in range(N_CP):
            if 0xD800 <= cp <= 0xDFFF:
                continue
            n = ud.normalize("NFC", chr(cp))
            if n != chr(cp):
                f.write("%04X\t%s\n" % (cp, n))
    with open(os.path.join(out, "nfc.txt"), "w", encoding="utf-8") as f:
        for s in random_strings(5000, 20260607):
            f.write("%s\t%s\n" % (s, ud.normalize("NFC", s)))


if __name__ == "__main__":
    main()
