#!/usr/bin/env bash
# tests/gpu/run.sh — every GPU test and benchmark of rlrun, for the GPU machine.
# Builds nothing: run `make` (and `make gpu-tests`) here first, carry the build
# folder, then from the repository root there:   BUILD=build tests/gpu/run.sh
# ONLY="name …" picks sections. Logs go under $OUT; a short summary table is printed last (also on failure).
# Each engineer appends a section that calls `row NAME PASS|FAIL|INFO DETAIL`.
set -u
BUILD=${BUILD:-build}
OUT=${OUT:-/tmp/rlrun-gpu}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
STATUS=0
row() { printf '%-32s %-6s %s\n' "$1" "$2" "${3:-}" >> "$SUMMARY"; [ "$2" = FAIL ] && STATUS=1; return 0; }
# run NAME LOG CMD...: run a command, log it, one summary row from its exit status.
run() {
  local name=$1 log=$2
  shift 2
  if timeout "${STEP_TIMEOUT:-600}" "$@" > "$OUT/$log" 2>&1; then row "$name" PASS "$(tail -1 "$OUT/$log")"
  else row "$name" FAIL "rc=$?, see $log: $(tail -1 "$OUT/$log")"; fi
}
# ONLY="gemm rollout loop" runs just those sections (names after "if want" below);
# STEP_TIMEOUT (s, default 600) bounds each run step.
want() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }
trap 'echo; echo "== summary ($OUT)"; cat "$SUMMARY"; exit $STATUS' EXIT
row gpu INFO "$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"

# ---------------------------------------------------------------- model oracle (issue #7)
if want oracle; then
# (section re-created by "numerics" after an accidental overwrite; owner please check)
run make_model_fixtures make_model_fixtures.log \
  python3 tests/oracle/make_model_fixtures.py --out "$OUT/fixtures/model"

fi
# ---------------------------------------------------------------- GEMM / linear (issue #5)
if want gemm; then
# gemm_gpu_test: cuBLASLt BF16 / fp8-block vs the CPU reference and FP64 (M 1…8192, Qwen3
# shapes, K/N not multiples of 128, the fp8 dequant fallback), linear_forward with on-device
# activation quantization in every format (MXFP8/NVFP4 emulated on Hopper), bitwise batch
# invariance with pinned algorithms, linear_backward. bench_linear: ours vs bare cuBLASLt
# (TFLOP/s table appended to the summary).
# gemm_fp8_probe: which block-scaled FP8 cuBLASLt descriptors the heuristic accepts (INFO).
if [ -x "$BUILD/gpu/gemm_fp8_probe" ]; then
  "$BUILD/gpu/gemm_fp8_probe" > "$OUT/gemm_fp8_probe.log" 2>&1
  row gemm_fp8_probe INFO "$(grep -c 'matmul=ran' "$OUT/gemm_fp8_probe.log") of 8 variants ran, see gemm_fp8_probe.log"
fi
if [ -x "$BUILD/gpu/gemm_gpu_test" ]; then
  run gemm_gpu_test gemm_gpu_test.log "$BUILD/gpu/gemm_gpu_test"
  grep -E '^FAIL|invariance' "$OUT/gemm_gpu_test.log" | head -30 >> "$SUMMARY"
else row gemm_gpu_test FAIL "missing: make BUILD=$BUILD gpu-tests"; fi
# gemm_fp8q_gpu_test: the fp8-block GEMM that quantizes its BF16 activation inside
# (gemm_fp8q_cuda, linear_forward under RLRUN_LINEAR_FP8Q=1) vs FP64, vs linear_forward,
# exact-arithmetic, non-finite rows, row invariance, graph replay, refusals.
if [ -x "$BUILD/gpu/gemm_fp8q_gpu_test" ]; then
  run gemm_fp8q_gpu_test gemm_fp8q_gpu_test.log "$BUILD/gpu/gemm_fp8q_gpu_test"
  grep -E '^FAIL' "$OUT/gemm_fp8q_gpu_test.log" | head -30 >> "$SUMMARY"
else row gemm_fp8q_gpu_test FAIL "missing: make BUILD=$BUILD gpu-tests"; fi
if [ -x "$BUILD/bench_linear" ]; then
  run bench_linear bench_linear.log "$BUILD/bench_linear"
  grep -E '^\||worst' "$OUT/bench_linear.log" >> "$SUMMARY"
else row bench_linear FAIL "missing: make BUILD=$BUILD $BUILD/bench_linear"; fi
# gemm_gpu_test's "small" rows: gemm_small_bf16_cuda (the decode step's GEMM, M ≤ 256) vs FP64,
# bitwise M-invariance, vs cuBLASLt, CUDA-graph replays. bench_small_gemm: µs and GB/s of weights
# vs bare cuBLASLt at M 1/8/64/128 on the Qwen3-0.6B shapes, and one decode step's GEMMs summed.
if [ -x "$BUILD/bench_small_gemm" ]; then
  run bench_small_gemm bench_small_gemm.log "$BUILD/bench_small_gemm"
  grep -E '^\|' "$OUT/bench_small_gemm.log" >> "$SUMMARY"
else row bench_small_gemm FAIL "missing: make BUILD=$BUILD $BUILD/bench_small_gemm"; fi
# gemm_small_fp8_gpu_test: the small-M fp8-block GEMM (decode, opt-in RLRUN_SMALL_GEMM_FP8=1): its
# in-kernel activation quantization == the quantizer's bytes, vs FP64 and vs linear_forward (cuBLASLt)
# within stated bounds, bitwise M-invariance, non-finite rows, graph replays, refusals; the F8 group
# (gemm_small_fp8_group_cuda) and the F8 SwiGLU pair (gemm_small_fp8_swiglu_cuda, `fp8-swiglu` rows: its
# act, codes and scales == the group + ops_swiglu_forward_q8_bx_cuda bytes, cluster and counter forms).
# bench_small_fp8: one decode step's fp8 GEMMs (graph) vs linear_forward + conversion, at M 1/8/64.
if [ -x "$BUILD/gpu/gemm_small_fp8_gpu_test" ]; then
  run gemm_small_fp8_gpu_test gemm_small_fp8_gpu_test.log "$BUILD/gpu/gemm_small_fp8_gpu_test"
  grep -E '^FAIL' "$OUT/gemm_small_fp8_gpu_test.log" | head -20 >> "$SUMMARY"
else row gemm_small_fp8_gpu_test FAIL "missing: make BUILD=$BUILD gpu-tests"; fi
if [ -x "$BUILD/bench_small_fp8" ]; then
  run bench_small_fp8 bench_small_fp8.log "$BUILD/bench_small_fp8"
  grep -E '^\|' "$OUT/bench_small_fp8.log" >> "$SUMMARY"
else row bench_small_fp8 FAIL "missing: make BUILD=$BUILD $BUILD/bench_small_fp8"; fi

fi
# ---------------------------------------------------------------- numerics (issue #4)
if want quant; then
# The fast device forms of formats.h's rules (E2M1 encoders, exact division) on
# every input pattern; CUDA quantizers == CPU reference byte for byte (every format
# and option, hw and sw E4M3 cvt, 1x1 … 8192x8192, non-finite inputs), then each quantizer's
# effective bandwidth on 8192x8192 BF16 next to a D2D copy (table appended).
if [ -x "$BUILD/gpu/quant_gpu_test" ]; then
  run quant_gpu_test quant_gpu_test.log "$BUILD/gpu/quant_gpu_test"
  grep -E '^FAIL' "$OUT/quant_gpu_test.log" | head -20 >> "$SUMMARY"
