#!/usr/bin/env python3
"""make_model_fixtures.py — oracle fixtures for rlrun's Qwen3 model (issue #7).

Runs on the GPU machine (python3 with torch 2.11, transformers 5.x, safetensors,
numpy; no network), NOT in CI. Builds two seeded tiny models from a config,
saves them with save_pretrained, and dumps what the C model must reproduce:

    python3 tests/oracle/make_model_fixtures.py --out tests/fixtures/model
    python3 tests/oracle/make_model_fixtures.py --self-test   # numpy-only checks (runs anywhere)

Output (≤ 5 MB in all, checked):
  OUT/qwen3/hf/            config.json + model.safetensors, FP32 weights (the oracle's own)
  OUT/qwen3/hf-bf16/       the same weights saved in BF16 (RNE), config dtype bfloat16
  OUT/qwen3/fixtures.safetensors, fixtures.json
  OUT/qwen3_moe/hf/        FP32, hub tensor names (mlp.experts.{e}.{gate,up,down}_proj.weight)
  OUT/qwen3_moe/fixtures.safetensors, fixtures.json

Models (sizes chosen to fit the 5 MB budget with FP32 weights + FP32 gradients):
  qwen3      hidden 128, 2 layers, 4 heads / 2 KV heads, head_dim 32, FFN 128,
             vocab 256, tie_word_embeddings = true, rope_theta 1e6, eps 1e-6
  qwen3_moe  same attention; layer 0 dense (mlp_only_layers = [0], FFN 64), layer 1
             sparse: 8 experts, top-2, moe_intermediate 32, norm_topk_prob = true;
             vocab 256, tie_word_embeddings = false, router_aux_loss_coef = 0
Weights are re-initialised after construction (seeded): every matrix N(0, 1/fan_in),
norm weights U(0.5, 1.5) (so the norm weight is really exercised), which gives
non-trivial attention patterns, routing and log-probs (HF's default 0.02 init
would make everything near-uniform). The MoE seed is advanced until every
token's top-k decision has a margin ≥ 1e-3 in probability, so FP32 rounding on
the C side cannot flip a routing decision.

Inputs: two sequences (16 and 11 tokens), run separately (batch 1 each: no
padding, positions 0..L-1). Packed layout in the fixtures: tokens [27],
seq_off [0, 16, 27], targets[t] = next token in the same sequence or -1 at a
sequence end. Loss = mean over the 25 targets of −log_softmax(logits)[target]
(FP32, temperature 1), computed here from the logits (no labels= path, so no
router aux loss can creep in). Gradients of that loss for every parameter, under
checkpoint (hub) names: the fused in-memory experts (gate_up_proj [E, 2I, H],
down_proj [E, H, I]) are split per expert after checking that each slice equals
the tensor save_pretrained wrote under that name.

fixtures.safetensors (FP32 unless noted):
  tokens, seq_off, targets (int32); logits [27, V]; logprobs [27] (0 where no
  target); loss [1]; act.embed, act.layer.{l}, act.final_norm [27, H] (outputs
  of the embedding, each decoder layer, the final norm); grad.{checkpoint name};
  qwen3 only: logits_bf16, logprobs_bf16 (the BF16 copy run by transformers in
  BF16 on the CPU); qwen3_moe only: router_logits.layer.{l} [27, E],
  topk_ids.layer.{l} (int32 [27, k], descending probability), topk_weights.layer.{l}
  [27, k] (renormalised), for each sparse layer l.
"""
import argparse
import json
import os
import re
import shutil
import sys

BUDGET_BYTES = 5 * 1024 * 1024
SEQ_LENS = (16, 11)
TOPK_MARGIN = 1e-3

DENSE = dict(
    name="qwen3",
    kind="dense",
    kwargs=dict(vocab_size=256, hidden_size=128, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                max_position_embeddings=256, rms_norm_eps=1e-6, hidden_act="silu",
                attention_bias=False, use_sliding_window=False, tie_word_embeddings=True),
    rope_theta=1e6, seed=1234, bf16_copy=True)
