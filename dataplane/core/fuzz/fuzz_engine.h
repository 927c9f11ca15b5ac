/* SPDX-License-Identifier: Apache-2.0
 * What the config and delta harnesses share: one engine with one worker, and the step that lets
 * the worker see the newest generation so QSBR frees the previous ones. */
#ifndef VGW_FUZZ_ENGINE_H
#define VGW_FUZZ_ENGINE_H

#include <stdlib.h>

#include "internal.h"

static vgw_dp_t *fuzz_dp;
static vgw_worker_t *fuzz_w;

static void fuzz_engine_init(void)
{
    if (fuzz_dp)
        return;
    fuzz_dp = vgw_dp_create(&(vgw_dp_params_t){.nworkers = 1});
    fuzz_w = fuzz_dp ? vgw_worker_create(fuzz_dp, &(vgw_worker_params_t){.id = 0, .conn_capacity = 16, .hash_seed = 1})
                     : NULL;
    if (!fuzz_w)
        abort();
}

static void fuzz_engine_observe(void)
{
    vgw_pkt_t p = {0};
    vgw_verdict_t v;
    uint8_t frame[14] = {0};
    p.data = frame;
    p.len = sizeof frame;
    vgw_worker_process(fuzz_w, &p, &v, 1, 1);
    vgw_dp_reclaim(fuzz_dp);
}

#endif
