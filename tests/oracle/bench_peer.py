#!/usr/bin/env python3
"""bench_peer.py — the peer of bench/bench_model.c: HF transformers + PyTorch
(bf16, CUDA, default attention = SDPA) on the same Qwen3-0.6B shape with random
weights, same batch shapes, same timing rule (median of 5 after 2 warm-ups,
device synchronised per iteration). Run on the GPU machine:

    python3 tests/oracle/bench_peer.py        → prints
    peer_train_tok_s N       (16 x 512: forward + CE loss + backward + AdamW)
    peer_prefill_tok_s N     (64 x 320: forward + per-token log-probs, no grad)
"""
import statistics
import sys
import time

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM


def timed(fn, steps=5, warm=2):
    ts = []
    for i in range(warm + steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        if i >= warm:
            ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main():
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                      num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True,
                      rope_theta=1e6, rms_norm_eps=1e-6, max_position_embeddings=40960)
    with torch.device("cuda"):
        model = Qwen3ForCausalLM(cfg).to(torch.bfloat16)
    print(f"peer: torch {torch.__version__}, attn {model.config._attn_implementation}", file=sys.stderr)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)
    ids = torch.randint(0, cfg.vocab_size, (16, 512), device="cuda")

    def train_step():
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    t = timed(train_step)
    print(f"peer_train_tok_s {ids.numel() / t:.0f}")
    del opt
    model.zero_grad(set_to_none=True)
    torch.cuda.empty_cache()
    pids = torch.randint(0, cfg.vocab_size, (64, 320), device="cuda")

    @torch.no_grad()
    def prefill():
        logits = model(input_ids=pids).logits[:, :-1].float()
        lp = torch.log_softmax(logits, dim=-1).gather(-1, pids[:, 1:, None])
        return lp

    t = timed(prefill)
    print(f"peer_prefill_tok_s {pids.numel() / t:.0f}")


if __name__ == "__main__":
    main()
