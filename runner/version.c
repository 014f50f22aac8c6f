/* version.c — `rlrun version`: what this binary is and what it can use. */
#include <lauxlib.h>
#include <lua.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <yaml.h>

#include "kernels/common.h"
#include "kernels/device.h"
#include "cli.h"

#ifndef RLRUN_GIT
#define RLRUN_GIT "unknown"
#endif
#ifndef RLRUN_BUILD_FLAGS
#define RLRUN_BUILD_FLAGS "unknown"
#endif

static void print_cuda_version(const char *label, long v, int div) {
  if (v <= 0) {
    printf("%-14s none\n", label);
    return;
  }
  /* CUDA encodes 1000*major + 10*minor; cuBLASLt 10000*major + 100*minor + patch;
   * NCCL (>= 2.9) 10000*major + 100*minor + patch. */
  if (div == 1000)
    printf("%-14s %ld.%ld\n", label, v / 1000, (v % 1000) / 10);
  else
    printf("%-14s %ld.%ld.%ld\n", label, v / 10000, (v % 10000) / 100, v % 100);
}

int cmd_version(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    printf("usage: rlrun version\n\n"
           "Print rlrun's version, how it was built, the versions of the libraries it\n"
           "uses (CUDA runtime and driver, cuBLASLt, NCCL, Lua, SQLite, libyaml, jansson)\n"
           "and the GPUs it can see, or \"no GPU\" and why.\n");
    return RL_EXIT_OK;
  }
  if (argc > 1) {
    fprintf(stderr, "rlrun version: unexpected argument '%s' (it takes none)\n", argv[1]);
    return RL_EXIT_USAGE;
  }
  device_info d;
  device_query(&d);
  printf("rlrun %s (git %s)\n", RLRUN_VERSION, RLRUN_GIT);
  printf("%-14s %s\n", "build", RLRUN_BUILD_FLAGS);
  printf("%-14s %s\n", "cuda code", d.built_with_cuda ? "yes (sm_90a, sm_100a)" : "no (CPU-only build)");
  print_cuda_version("cuda runtime", d.cuda_runtime, 1000);
  print_cuda_version("cuda driver", d.cuda_driver, 1000);
  print_cuda_version("cublasLt", (long)d.cublaslt, 10000);
  print_cuda_version("nccl", d.nccl, 10000);
  printf("%-14s %s\n", "lua", LUA_RELEASE);
  printf("%-14s %s\n", "sqlite", sqlite3_libversion());
  printf("%-14s %s\n", "libyaml", yaml_get_version_string());
  printf("%-14s %s\n", "jansson", jansson_version_str());
  if (d.n_gpus == 0) {
    printf("%-14s no GPU (%s)\n", "gpus", d.status);
  } else {
    printf("%-14s %d\n", "gpus", d.n_gpus);
    for (int i = 0; i < d.n_gpus; i++) {
      const device_gpu *g = &d.gpus[i];
      printf("  gpu %d: %s, compute capability %d.%d, %.1f GiB, %d SMs\n", g->index, g->name,
             g->cc_major, g->cc_minor, (double)g->mem_bytes / (1024.0 * 1024.0 * 1024.0),
             g->sm_count);
    }
  }
  return RL_EXIT_OK;
}
