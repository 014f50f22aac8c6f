/* fault.c — RLRUN_FAULT failure points (see fault.h). */
#include "state/fault.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FAULT_MAX_POINTS 32

/* Hit counts per point name seen so far in this process. */
static struct {
  char names[FAULT_MAX_POINTS][64];
  long hits[FAULT_MAX_POINTS];
  int n;
} fault_state;

void fault_reset(void) { memset(&fault_state, 0, sizeof fault_state); }

/* Count one pass of `point` and return the new count. */
static long fault_count(const char *point) {
  for (int i = 0; i < fault_state.n; i++)
    if (!strcmp(fault_state.names[i], point)) return ++fault_state.hits[i];
  if (fault_state.n == FAULT_MAX_POINTS) return 0;
  int i = fault_state.n++;
  snprintf(fault_state.names[i], sizeof fault_state.names[i], "%s", point);
  return fault_state.hits[i] = 1;
}

int fault_hit(const char *point) {
  const char *spec = getenv("RLRUN_FAULT");
  if (!spec || !*spec) return 0;
  long hit = fault_count(point);
  size_t plen = strlen(point);
  for (const char *p = spec; *p;) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    if (len > plen && !strncmp(p, point, plen) && (p[plen] == '@' || p[plen] == ':')) {
      char item[128];
      snprintf(item, sizeof item, "%.*s", (int)(len < 127 ? len : 127), p);
      long want = 1;
      const char *at = strchr(item + plen, '@');
      if (at) want = strtol(at + 1, NULL, 10);
      const char *colon = strchr(item + plen, ':');
      const char *action = colon ? colon + 1 : "fail";
      int every = !strcmp(action, "every");
      if (hit == want || (every && hit >= want)) {
        if (!strcmp(action, "kill")) {
          fflush(NULL);
          kill(getpid(), SIGKILL);
        }
        return 1;
      }
    } else if (len == plen && !strncmp(p, point, plen) && hit == 1) {
      return 1;
    }
    p += len;
    if (*p == ',') p++;
  }
  return 0;
}
