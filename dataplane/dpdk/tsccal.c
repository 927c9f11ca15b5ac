/* A shorter TSC calibration at start (tsccal.h). */
#include "tsccal.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#define CALIBRATION_NS 100000000L /* DPDK 22.11 lib/eal/linux/eal_timer.c: get_tsc_freq() */
#define SHORT_NS 20000000L        /* what DPDK 23.07+ measures across */

static atomic_bool g_calibrating;

void tsccal_begin(void)
{
    atomic_store(&g_calibrating, true);
}

void tsccal_end(void)
{
    atomic_store(&g_calibrating, false);
}

/* Takes the place of libc's nanosleep for the shared libraries this executable loads (the dynamic
 * linker resolves their calls to the executable's definition first); libc's own internal calls
 * are not affected. Semantics are nanosleep's: -1 with errno on failure. */
int nanosleep(const struct timespec *req, struct timespec *rem)
{
    struct timespec shorter;
    if (req && atomic_load(&g_calibrating) && req->tv_sec == 0 && req->tv_nsec == CALIBRATION_NS) {
        shorter = (struct timespec){.tv_sec = 0, .tv_nsec = SHORT_NS};
        req = &shorter;
    }
    int err = clock_nanosleep(CLOCK_REALTIME, 0, req, rem);
    if (err) {
        errno = err;
        return -1;
    }
    return 0;
}
