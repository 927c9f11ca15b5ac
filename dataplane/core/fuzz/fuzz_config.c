/* SPDX-License-Identifier: Apache-2.0
 * libFuzzer harness over the config input (the control socket's payload): parse, and when the
 * document is valid, build and publish it as the next generation so the registries, schedulers
 * and state swap see the same hostile input. */
#include <stdio.h>
#include <stdlib.h>

#include "fuzz_engine.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_engine_init();
    vgw_cfg_t *cfg = NULL;
    char err[256];
    if (vgw_cfg_parse((const char *)data, size, &cfg, err, sizeof err) != 0) {
        if (cfg != NULL || err[0] == 0 || strlen(err) >= sizeof err)
            abort(); /* failures must explain themselves and return nothing */
        return 0;
    }
    cfg->generation = vgw_dp_generation(fuzz_dp) + 1;
    if (vgw_dp_apply(fuzz_dp, cfg, err, sizeof err) == 0)
        fuzz_engine_observe();
    vgw_cfg_free(cfg);
    return 0;
}
