/* SPDX-License-Identifier: Apache-2.0
 * libFuzzer harness over the config input (the control socket's payload): parse, and when the
 * document is valid, build and publish it as the next generation so the registries, schedulers
 * and state swap see the same hostile input. */
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

static vgw_dp_t *dp;
static vgw_worker_t *w;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dp) {
        vgw_dp_params_t dpp = {.nworkers = 1};
        dp = vgw_dp_create(&dpp);
        vgw_worker_params_t wp = {.id = 0, .conn_capacity = 16, .hash_seed = 1};
        w = dp ? vgw_worker_create(dp, &wp) : NULL;
        if (!w)
            abort();
    }
    vgw_cfg_t *cfg = NULL;
    char err[256];
    if (vgw_cfg_parse((const char *)data, size, &cfg, err, sizeof err) != 0) {
        if (cfg != NULL || err[0] == 0 || strlen(err) >= sizeof err)
            abort(); /* failures must explain themselves and return nothing */
        return 0;
    }
    cfg->generation = vgw_dp_generation(dp) + 1;
    if (vgw_dp_apply(dp, cfg, err, sizeof err) == 0) {
        /* Let the worker observe the new generation so QSBR can free the previous one. */
        vgw_pkt_t p = {0};
        vgw_verdict_t v;
        uint8_t frame[14] = {0};
        p.data = frame;
        p.len = sizeof frame;
        vgw_worker_process(w, &p, &v, 1, 1);
        vgw_dp_reclaim(dp);
    }
    vgw_cfg_free(cfg);
    return 0;
}