else row quant_gpu_test FAIL "missing: make BUILD=$BUILD gpu-tests"; fi
if [ -x "$BUILD/bench_quant" ]; then
  run bench_quant bench_quant.log "$BUILD/bench_quant"
  cat "$OUT/bench_quant.log" >> "$SUMMARY"
else row bench_quant FAIL "missing: make BUILD=$BUILD $BUILD/bench_quant"; fi

fi
# ---------------------------------------------------------------- recipes (issue #3)
if want recipes; then
# Hardware detection on a real GPU: device_query → class (an H200 must be "hopper"),
# then validate on the detected machine: fp8-block runs (exit 0), mxfp8 without
# emulate is refused (exit 3), with emulate it runs emulated (exit 0).
run recipes_detect recipes_detect.log bash -c '
  set -x
  "$0" matrix | tee /dev/stderr | grep -q "^this machine: .*(hopper, [0-9]* GPU.*detected)" &&
  "$0" validate recipes/fp8-unified.yaml &&
  { "$0" validate recipes/mxfp8-unified-emulate.yaml --set precision.emulate=false; [ $? -eq 3 ]; } &&
  "$0" validate recipes/mxfp8-unified-emulate.yaml | grep -q "emulated" &&
  echo "recipes: detected hopper; fp8-block 0, mxfp8 w/o emulate 3, emulated 0"' "$BUILD/rlrun"

fi
# ---------------------------------------------------------------- checkpoints / convert (issue #6)
if want convert; then
# make_convert_fixtures.py saves a tiny random Qwen3 and Qwen3-MoE with transformers'
# save_pretrained. rlrun converts each to every format on the GPU and on the CPU (the
# directories must be byte-identical), dequantizes back to bf16 on both (identical too),
# and check_st.py re-derives every scale in numpy (data and scale bytes must equal its
# quantizers' from tests/oracle/ci_quant.py), checks each element against the
# format's bound and the round trip bit for bit. transformers then loads the round
# trip and compares logits with the original (INFO). bench_convert: peak RSS and GB/s
# of a 2.5 GB synthetic checkpoint converted on the GPU, next to cp.
CV="$OUT/convert"
rm -rf "$CV"
if python3 tests/oracle/make_convert_fixtures.py --out "$CV" > "$OUT/convert_fixtures.log" 2>&1; then
  row convert_fixtures PASS "$(tail -1 "$OUT/convert_fixtures.log")"
  for m in qwen3 qwen3_moe; do
    for f in fp8-block mxfp8 nvfp4; do
      n="convert_${m}_${f}"
      log="$OUT/$n.log"
      if [ $m = qwen3 ] && [ $f = nvfp4 ]; then # NVFP4 is for routed experts: a dense model is refused (exit 2)
        "$BUILD/rlrun" convert --in "$CV/$m" --out "$CV/$m.$f.gpu" --to $f --device cuda > "$log" 2>&1
        if [ $? = 2 ] && grep -q "quantizes the routed MoE experts only" "$log"; then row "$n" PASS "refused (dense)"
        else row "$n" FAIL "see $n.log: a dense model's nvfp4 conversion should be refused"; fi
        continue
      fi
      if (
        set -x
        "$BUILD/rlrun" convert --in "$CV/$m" --out "$CV/$m.$f.gpu" --to $f --device cuda --no-progress &&
        "$BUILD/rlrun" convert --in "$CV/$m" --out "$CV/$m.$f.cpu" --to $f --device cpu --quiet &&
        diff -r "$CV/$m.$f.gpu" "$CV/$m.$f.cpu" && echo "quantized: gpu == cpu, identical bytes" &&
        "$BUILD/rlrun" convert --in "$CV/$m.$f.gpu" --out "$CV/$m.$f.rt" --to bf16 --device cuda --quiet &&
        "$BUILD/rlrun" convert --in "$CV/$m.$f.gpu" --out "$CV/$m.$f.rtcpu" --to bf16 --device cpu --quiet &&
        diff -r "$CV/$m.$f.rt" "$CV/$m.$f.rtcpu" && echo "dequantized: gpu == cpu, identical bytes" &&
        python3 tests/oracle/check_st.py verify "$CV/$m" "$CV/$m.$f.gpu" $f "$CV/$m.$f.rt"
      ) > "$log" 2>&1 && grep -q "on the GPU" "$log"; then
        row "$n" PASS "$(grep -o '([0-9]* quantized' "$log" | head -1)) $(tail -1 "$log")"
      else
        row "$n" FAIL "see $n.log: $(tail -1 "$log")"
      fi
      python3 tests/oracle/make_convert_fixtures.py --logits "$CV/$m" "$CV/$m.$f.rt" >> "$log" 2>&1
      row "${n}_logits" INFO "$(tail -1 "$log")"
    done
  done
else
  row convert_fixtures FAIL "see convert_fixtures.log: $(tail -1 "$OUT/convert_fixtures.log")"
fi
if [ -x "$BUILD/bench_convert" ]; then
  run bench_convert bench_convert.log "$BUILD/bench_convert" --gb 2.5 --device cuda
  cat "$OUT/bench_convert.log" >> "$SUMMARY"
else row bench_convert FAIL "missing: make BUILD=$BUILD $BUILD/bench_convert"; fi

fi
# ---------------------------------------------------------------- optimizer (issue #9, "rl")
if want optim; then
# optim_gpu_test: CUDA AdamW == CPU reference bit for bit (BF16 weights, FP32 main params,
# moments, FP64 grad norm) over 3 clipped warm-up steps, main_params fp32 and bf16, tensors of
# 1 … 3M elements; a NaN gradient is refused naming the tensor with every buffer unchanged.
# Then one step on 2^28 params: effective GB/s next to a D2D copy (table row appended).
if [ -x "$BUILD/gpu/optim_gpu_test" ]; then
  run optim_gpu_test optim_gpu_test.log "$BUILD/gpu/optim_gpu_test"
  grep -E '^FAIL|^\| adamw' "$OUT/optim_gpu_test.log" | head -20 >> "$SUMMARY"
else row optim_gpu_test FAIL "missing: make BUILD=$BUILD gpu-tests"; fi

fi
# ---------------------------------------------------------------- sampler (issue #8)
if want sampler; then
# sampler_gpu_test: the fused sampling kernel (stages/sampler_cuda.cu) against the CPU
# reference, row by row: the same token, status, kept count and uniform draw (V 8 … 151936,
# temperature, greedy, top-k 1/50, top-p 0.9 and 0.5 after top-k, min-p, exact ties, -inf
# masks, NaN rows, 4096 rows × 32000 to count FP64 boundary flips: expect 0), logp and
# entropy within 1e-12; then ms per call at V 151936, batch 64/256, next to a D2D copy of
# the logits (table appended).
if [ -x "$BUILD/gpu/sampler_gpu_test" ]; then
  run sampler_gpu_test sampler_gpu_test.log "$BUILD/gpu/sampler_gpu_test"
  grep -E '^FAIL|^     first|^\|' "$OUT/sampler_gpu_test.log" | head -30 >> "$SUMMARY"
else row sampler_gpu_test FAIL "missing: make BUILD=$BUILD gpu-tests"; fi

