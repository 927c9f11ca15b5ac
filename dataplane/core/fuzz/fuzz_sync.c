/* SPDX-License-Identifier: Apache-2.0
 * libFuzzer harness over connection-sync messages (sync.c). Input: a message as it would arrive
 * from the network. Checked on every input:
 *  - decode accepts only a whole, well-formed message and fills nothing beyond its count;
 *  - the same bytes re-signed with the key (first byte of input selects whether to re-sign, so
 *    the fuzzer also reaches the record checks behind the MAC) decode, and every accepted record
 *    imports into a worker or is refused with a known reason, leaving a table whose count agrees
 *    with lookups; a message re-encoded from what was decoded is byte-identical. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const uint8_t KEY[16] = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 6};
static const char CFG[] = "vgw-config 1\ngeneration 1\nservice s tcp 192.0.2.10 80 maglev\nlip s 198.51.100.105\n"
                          "backend s 198.51.100.21 8080 1 active\nservice u udp 192.0.2.10 53 wrr\n"
                          "lip u 198.51.100.105\nbackend u 198.51.100.21 5353 1 active\nend\n";

static vgw_dp_t *g_dp;
static vgw_worker_t *g_w;

static void setup(void)
{
    vgw_dp_params_t p = {.nworkers = 1};
    g_dp = vgw_dp_create(&p);
    char err[256];
    if (!g_dp || vgw_dp_apply_text(g_dp, CFG, sizeof CFG - 1, err, sizeof err))
        abort();
    vgw_worker_params_t wp = {.id = 0, .conn_capacity = 64, .hash_seed = 3};
    g_w = vgw_worker_create(g_dp, &wp);
    if (!g_w)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_w)
        setup();
    if (size < 1 || size > VGW_SYNC_MAX_MSG + 64)
        return 0;
    uint8_t resign = data[0] & 1;
    data++, size--;
    uint8_t buf[VGW_SYNC_MAX_MSG + 64];
    memcpy(buf, data, size);
    if (resign && size >= VGW_SYNC_HDR_LEN + VGW_SYNC_MAC_LEN) {
        /* sign what is there, as a peer holding the key would */
        uint64_t k0 = 0, k1 = 0;
        for (int i = 7; i >= 0; i--)
            k0 = k0 << 8 | KEY[i], k1 = k1 << 8 | KEY[8 + i];
        uint64_t mac = vgw_siphash24(k0, k1, buf, size - VGW_SYNC_MAC_LEN);
        for (int i = 0; i < 8; i++)
            buf[size - 8 + (size_t)i] = (uint8_t)(mac >> (56 - 8 * i));
    }
    vgw_sync_hdr_t h;
    vgw_sync_rec_t recs[VGW_SYNC_MAX_RECS];
    int n = vgw_sync_decode(buf, size, KEY, &h, recs);
    if (n < 0) {
        if (-n <= 0 || -n >= VGW_SYNC_E_MAX || !strcmp(vgw_sync_err_name(n), "unknown"))
            abort();
        return 0;
    }
    if (n > (int)VGW_SYNC_MAX_RECS || h.count != n) /* 0 = a heartbeat */
        abort();
    uint8_t again[VGW_SYNC_MAX_MSG];
    size_t len = vgw_sync_encode(&h, recs, (uint32_t)n, KEY, again, sizeof again);
    if (len != size || memcmp(again, buf, size) != 0)
        abort();
    static uint64_t now = 1000;
    now += 1000;
    for (int i = 0; i < n; i++) {
        int rc = vgw_worker_sync_import(g_w, &recs[i], now);
        if (rc < 0 || rc >= VGW_SYNC_E_MAX || rc == VGW_SYNC_E_RECORD)
            abort(); /* decode already refused impossible records */
        if (rc == VGW_SYNC_OK) {
            vgw_conn_info_t ci;
            const vgw_sync_rec_t *r = &recs[i];
            if (vgw_worker_conn_find(g_w, r->proto, r->cip, n2h16(r->cport), r->vip, n2h16(r->vport), now, &ci) != 0 ||
                ci.lip.v4 != r->lip || ci.rip.v4 != r->rip || ci.state != r->state)
                abort();
        }
    }
    if (vgw_worker_conn_count(g_w) > 64)
        abort();
    vgw_worker_housekeep(g_w, now + 8u * 24u * 3600u * 1000u, 64); /* keep room for the next input */
    return 0;
}
