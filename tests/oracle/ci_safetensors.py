#!/usr/bin/env python3
"""ci_safetensors.py — checkpoints written by the pip `safetensors` library
(numpy + ml_dtypes only, as CI has), for rlrun's reader and converter tests.

Writes under OUT/safetensors/:
  single.safetensors         every common dtype, a scalar, an empty tensor, __metadata__
  single.manifest.json       name -> dtype, shape, sha256 of the tensor bytes
  tiny_qwen3/                a qwen3 directory sharded in two (index with total_size,
                             weight_map), config.json, tokenizer.json, generation_config.json
  tiny_qwen3.manifest.json
  tiny_qwen3_moe/            a qwen3_moe directory in one file (experts with hub names)
  tiny_qwen3_moe.manifest.json
  tiny_qwen3_f32/            tiny_qwen3's shapes and features in F32 values that BF16 cannot
                             hold (one projection and one norm in F16), one file
  tiny_qwen3_moe_f32/        tiny_qwen3_moe's shapes in F32 values (for nvfp4)

The model tensors hold seeded random BF16 values with features the converter must get
right: an all-zero 128x128 block, outliers, an up_proj whose amax is 4x its gate_proj's,
partial blocks (K = 320, 200), and K not a multiple of 32 (down_proj, K = 200).
The _f32 variants hold unrounded F32 values: convert must quantize those values, not
their BF16 rounding, and write the tensors it keeps as BF16 (FORMATS.md).
"""
import argparse
import hashlib
import json
import os

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

BF16 = ml_dtypes.bfloat16


def sha(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


ST_NAMES = {
    np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
    np.dtype(BF16): "BF16", np.dtype(np.int64): "I64", np.dtype(np.int32): "I32",
    np.dtype(np.int16): "I16", np.dtype(np.int8): "I8", np.dtype(np.uint8): "U8",
    np.dtype(np.uint16): "U16", np.dtype(np.uint32): "U32", np.dtype(np.uint64): "U64",
    np.dtype(np.bool_): "BOOL", np.dtype(ml_dtypes.float8_e4m3fn): "F8_E4M3",
    np.dtype(ml_dtypes.float8_e5m2): "F8_E5M2",
}


def manifest(tensors):
    return {k: {"dtype": ST_NAMES[v.dtype], "shape": list(v.shape), "sha256": sha(v)}
            for k, v in tensors.items()}


def single(out):
    t = {
        "f32": (np.arange(24, dtype=np.float32) * 0.5 - 3).reshape(2, 3, 4),
        "f64": np.array([1.0, -2.5, 1e300], dtype=np.float64),
        "f16": np.array([[1, 2], [65504, -0.5]], dtype=np.float16),
        "bf16": (np.arange(10, dtype=np.float32) - 4.25).astype(BF16),
        "i64": np.array([-(2**62), 7], dtype=np.int64),
        "i32": np.array([[-1, 2, 3]], dtype=np.int32),
        "i16": np.array([-300], dtype=np.int16),
        "i8": np.array([-128, 127], dtype=np.int8),
        "u8": np.arange(5, dtype=np.uint8),
        "u16": np.array([65535], dtype=np.uint16),
        "u32": np.array([4000000000], dtype=np.uint32),
        "u64": np.array([2**63 + 5], dtype=np.uint64),
        "bool": np.array([True, False, True]),
        "f8_e4m3": np.array([0.5, -448, 1.125], dtype=np.float32).astype(ml_dtypes.float8_e4m3fn),
        "f8_e5m2": np.array([2.0, -0.25], dtype=np.float32).astype(ml_dtypes.float8_e5m2),
        "scalar": np.array(3.5, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "weird name/with \"quotes\" and ünïcode": np.array([1], dtype=np.int8),
    }
    save_file(t, os.path.join(out, "single.safetensors"), metadata={"format": "pt", "note": "x"})
    with open(os.path.join(out, "single.manifest.json"), "w") as f:
        json.dump(manifest(t), f, indent=1)


def rnd(rng, shape, std, dt=BF16):
    return (rng.standard_normal(shape) * std).astype(np.float32).astype(dt)


def write_dir(out, name, cfg, tensors, shards):
    """shards: list of name-prefix lists; one shard -> model.safetensors."""
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        f.write('{"version": "1.0", "model": {"type": "BPE"}}\n')
    with open(os.path.join(d, "generation_config.json"), "w") as f:
        f.write('{"do_sample": true, "temperature": 0.6}\n')
    if len(shards) == 1:
        save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    else:
        wm, total, left = {}, 0, dict(tensors)
        for i, prefixes in enumerate(shards):
            fn = "model-%05d-of-%05d.safetensors" % (i + 1, len(shards))
            part = {k: v for k, v in left.items()
                    if i == len(shards) - 1 or any(k.startswith(p) for p in prefixes)}
            for k in part:
                del left[k]
                wm[k] = fn
                total += part[k].nbytes
            save_file(part, os.path.join(d, fn), metadata={"format": "pt"})
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(wm.items()))},
                      f, indent=2)
    with open(os.path.join(out, name + ".manifest.json"), "w") as f:
        json.dump(manifest(tensors), f, indent=1)