MOE = dict(
    name="qwen3_moe",
    kind="moe",
    # head_dim is not a Qwen3MoeConfig field in transformers 5 (the model uses
    # hidden_size / num_attention_heads = 32); checked after construction.
    kwargs=dict(vocab_size=256, hidden_size=128, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                rms_norm_eps=1e-6, hidden_act="silu", attention_bias=False,
                use_sliding_window=False, tie_word_embeddings=False, num_experts=8,
                num_experts_per_tok=2, moe_intermediate_size=32, norm_topk_prob=True,
                decoder_sparse_step=1, mlp_only_layers=[0], router_aux_loss_coef=0.0,
                output_router_logits=False),
    rope_theta=1e6, seed=4321, bf16_copy=False)
HEAD_DIM = 32


def die(msg, code=1):
    print(f"make_model_fixtures: error: {msg}", file=sys.stderr)
    sys.exit(code)


def log(msg):
    print(f"make_model_fixtures: {msg}", flush=True)


try:
    import numpy as np
except ImportError:
    die("numpy is not installed (pip install numpy)")
try:
    from safetensors.numpy import load_file as st_load, save_file as st_save
except ImportError:
    die("the safetensors package is not installed (pip install safetensors)")


# ---------------------------------------------------------------- numpy-only helpers

EXPERT_RE = re.compile(r"^(?P<prefix>.*\.mlp\.experts)\.(?P<e>\d+)\.(?P<kind>gate_proj|up_proj|down_proj)\.weight$")


def expert_slice_candidates(kind, fused_shape, e, inter):
    """Index expressions (as (description, function)) that may hold expert e's
    `kind` weight inside a fused parameter. transformers 5 keeps gate_up_proj
    [E, 2I, H] (gate rows first) and down_proj [E, H, I]; the transposed layouts
    are tried too, and the one whose values equal the saved tensor wins."""
    if kind in ("gate_proj", "up_proj"):
        lo, hi = (0, inter) if kind == "gate_proj" else (inter, 2 * inter)
        return [(f"gate_up_proj[{e}, {lo}:{hi}, :]", lambda a: a[e, lo:hi, :]),
                (f"gate_up_proj[{e}, :, {lo}:{hi}].T", lambda a: a[e, :, lo:hi].T)]
    return [(f"down_proj[{e}]", lambda a: a[e]), (f"down_proj[{e}].T", lambda a: a[e].T)]


def map_saved_to_params(saved, params, inter=None, aliases=None):
    """For every tensor of the saved checkpoint (name → numpy array), find the
    in-memory parameter (name → numpy array) it came from and how: returns
    {saved_name: (param_name, description, index function)}. Exact value
    equality decides; anything that cannot be mapped, and any parameter not
    covered element for element, is an error (SystemExit with the reason).
    aliases maps a second name of a shared parameter (tied lm_head) to the first."""
    aliases = aliases or {}
    canon = lambda n: aliases.get(n, n)
    mapping, covered = {}, {n: 0 for n in params if n not in aliases}
    for sname, sval in saved.items():
        if sname in params and params[sname].shape == sval.shape:
            if not np.array_equal(params[sname], sval):
                die(f"saved tensor {sname} differs from the parameter of the same name")
            mapping[sname] = (canon(sname), sname, lambda a: a)
            covered[canon(sname)] += sval.size
            continue
        m = EXPERT_RE.match(sname)
        if not m:
            die(f"saved tensor {sname} {tuple(sval.shape)} has no parameter of that name in memory; "
                f"in-memory names are e.g. {sorted(params)[:5]}")
        prefix, e, kind = m.group("prefix"), int(m.group("e")), m.group("kind")
        fused = prefix + (".down_proj" if kind == "down_proj" else ".gate_up_proj")
        if fused not in params:
            die(f"saved tensor {sname}: neither {sname} nor a fused {fused} exists in memory")
        a = params[fused]
        I = inter if inter is not None else (sval.shape[1] if kind == "down_proj" else sval.shape[0])
        hit = None
        for desc, fn in expert_slice_candidates(kind, a.shape, e, I):
            try:
                cand = fn(a)
            except IndexError:
                continue
            if cand.shape == sval.shape and np.array_equal(cand, sval):
                hit = (canon(fused), desc, fn)
                break
        if hit is None:
            die(f"saved tensor {sname} {tuple(sval.shape)} matches no slice of {fused} {tuple(a.shape)}; "
                f"the fused expert layout of this transformers version is not the one expected "
                f"(gate_up_proj [E, 2I, H] gate first, down_proj [E, H, I])")
        mapping[sname] = hit
        covered[canon(fused)] += sval.size
    for n, c in covered.items():
        a = params[n]
        if c < a.size:
            die(f"parameter {n} {tuple(a.shape)}: {covered[n]} of {a.size} elements appear in the "
                f"saved checkpoint; its gradient could not be written under checkpoint names")
    return mapping