fi
# ---------------------------------------------------------------- non-GEMM ops CUDA (issue #7, "opscuda")
if want ops; then
# ops_gpu_test: every CUDA op of kernels/ops.h against the CPU reference, forward and backward
# (embedding + scatter-add, RMSNorm (+residual, +BF16), RoPE, QK-norm+RoPE, flash attention on
# packed lengths {1,7,128,300,1024} GQA 16/8 d=128 and d=64, SwiGLU, router top-k/replay,
# log-softmax over V=151936); tolerances in the file's header; determinism (two runs bitwise),
# a sequence alone == in the batch (bitwise). bench_ops: each fused kernel at Qwen3-0.6B training
# shapes as % of a D2D copy, attention fwd/bwd TFLOP/s (table appended).
if [ -x "$BUILD/gpu/ops_gpu_test" ]; then
  run ops_gpu_test ops_gpu_test.log "$BUILD/gpu/ops_gpu_test"
  grep -E '^FAIL' "$OUT/ops_gpu_test.log" | head -30 >> "$SUMMARY"
else row ops_gpu_test FAIL "missing: make BUILD=$BUILD gpu-tests"; fi
if [ -x "$BUILD/bench_ops" ]; then
  run bench_ops bench_ops.log "$BUILD/bench_ops"
  grep -E '^\||^attention' "$OUT/bench_ops.log" >> "$SUMMARY"
else row bench_ops FAIL "missing: make BUILD=$BUILD $BUILD/bench_ops"; fi

fi
# ---------------------------------------------------------------- CUDA model (issue #7, "modelcuda")
if want model; then
# model_gpu_test: the CUDA model against the CPU model and the transformers fixtures
# (tests/fixtures/model/{qwen3,qwen3_moe}): logits, log-probs, loss, every gradient (BF16 policy),
# MoE top-k ids, R3 replay bitwise, determinism (two runs bitwise), fp8-block/mxfp8/nvfp4 forward
# vs CPU, a head_dim-128 random model. bench_model: Qwen3-0.6B shape, training step (16 x 512,
# fwd + bwd + AdamW) and prefill log-probs (64 x 320), BF16 and fp8-block, tok/s, MFU, and the ratio
# to the peer (tests/oracle/bench_peer.py: transformers + torch bf16) measured just before.
if [ -x "$BUILD/gpu/model_gpu_test" ]; then
  run model_gpu_test model_gpu_test.log "$BUILD/gpu/model_gpu_test"
  grep -E '^FAIL' "$OUT/model_gpu_test.log" | head -30 >> "$SUMMARY"
else row model_gpu_test FAIL "missing: make BUILD=$BUILD gpu-tests"; fi
if [ -x "$BUILD/bench_model" ]; then
  python3 tests/oracle/bench_peer.py > "$OUT/bench_peer.log" 2>&1
  PT=$(awk '/^peer_train_tok_s/ {print $2}' "$OUT/bench_peer.log")
  PP=$(awk '/^peer_prefill_tok_s/ {print $2}' "$OUT/bench_peer.log")
  row bench_peer INFO "train ${PT:-?} tok/s, prefill ${PP:-?} tok/s (see bench_peer.log)"
  run bench_model bench_model.log "$BUILD/bench_model" ${PT:+--peer-train $PT} ${PP:+--peer-prefill $PP}
  grep -E '^\||^bench_model' "$OUT/bench_model.log" >> "$SUMMARY"
  # the train step's forward and backward device time by phase (kernels/devprof.h): log only
  RLRUN_MODEL_PROFILE=1 "$BUILD/bench_model" --steps 3 > "$OUT/bench_model_profile.log" 2>&1
else row bench_model FAIL "missing: make BUILD=$BUILD $BUILD/bench_model"; fi

fi
# ---------------------------------------------------------------- rollout greedy oracle (issue #8, "rollout")
if want greedy; then
# transformers' greedy continuations (12 tokens, 3 prompts) of the tiny fixture models, FP32 and
# BF16, for tests/test_rollout_greedy.c. Copy $OUT/fixtures/model/{qwen3,qwen3_moe}/greedy.json
# into tests/fixtures/model/ (the C test says SKIPPED until they are there).
run make_greedy_fixtures make_greedy_fixtures.log \
  env HF_HUB_OFFLINE=1 python3 tests/oracle/make_greedy_fixtures.py --root tests/fixtures/model \
  --out "$OUT/fixtures/model"

fi
# ---------------------------------------------------------------- sync (issue #11, "sync") — needs nvidia-h200-x2
if want sync; then
# sync_gpu_test: colocated (GPU 0) device re-quantization == CPU model_quantize byte for byte and
# sync.verify passes (fp8-block, mxfp8, bf16, nvfp4 experts; dense + MoE); trainer GPU 0 -> rollout
# GPU 1 over NCCL (buckets 64 KiB and 512 MiB): bytes received == bytes sent, verify passes, rollout
# GPU logits == trainer GPU logits bitwise, an injected corrupt byte is caught naming the tensor.
# With one GPU the NCCL part prints SKIP. bench_sync: sync ms of a Qwen3-0.6B shape and a
# Qwen3-30B-A3B shape (4 layers), fp8-block and bf16, vs D2D copy (colocated) and a plain
# ncclBroadcast of 1 GiB (separate GPUs), measured in the same run (table appended).
if [ -x "$BUILD/gpu/sync_gpu_test" ]; then
  run sync_gpu_test sync_gpu_test.log env NCCL_NVLS_ENABLE=0 "$BUILD/gpu/sync_gpu_test"
  grep -E '^FAIL|^SKIP' "$OUT/sync_gpu_test.log" | head -20 >> "$SUMMARY"
else row sync_gpu_test FAIL "missing: make BUILD=$BUILD gpu-tests"; fi
if [ -x "$BUILD/bench_sync" ]; then
  run bench_sync bench_sync.log env NCCL_NVLS_ENABLE=0 "$BUILD/bench_sync"
  grep -E '^\||^bench_sync' "$OUT/bench_sync.log" >> "$SUMMARY"
else row bench_sync FAIL "missing: make BUILD=$BUILD $BUILD/bench_sync"; fi

fi
# ---------------------------------------------------------------- drift benchmark (issue #12, "drift")
if want drift; then
# bench_drift: one fixed set of 64 × (16 + 256) sequences sampled once in bf16 (seed 1), then for
# every supported (rollout, train) precision pair of runner/matrix.c (+ mxfp8/nvfp4 rollout × bf16
# train for contrast) the RL.md mismatch metrics, MoE with and without R3. Qwen3-0.6B shape and a
# 4-layer Qwen3-30B-A3B per-layer-shape MoE, random N(0, 1/fan_in) weights; mxfp8/nvfp4 emulated on
# Hopper. Expect 0 for every unified pair, > 0 for fp8-block × bf16. Tables in docs/drift.md.
# ~40 s (dense) and ~35 s (MoE) on the H200, most of it sampling.
if [ -x "$BUILD/bench_drift" ]; then
  for dm in qwen3-0.6b qwen3-30b-a3b; do
    run "bench_drift_$dm" "bench_drift_$dm.log" "$BUILD/bench_drift" --device cuda --model $dm --save-tokens "$OUT/drift"
    grep -E '^\| (fp8-block|mxfp8|nvfp4)' "$OUT/bench_drift_$dm.log" | cut -d'|' -f2,4,5,9 | sed "s/^/  $dm /" >> "$SUMMARY"
  done
  # --engine: the rollout side is the CUDA rollout engine (decode; drift.h "engine mode"): each pair samples
  # its own set in its rollout precision and its log-probs are the engine's, so unified pairs show the
  # engine-vs-trainer floor (small, not 0). Rows: pair | R3 | logp_abs_diff | r3/overlap, then per rollout
  # precision the engine check (engine vs full forward: logp_abs_diff | max_abs_diff).
  for dm in qwen3-0.6b qwen3-30b-a3b; do
    run "bench_drift_engine_$dm" "bench_drift_engine_$dm.log" "$BUILD/bench_drift" --device cuda --engine --model $dm
    grep -E '^\| [a-z0-9-]+ × ' "$OUT/bench_drift_engine_$dm.log" | cut -d'|' -f2,4,5,9 | sed "s/^/  $dm engine /" >> "$SUMMARY"
    grep -E '^\| [a-z0-9-]+ \| ' "$OUT/bench_drift_engine_$dm.log" | cut -d'|' -f2,3,4 | sed "s/^/  $dm engine-check /" >> "$SUMMARY"
  done
