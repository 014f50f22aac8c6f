#!/usr/bin/env python3
"""make_greedy_fixtures.py — transformers' greedy continuations of the tiny
fixture models, for the rollout engine's greedy test (issue #8).

Runs on the GPU machine (python3 with torch 2.11, transformers 5.x; no
network), NOT in CI:

    HF_HUB_OFFLINE=1 python3 tests/oracle/make_greedy_fixtures.py --root tests/fixtures/model
    ... --out "$OUT/fixtures/model"   # write OUT/NAME/greedy.json instead (tests/gpu/run.sh);
                                      # copy them into tests/fixtures/model/NAME/ afterwards
    python3 tests/oracle/make_greedy_fixtures.py --self-test   # checks the JSON writer only

For each model NAME in (qwen3, qwen3_moe) it loads NAME/hf (FP32 weights,
written by make_model_fixtures.py) on the CPU (deterministic, FP32), and for
three fixed prompts (token ids, batch 1 each: no padding) runs

    model.generate(ids, do_sample=False, max_new_tokens=12, min_new_tokens=12)

with EOS disabled (the configs have none), then writes NAME/greedy.json:

  {
    "model": NAME, "transformers": VERSION, "torch": VERSION, "new_tokens": 12,
    "prompts":     [[ids...], ...],          the three prompts
    "greedy":      [[12 ids], ...],          FP32 greedy continuation
    "margins":     [[12 floats], ...],       FP32 logit gap top-1 − top-2 at each step
    "greedy_bf16": [[12 ids], ...],          the same model cast to bfloat16 (CPU)
  }

Each FP32 continuation is also checked here against the argmax of a full
forward over the growing sequence (the two must agree; the script stops if not).
The C test (tests/test_rollout_greedy.c) requires our FP32 path to reproduce
"greedy" token for token, and reports where our BF16 policy first diverges; a
divergence at a step whose FP32 margin exceeds the BF16 tolerance fails.
"""
import argparse
import json
import os
import sys

NEW_TOKENS = 12
PROMPTS = [
    [1, 17, 42, 99, 3, 250, 7, 128],
    [200, 5, 5, 5, 61],
    [33],
]
NAMES = ("qwen3", "qwen3_moe")


def write_json(path, obj):
    """Write obj as JSON (one list per line for the id arrays), atomically."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def greedy_one(torch, model, prompt):
    """Greedy-generate NEW_TOKENS after prompt; return (ids, margins)."""
    ids = torch.tensor([prompt], dtype=torch.long)
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=NEW_TOKENS,
        min_new_tokens=NEW_TOKENS,
        eos_token_id=None,
        pad_token_id=0,
        output_logits=True,
        return_dict_in_generate=True,
    )
    new = out.sequences[0, len(prompt):].tolist()
    margins = []
    for step_logits in out.logits:
        top2 = torch.topk(step_logits[0].float(), 2).values
        margins.append(float(top2[0] - top2[1]))
    return new, margins


def check_full_forward(torch, model, prompt, new):
    """The continuation must equal the argmax of a full forward over the growing sequence."""
    seq = list(prompt)
    for j, tok in enumerate(new):
        with torch.no_grad():
            logits = model(torch.tensor([seq])).logits[0, -1]
        am = int(torch.argmax(logits))
        if am != tok:
            sys.exit(f"full-forward argmax {am} != generate's token {tok} at step {j} of prompt {prompt}")
        seq.append(tok)


def make(root, out_root):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    for name in NAMES:
        hf = os.path.join(root, name, "hf")
        if not os.path.isdir(hf):
            sys.exit(f"{hf}: missing (run make_model_fixtures.py first)")
        model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
        model.generation_config.eos_token_id = None
        greedy, margins, greedy_bf16 = [], [], []
        for p in PROMPTS:
            new, mg = greedy_one(torch, model, p)
            check_full_forward(torch, model, p, new)
            greedy.append(new)
            margins.append(mg)
        mb = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.bfloat16).eval()
        mb.generation_config.eos_token_id = None
        for p in PROMPTS:
            greedy_bf16.append(greedy_one(torch, mb, p)[0])
        out = {
            "model": name,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "new_tokens": NEW_TOKENS,
            "prompts": PROMPTS,
            "greedy": greedy,
            "margins": margins,
            "greedy_bf16": greedy_bf16,
        }
        os.makedirs(os.path.join(out_root, name), exist_ok=True)
        path = os.path.join(out_root, name, "greedy.json")
        write_json(path, out)
        print(f"{path}: {len(PROMPTS)} prompts × {NEW_TOKENS} tokens; min FP32 margin "
              f"{min(min(m) for m in margins):.4g}; bf16 equal to fp32: "
              f"{sum(a == b for a, b in zip(greedy, greedy_bf16))}/{len(PROMPTS)}")


def self_test():
    import tempfile

    d = tempfile.mkdtemp()
    p = os.path.join(d, "g.json")
    obj = {"prompts": PROMPTS, "greedy": [[1] * NEW_TOKENS] * 3, "margins": [[0.5] * NEW_TOKENS] * 3}
    write_json(p, obj)
    with open(p) as f:
        back = json.load(f)
    assert back == obj, "round trip"
    assert all(len(x) >= 1 for x in PROMPTS) and all(0 <= t < 256 for x in PROMPTS for t in x)
    print("self-test ok")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default="tests/fixtures/model", help="fixture root (holds qwen3/, qwen3_moe/)")
    ap.add_argument("--out", default=None, help="where NAME/greedy.json go (default: --root)")
    ap.add_argument("--self-test", action="store_true", help="check the writer only (no torch needed)")
    a = ap.parse_args()
    if a.self_test:
        self_test()
    else:
        make(a.root, a.out or a.root)


if __name__ == "__main__":
    main()