def pack_sequences(seqs):
    """tokens [N], seq_off [S+1], targets [N] (next token or -1) as int32."""
    tokens = np.concatenate([np.asarray(s, dtype=np.int32) for s in seqs])
    off = np.zeros(len(seqs) + 1, dtype=np.int32)
    off[1:] = np.cumsum([len(s) for s in seqs])
    targets = np.full(tokens.shape, -1, dtype=np.int32)
    for s, seq in enumerate(seqs):
        targets[off[s]:off[s + 1] - 1] = np.asarray(seq[1:], dtype=np.int32)
    return tokens, off, targets


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def self_test():
    """Checks of the numpy-only parts (runs without torch)."""
    rng = np.random.default_rng(0)
    E, I, H = 3, 4, 5
    gu, dp = rng.standard_normal((E, 2 * I, H)).astype(np.float32), rng.standard_normal((E, H, I)).astype(np.float32)
    params = {"model.layers.1.mlp.experts.gate_up_proj": gu, "model.layers.1.mlp.experts.down_proj": dp,
              "model.norm.weight": rng.standard_normal(H).astype(np.float32)}
    saved = {"model.norm.weight": params["model.norm.weight"].copy()}
    for e in range(E):
        saved[f"model.layers.1.mlp.experts.{e}.gate_proj.weight"] = gu[e, :I].copy()
        saved[f"model.layers.1.mlp.experts.{e}.up_proj.weight"] = gu[e, I:].copy()
        saved[f"model.layers.1.mlp.experts.{e}.down_proj.weight"] = dp[e].copy()
    m = map_saved_to_params(saved, params)
    g = rng.standard_normal(gu.shape).astype(np.float32)
    fused, desc, fn = m["model.layers.1.mlp.experts.2.up_proj.weight"]
    assert fused.endswith("gate_up_proj") and desc == "gate_up_proj[2, 4:8, :]", desc
    assert np.array_equal(fn(g), g[2, I:2 * I]), "gradient slice differs"
    # transposed layout [E, H, 2I] is found too
    params_t = dict(params, **{"model.layers.1.mlp.experts.gate_up_proj": np.ascontiguousarray(gu.transpose(0, 2, 1))})
    m2 = map_saved_to_params(saved, params_t)
    assert m2["model.layers.1.mlp.experts.0.gate_proj.weight"][1].endswith(".T")
    # a tied lm_head saved under its own name maps onto the embedding
    emb = rng.standard_normal((7, H)).astype(np.float32)
    tied = {"model.embed_tokens.weight": emb, "lm_head.weight": emb}
    m3 = map_saved_to_params({"model.embed_tokens.weight": emb.copy(), "lm_head.weight": emb.copy()}, tied,
                             aliases={"lm_head.weight": "model.embed_tokens.weight"})
    assert m3["lm_head.weight"][0] == "model.embed_tokens.weight"
    tokens, off, targets = pack_sequences([[5, 6, 7], [8, 9]])
    assert tokens.tolist() == [5, 6, 7, 8, 9] and off.tolist() == [0, 3, 5]
    assert targets.tolist() == [6, 7, -1, 9, -1], targets
    log("self-test passed (expert-slice mapping both layouts, tied alias, packing)")


