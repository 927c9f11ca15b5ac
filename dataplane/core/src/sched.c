/* SPDX-License-Identifier: Apache-2.0
 * Schedulers. Tables (Maglev, WRR order) are built with the config state; picking is O(1) for
 * Maglev and WRR and O(candidates) for WLC, which only runs for new connections. */
#include <stdlib.h>

#include "internal.h"

/* Longest precomputed WRR cycle; weights are scaled down proportionally past it. */
#define WRR_MAX_LEN 65536u
/* Bound on build work (cycle length x candidates) so a huge service cannot stall the control
 * thread; exceeding it scales the cycle down further. */
#define WRR_MAX_WORK (1u << 26)

int vgw_wrr_build(vgw_svc_t *svc)
{
    svc->tab = NULL;
    if (svc->ncand == 0)
        return 0;
    uint32_t n = svc->ncand;
    uint32_t *w = malloc(sizeof(uint32_t) * n);
    int64_t *cur = calloc(n, sizeof(int64_t));
    if (!w || !cur) {
        free(w), free(cur);
        return -1;
    }
    uint32_t g = 0;
    uint64_t sum = 0;
    for (uint32_t i = 0; i < n; i++) {
        w[i] = svc->backends[svc->cand[i]].weight;
        g = vgw_gcd32(g, w[i]);
    }
    for (uint32_t i = 0; i < n; i++) {
        w[i] /= g;
        sum += w[i];
    }
    uint64_t limit = WRR_MAX_LEN;
    if (limit * n > WRR_MAX_WORK)
        limit = WRR_MAX_WORK / n;
    if (limit < n)
        limit = n;
    if (sum > limit) {
        uint64_t nsum = 0;
        for (uint32_t i = 0; i < n; i++) {
            uint64_t s = (uint64_t)w[i] * limit / sum;
            w[i] = s ? (uint32_t)s : 1;
            nsum += w[i];
        }
        sum = nsum;
    }
    vgw_table_t *t = vgw_table_new((uint32_t)sum);
    if (!t) {
        free(w), free(cur);
        return -1;
    }
    /* Smooth weighted round robin (as in nginx): interleaves backends instead of sending w
     * consecutive connections to the heaviest, computed once here instead of per packet. */
    for (uint64_t k = 0; k < sum; k++) {
        uint32_t best = 0;
        for (uint32_t i = 0; i < n; i++) {
            cur[i] += w[i];
            if (cur[i] > cur[best])
                best = i;
        }
        cur[best] -= (int64_t)sum;
        t->idx[k] = svc->cand[best];
    }
    svc->tab = t;
    svc->wrr = t->idx;
    svc->wrr_len = t->len;
    free(w), free(cur);
    return 0;
}

int32_t vgw_sched_pick(vgw_worker_t *w, const vgw_svc_t *svc, uint32_t flow_hash)
{
    if (VGW_UNLIKELY(svc->ncand == 0))
        return -1;
    switch (svc->sched) {
    case VGW_SCHED_MAGLEV: {
        uint16_t i = svc->maglev[flow_hash % svc->maglev_m];
        return i == VGW_MAGLEV_EMPTY ? -1 : (int32_t)i;
    }
    case VGW_SCHED_WRR: {
        /* Workers start at different offsets so N workers do not all hit the same backend. */
        uint32_t *pos = &w->rr_pos[svc->uid];
        uint32_t k = (*pos)++ + w->id * (svc->wrr_len / (w->nworkers ? w->nworkers : 1) + 1);
        return svc->wrr[k % svc->wrr_len];
    }
    case VGW_SCHED_WLC: {
        /* Least (connections / weight) using this worker's own counts: per-worker tables see
         * 1/nworkers of the flows each, so local counts are an unbiased sample and need no
         * cross-core traffic. Compare c_a*w_b < c_b*w_a to stay in integers. */
        int32_t best = -1;
        uint64_t bc = 0, bw = 1;
        for (uint32_t k = 0; k < svc->ncand; k++) {
            const vgw_be_t *be = &svc->backends[svc->cand[k]];
            uint64_t c = (uint64_t)w->be_conns[be->uid] + 1;
            if (best < 0 || c * bw < bc * be->weight) {
                best = (int32_t)svc->cand[k];
                bc = c;
                bw = be->weight;
            }
        }
        return best;
    }
    default:
        return -1;
    }
}
