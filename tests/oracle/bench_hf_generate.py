#!/usr/bin/env python3
"""bench_hf_generate.py — the peer of bench/bench_rollout.c: transformers'
`generate` (bf16, CUDA, SDPA, static-shape DynamicCache as it comes) on the
Qwen3-0.6B shape with random weights: B prompts of P random tokens, exactly N
new tokens (EOS disabled), multinomial sampling at temperature 1. Timing: the
median of 3 after 1 warm-up, device synchronised. Run on the GPU machine:

    python3 tests/oracle/bench_hf_generate.py --batch 64 --prompt 64 --new 256
    → peer_generate_tok_s N      (new tokens per second over the whole batch)
"""
import argparse
import statistics
import sys
import time

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                      num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True,
                      rope_theta=1e6, rms_norm_eps=1e-6, max_position_embeddings=40960)
    with torch.device("cuda"):
        model = Qwen3ForCausalLM(cfg).to(torch.bfloat16).eval()
    ids = torch.randint(0, cfg.vocab_size, (a.batch, a.prompt), device="cuda")
    mask = torch.ones_like(ids)
    print(f"peer: torch {torch.__version__}, attn {model.config._attn_implementation}", file=sys.stderr)

    @torch.no_grad()
    def gen():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=a.new, min_new_tokens=a.new,
                             do_sample=True, temperature=1.0, top_k=0, top_p=1.0, eos_token_id=None,
                             pad_token_id=0)
        assert out.shape[1] == a.prompt + a.new, out.shape
        return out

    ts = []
    for i in range(1 + a.reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        gen()
        torch.cuda.synchronize()
        if i >= 1:
            ts.append(time.perf_counter() - t0)
    t = statistics.median(ts)
    print(f"peer_generate_tok_s {a.batch * a.new / t:.0f}")


if __name__ == "__main__":
    main()