# ---------------------------------------------------------------- torch part

def import_torch():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (--device cuda)
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import torch
    except ImportError:
        die("PyTorch is not installed: run this script on the GPU machine (torch 2.11 + "
            "transformers 5.x); `--self-test` runs the numpy-only checks anywhere")
    try:
        import transformers
        from transformers import AutoModelForCausalLM, Qwen3Config, Qwen3MoeConfig
    except ImportError as ex:
        die(f"transformers with Qwen3/Qwen3-MoE support is needed ({ex})")
    major = int(transformers.__version__.split(".")[0])
    if major < 5:
        log(f"warning: transformers {transformers.__version__} < 5: names and layouts are checked, "
            f"but the fixtures were designed against 5.x")
    return torch, transformers, AutoModelForCausalLM, Qwen3Config, Qwen3MoeConfig


def build_model(torch, AutoModel, cfg_cls, spec):
    """Config + model in FP32 with eager attention; tries the transformers 5
    rope_parameters form, then the 4.x rope_theta form, and keeps the one whose
    inv_freq buffers show the requested theta."""
    theta, d = spec["rope_theta"], HEAD_DIM
    want = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    errors = []
    for rope in (dict(rope_parameters={"rope_type": "default", "rope_theta": theta}), dict(rope_theta=theta)):
        try:
            config = cfg_cls(**spec["kwargs"], **rope)
        except Exception as ex:  # strict configs reject unknown fields
            errors.append(f"{list(rope)[0]}: {ex}")
            continue
        model = None
        for extra in (dict(attn_implementation="eager", experts_implementation="eager"),
                      dict(attn_implementation="eager"), {}):
            try:
                model = AutoModel.from_config(config, **extra)
                break
            except (TypeError, ValueError) as ex:
                errors.append(f"from_config({extra}): {ex}")
        if model is None:
            continue
        inv = [b for n, b in model.named_buffers() if n.endswith("inv_freq")]
        if not inv:
            die("the model has no rotary inv_freq buffer; cannot check rope_theta")
        if all(b.shape == want.shape and torch.allclose(b.float().cpu(), want, rtol=1e-6, atol=0) for b in inv):
            model = model.float().eval()
            return model
        errors.append(f"{list(rope)[0]}: rope_theta did not take (inv_freq[1] = {float(inv[0][1])})")
    die("could not build " + spec["name"] + ": " + "; ".join(errors))


