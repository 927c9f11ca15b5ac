/* SPDX-License-Identifier: Apache-2.0
 * vgw-fwd's counters as the outside sees them: one table of names (shared by the control
 * socket's STATS and the telemetry commands) and the sums over workers' snapshots. */
#ifndef VGW_FWD_STATS_H
#define VGW_FWD_STATS_H

#include "fwd.h"
#include "vbuf.h"

extern const char *const fwd_counter_names[FWD_CNT_MAX];
extern const char *const ctl_counter_names[CTL_CNT_MAX];
extern const char *const svc_counter_names[SVC_CNT_MAX];

/* Core and forwarder counters summed over workers. */
void stats_totals(const fwd_t *f, vgw_counters_t *core, uint64_t *fwd);
/* One port's counters summed over workers. */
void stats_port(const fwd_t *f, uint32_t role, port_stats_t *out);
/* Resident memory of this process by kind (/proc/self/status; zeros if unreadable). Packet
 * memory is shared memory: hugepages in production (not resident here at all), an anonymous
 * shared mapping with --no-huge (shmem). The memory budget covers anon + file. */
typedef struct stats_rss {
    uint64_t anon, file, shmem;
} stats_rss_t;
void stats_rss(stats_rss_t *out);
/* The STATS reply (docs/forwarder.md). Call with g_ctl_lock held. */
void stats_json(fwd_t *f, struct vbuf *b);

#endif
