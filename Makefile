# rlrun — one build for CPU and CUDA.
#
#   make              build build/rlrun (CUDA code too when nvcc is found; CUDA=0 forces CPU-only)
#   make test         build and run every CPU test (and compile/link all CUDA code when nvcc exists)
#   make test SAN=1   the same under AddressSanitizer + UndefinedBehaviorSanitizer (build-san/)
#   make run          install missing dependencies, build, run the main job on the default recipe
#   make bench        build and run the benchmarks (GPU ones say so and skip on a CPU machine)
#   make fuzz         build the libFuzzer targets with clang (build-fuzz/)
#   make clean
#
# libyaml, SQLite, Lua 5.4 and jansson are linked statically (the GPU machine has
# none of them); cuBLASLt, NCCL and the CUDA runtime come from the CUDA install.

SHELL := /bin/bash
comma := ,
empty :=
sp := $(empty) $(empty)
.DEFAULT_GOAL := all
.DELETE_ON_ERROR:

SAN  ?= 0
FUZZ ?= 0
CUDA ?= auto
CUDA_HOME ?= /usr/local/cuda

ifeq ($(FUZZ),1)
  CC := clang
  BUILD ?= build-fuzz
  CUDA := 0
else ifeq ($(SAN),1)
  BUILD ?= build-san
else
  BUILD ?= build
endif
ifeq ($(origin CC),default)
  CC := gcc
endif
# CUDA objects carry no sanitizer flags, so the plain and SAN builds share them.
CU_BUILD ?= build/cu

# ---------------------------------------------------------------- what is here
NVCC := $(shell command -v nvcc 2>/dev/null || { test -x $(CUDA_HOME)/bin/nvcc && echo $(CUDA_HOME)/bin/nvcc; })
CUDA_INC := $(firstword $(wildcard $(CUDA_HOME)/include))
CUDA_LIBDIRS := $(wildcard $(CUDA_HOME)/lib64 $(CUDA_HOME)/lib)
HAVE_CUBLASLT := $(if $(wildcard $(CUDA_HOME)/include/cublasLt.h),$(if $(wildcard $(addsuffix /libcublasLt.so,$(CUDA_LIBDIRS))),1))
HAVE_NCCL := $(if $(wildcard $(CUDA_HOME)/include/nccl.h /usr/include/nccl.h /usr/local/include/nccl.h),$(if $(wildcard $(addsuffix /libnccl.so,$(CUDA_LIBDIRS)) /usr/lib/x86_64-linux-gnu/libnccl.so),1))

ifeq ($(CUDA),0)
  USE_CUDA := 0
else ifneq ($(and $(NVCC),$(HAVE_CUBLASLT),$(HAVE_NCCL)),)
  USE_CUDA := 1
else ifeq ($(CUDA),1)
  $(error CUDA=1 but nvcc, cuBLASLt or NCCL is missing under $(CUDA_HOME))
else
  USE_CUDA := 0
endif

# The four libraries linked statically: full paths to the Debian -dev archives.
STATIC_NAMES := libyaml.a libsqlite3.a liblua5.4.a libjansson.a
STATIC_LIBS := $(foreach a,$(STATIC_NAMES),$(shell $(CC) -print-file-name=$(a)))
MISSING_STATIC := $(strip $(foreach a,$(STATIC_LIBS),$(if $(findstring /,$(a)),,$(a))))
LIBGOMP_A := $(shell $(CC) -print-file-name=libgomp.a)

# Goals that need none of the four libraries: `run` installs them (scripts/install-deps.sh)
# and only then re-runs make for the build; every other goal checks below, before building.
NO_LIB_GOALS := clean run oracles fixtures
NEEDS_LIBS := $(filter-out $(NO_LIB_GOALS),$(or $(MAKECMDGOALS),$(.DEFAULT_GOAL)))