else row bench_drift FAIL "missing: make BUILD=$BUILD $BUILD/bench_drift"; fi

fi
# ---------------------------------------------------------------- GPU recipes on the real machine (issue #12, "sft")
if want validate; then
# Every recipe validated against the detected hardware (no --hardware): on an H200 every one
# exits 0 (mxfp8/nvfp4 ones say "emulated"; rl-from-sft* note a missing SFT checkpoint). The GPU
# loop does not run yet (a GPU recipe given to `rlrun run` exits 3): validation only.
# A recipe naming a GPU this machine lacks (the 2-GPU ones on a 1-GPU machine) exits 3: INFO.
for f in recipes/*.yaml; do
  n=$(basename "$f" .yaml)
  if "$BUILD/rlrun" validate "$f" 2>&1 | grep -q ': uses GPU [0-9]*, but .* has'; then
    row "validate_$n" INFO "exit 3 here: names a GPU this machine lacks (needs more GPUs)"
    continue
  fi
  run "validate_$n" "validate_$n.log" "$BUILD/rlrun" validate "$f"
done

fi
# ---------------------------------------------------------------- tensor-core attention (issue #7, "attn")
if want attn; then
# ops_gpu_test (above) checks both attention kernel sets: "simt" (FP32) and "tc" (BF16 mma.sync,
# kernels/ops_attn_tc_cuda.cu, the default: BF16-operand tolerances vs the CPU, determinism,
# packed == alone, bitwise). bench_ops rows "attention ... tc" give TFLOP/s and the speed-up over
# simt. model_gpu_test pins simt (its tolerances assume FP32 attention); here it runs with tc as
# INFO (how far BF16 attention moves the model from the CPU; 7 of 33 checks exceed the FP32
# tolerances on the H200), and bench_model's training step with each kernel set.
if [ -x "$BUILD/gpu/model_gpu_test" ]; then
  RLRUN_ATTN=tc "$BUILD/gpu/model_gpu_test" > "$OUT/model_gpu_test_attn_tc.log" 2>&1
  row model_gpu_test_attn_tc INFO "$(tail -1 "$OUT/model_gpu_test_attn_tc.log") (FP32-attention tolerances)"
fi
if [ -x "$BUILD/bench_model" ]; then
  for impl in simt tc; do
    run "bench_model_attn_$impl" "bench_model_attn_$impl.log" env RLRUN_ATTN=$impl "$BUILD/bench_model" --steps 3
    grep -E '^\| train' "$OUT/bench_model_attn_$impl.log" | sed "s/^/attn=$impl /" >> "$SUMMARY"
  done
fi

fi
# ---------------------------------------------------------------- CUDA rollout engine (issue #8 GPU half, "rollcuda")
if want rollout; then
# rollout_gpu_test: fixture models, BF16: greedy GPU == CPU engine == transformers (greedy.json),
# rollout logp vs model_cuda_forward logp (bound 2e-2; fp8-block reported as INFO), slots 1/7/64
# identical samples. bench_rollout: Qwen3-0.6B shape, prompt 64, 256 new, batch 64/256, bf16 and
# fp8-block: tokens/s and % of the bandwidth bound. Peer: transformers generate at batch 64 when
# torch is importable (tests/oracle/bench_hf_generate.py, if present).
if [ -x "$BUILD/gpu/rollout_gpu_test" ]; then
  run rollout_gpu_test rollout_gpu_test.log "$BUILD/gpu/rollout_gpu_test"
  grep -E '^(FAIL|INFO)' "$OUT/rollout_gpu_test.log" | head -20 | sed 's/^/  /' >> "$SUMMARY"
else row rollout_gpu_test FAIL "missing: make BUILD=$BUILD gpu-tests"; fi
# bench_decode_attn: the decode attention alone (Qwen3-0.6B heads, batch 64/256, context 64/192/320)
# against the copy bandwidth, per kernel and tuning.
if [ -x "$BUILD/bench_decode_attn" ]; then
  run bench_decode_attn bench_decode_attn.log "$BUILD/bench_decode_attn"
  grep -E '^\| 64 \| 192 \|' "$OUT/bench_decode_attn.log" | sed 's/^/  attn /' >> "$SUMMARY"
else row bench_decode_attn FAIL "missing: make BUILD=$BUILD $BUILD/bench_decode_attn"; fi
PEERG=
if [ -f tests/oracle/bench_hf_generate.py ] && python3 -c 'import torch, transformers' 2>/dev/null; then
  run hf_generate_b64 hf_generate_b64.log python3 tests/oracle/bench_hf_generate.py --batch 64 --prompt 64 --new 256
  PEERG=$(awk '/^peer_generate_tok_s/ {print $2}' "$OUT/hf_generate_b64.log")
fi
if [ -x "$BUILD/bench_rollout" ]; then
  run bench_rollout bench_rollout.log "$BUILD/bench_rollout" ${PEERG:+--peer $PEERG}
  grep -E '^\| (bf16|fp8)' "$OUT/bench_rollout.log" | sed 's/^/  rollout /' >> "$SUMMARY"
  RLRUN_ROLLOUT_PROFILE=1 "$BUILD/bench_rollout" --new 64 > "$OUT/bench_rollout_profile.log" 2>&1
  # decode through the pinned cuBLASLt algorithms (rows == the trainer's): the price of that, log only
  "$BUILD/bench_rollout" --pin 1 > "$OUT/bench_rollout_pin.log" 2>&1
else row bench_rollout FAIL "missing: make BUILD=$BUILD $BUILD/bench_rollout"; fi

fi
# ---------------------------------------------------------------- run loop on the GPU (issues #12/#8/#9, "cudaloop")
if want loop; then
# `rlrun run` of bf16-baseline and fp8-unified with device: cuda (CUDA rollout engine, device
# trainer + AdamW CUDA, colocated device sync), 4 iterations: reward per iteration into the
# summary. Kill/resume: the same bf16 run killed (SIGKILL) in train of iteration 3, resumed;
# the final weights' sha256 must equal the uninterrupted run's (the loop's exact-resume rule).
loop_gpu_reward_row() { # NAME RUNDIR: reward/mean per iteration from `rlrun metrics --csv`
  "$BUILD/rlrun" metrics "$2" --csv > "$OUT/$1_metrics.csv" 2>&1
  row "$1_reward" INFO "$(awk -F, 'NR==1{for(i=1;i<=NF;i++) {if($i=="reward/mean") c=i; if($i=="optim/grad_norm") g=i}; next}
    c{printf "it%s=%.4g ", $1, $c} g{printf "(grad norm %.3g) ", $g}' "$OUT/$1_metrics.csv")"
}
loop_gpu_sha() { # RUNS_DIR STEP: the first 16 hex digits of the sha256 of its run's weights at checkpoint STEP
  local rd; rd=$(ls -d "$1"/g-* 2>/dev/null | head -1)
  [ -n "$rd" ] && sha256sum "$rd/checkpoints/step-$(printf %06d "$2")/model.safetensors" 2>/dev/null | cut -c1-16
}
loop_gpu_same() { # NAME WHAT A B REF LOG: PASS when the weight hashes A and B are equal (and not empty)
  if [ -n "$3" ] && [ "$3" = "$4" ]; then row "$1" PASS "$2: final weights sha256 $3 == $5"
  else row "$1" FAIL "$2: final weights ${3:-none} vs $5 ${4:-none} (see $6)"; fi
}
# These 4 iterations of the arithmetic recipes usually see no reward (every group degenerate, grad
# norm 0 in the INFO rows), so their weight comparisons test resume, not the backward's bits; the
# demo-task runs further down train with non-zero gradients from the first iteration (head_dim 32:
# the CUDA decode attention takes 32–256).
LOOP_SET="--set device=cuda --set loop.iterations=4 --set loop.checkpoint_interval=2"
DEMO_SET="--set device=cuda --set loop.iterations=3 --set loop.checkpoint_interval=3 --set model.init.head_dim=32"
if [ -x "$BUILD/rlrun" ]; then
  for rcp in bf16-baseline fp8-unified fp8-unified-exact; do
    d="$OUT/loop_$rcp"; rm -rf "$d"
    # shellcheck disable=SC2086
    run "loop_gpu_$rcp" "loop_gpu_$rcp.log" "$BUILD/rlrun" run "recipes/$rcp.yaml" --runs-dir "$d" \
      --name g $LOOP_SET --quiet
    rd=$(ls -d "$d"/g-* 2>/dev/null | head -1)
    [ -n "$rd" ] && loop_gpu_reward_row "loop_gpu_$rcp" "$rd"
  done
  ref=$(loop_gpu_sha "$OUT/loop_bf16-baseline" 4)
  d="$OUT/loop_resume"; rm -rf "$d"
  # shellcheck disable=SC2086
  RLRUN_FAULT=loop.train@3:kill "$BUILD/rlrun" run recipes/bf16-baseline.yaml --runs-dir "$d" --name g \
    $LOOP_SET --quiet > "$OUT/loop_resume.log" 2>&1
  rd=$(ls -d "$d"/g-* 2>/dev/null | head -1)
  if [ -n "$rd" ] && "$BUILD/rlrun" resume "$rd" --quiet >> "$OUT/loop_resume.log" 2>&1; then
    loop_gpu_same loop_gpu_kill_resume "killed in train#3" "$(loop_gpu_sha "$d" 4)" "$ref" uninterrupted loop_resume.log
  else row loop_gpu_kill_resume FAIL "resume failed, see loop_resume.log: $(tail -1 "$OUT/loop_resume.log")"; fi
  # train.recompute (activation recomputation) gives the same bits: final weights == the bf16 run's
  d="$OUT/loop_recompute"; rm -rf "$d"
  # shellcheck disable=SC2086
  "$BUILD/rlrun" run recipes/bf16-baseline.yaml --runs-dir "$d" --name g $LOOP_SET --set train.recompute=true \
    --quiet > "$OUT/loop_recompute.log" 2>&1
  loop_gpu_same loop_gpu_recompute train.recompute "$(loop_gpu_sha "$d" 4)" "$ref" keep-all loop_recompute.log
  # the same on the demo task, then killed (SIGKILL) in train of iteration 2 and resumed
  for rc_ in false true; do
    d="$OUT/loop_demo_$rc_"; rm -rf "$d"
    # shellcheck disable=SC2086
    "$BUILD/rlrun" run recipes/demo-cpu.yaml --runs-dir "$d" --name g $DEMO_SET --set train.recompute=$rc_ --quiet \
      > "$OUT/loop_demo_$rc_.log" 2>&1
  done
  ref=$(loop_gpu_sha "$OUT/loop_demo_false" 3)
  rd=$(ls -d "$OUT"/loop_demo_false/g-* 2>/dev/null | head -1)
  [ -n "$rd" ] && loop_gpu_reward_row loop_gpu_demo "$rd"
  loop_gpu_same loop_gpu_demo_recompute "demo on cuda, train.recompute" "$(loop_gpu_sha "$OUT/loop_demo_true" 3)" \
    "$ref" keep-all "loop_demo_*.log"
  d="$OUT/loop_demo_resume"; rm -rf "$d"
  # shellcheck disable=SC2086
  RLRUN_FAULT=loop.train@2:kill "$BUILD/rlrun" run recipes/demo-cpu.yaml --runs-dir "$d" --name g $DEMO_SET --quiet \
    > "$OUT/loop_demo_resume.log" 2>&1
  rd=$(ls -d "$d"/g-* 2>/dev/null | head -1)
  a=""
  [ -n "$rd" ] && "$BUILD/rlrun" resume "$rd" --quiet >> "$OUT/loop_demo_resume.log" 2>&1 && a=$(loop_gpu_sha "$d" 3)
  loop_gpu_same loop_gpu_demo_kill_resume "demo on cuda, killed in train#2" "$a" "$ref" uninterrupted \
    loop_demo_resume.log
  # R3 on the CUDA trainer logs r3/overlap (the router's own choice vs the replayed ids): a number in (0, 1]
  d="$OUT/loop_r3"; rm -rf "$d"
  "$BUILD/rlrun" run recipes/learn-moe-fp8-rollout.yaml --runs-dir "$d" --name g --set device=cuda \
    --set loop.iterations=2 --set loop.checkpoint_interval=2 --quiet > "$OUT/loop_r3.log" 2>&1
  rd=$(ls -d "$d"/g-* 2>/dev/null | head -1)
  ov=""
  [ -n "$rd" ] && ov=$("$BUILD/rlrun" metrics "$rd" --csv 2>/dev/null | awk -F, 'NR==1{for(i=1;i<=NF;i++) if($i=="r3/overlap") c=i; next}
    c{printf "%s ", $c}')
  if [ -n "$ov" ] && echo "$ov" | awk '{for(i=1;i<=NF;i++) if(!($i>0 && $i<=1)) exit 1}'; then
    row loop_gpu_r3_overlap PASS "learn-moe-fp8-rollout on cuda, r3/overlap per iteration: $ov"
  else row loop_gpu_r3_overlap FAIL "r3/overlap '${ov:-missing}' (see loop_r3.log: $(tail -1 "$OUT/loop_r3.log"))"; fi
  # precision.exact_logprobs: the rollout engine's log-probs are the trainer's bit for bit, so
  # mismatch/logp_abs_diff is exactly 0 at every iteration (the demo task trains, non-zero
  # gradients; bf16 and unified fp8-block); the default engine's values printed beside them
  for px in bf16 fp8-block; do
    for ex in true false; do
      d="$OUT/loop_exact_${px}_$ex"; rm -rf "$d"
      # shellcheck disable=SC2086
      "$BUILD/rlrun" run recipes/demo-cpu.yaml --runs-dir "$d" --name g $DEMO_SET --set precision.rollout=$px \
        --set precision.train=$px --set precision.exact_logprobs=$ex --quiet > "$OUT/loop_exact_${px}_$ex.log" 2>&1
    done
    md() { # RUNDIR: mismatch/logp_abs_diff per iteration
      "$BUILD/rlrun" metrics "$1" --csv 2>/dev/null | awk -F, 'NR==1{for(i=1;i<=NF;i++) if($i=="mismatch/logp_abs_diff") c=i; next}
        c{printf "%s ", $c}'
    }
    rd=$(ls -d "$OUT/loop_exact_${px}_true"/g-* 2>/dev/null | head -1); ex_v=""; [ -n "$rd" ] && ex_v=$(md "$rd")
    rd=$(ls -d "$OUT/loop_exact_${px}_false"/g-* 2>/dev/null | head -1); df_v=""; [ -n "$rd" ] && df_v=$(md "$rd")
    if [ -n "$ex_v" ] && [ "$(echo "$ex_v" | wc -w)" -eq 3 ] && echo "$ex_v" | awk '{for(i=1;i<=NF;i++) if($i+0 != 0) exit 1}'; then
      row "loop_gpu_exact_$px" PASS "demo on cuda, $px unified, exact_logprobs: mismatch/logp_abs_diff $ex_v(default engine: ${df_v:-missing})"
    else row "loop_gpu_exact_$px" FAIL "mismatch/logp_abs_diff '${ex_v:-missing}' (see loop_exact_${px}_true.log: $(tail -1 "$OUT/loop_exact_${px}_true.log"))"; fi
  done
else row loop_gpu FAIL "missing: make BUILD=$BUILD (with nvcc)"; fi
fi
# ---------------------------------------------------------------- two GPUs (issue #11, "twogpu") — needs nvidia-h200-x2
if want twogpu; then
# The run loop with the trainer on GPU 0 and the rollout engine on GPU 1 (a replica of the model,
# its weights sent over NCCL after every update) against the same recipe colocated on GPU 0, 4
# iterations each: the final checkpoint's model.safetensors + optimizer.safetensors sha256 and every
# committed sample (iteration, prompt, sample, completion text, token ids, rollout log-probs,
# reward, finish reason; samples table of state.db) must be identical. bf16-baseline vs
# recipes/bf16-baseline-2gpu.yaml; fp8-unified vs fp8-unified with gpus rollout [1] train [0] and
# sync.verify: true (re-quantized on the train GPU, sent as fp8 bytes, checked on the rollout GPU).
# Then: the 2-GPU bf16 run killed in train of iteration 3 and resumed (the replica rebuilt by a
# sync) ends with the uninterrupted 2-GPU run's weights; the 2-GPU fp8 run with a corrupt byte
# injected on the rollout GPU at the third sync (RLRUN_FAULT=sync.corrupt@3) stops with exit 1
# naming the tensor, and its resume ends with the verified 2-GPU run's weights; the rollout split over
# GPUs [0, 1] (bf16) and [1, 0] (fp8-unified, verified) == the 1-GPU runs. INFO rows: sync/ms,
# sync/bytes, sync/buckets per iteration. NCCL_NVLS_ENABLE=0 for every run (NVLink multicast off).
TG="$OUT/twogpu"
rm -rf "$TG"
mkdir -p "$TG"
TG_SQL='import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
q = ("SELECT iteration, prompt_index, sample_index, completion, hex(tokens), hex(logprobs), reward, "
     "finish_reason, hex(routed_experts) FROM samples ORDER BY iteration, prompt_index, sample_index")
for r in c.execute(q): print("\t".join(map(str, r)))'
tg_dir() { ls -d "$TG/$1"/g-* 2>/dev/null | head -1; }
# tg_run NAME RECIPE [ARGS…]: one 4-iteration run (checkpoints at 2 and 4) into $TG/NAME/g-*
tg_run() {
  local n=$1 rcp=$2
  shift 2
  run "twogpu_run_$n" "twogpu_$n.log" env NCCL_NVLS_ENABLE=0 "$BUILD/rlrun" run "$rcp" --runs-dir "$TG/$n" --name g \
    --set loop.iterations=4 --set loop.checkpoint_interval=2 --quiet "$@"
}
# tg_samples RUNDIR FILE: every committed sample, one line each (blobs in hex); `rlrun samples` without python3
tg_samples() {
  python3 -c "$TG_SQL" "$1/state.db" > "$2" 2> /dev/null ||
    for k in 1 2 3 4; do "$BUILD/rlrun" samples "$1" --iter $k; done > "$2" 2>&1
}
tg_sha() { cat "$1/checkpoints/step-000004/model.safetensors" "$1/checkpoints/step-000004/optimizer.safetensors" 2>/dev/null | sha256sum | cut -c1-16; }
# tg_same NAME RUNDIR_A RUNDIR_B WHAT: PASS when weights + optimizer and samples are identical, else the first difference
tg_same() {
  local n=$1 a=$2 b=$3 what=$4
  if [ -z "$a" ] || [ -z "$b" ] || [ ! -f "$a/checkpoints/step-000004/model.safetensors" ] ||
     [ ! -f "$b/checkpoints/step-000004/model.safetensors" ]; then
    row "twogpu_$n" FAIL "a run or its step-000004 checkpoint is missing (see $TG, twogpu_*.log)"
    return
  fi
  tg_samples "$a" "$TG/${n}_a.tsv"
  tg_samples "$b" "$TG/${n}_b.tsv"
  local wa wb ns d
  wa=$(tg_sha "$a")
  wb=$(tg_sha "$b")
  ns=$(wc -l < "$TG/${n}_a.tsv")
  d=$(diff "$TG/${n}_a.tsv" "$TG/${n}_b.tsv" > "$TG/${n}.diff"; for w in '<' '>'; do
    grep -m1 "^$w" "$TG/${n}.diff" | cut -c1-150 | tr '\t\n' '  '; done)
  if [ "$wa" = "$wb" ] && [ "$ns" -gt 0 ] && [ -z "$d" ]; then
    row "twogpu_$n" PASS "$what: weights+optimizer sha256 $wa identical, $ns samples identical (ids, logprobs, text)"
  elif [ -z "$d" ]; then
    row "twogpu_$n" FAIL "$what: $ns samples identical, but weights+optimizer $wa vs $wb"
  else
    row "twogpu_$n" FAIL "$what: weights $wa vs $wb; first differing sample (iter prompt sample completion ids logprobs …, see $n.diff): $d"
  fi
}
# tg_sync_row NAME RUNDIR: sync/ms, sync/bytes, sync/buckets per iteration (INFO)
tg_sync_row() {
  "$BUILD/rlrun" metrics "$2" --csv > "$TG/$1_metrics.csv" 2>&1
  row "twogpu_${1}_sync" INFO "$(awk -F, 'NR==1{for(i=1;i<=NF;i++){if($i=="sync/ms")m=i; if($i=="sync/bytes")b=i;
    if($i=="sync/buckets")k=i}; next} m{printf "it%s %.3g ms %s B %s buckets; ", $1, $m, $b, $k}' "$TG/$1_metrics.csv")"
}
# The recipes: a fresh 25 M model on a partial-credit task (recipes/learn-*.yaml), so every step has
# non-zero advantages and gradients (bf16-baseline's random model scores 0 on exact-match arithmetic:
# zero gradients would make the weight comparison vacuous). TG_BF16 / TG_FP8 pick others.
TG_BF16=${TG_BF16:-recipes/learn-dense-bf16.yaml}
TG_FP8=${TG_FP8:-recipes/learn-dense-fp8-unified.yaml}
if [ -x "$BUILD/rlrun" ] && [ "$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')" -ge 2 ]; then
  tg_run bf16_1gpu "$TG_BF16" --set device=cuda
  tg_run bf16_2gpu "$TG_BF16" --set device=cuda --set 'gpus.rollout=[1]' --set 'gpus.train=[0]'
  tg_same bf16 "$(tg_dir bf16_1gpu)" "$(tg_dir bf16_2gpu)" "bf16 2 GPUs == 1 GPU"
  [ -n "$(tg_dir bf16_2gpu)" ] && tg_sync_row bf16 "$(tg_dir bf16_2gpu)"
  tg_run fp8_1gpu "$TG_FP8" --set device=cuda
  tg_run fp8_2gpu "$TG_FP8" --set device=cuda --set 'gpus.rollout=[1]' --set 'gpus.train=[0]' \
    --set sync.verify=true
  tg_same fp8 "$(tg_dir fp8_1gpu)" "$(tg_dir fp8_2gpu)" "fp8-unified 2 GPUs (verified) == 1 GPU"
  [ -n "$(tg_dir fp8_2gpu)" ] && tg_sync_row fp8 "$(tg_dir fp8_2gpu)"
  # killed in train of iteration 3, resumed: the same weights as the uninterrupted 2-GPU run
  RLRUN_FAULT=loop.train@3:kill NCCL_NVLS_ENABLE=0 "$BUILD/rlrun" run "$TG_BF16" --runs-dir "$TG/kill" \
    --name g --set device=cuda --set 'gpus.rollout=[1]' --set 'gpus.train=[0]' --set loop.iterations=4 --set loop.checkpoint_interval=2 --quiet > "$OUT/twogpu_kill.log" 2>&1
  rd=$(tg_dir kill)
  if [ -n "$rd" ] && NCCL_NVLS_ENABLE=0 "$BUILD/rlrun" resume "$rd" --quiet >> "$OUT/twogpu_kill.log" 2>&1; then
    tg_same kill_resume "$(tg_dir bf16_2gpu)" "$rd" "2 GPUs killed in train 3 + resumed == uninterrupted"
  else row twogpu_kill_resume FAIL "resume failed, see twogpu_kill.log: $(tail -1 "$OUT/twogpu_kill.log")"; fi
  # a corrupt byte on the rollout GPU at the third sync (iteration 2): verify stops the run naming the tensor
  RLRUN_FAULT=sync.corrupt@3 NCCL_NVLS_ENABLE=0 "$BUILD/rlrun" run "$TG_FP8" --runs-dir "$TG/corrupt" \
    --name g --set device=cuda --set 'gpus.rollout=[1]' --set 'gpus.train=[0]' --set sync.verify=true \
    --set loop.iterations=4 --set loop.checkpoint_interval=2 --quiet > "$OUT/twogpu_corrupt.log" 2>&1
  crc=$?
  if [ $crc -eq 1 ] && grep -q "sync.verify: tensor " "$OUT/twogpu_corrupt.log"; then
    row twogpu_verify_catches PASS "exit 1: $(grep -m1 -o 'sync.verify: tensor [^ ]*' "$OUT/twogpu_corrupt.log")"
  else row twogpu_verify_catches FAIL "exit $crc, see twogpu_corrupt.log: $(tail -1 "$OUT/twogpu_corrupt.log")"; fi
  rd=$(tg_dir corrupt)
  if [ -n "$rd" ] && NCCL_NVLS_ENABLE=0 "$BUILD/rlrun" resume "$rd" --quiet >> "$OUT/twogpu_corrupt.log" 2>&1; then
    tg_same corrupt_resume "$(tg_dir fp8_2gpu)" "$rd" "2 GPUs stopped by verify + resumed == uninterrupted"
  else row twogpu_corrupt_resume FAIL "resume failed, see twogpu_corrupt.log: $(tail -1 "$OUT/twogpu_corrupt.log")"; fi
  # the rollout split over GPUs 0 and 1 (GPU 0 colocated with the trainer, GPU 1 a replica fed over NCCL;
  # both decode at once, a half of the prompts each): the same samples and weights as one GPU, bf16 and
  # fp8-unified with sync.verify; and over [1, 0] (the replica's part first)
  tg_run bf16_split "$TG_BF16" --set device=cuda --set 'gpus.rollout=[0, 1]' --set 'gpus.train=[0]'
  tg_same bf16_split "$(tg_dir bf16_1gpu)" "$(tg_dir bf16_split)" "bf16 rollout split over GPUs 0+1 == 1 GPU"
  tg_run fp8_split "$TG_FP8" --set device=cuda --set 'gpus.rollout=[1, 0]' --set 'gpus.train=[0]' \
    --set sync.verify=true
  tg_same fp8_split "$(tg_dir fp8_1gpu)" "$(tg_dir fp8_split)" "fp8-unified rollout split over GPUs 1+0 (verified) == 1 GPU"
  [ -n "$(tg_dir bf16_split)" ] && tg_sync_row bf16_split "$(tg_dir bf16_split)"
else row twogpu FAIL "needs $BUILD/rlrun (make with nvcc) and 2 GPUs (nvidia-h200-x2): $(nvidia-smi -L 2>/dev/null | grep -c '^GPU') found"; fi
fi
# ---------------------------------------------------------------- data parallelism (issue #11, "dp") — needs nvidia-h200-x2
if want dp; then
# dp_gpu_test: the ordered-sum kernel == sync_dp_sum_fixed bitwise (1-8 ranks, signed zeros, subnormals,
# in place); the fixed-order all-reduce over 2..min(4, GPUs) ranks (buckets 992 B, 64 KiB, 512 MiB): every
# rank == the CPU sum bitwise, twice the same bits; the masters broadcast; the model wrappers on two
# replicas (gradients == CPU sum, rank 1's logits == rank 0's after the broadcast).
# Then the run loop data-parallel: DP_RCP (default recipes/learn-dense-bf16.yaml) with train [0, 1], rollout [0]
# (512 samples a step in microbatches of 256: one per GPU), 4 iterations (checkpoints at 2 and 4):
#   dp_reproducible   a second DP-2 run: weights + optimizer sha256 and every sample identical (PASS/FAIL)
#   dp_kill_resume    DP-2 killed in train of iteration 3, resumed == the uninterrupted DP-2 run (PASS/FAIL)
#   dp_twin_first     the single-GPU twin (the same recipe on GPU 0: its two microbatches are the ranks' shares): iteration 1's
#                     samples and loss identical (same start; forward + loss per microbatch equal) (PASS/FAIL)
#   dp_vs_1gpu        final weights sha256 and all samples vs the twin: PASS when identical, else INFO with
#                     the first difference — stages/train.h lists what is not bitwise (RMSNorm and repeated
#                     embedding rows sum in another grouping), so a difference after step 1 is expected
#   dp_metrics        loss and optim/grad_norm per iteration of both runs (INFO)
# NCCL_NVLS_ENABLE=0 for every run.
if [ -x "$BUILD/gpu/dp_gpu_test" ]; then
  run dp_gpu_test dp_gpu_test.log env NCCL_NVLS_ENABLE=0 "$BUILD/gpu/dp_gpu_test"
  grep -E '^FAIL|^SKIP' "$OUT/dp_gpu_test.log" | head -20 >> "$SUMMARY"
else row dp_gpu_test FAIL "missing: make BUILD=$BUILD gpu-tests"; fi
DP="$OUT/dp"
rm -rf "$DP"
mkdir -p "$DP"
DP_SQL='import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
q = ("SELECT iteration, prompt_index, sample_index, completion, hex(tokens), hex(logprobs), reward, "
     "finish_reason FROM samples WHERE iteration <= ? ORDER BY iteration, prompt_index, sample_index")
for r in c.execute(q, (int(sys.argv[2]),)): print("\t".join(map(str, r)))'
dp_dir() { ls -d "$DP/$1"/g-* 2>/dev/null | head -1; }
# dp_run NAME RECIPE [ARGS…]: one 4-iteration run into $DP/NAME/g-*
dp_run() {
  local n=$1 rcp=$2
  shift 2
  run "dp_run_$n" "dp_$n.log" env NCCL_NVLS_ENABLE=0 "$BUILD/rlrun" run "$rcp" --runs-dir "$DP/$n" --name g \
    --set loop.iterations=4 --set loop.checkpoint_interval=2 --quiet "$@"
}
dp_samples() { python3 -c "$DP_SQL" "$1/state.db" "${3:-4}" > "$2" 2> "$2.err"; }
dp_sha() { cat "$1/checkpoints/step-000004/model.safetensors" "$1/checkpoints/step-000004/optimizer.safetensors" 2>/dev/null | sha256sum | cut -c1-16; }
# dp_cmp NAME A B UPTO: "same" or the first differing sample line (samples of iterations <= UPTO)
dp_cmp() {
  dp_samples "$2" "$DP/$1_a.tsv" "$4"
  dp_samples "$3" "$DP/$1_b.tsv" "$4"
  if [ ! -s "$DP/$1_a.tsv" ]; then echo "no samples (see $1_a.tsv.err)"; return; fi
  if diff "$DP/$1_a.tsv" "$DP/$1_b.tsv" > "$DP/$1.diff"; then echo same; else
    grep -m1 '^<' "$DP/$1.diff" | cut -c1-120 | tr '\t' ' '; fi
}
# dp_metric RUNDIR NAME: "it1=v it2=v …" of one metric
dp_metric() {
  "$BUILD/rlrun" metrics "$1" --csv 2>/dev/null | awk -F, -v m="$2" 'NR==1{for(i=1;i<=NF;i++) if($i==m) c=i; next}
    c{printf "it%s=%s ", $1, $c}'
}
if [ -x "$BUILD/rlrun" ] && [ "$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')" -ge 2 ]; then
  # learn-dense-bf16: 512 samples a step in microbatches of 256 → one microbatch per rank; its twin is
  # the same recipe on one GPU (two microbatches). Non-zero gradients (partial-credit reward).
  DP_RCP=${DP_RCP:-recipes/learn-dense-bf16.yaml}
  dp_run dp2 "$DP_RCP" --set device=cuda --set 'gpus.train=[0,1]' --set 'gpus.rollout=[0]'
  dp_run dp2_again "$DP_RCP" --set device=cuda --set 'gpus.train=[0,1]' --set 'gpus.rollout=[0]'
  dp_run twin "$DP_RCP" --set device=cuda
  A=$(dp_dir dp2) B=$(dp_dir dp2_again) T=$(dp_dir twin)
  if [ -n "$A" ] && [ -n "$B" ] && [ -f "$A/checkpoints/step-000004/model.safetensors" ]; then
    s=$(dp_cmp again "$A" "$B" 4)
    if [ "$(dp_sha "$A")" = "$(dp_sha "$B")" ] && [ "$s" = same ]; then
      row dp_reproducible PASS "two DP-2 runs: weights+optimizer sha256 $(dp_sha "$A") identical, $(wc -l < "$DP/again_a.tsv") samples identical"
    else row dp_reproducible FAIL "weights $(dp_sha "$A") vs $(dp_sha "$B"); samples: $s"; fi
  else row dp_reproducible FAIL "a DP-2 run or its step-000004 checkpoint is missing (see dp_dp2.log, dp_dp2_again.log)"; fi
  RLRUN_FAULT=loop.train@3:kill NCCL_NVLS_ENABLE=0 "$BUILD/rlrun" run "$DP_RCP" --runs-dir "$DP/kill" \
    --name g --set device=cuda --set 'gpus.train=[0,1]' --set 'gpus.rollout=[0]' --set loop.iterations=4 --set loop.checkpoint_interval=2 --quiet > "$OUT/dp_kill.log" 2>&1
  K=$(dp_dir kill)
  if [ -n "$K" ] && [ -n "$A" ] && NCCL_NVLS_ENABLE=0 "$BUILD/rlrun" resume "$K" --quiet >> "$OUT/dp_kill.log" 2>&1; then
    s=$(dp_cmp kill "$A" "$K" 4)
    if [ "$(dp_sha "$A")" = "$(dp_sha "$K")" ] && [ "$s" = same ]; then
      row dp_kill_resume PASS "DP-2 killed in train 3 + resumed == uninterrupted (sha256 $(dp_sha "$K"), samples identical)"
    else row dp_kill_resume FAIL "weights $(dp_sha "$K") vs uninterrupted $(dp_sha "$A"); samples: $s"; fi
  else row dp_kill_resume FAIL "resume failed, see dp_kill.log: $(tail -1 "$OUT/dp_kill.log")"; fi
  if [ -n "$A" ] && [ -n "$T" ]; then
    s=$(dp_cmp first "$A" "$T" 1)
    la=$(dp_metric "$A" loss | cut -d' ' -f1) lt=$(dp_metric "$T" loss | cut -d' ' -f1)
    if [ "$s" = same ] && [ -n "$la" ] && [ "$la" = "$lt" ]; then
      row dp_twin_first PASS "iteration 1: samples identical, loss $la == 1-GPU twin's"
    else row dp_twin_first FAIL "iteration 1: samples: $s; loss DP $la vs 1 GPU $lt"; fi
    s=$(dp_cmp all "$A" "$T" 4)
    if [ "$(dp_sha "$A")" = "$(dp_sha "$T")" ] && [ "$s" = same ]; then
      row dp_vs_1gpu PASS "DP-2 == 1-GPU twin (same microbatches): weights+optimizer $(dp_sha "$A"), all samples identical"
    else
      row dp_vs_1gpu INFO "DP-2 $(dp_sha "$A") vs 1-GPU twin $(dp_sha "$T"); first differing sample: $s (expected: train.h)"
    fi
    for m in loss optim/grad_norm; do
      row "dp_metrics_${m//\//_}" INFO "DP-2: $(dp_metric "$A" $m)| 1 GPU: $(dp_metric "$T" $m)"
    done
  else row dp_vs_1gpu FAIL "a run is missing (see dp_dp2.log, dp_twin.log)"; fi
else row dp FAIL "needs $BUILD/rlrun (make with nvcc) and 2 GPUs (nvidia-h200-x2): $(nvidia-smi -L 2>/dev/null | grep -c '^GPU') found"; fi
fi
# ---------------------------------------------------------------- GPU learning runs (issue #12, "learn")
if want learn; then
# bench/learning_runs.sh: every recipes/learn-*.yaml mode run to the end on the GPU (fresh ~25 M dense /
# ~31 M MoE qwen3, a+b= with a numeric-closeness reward, 200 iterations, one seed): dense bf16, fp8-block
# rollout x bf16 + TIS, unified fp8-block, unified mxfp8 (emulated), MoE bf16, fp8-block rollout x bf16 +
# TIS + R3, nvfp4 experts (experimental, emulated). Its markdown table (reward per iteration window, exact
# rate, s/it, final mismatch) is $OUT/learn.md, appended to the summary. LEARN="learn-dense-bf16 …" picks
# modes, ITERS=N shortens them; LEARN_TIMEOUT (s, default 3000) bounds the whole section.
if [ -x "$BUILD/rlrun" ]; then
  rm -rf "$OUT/learn-runs" "$OUT/learn.md"
  if BUILD="$BUILD" OUT="$OUT" RUNS="$OUT/learn-runs" timeout "${LEARN_TIMEOUT:-3000}" bench/learning_runs.sh ${LEARN:-} \
      > "$OUT/learn.log" 2>&1; then row learn PASS "$(grep -c '^| learn-' "$OUT/learn.md") modes, table in learn.md"
  else row learn FAIL "rc=$?, see learn.log: $(grep -m1 FAILED "$OUT/learn.log" | cut -c1-120)"; fi
  [ -f "$OUT/learn.md" ] && cat "$OUT/learn.md" >> "$SUMMARY"
else row learn FAIL "missing: make BUILD=$BUILD (with nvcc)"; fi
fi