def reinit(torch, model, seed):
    """Seeded re-initialisation (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / float(p.shape[-1]) ** 0.5)
            else:
                die(f"unexpected 1-D parameter {name} (bias?) — the Qwen3 configs here have none")


def check_structure(model, spec):
    layers = model.model.layers
    if len(layers) != spec["kwargs"]["num_hidden_layers"]:
        die(f"{spec['name']}: {len(layers)} layers built")
    for i, layer in enumerate(layers):
        hd = getattr(layer.self_attn, "head_dim", None)
        if hd != HEAD_DIM:
            die(f"{spec['name']}: layer {i} head_dim is {hd}, want {HEAD_DIM}")
    sparse = [i for i, layer in enumerate(layers) if hasattr(layer.mlp, "gate") and hasattr(layer.mlp, "experts")]
    if spec["kind"] == "moe" and sparse != [1]:
        die(f"qwen3_moe: sparse layers are {sparse}, want [1] (mlp_only_layers=[0] not honoured?)")
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    if tied != spec["kwargs"]["tie_word_embeddings"]:
        die(f"{spec['name']}: lm_head tied = {tied}, want {spec['kwargs']['tie_word_embeddings']}")
    return sparse


def run_forward(torch, F, model, seqs, sparse, hidden):
    """Forward of each sequence alone; returns packed logits, activations and
    (MoE) router records. Hooks capture the layer outputs and router inputs."""
    acts, router = {}, {}
    hooks = []

    def keep(name):
        def hook(_m, _inp, out):
            t = out[0] if isinstance(out, tuple) else out
            acts.setdefault(name, []).append(t.detach().reshape(-1, hidden).clone())
        return hook

    def keep_router(layer):
        def hook(mod, args, kwargs, out):
            hs = (args[0] if args else kwargs["hidden_states"]).detach().reshape(-1, hidden)
            logits = F.linear(hs.float(), mod.weight.detach().float())
            probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
            if isinstance(out, tuple) and len(out) >= 3:  # transformers 5: (probs, weights, ids)
                first, weights, ids = out[0].detach(), out[1].detach(), out[2].detach()
                if not (torch.allclose(first.float(), probs, atol=1e-6) or torch.allclose(first.float(), logits, atol=1e-5)):
                    die(f"router of layer {layer}: its first output is neither the logits nor their softmax")
            else:  # 4.x: the gate is an nn.Linear returning logits
                if not torch.allclose(out.detach().float(), logits, atol=1e-5):
                    die(f"router of layer {layer}: recomputed logits differ from the module's output")
                w, ids = torch.topk(probs, model.config.num_experts_per_tok, dim=-1)
                weights = w / w.sum(-1, keepdim=True) if model.config.norm_topk_prob else w
            router.setdefault(layer, []).append((logits, probs, ids.to(torch.int64), weights.float()))
        return hook

    hooks.append(model.model.embed_tokens.register_forward_hook(keep("act.embed")))
    for i, layer in enumerate(model.model.layers):
        hooks.append(layer.register_forward_hook(keep(f"act.layer.{i}")))
        if i in sparse:
            hooks.append(layer.mlp.gate.register_forward_hook(keep_router(i), with_kwargs=True))
    hooks.append(model.model.norm.register_forward_hook(keep("act.final_norm")))
    logits = []
    dev = next(model.parameters()).device
    for s in seqs:
        ids = torch.tensor([s], dtype=torch.long, device=dev)
        pos = torch.arange(len(s), device=dev).unsqueeze(0)
        out = model(input_ids=ids, position_ids=pos, use_cache=False)
        logits.append(out.logits[0].float().cpu())
    for h in hooks:
        h.remove()
    acts = {k: torch.cat(v).cpu() for k, v in acts.items()}
    router = {k: [tuple(x.cpu() for x in r) for r in v] for k, v in router.items()}
    return torch.cat(logits), acts, router


def load_local(AutoModel, path):
    """from_pretrained of a local directory, eager attention when the version knows it."""
    try:
        return AutoModel.from_pretrained(path, local_files_only=True, attn_implementation="eager")
    except (TypeError, ValueError):
        return AutoModel.from_pretrained(path, local_files_only=True)


def safetensors_header(path):
    """The JSON header of a .safetensors file (name → {dtype, shape, data_offsets})."""
    import struct
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))


def logprobs_of(torch, logits, targets_np):
    t = torch.tensor(targets_np, dtype=torch.long)
    lp = torch.log_softmax(logits.float(), dim=-1)
    has = t >= 0
    out = torch.zeros(len(t), dtype=torch.float32)
    out[has] = lp[has].gather(1, t[has].unsqueeze(1)).squeeze(1)
    return out, has


def make_one(spec, out_root, torch, transformers, AutoModel, cfg_cls, device):
    import torch.nn.functional as F
    name = spec["name"]
    hidden = spec["kwargs"]["hidden_size"]
    vocab = spec["kwargs"]["vocab_size"]
    g = torch.Generator().manual_seed(spec["seed"])
    seqs = [torch.randint(0, vocab, (n,), generator=g).tolist() for n in SEQ_LENS]
    tokens, seq_off, targets = pack_sequences(seqs)

    model = build_model(torch, AutoModel, cfg_cls, spec)
    sparse = check_structure(model, spec)
    seed = spec["seed"]
    for attempt in range(50):  # MoE: advance the seed until top-k decisions have a margin
        reinit(torch, model, seed)
        with torch.no_grad():
            logits, acts, router = run_forward(torch, F, model, seqs, sparse, hidden)
        margin = float("inf")
        for layer, recs in router.items():
            p = torch.cat([r[1] for r in recs])
            top = torch.topk(p, model.config.num_experts_per_tok + 1, dim=-1).values
            margin = min(margin, float((top[:, -2] - top[:, -1]).min()))
        if margin >= TOPK_MARGIN:
            break
        seed += 1
    else:
        die(f"{name}: no seed in 50 gave a top-k margin ≥ {TOPK_MARGIN}")
    model.to(device)

    # Forward under gradient, loss, backward.
    model.zero_grad(set_to_none=True)
    logits, acts, router = run_forward(torch, F, model, seqs, sparse, hidden)
    logits = logits.cpu()
    lp, has = logprobs_of(torch, logits, targets)
    loss = -lp[has].mean()
    loss.backward()
    log(f"{name}: loss {float(loss):.6f} over {int(has.sum())} targets (seed {seed})")

    # Save FP32 and check that the checkpoint reproduces the logits.
    mdir = os.path.join(out_root, name)
    shutil.rmtree(mdir, ignore_errors=True)
    hf_dir = os.path.join(mdir, "hf")
    model.to("cpu").save_pretrained(hf_dir)
    reloaded = load_local(AutoModel, hf_dir).float().eval()
    with torch.no_grad():
        rl_logits, _, _ = run_forward(torch, F, reloaded, seqs, check_structure(reloaded, spec), hidden)
    diff = float((rl_logits - logits).abs().max() / logits.abs().max())
    if diff > 1e-5:
        die(f"{name}: the saved checkpoint reloads to logits that differ by {diff:g} (relative to max |logit|)")
    del reloaded

    files = sorted(f for f in os.listdir(hf_dir) if f.endswith(".safetensors"))
    saved = {}
    for f in files:
        saved.update(st_load(os.path.join(hf_dir, f)))
    if any(a.dtype != np.float32 for a in saved.values()):
        die(f"{name}: the FP32 checkpoint holds non-FP32 tensors")
    params, aliases, first = {}, {}, {}
    for n, p in model.named_parameters(remove_duplicate=False):
        params[n] = p
        if id(p) in first:
            aliases[n] = first[id(p)]
        else:
            first[id(p)] = n
    np_params = {n: p.detach().cpu().numpy() for n, p in params.items()}
    mapping = map_saved_to_params(saved, np_params, aliases=aliases)
    fx = {"tokens": tokens, "seq_off": seq_off, "targets": targets,
          "logits": logits.detach().numpy(), "logprobs": lp.detach().numpy(),
          "loss": np.array([float(loss)], dtype=np.float32)}
    for k, v in acts.items():
        fx[k] = v.cpu().numpy()
    zero_grad = []
    for sname, (pname, desc, fn) in sorted(mapping.items()):
        gr = params[pname].grad
        if gr is None:
            if ".experts" not in pname:
                die(f"{name}: parameter {pname} received no gradient")
            zero_grad.append(sname)
            gr = torch.zeros_like(params[pname])
        fx["grad." + sname] = np.ascontiguousarray(fn(gr.detach().cpu().numpy()))
    moe_meta = None
    if sparse:
        moe_meta = {"sparse_layers": sparse, "dense_layers": [i for i in range(len(model.model.layers)) if i not in sparse],
                    "num_experts": model.config.num_experts, "top_k": model.config.num_experts_per_tok,
                    "norm_topk_prob": bool(model.config.norm_topk_prob), "min_topk_margin": margin,
                    "experts_without_gradient": zero_grad}
        for layer, recs in router.items():
            fx[f"router_logits.layer.{layer}"] = torch.cat([r[0] for r in recs]).cpu().numpy()
            fx[f"topk_ids.layer.{layer}"] = torch.cat([r[2] for r in recs]).cpu().numpy().astype(np.int32)
            fx[f"topk_weights.layer.{layer}"] = torch.cat([r[3] for r in recs]).cpu().numpy()

    bf16_dir = None
    if spec["bf16_copy"]:
        bf16_dir = os.path.join(mdir, "hf-bf16")
        mb = load_local(AutoModel, hf_dir).to(torch.bfloat16).eval()
        mb.save_pretrained(bf16_dir)
        with torch.no_grad():
            lb, _, _ = run_forward(torch, F, mb, seqs, sparse, hidden)
        lpb, _ = logprobs_of(torch, lb, targets)
        fx["logits_bf16"] = lb.float().numpy()
        fx["logprobs_bf16"] = lpb.numpy()
        for f in os.listdir(bf16_dir):
            if f.endswith(".safetensors"):
                dts = {v["dtype"] for k, v in safetensors_header(os.path.join(bf16_dir, f)).items() if k != "__metadata__"}
                if dts != {"BF16"}:
                    die(f"{name}: the BF16 copy {f} holds dtypes {sorted(dts)}")
        cpath = os.path.join(bf16_dir, "config.json")
        cfgb = json.load(open(cpath))
        if (cfgb.get("dtype") or cfgb.get("torch_dtype")) != "bfloat16":
            log(f"warning: {name}: the BF16 copy's config.json said dtype {cfgb.get('dtype')!r}; set to bfloat16")
            cfgb["dtype"] = "bfloat16"
            with open(cpath, "w") as f:
                json.dump(cfgb, f, indent=2)
        del mb

    fx = {k: np.ascontiguousarray(v) for k, v in fx.items()}
    st_save(fx, os.path.join(mdir, "fixtures.safetensors"), metadata={"format": "rlrun-model-fixtures", "version": "1"})
    cfg = json.load(open(os.path.join(hf_dir, "config.json")))
    meta = {
        "format": "rlrun-model-fixtures", "version": 1, "model": name,
        "hf_dir": "hf", "hf_dtype": "float32", "hf_bf16_dir": "hf-bf16" if bf16_dir else None,
        "config": cfg, "seed": seed, "device": device,
        "torch_version": torch.__version__, "transformers_version": transformers.__version__,
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "sequences": seqs, "seq_off": seq_off.tolist(), "n_targets": int(has.sum()),
        "loss": float(loss),
        "loss_definition": "mean over tokens with a target of -log_softmax(logits[t])[targets[t]], FP32, temperature 1",
        "init": "matrices N(0, 1/fan_in), norm weights U(0.5, 1.5), torch.Generator seeded",
        "tie_word_embeddings": bool(spec["kwargs"]["tie_word_embeddings"]),
        "grad_names": sorted(k[5:] for k in fx if k.startswith("grad.")),
        "grad_layout": {s: d for s, (_, d, _) in sorted(mapping.items()) if d != s},
        "tensors": {k: [str(v.dtype), list(v.shape)] for k, v in sorted(fx.items())},
        "moe": moe_meta,
    }
    with open(os.path.join(mdir, "fixtures.json"), "w") as f:
        json.dump(meta, f, indent=1)
    log(f"{name}: wrote {mdir} ({dir_bytes(mdir) / 1e6:.2f} MB, {len(meta['grad_names'])} gradients)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="output directory (e.g. tests/fixtures/model)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="where the oracle runs (default cpu: plain FP32, no TF32, deterministic)")
    ap.add_argument("--self-test", action="store_true", help="run the numpy-only checks and exit")
    a = ap.parse_args()
    if a.self_test:
        self_test()
        return
    if not a.out:
        die("--out DIR is required (e.g. --out tests/fixtures/model)", 2)
    torch, transformers, AutoModel, Qwen3Config, Qwen3MoeConfig = import_torch()
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_num_threads(1)
    if a.device == "cuda":
        if not torch.cuda.is_available():
            die("--device cuda but torch sees no GPU")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    os.makedirs(a.out, exist_ok=True)
    make_one(DENSE, a.out, torch, transformers, AutoModel, Qwen3Config, a.device)
    make_one(MOE, a.out, torch, transformers, AutoModel, Qwen3MoeConfig, a.device)
    total = dir_bytes(a.out)
    log(f"total {total / 1e6:.2f} MB in {a.out}")
    if total > BUDGET_BYTES:
        die(f"fixtures take {total} bytes, over the {BUDGET_BYTES}-byte budget; shrink the models")


if __name__ == "__main__":
    main()