ifeq ($(MAKELEVEL),0)
ifeq ($(filter clean,$(MAKECMDGOALS)),)
  ok = $(if $(1),✓,✗)
  $(info rlrun build → $(BUILD)/  (SAN=$(SAN) FUZZ=$(FUZZ) CUDA=$(USE_CUDA)))
  $(info $(sp) $(call ok,$(NVCC)) nvcc $(if $(NVCC),$(shell $(NVCC) --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'),not found: CPU-only build))
  $(info $(sp) $(call ok,$(HAVE_CUBLASLT)) cuBLASLt   $(call ok,$(HAVE_NCCL)) NCCL   $(if $(filter 1,$(USE_CUDA)),→ CUDA kernels for sm_90a + sm_100a,→ no CUDA kernels))
  $(info $(sp) $(call ok,$(if $(MISSING_STATIC),,1)) static libyaml, SQLite, Lua 5.4, jansson$(if $(MISSING_STATIC), — missing $(MISSING_STATIC): $(if $(NEEDS_LIBS),run scripts/install-deps.sh,installing them first)))
endif
endif
ifneq ($(MISSING_STATIC),)
ifneq ($(NEEDS_LIBS),)
  $(error missing static libraries $(MISSING_STATIC) (needed by `make $(NEEDS_LIBS)`); run scripts/install-deps.sh (as root or with sudo), or `make run`, which runs it first)
endif
endif

# ---------------------------------------------------------------- flags
CSTD := -std=c11
WARN := -Wall -Wextra -Wno-unused-parameter
ifneq ($(CI),)
  WARN += -Werror
endif
OPT ?= -O2 -g
CFLAGS := $(CSTD) $(OPT) $(WARN) -D_GNU_SOURCE -MMD -MP -I. -I/usr/include/lua5.4 \
          -DRLRUN_CUDA=$(USE_CUDA) $(EXTRA_CFLAGS)
LDFLAGS :=
LDLIBS := $(STATIC_LIBS) -lm -ldl -lpthread

ifeq ($(FUZZ),1)
  CFLAGS += -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -Wno-unknown-pragmas -Wno-source-uses-openmp
  LDFLAGS += -fsanitize=address,undefined
else
  # OpenMP for the CPU reference kernels; libgomp linked statically (the GPU machine may lack it).
  CFLAGS += -fopenmp
  LDLIBS += $(if $(findstring /,$(LIBGOMP_A)),$(LIBGOMP_A),-lgomp)
endif
ifeq ($(SAN),1)
  CFLAGS += -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
  LDFLAGS += -fsanitize=address,undefined
endif

ifeq ($(USE_CUDA),1)
  # Stream 0 is the per-thread default stream everywhere (C and CUDA files alike): it can be
  # captured into a CUDA graph (the rollout engine's decode step), the legacy stream cannot.
  CFLAGS += -I$(CUDA_INC) -DCUDA_API_PER_THREAD_DEFAULT_STREAM=1
  NVCCFLAGS := -O3 -std=c++17 -lineinfo -I. -DRLRUN_CUDA=1 --default-stream per-thread \
               -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_100a,code=sm_100a \
               -Xcompiler -Wall,-Wextra,-Wno-unused-parameter $(EXTRA_NVCCFLAGS)
  LDLIBS += $(addprefix -L,$(CUDA_LIBDIRS)) $(addprefix -Wl$(comma)-rpath$(comma),$(CUDA_LIBDIRS)) \
            -lcublasLt -lnccl -lcudart_static -lrt -lstdc++
endif
# ---------------------------------------------------------------- sources
SRC_DIRS := kernels state lua model stages runner
LIB_C  := $(filter-out runner/main.c,$(wildcard $(addsuffix /*.c,$(SRC_DIRS))))
LIB_CU := $(if $(filter 1,$(USE_CUDA)),$(wildcard $(addsuffix /*.cu,$(SRC_DIRS))))
LIB_OBJ := $(LIB_C:%.c=$(BUILD)/obj/%.o) $(LIB_CU:%.cu=$(CU_BUILD)/%.o)
TEST_C := $(wildcard tests/*.c)
TEST_OBJ := $(TEST_C:%.c=$(BUILD)/obj/%.o)
BENCH_C := $(wildcard bench/*.c)
BENCH_BIN := $(BENCH_C:bench/%.c=$(BUILD)/%)
FUZZ_C := $(wildcard tests/fuzz/*.c)
FUZZ_BIN := $(FUZZ_C:tests/fuzz/%.c=$(BUILD)/%)
# GPU test programs (tests/gpu/*.c, each with its own main): built with `make test`
# so CI checks they link; run on the GPU machine by tests/gpu/run.sh.
GPU_TEST_C := $(wildcard tests/gpu/*.c)
GPU_TEST_BIN := $(GPU_TEST_C:tests/gpu/%.c=$(BUILD)/gpu/%)

# Build facts compiled into `rlrun version`; the header is rewritten only when they change.
BUILD_FLAGS_STR := cc=$(CC) $(OPT) san=$(SAN) cuda=$(USE_CUDA)$(if $(CI), ci)
GIT_DESC := $(shell git describe --always --dirty 2>/dev/null || echo unknown)
$(shell mkdir -p $(BUILD) && printf '#define RLRUN_GIT "%s"\n#define RLRUN_BUILD_FLAGS "%s"\n' '$(GIT_DESC)' '$(BUILD_FLAGS_STR)' > $(BUILD)/buildinfo.h.new && (cmp -s $(BUILD)/buildinfo.h.new $(BUILD)/buildinfo.h || mv $(BUILD)/buildinfo.h.new $(BUILD)/buildinfo.h); rm -f $(BUILD)/buildinfo.h.new)

# ---------------------------------------------------------------- rules
.PHONY: all test run bench fuzz clean fixtures oracles gpu-tests

all: $(BUILD)/rlrun

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/obj/runner/version.o: CFLAGS += -include $(BUILD)/buildinfo.h
$(BUILD)/obj/runner/version.o: $(BUILD)/buildinfo.h
# AdamW's CPU reference must not contract into FMAs: it is bit-identical to the CUDA twin.
$(BUILD)/obj/kernels/optim_cpu.o: CFLAGS += -ffp-contract=off

$(CU_BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/librlrun.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/rlrun: $(BUILD)/obj/runner/main.o $(BUILD)/librlrun.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# All C tests link into one binary; each TEST() registers itself.
$(BUILD)/rlrun-tests: $(TEST_OBJ) $(BUILD)/librlrun.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/bench_%: bench/bench_%.c $(BUILD)/librlrun.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(BUILD)/librlrun.a
	$(CC) $(CFLAGS) -fsanitize=fuzzer $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Oracle fixtures that CI can make (tests/oracle/ci_*.py: numpy, ml_dtypes, safetensors, tokenizers):
# written once into build/fixtures, shared by the plain and SAN builds.
FIXTURE_DIR ?= build/fixtures
ORACLE_CI := $(wildcard tests/oracle/ci_*.py)
FIXTURE_STAMPS := $(ORACLE_CI:tests/oracle/%.py=$(FIXTURE_DIR)/%.stamp)
# The oracles' interpreter: the project-local venv (.venv-oracles/) that scripts/install-deps.sh
# makes where the system Python is externally managed (PEP 668), else $PYTHON or python3.
# Expanded when a recipe runs, so after `oracles` has made the venv.
ORACLE_PY = $(shell scripts/install-deps.sh --python)
$(FIXTURE_DIR)/%.stamp: tests/oracle/%.py | oracles
	@mkdir -p $(FIXTURE_DIR)
	'$(ORACLE_PY)' $< --out $(FIXTURE_DIR)
	@touch $@
fixtures: $(FIXTURE_STAMPS)
# numpy, ml_dtypes, safetensors and tokenizers for the oracle tests: installed when missing, a clear error
# (and exit 1) when they cannot be.
oracles:
	@scripts/install-deps.sh --oracles

$(BUILD)/gpu/%: tests/gpu/%.c $(BUILD)/librlrun.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)
gpu-tests: $(GPU_TEST_BIN)

test: oracles $(BUILD)/rlrun $(BUILD)/rlrun-tests $(FIXTURE_STAMPS) $(GPU_TEST_BIN)
	RLRUN_BIN=$(BUILD)/rlrun RLRUN_FIXTURES=$(FIXTURE_DIR) RLRUN_PYTHON='$(ORACLE_PY)' ASAN_OPTIONS=protect_shadow_gap=0:detect_leaks=1 \
	  $(BUILD)/rlrun-tests $(T)

# Install first (the Python oracles are only for `make test`: failing to get them is a warning
# here), then build in a fresh make that sees the libraries just installed.
run:
	@scripts/install-deps.sh --check >/dev/null 2>&1 || scripts/install-deps.sh --oracles-optional
	@$(MAKE) --no-print-directory $(BUILD)/rlrun
	$(BUILD)/rlrun run recipes/demo-cpu.yaml

bench: $(BENCH_BIN)
	@if [ -z "$(BENCH_BIN)" ]; then echo "no benchmarks yet"; fi
	@set -e; for b in $(BENCH_BIN); do echo "== $$b"; $$b; done

fuzz:
	@$(MAKE) --no-print-directory FUZZ=1 fuzz-bins
fuzz-bins: $(FUZZ_BIN)
	@echo "fuzz targets: $(FUZZ_BIN)"

clean:
	rm -rf build build-san build-fuzz

-include $(shell find $(BUILD)/obj $(CU_BUILD) -name '*.d' 2>/dev/null)
