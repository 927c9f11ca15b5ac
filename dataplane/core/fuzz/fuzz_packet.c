/* SPDX-License-Identifier: Apache-2.0
 * libFuzzer harness over the packet path.
 *
 * Input: a burst of frames, each prefixed by a 2-byte big-endian length. Each input runs on a
 * fresh worker holding one known connection (client 203.0.113.5:40000 -> 192.0.2.10:80), so
 * replies, ICMP errors and TOA paths are reachable and runs are reproducible.
 * Oracle beyond the sanitizers: every forwarded frame stays inside its buffer and carries valid
 * IPv4 and L4 checksums (inputs with bad checksums must have been dropped, not forwarded).
 */
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

#define HEADROOM 64u
#define BUFSZ 2048u

static const char cfg_text[] = "vgw-config 1\n"
                               "generation 1\n"
                               "service web tcp 192.0.2.10 80 maglev toa=on table=251\n"
                               "lip web 198.18.0.1\n"
                               "backend web 198.18.1.1 8080 1 active\n"
                               "backend web 198.18.1.2 8080 2 active\n"
                               "service dns udp 192.0.2.10 53 wlc\n"
                               "lip dns 198.18.0.1\n"
                               "backend dns 198.18.1.1 5353 1 active\n"
                               "service rr tcp 192.0.2.11 443 wrr\n"
                               "lip rr 198.18.0.2\n"
                               "backend rr 198.18.1.3 443 3 active\n"
                               "backend rr 198.18.1.4 443 1 draining\n"
                               "end\n";

static vgw_dp_t *dp;

static void check_forwarded(const vgw_pkt_t *p, const uint8_t *buf)
{
    if (p->data < buf || p->data + p->len > buf + BUFSZ)
        abort();
    uint32_t off = 14;
    uint16_t et = n2h16(ld16(p->data + 12));
    while (et == 0x8100 || et == 0x88a8) {
        et = n2h16(ld16(p->data + off + 2));
        off += 4;
    }
    const uint8_t *l3 = p->data + off;
    uint32_t ihl = (uint32_t)(l3[0] & 15) * 4, tot = n2h16(ld16(l3 + 2));
    if (off + tot != p->len)
        abort();
    if (vgw_csum_fold(vgw_csum_partial(l3, ihl, 0)) != 0xffff)
        abort();
    const uint8_t *l4 = l3 + ihl;
    uint8_t proto = l3[9];
    if (proto == VGW_PROTO_ICMP) {
        if (vgw_csum_fold(vgw_csum_partial(l4, tot - ihl, 0)) != 0xffff)
            abort();
    } else if (!(proto == VGW_PROTO_UDP && ld16(l4 + 6) == 0)) {
        if (vgw_l4_csum_v4(ld32(l3 + 12), ld32(l3 + 16), proto, l4, (uint16_t)(tot - ihl)) != 0)
            abort();
    }
}

static void seed_conn(vgw_worker_t *w, uint8_t *buf)
{
    /* SYN from the known client, built by hand with valid checksums. */
    uint8_t *d = buf + HEADROOM;
    memset(buf, 0, BUFSZ);
    uint8_t *l3 = d + 14, *l4 = l3 + 20;
    d[12] = 0x08;
    l3[0] = 0x45;
    st16(l3 + 2, h2n16(40));
    l3[8] = 64;
    l3[9] = 6;
    uint32_t cip = h2n32(0xcb007105u), vip = h2n32(0xc000020au);
    st32(l3 + 12, cip);
    st32(l3 + 16, vip);
    st16(l3 + 10, (uint16_t)~vgw_csum_fold(vgw_csum_partial(l3, 20, 0)));
    st16(l4, h2n16(40000));
    st16(l4 + 2, h2n16(80));
    st32(l4 + 4, h2n32(1000));
    l4[12] = 0x50;
    l4[13] = 0x02;
    st16(l4 + 14, 0xffff);
    st16(l4 + 16, vgw_l4_csum_v4(cip, vip, 6, l4, 20));
    vgw_pkt_t p = {.data = d, .len = 54, .headroom = HEADROOM};
    vgw_verdict_t v;
    vgw_worker_process(w, &p, &v, 1, 1000);
    if (v.action != VGW_ACT_FORWARD)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t bufs[VGW_BURST_MAX][BUFSZ];
    if (!dp) {
        vgw_dp_params_t dpp = {.nworkers = 2};
        dp = vgw_dp_create(&dpp);
        char err[128];
        if (!dp || vgw_dp_apply_text(dp, cfg_text, sizeof cfg_text - 1, err, sizeof err))
            abort();
    }
    vgw_worker_params_t wp = {.id = 0, .conn_capacity = 64, .mtu = 1500, .hash_seed = 99};
    vgw_worker_t *w = vgw_worker_create(dp, &wp);
    if (!w)
        abort();
    seed_conn(w, bufs[0]);

    vgw_pkt_t pkts[VGW_BURST_MAX];
    vgw_verdict_t out[VGW_BURST_MAX];
    uint32_t n = 0;
    size_t pos = 0;
    while (pos + 2 <= size && n < VGW_BURST_MAX) {
        size_t len = (size_t)data[pos] << 8 | data[pos + 1];
        pos += 2;
        if (len > size - pos)
            len = size - pos;
        if (len > BUFSZ - HEADROOM)
            len = BUFSZ - HEADROOM;
        memset(bufs[n], 0xa5, BUFSZ);
        memcpy(bufs[n] + HEADROOM, data + pos, len);
        pkts[n] = (vgw_pkt_t){.data = bufs[n] + HEADROOM, .len = (uint16_t)len, .headroom = HEADROOM};
        pos += len;
        n++;
    }
    vgw_worker_process(w, pkts, out, n, 2000);
    for (uint32_t i = 0; i < n; i++) {
        if (out[i].action == VGW_ACT_FORWARD)
            check_forwarded(&pkts[i], bufs[i]);
        else if (out[i].action == VGW_ACT_DROP && out[i].arg >= VGW_DROP_MAX)
            abort();
    }
    vgw_worker_housekeep(w, 400000, 64);
    vgw_worker_destroy(w);
    return 0;
}
