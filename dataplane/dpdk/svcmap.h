/* SPDX-License-Identifier: Apache-2.0
 * Per-service counter slots of vgw-fwd. A service keeps its slot while its (protocol, VIP, port)
 * exists; a new service gets a never-used slot, else the longest-free one whose connections are
 * gone, and starts from zero (a baseline is subtracted). Workers map a packet's (VIP, port,
 * protocol) to its slot through a table published by pointer swap, freed once every worker has
 * moved on (QSBR, like the core's generations). A configuration change that neither adds nor
 * removes services publishes nothing. */
#ifndef VGW_FWD_SVCMAP_H
#define VGW_FWD_SVCMAP_H

#include <stdatomic.h>
#include <stdint.h>

#include "vgw/config.h"

#define FWD_MAX_SVC_SLOTS VGW_MAX_SERVICES

/* Per-service counters, indexed by slot. */
#define SVC_COUNTERS(X)                                                                            \
    X(PKTS_IN, "packets_in")                                                                        \
    X(BYTES_IN, "bytes_in")                                                                         \
    X(PKTS_OUT, "packets_out")                                                                      \
    X(BYTES_OUT, "bytes_out")                                                                       \
    X(CONN_NEW, "conn_new")                                                                         \
    X(ACTIVE, "conn_active") /* gauge: connections in the tables (shadow set, see svcconn.c) */

enum svc_counter {
#define FWD_X_(e, s) SVC_CNT_##e,
    SVC_COUNTERS(FWD_X_)
#undef FWD_X_
    SVC_CNT_MAX
};

typedef struct svc_key_slot {
    uint32_t vip;  /* network order; 0 = empty */
    uint16_t port; /* network order */
    uint8_t proto;
    uint8_t used;
    uint32_t slot;
} svc_key_slot_t;

/* What workers read: (VIP, port, proto) -> slot. */
typedef struct svcmap {
    uint64_t generation;
    uint32_t mask;
    svc_key_slot_t *tab;
} svcmap_t;

#define SVCMAP_RETIRED_MAX 64u

/* The control thread's side. names and keys are also read by the telemetry thread, under
 * g_ctl_lock. */
typedef struct svcmap_ctl {
    _Atomic(svcmap_t *) cur;
    _Atomic uint64_t cur_gen; /* generation of cur (QSBR for the workers) */
    char names[FWD_MAX_SVC_SLOTS][VGW_CFG_MAX_NAME + 1]; /* slot -> name ("" = free) */
    svc_key_slot_t keys[FWD_MAX_SVC_SLOTS];              /* slot -> (vip, port, proto) */
    uint64_t *base;                                       /* counters at slot assignment */
    uint32_t nused, next_fresh;
    uint32_t fifo[FWD_MAX_SVC_SLOTS]; /* freed slots, oldest first */
    uint32_t fifo_head, fifo_len;
    uint32_t stamp[FWD_MAX_SVC_SLOTS], seq;
    svcmap_t *retired[SVCMAP_RETIRED_MAX];
    uint32_t nretired;
    uint64_t next_gen;
} svcmap_ctl_t;

struct fwd;

int svcmap_init(struct fwd *f);
void svcmap_fini(struct fwd *f);
/* 0 if a new map could be retired now (reclaiming first if needed), -1 if the workers still hold
 * too many old ones. */
int svcmap_ready(struct fwd *f);
/* Brings the slots in line with cfg: keeps existing services' slots (renaming if needed), frees
 * departed ones, assigns new ones and publishes a new map when the set changed. -1 when out of
 * memory: the previous map stays and new services are not counted until the next sync. */
int svcmap_sync(struct fwd *f, const vgw_cfg_t *cfg);
void svcmap_reclaim(struct fwd *f);
/* Workers. UINT32_MAX if not a service. */
uint32_t svcmap_lookup(const svcmap_t *m, uint32_t vip, uint16_t port, uint8_t proto);
/* Every slot's counters summed over workers, minus the slot's baseline (FWD_MAX_SVC_SLOTS *
 * SVC_CNT_MAX values; the ACTIVE gauge has no baseline). */
void svcmap_totals(struct fwd *f, uint64_t *out);
/* Subtracts the slots' baselines from counters already summed over workers. */
void svcmap_rebase(const struct fwd *f, uint64_t *sums);

#endif