def attention_block(t, p, rng, H, NH, KV, HD, dt):
    """Layer prefix p's post-attention norm, QK norms (ones) and q/k/v/o
    projections into t, drawn from rng in this order (fixtures stay the same bytes)."""
    t[p + "post_attention_layernorm.weight"] = np.ones(H, dtype=dt)
    t[p + "self_attn.q_norm.weight"] = np.ones(HD, dtype=dt)
    t[p + "self_attn.k_norm.weight"] = np.ones(HD, dtype=dt)
    t[p + "self_attn.q_proj.weight"] = rnd(rng, (NH * HD, H), 0.05, dt)
    t[p + "self_attn.k_proj.weight"] = rnd(rng, (KV * HD, H), 0.05, dt)
    t[p + "self_attn.v_proj.weight"] = rnd(rng, (KV * HD, H), 0.05, dt)
    t[p + "self_attn.o_proj.weight"] = rnd(rng, (H, NH * HD), 0.05, dt)


def tiny_qwen3(out, rng, name="tiny_qwen3", dt=BF16):
    H, I, V, L, NH, KV, HD = 320, 200, 512, 3, 4, 2, 64
    cfg = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": V,
           "hidden_size": H, "intermediate_size": I, "num_hidden_layers": L,
           "num_attention_heads": NH, "num_key_value_heads": KV, "head_dim": HD,
           "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
           "hidden_act": "silu", "tie_word_embeddings": False, "attention_bias": False,
           "bos_token_id": 1, "eos_token_id": [2, 3],
           "torch_dtype": "bfloat16" if dt == BF16 else "float32",
           "use_sliding_window": False, "rope_scaling": None}
    t = {"model.embed_tokens.weight": rnd(rng, (V, H), 0.02, dt),
         "model.norm.weight": np.ones(H, dtype=dt), "lm_head.weight": rnd(rng, (V, H), 0.02, dt)}
    for l in range(L):
        p = "model.layers.%d." % l
        t[p + "input_layernorm.weight"] = (1 + rnd(rng, (H,), 0.1, dt).astype(np.float32)).astype(dt)
        attention_block(t, p, rng, H, NH, KV, HD, dt)
        t[p + "mlp.gate_proj.weight"] = rnd(rng, (I, H), 0.05, dt)
        t[p + "mlp.up_proj.weight"] = rnd(rng, (I, H), 0.05, dt)
        t[p + "mlp.down_proj.weight"] = rnd(rng, (H, I), 0.05, dt)
    q = t["model.layers.0.self_attn.q_proj.weight"].astype(np.float32)
    q[:128, :128] = 0                    # an all-zero block: scale must be 1, never NaN
    q[200, 300] = 30.0                   # an outlier in a partial block
    q[5, 130] = 1e-30                    # far below the block's E4M3 range: flushes to 0
    t["model.layers.0.self_attn.q_proj.weight"] = q.astype(dt)
    if dt == BF16:
        write_dir(out, name, cfg, t, [["model.embed_tokens", "model.layers.0."], []])
        return
    # F16 tensors too (widened exactly before quantizing / cast to BF16 when kept)
    for k in ("model.layers.2.self_attn.v_proj.weight", "model.layers.2.input_layernorm.weight"):
        t[k] = t[k].astype(np.float16)
    write_dir(out, name, cfg, t, [[]])


def tiny_qwen3_moe(out, rng, name="tiny_qwen3_moe", dt=BF16):
    H, I, V, L, NH, KV, HD, E = 128, 64, 256, 2, 2, 1, 64, 4
    cfg = {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "vocab_size": V,
           "hidden_size": H, "intermediate_size": 256, "moe_intermediate_size": I,
           "num_hidden_layers": L, "num_attention_heads": NH, "num_key_value_heads": KV,
           "head_dim": HD, "num_experts": E, "num_experts_per_tok": 2, "norm_topk_prob": True,
           "decoder_sparse_step": 1, "mlp_only_layers": [], "max_position_embeddings": 2048,
           "rms_norm_eps": 1e-6, "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"},
           "hidden_act": "silu", "tie_word_embeddings": True, "attention_bias": False,
           "router_aux_loss_coef": 0.001, "bos_token_id": None, "eos_token_id": 2,
           "dtype": "bfloat16" if dt == BF16 else "float32"}
    t = {"model.embed_tokens.weight": rnd(rng, (V, H), 0.02, dt),
         "model.norm.weight": np.ones(H, dtype=dt)}
    for l in range(L):
        p = "model.layers.%d." % l
        t[p + "input_layernorm.weight"] = np.ones(H, dtype=dt)
        attention_block(t, p, rng, H, NH, KV, HD, dt)
        t[p + "mlp.gate.weight"] = rnd(rng, (E, H), 0.05, dt)
        for e in range(E):
            x = p + "mlp.experts.%d." % e
            t[x + "gate_proj.weight"] = rnd(rng, (I, H), 0.05, dt)
            t[x + "up_proj.weight"] = rnd(rng, (I, H), 0.2, dt)    # amax ~4x gate's
            t[x + "down_proj.weight"] = rnd(rng, (H, I), 0.05, dt)
    write_dir(out, name, cfg, t, [[]])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out = os.path.join(a.out, "safetensors")
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(1234)
    single(out)
    tiny_qwen3(out, rng)
    tiny_qwen3_moe(out, rng)
    rng = np.random.default_rng(4321)
    tiny_qwen3(out, rng, "tiny_qwen3_f32", np.float32)
    tiny_qwen3_moe(out, rng, "tiny_qwen3_moe_f32", np.float32)


if __name__ == "__main__":
    main()
