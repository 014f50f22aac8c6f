#!/usr/bin/env python3
"""make_convert_fixtures.py — for the GPU machine (torch + transformers 5.x, offline):
tiny random Qwen3 and Qwen3-MoE checkpoints written by transformers' own
save_pretrained, which tests/gpu/run.sh converts with `rlrun convert`.

  make_convert_fixtures.py --out DIR
      DIR/qwen3      Qwen3ForCausalLM: hidden 256, FFN 200 (down_proj K = 200: not a
                     multiple of 32, so it stays BF16 in mxfp8), 3 layers, BF16
      DIR/qwen3_moe  Qwen3MoeForCausalLM: hidden 256, 8 experts (moe FFN 96), 2 layers;
                     transformers 5.x saves the experts per expert with hub names
                     (model.layers.L.mlp.experts.E.gate_proj.weight ...)
  make_convert_fixtures.py --logits ORIG ROUNDTRIP
      Loads both directories with transformers (HF_HUB_OFFLINE=1, local paths), runs one
      forward pass on fixed tokens and prints the largest logit difference relative to
      the logits' spread, and the top-1 agreement.
"""
import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402


def save(model, path):
    model = model.to(torch.bfloat16)
    model.save_pretrained(path, safe_serialization=True)
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"model_max_length": 512, "note": "placeholder copied through by rlrun"}, f)
    n = sum(p.numel() for p in model.parameters())
    files = sorted(os.listdir(path))
    print("%s: %d parameters, files %s" % (path, n, " ".join(files)))


def make(out):
    torch.manual_seed(0)
    cfg = transformers.Qwen3Config(
        vocab_size=1024, hidden_size=256, intermediate_size=200, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=512,
        tie_word_embeddings=False)
    save(transformers.Qwen3ForCausalLM(cfg), os.path.join(out, "qwen3"))
    cfg = transformers.Qwen3MoeConfig(
        vocab_size=1024, hidden_size=256, intermediate_size=512, moe_intermediate_size=96,
        num_experts=8, num_experts_per_tok=2, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=64, decoder_sparse_step=1, mlp_only_layers=[],
        norm_topk_prob=True, max_position_embeddings=512, tie_word_embeddings=False)
    save(transformers.Qwen3MoeForCausalLM(cfg), os.path.join(out, "qwen3_moe"))
    print("ok: transformers %s wrote %s" % (transformers.__version__, out))


def logits(orig, rt):
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    outs = []
    for p in (orig, rt):
        m = transformers.AutoModelForCausalLM.from_pretrained(p, dtype=torch.bfloat16).to(dev).eval()
        ids = (torch.arange(64, device=dev) * 37 % m.config.vocab_size).unsqueeze(0)
        with torch.no_grad():
            outs.append(m(ids).logits.float())
    a, b = outs
    rel = ((a - b).abs().max() / a.std()).item()
    agree = (a.argmax(-1) == b.argmax(-1)).float().mean().item()
    print("logits %s vs original: max|d|/std %.4f, top-1 agree %.1f%%" % (os.path.basename(rt), rel, 100 * agree))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--logits", nargs=2, metavar=("ORIG", "ROUNDTRIP"))
    a = ap.parse_args()
    if a.logits:
        logits(*a.logits)
    elif a.out:
        make(a.out)
    else:
        ap.error("--out DIR or --logits ORIG ROUNDTRIP")


if __name__ == "__main__":
    main()
