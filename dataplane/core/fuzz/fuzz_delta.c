/* SPDX-License-Identifier: Apache-2.0
 * libFuzzer harness over "vgw-delta 1" (the control socket's DELTA payload), applied in place to
 * a configuration. Input: a delta, or "<document>\n%%\n<delta>" to vary the base. Checked on
 * every input:
 *  - a rejected delta changes nothing (canonical text and every index as before) and explains
 *    itself;
 *  - an accepted delta leaves a configuration whose canonical text parses back to itself (so it
 *    obeys every document rule) and whose indexes agree with its contents; rolling it back
 *    restores the original exactly; committing it builds and publishes an engine generation
 *    (incremental: shared services, reused tables) that a worker then runs a packet through. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfgint.h"
#include "fuzz_engine.h"

static const char base_doc[] =
    "vgw-config 1\n"
    "generation 5\n"
    "service web tcp 192.0.2.10 80 maglev table=251 toa=on\n"
    "lip web 198.18.0.100\n"
    "lip web 198.18.0.101\n"
    "backend web 198.18.1.1 80 100 active\n"
    "backend web 198.18.1.2 80 50 draining\n"
    "backend web 198.18.1.3 80 0 disabled\n"
    "service dns udp 192.0.2.10 53 wrr\n"
    "lip dns 198.18.0.100\n"
    "backend dns 198.18.1.1 53 1 active\n"
    "backend dns 198.18.1.2 53 3 active\n"
    "service big tcp 192.0.2.11 443 wlc timeout.tcp_established=60\n"
    "lip big 198.18.0.102\n"
    "backend big 198.18.2.1 443 1 active\nbackend big 198.18.2.2 443 1 active\n"
    "backend big 198.18.2.3 443 1 active\nbackend big 198.18.2.4 443 1 active\n"
    "backend big 198.18.2.5 443 1 active\nbackend big 198.18.2.6 443 1 active\n"
    "backend big 198.18.2.7 443 1 active\nbackend big 198.18.2.8 443 1 active\n"
    "backend big 198.18.2.9 443 1 active\nbackend big 198.18.2.10 443 1 active\n"
    "backend big 198.18.2.11 443 1 active\nbackend big 198.18.2.12 443 1 active\n"
    "backend big 198.18.2.13 443 1 active\nbackend big 198.18.2.14 443 1 active\n"
    "backend big 198.18.2.15 443 1 active\nbackend big 198.18.2.16 443 1 active\n"
    "backend big 198.18.2.17 443 1 active\nbackend big 198.18.2.18 443 1 active\n"
    "end\n";

/* No delta is open: no backend carries a delta's marks. */
static void check_unmarked(const vgw_cfg_t *cfg)
{
    for (uint32_t i = 0; i < cfg->nservices; i++)
        for (uint32_t j = 0; j < cfg->services[i]->nbackends; j++)
            if (cfg->services[i]->backends[j].edited)
                abort();
}

/* The indexes say exactly what the contents say. */
static void check_indexes(const vgw_cfg_t *cfg)
{
    uint32_t total = 0;
    for (uint32_t i = 0; i < cfg->nservices; i++) {
        vgw_cfg_service_t *s = cfg->services[i];
        if (vgw_cfg_find(cfg, s->name) != s || !(vgw_cfg_addr_kind(cfg, s->af, &s->vip) & VGW_ADDR_F_VIP))
            abort();
        for (uint32_t j = 0; j < s->nlips; j++)
            if (!(vgw_cfg_addr_kind(cfg, s->af, &s->lips[j]) & VGW_ADDR_F_LIP))
                abort();
        for (uint32_t j = 0; j < s->nbackends; j++)
            if (vgw_cfg_be_find(s, s->backends[j].af, &s->backends[j].addr, s->backends[j].port) != &s->backends[j])
                abort();
        if (s->be_index && s->be_index->set.count != s->nbackends)
            abort();
        total += s->nbackends;
    }
    if (total != cfg->nbackends || cfg->index->by_name.count != cfg->nservices ||
        cfg->index->by_key.count != cfg->nservices)
        abort();
}

static char *text_of(const vgw_cfg_t *cfg)
{
    char *t = vgw_cfg_serialize(cfg, NULL);
    if (!t)
        abort();
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_engine_init();
    const char *text = (const char *)data;
    size_t len = size;
    vgw_cfg_t *cfg = NULL;
    char err[256];
    const char *sep = NULL;
    for (size_t i = 0; i + 4 <= size && !sep; i++)
        if (memcmp(data + i, "\n%%\n", 4) == 0)
            sep = text + i;
    if (sep && vgw_cfg_parse(text, (size_t)(sep - text) + 1, &cfg, err, sizeof err) == 0) {
        len = size - (size_t)(sep + 4 - text);
        text = sep + 4;
    } else if (vgw_cfg_parse(base_doc, sizeof base_doc - 1, &cfg, err, sizeof err) != 0) {
        abort();
    }
    /* The engine holds the base, so the delta's generation is built against it. The engine's
     * generations only grow; the delta sees the base at generation 5 ("generation 6" works). */
    cfg->generation = vgw_dp_generation(fuzz_dp) + 1;
    if (vgw_dp_apply(fuzz_dp, cfg, err, sizeof err) != 0)
        abort();
    fuzz_engine_observe();
    cfg->generation = 5;
    char *before = text_of(cfg);
    vgw_cfg_txn_t *txn = NULL;
    err[0] = 0;
    if (vgw_cfg_delta_begin(cfg, text, len, &txn, err, sizeof err) != 0) {
        char *after = text_of(cfg);
        if (txn || !err[0] || strlen(err) >= sizeof err || strcmp(before, after) != 0)
            abort(); /* a rejected delta explains itself and changes nothing */
        check_indexes(cfg);
        check_unmarked(cfg);
        free(after);
    } else {
        check_indexes(cfg);
        char *edited = text_of(cfg);
        vgw_cfg_t *again = NULL;
        if (vgw_cfg_parse(edited, strlen(edited), &again, err, sizeof err) != 0)
            abort(); /* the result breaks a document rule */
        char *again_text = text_of(again);
        if (strcmp(edited, again_text) != 0)
            abort();
        vgw_cfg_free(again);
        free(again_text);
        if (size & 1) {
            vgw_cfg_txn_rollback(txn);
            char *restored = text_of(cfg);
            if (strcmp(before, restored) != 0)
                abort();
            check_indexes(cfg);
            check_unmarked(cfg);
            free(restored);
        } else {
            vgw_cfg_txn_commit(txn);
            check_unmarked(cfg);
            vgw_cost_t cost;
            vgw_cfg_cost(cfg, &(vgw_cost_params_t){.workers = 1, .conn_capacity = 1024}, &cost);
            cfg->generation = vgw_dp_generation(fuzz_dp) + 1;
            if (vgw_dp_apply(fuzz_dp, cfg, err, sizeof err) != 0)
                abort();
            fuzz_engine_observe();
        }
        free(edited);
    }
    free(before);
    vgw_cfg_free(cfg);
    return 0;
}
