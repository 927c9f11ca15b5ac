/* SPDX-License-Identifier: Apache-2.0
 * What a configuration costs a forwarder (vgw_cfg_cost): the formula of docs/forwarder.md,
 * "Memory budget". The config service implements the same formula (vgw/config/budget.py) and a
 * test compares the two; unit tests check that every per-item constant covers what the core
 * really allocates for that item. */
#include "internal.h"

#define MIB 1048576ull
#define COST_BASE (64 * MIB)         /* process, libraries, EAL heap, fixed tables */
/* per-service counters and snapshots, per-uid scheduler state, per-backend-uid new-connection
 * counts (8 x 65536); flood protection: per-service counters and rate state, the per-/24 limiter,
 * held segments, per-LIP exhaustion counts */
#define COST_WORKER_FIXED 2228224ull
#define COST_SERVICE 2048ull         /* configuration entry, engine service, indexes, counter slot */
#define COST_BACKEND 160ull          /* configuration entry, engine entry, candidate, indexes */
#define COST_LIP 128ull              /* configuration entry, engine entry, address table slots */

static uint64_t pow2ceil(uint64_t x)
{
    uint64_t p = 1;
    while (p < x)
        p <<= 1;
    return p;
}

static uint64_t round4k(uint64_t x)
{
    return (x + 4095) & ~4095ull;
}

#define COST_CONN_RECORD 64ull  /* a connection record, one cache line */
/* With an IPv6 service: the node's IPv6 VIP/LIP address table and its index (internal.h). */
#define COST_ADDR6_TABLE (16ull * VGW_ADDR6_MAX + 4ull * VGW_ADDR6_SLOTS)

/* Records (both families), index buckets, free stack and half-open eviction ring of the core's
 * table, and the forwarder's shadow set. */
static uint64_t conn_tables(uint64_t c)
{
    return COST_CONN_RECORD * c + 64 * pow2ceil((4 * c + 9) / 10) + 4 * c + 8 * c +
           16 * pow2ceil(c * 2 > 1024 ? c * 2 : 1024);
}

/* The scheduler table: an upper bound for WRR, whose cycle depends on which backends are
 * active (a subset's cycle is never longer). */
static uint64_t table_bytes(const vgw_cfg_service_t *s)
{
    if (s->sched == VGW_SCHED_MAGLEV)
        return round4k(2ull * s->maglev_m);
    if (s->sched != VGW_SCHED_WRR)
        return 0;
    uint32_t g = 0, k = 0;
    for (uint32_t i = 0; i < s->nbackends; i++)
        if (s->backends[i].weight) {
            g = vgw_gcd32(g, s->backends[i].weight);
            k++;
        }
    if (!k)
        return 0;
    uint64_t sum = 0;
    for (uint32_t i = 0; i < s->nbackends; i++)
        sum += s->backends[i].weight / g;
    return round4k(2 * ((sum < 65536 ? sum : 65536) + k));
}

void vgw_cfg_cost(const vgw_cfg_t *cfg, const vgw_cost_params_t *p, vgw_cost_t *out)
{
    memset(out, 0, sizeof *out);
    out->base = COST_BASE + (cfg && vgw_cfg_first_of_af(cfg, VGW_AF_INET6) ? COST_ADDR6_TABLE : 0);
    out->conn_tables = (uint64_t)p->workers * (conn_tables(p->conn_capacity) + COST_WORKER_FIXED);
    for (uint32_t i = 0; cfg && i < cfg->nservices; i++) {
        const vgw_cfg_service_t *s = cfg->services[i];
        uint64_t t = table_bytes(s);
        out->services += COST_SERVICE + COST_BACKEND * s->nbackends + COST_LIP * s->nlips;
        out->sched_tables += t;
        if (t > out->transient)
            out->transient = t;
    }
    out->total = out->base + out->conn_tables + out->services + out->sched_tables + out->transient;
}
