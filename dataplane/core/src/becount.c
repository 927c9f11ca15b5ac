/* SPDX-License-Identifier: Apache-2.0
 * Per-backend counters for the control socket's STATS: active connections (the workers' be_conns,
 * which the WLC scheduler keeps anyway) and new connections (be_new, one increment per connection
 * created, nothing per packet), summed over the workers. Control thread. */
#include "internal.h"

uint64_t vgw_dp_be_new_sum(const vgw_dp_t *dp, uint32_t uid)
{
    uint64_t sum = 0;
    for (uint32_t i = 0; i < dp->nworkers; i++) {
        const vgw_worker_t *w = atomic_load_explicit(&dp->workers[i], memory_order_acquire);
        if (w)
            sum += w->be_new[uid];
    }
    return sum;
}

static uint64_t be_conns_sum(const vgw_dp_t *dp, uint32_t uid)
{
    uint64_t sum = 0;
    for (uint32_t i = 0; i < dp->nworkers; i++) {
        const vgw_worker_t *w = atomic_load_explicit(&dp->workers[i], memory_order_acquire);
        if (w)
            sum += w->be_conns[uid];
    }
    return sum;
}

uint32_t vgw_dp_backend_counters(const vgw_dp_t *dp, uint32_t svc_uid, uint32_t first, vgw_backend_counters_t *out,
                                 uint32_t max)
{
    const vgw_state_t *st = atomic_load_explicit(&dp->state, memory_order_acquire);
    const vgw_svc_t *s = st && svc_uid < VGW_MAX_SERVICES ? st->svc_by_uid[svc_uid] : NULL;
    if (!s)
        return 0;
    for (uint32_t i = 0; first + i < s->nbackends && i < max; i++) {
        const vgw_be_t *be = &s->backends[first + i];
        /* A worker that created connections for the uid's previous backend after the baseline was
         * taken (it was still on an older generation) would make the difference negative. */
        uint64_t created = vgw_dp_be_new_sum(dp, be->uid), base = dp->be_new_base[be->uid];
        out[i] = (vgw_backend_counters_t){.addr = be->addr,
                                          .port = n2h16(be->port),
                                          .conn_active = be_conns_sum(dp, be->uid),
                                          .conn_new = created > base ? created - base : 0};
    }
    return s->nbackends;
}
