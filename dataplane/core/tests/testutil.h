/* SPDX-License-Identifier: Apache-2.0
 * Helpers shared by the cmocka unit tests: a tiny packet builder with real checksums. */
#ifndef VGW_TESTUTIL_H
#define VGW_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

#define TU_HEADROOM 64u

typedef struct tu_buf {
    uint8_t mem[2048];
    vgw_pkt_t pkt;
} tu_buf_t;

static inline uint32_t tu_ip(uint8_t a, uint8_t b, uint8_t c, uint8_t d)
{
    uint32_t v;
    uint8_t x[4] = {a, b, c, d};
    memcpy(&v, x, 4);
    return v;
}

/* Builds Ethernet + IPv4 + TCP/UDP with valid checksums. For TCP, flags and options given. */
static inline vgw_pkt_t *tu_build(tu_buf_t *b, uint8_t proto, uint32_t src, uint32_t dst, uint16_t sport,
                                  uint16_t dport, uint8_t tcpflags, const uint8_t *opts, uint32_t optlen,
                                  uint32_t payload)
{
    memset(b->mem, 0, sizeof b->mem);
    uint8_t *d = b->mem + TU_HEADROOM;
    uint8_t *l3 = d + 14;
    d[12] = 0x08;
    d[13] = 0x00;
    uint32_t l4hdr = proto == VGW_PROTO_TCP ? 20 + optlen : 8;
    uint32_t l4len = l4hdr + payload;
    l3[0] = 0x45;
    st16(l3 + 2, h2n16((uint16_t)(20 + l4len)));
    l3[8] = 64;
    l3[9] = proto;
    st32(l3 + 12, src);
    st32(l3 + 16, dst);
    st16(l3 + 10, (uint16_t)~vgw_csum_fold(vgw_csum_partial(l3, 20, 0)));
    uint8_t *l4 = l3 + 20;
    st16(l4, h2n16(sport));
    st16(l4 + 2, h2n16(dport));
    for (uint32_t i = 0; i < payload; i++)
        l4[l4hdr + i] = (uint8_t)(i * 7 + 1);
    if (proto == VGW_PROTO_TCP) {
        st32(l4 + 4, h2n32(1000));
        st32(l4 + 8, h2n32((tcpflags & 0x10) ? 5001 : 0));
        l4[12] = (uint8_t)((l4hdr / 4) << 4);
        l4[13] = tcpflags;
        st16(l4 + 14, h2n16(65535));
        if (optlen)
            memcpy(l4 + 20, opts, optlen);
        st16(l4 + 16, vgw_l4_csum_v4(src, dst, proto, l4, (uint16_t)l4len));
    } else {
        st16(l4 + 4, h2n16((uint16_t)l4len));
        uint16_t cs = vgw_l4_csum_v4(src, dst, proto, l4, (uint16_t)l4len);
        st16(l4 + 6, cs ? cs : 0xffff);
    }
    b->pkt = (vgw_pkt_t){.data = d, .len = (uint16_t)(14 + 20 + l4len), .headroom = TU_HEADROOM};
    return &b->pkt;
}

/* Ethernet + IPv6 + TCP (no options, no payload) with a valid checksum. */
static inline vgw_pkt_t *tu_build6_tcp(tu_buf_t *b, const uint8_t *src, const uint8_t *dst, uint16_t sport,
                                       uint16_t dport, uint8_t tcpflags)
{
    memset(b->mem, 0, sizeof b->mem);
    uint8_t *d = b->mem + TU_HEADROOM;
    uint8_t *l3 = d + 14, *l4 = l3 + 40;
    d[12] = 0x86;
    d[13] = 0xdd;
    l3[0] = 0x60;
    st16(l3 + 4, h2n16(20));
    l3[6] = VGW_PROTO_TCP;
    l3[7] = 64;
    memcpy(l3 + 8, src, 16);
    memcpy(l3 + 24, dst, 16);
    st16(l4, h2n16(sport));
    st16(l4 + 2, h2n16(dport));
    st32(l4 + 4, h2n32(1000));
    st32(l4 + 8, h2n32((tcpflags & 0x10) ? 5001 : 0));
    l4[12] = 5 << 4;
    l4[13] = tcpflags;
    st16(l4 + 14, h2n16(65535));
    st16(l4 + 16, vgw_l4_csum_v6(src, dst, VGW_PROTO_TCP, l4, 20));
    b->pkt = (vgw_pkt_t){.data = d, .len = 74, .headroom = TU_HEADROOM};
    return &b->pkt;
}

/* A document that must parse (the test fails with the reason otherwise). */
static inline vgw_cfg_t *tu_parse_ok(const char *doc)
{
    vgw_cfg_t *cfg = NULL;
    char err[256] = "";
    if (vgw_cfg_parse(doc, strlen(doc), &cfg, err, sizeof err) != 0)
        fail_msg("doc:\n%s-> rejected: %s", doc, err);
    return cfg;
}

/* A document that must be rejected with a reason containing needle; the reason is left in err
 * (at least 256 bytes). */
static inline void tu_parse_bad(const char *doc, const char *needle, char *err)
{
    vgw_cfg_t *cfg = (vgw_cfg_t *)1;
    err[0] = 0;
    int rc = vgw_cfg_parse(doc, strlen(doc), &cfg, err, 256);
    if (rc == 0 || !strstr(err, needle))
        fail_msg("doc:\n%s-> rc=%d err='%s' (wanted '%s')", doc, rc, err, needle);
    assert_null(cfg);
}

static inline uint64_t tu_rev_sum(const vgw_cfg_t *cfg)
{
    uint64_t s = 0;
    for (uint32_t i = 0; i < cfg->nservices; i++)
        s = s * 31 + cfg->services[i]->rev;
    return s;
}

/* The delta is rejected on cfg (freed here) with a reason containing needle, and cfg is exactly
 * as before: canonical text and every service's rev. */
static inline void tu_delta_bad(vgw_cfg_t *cfg, const char *delta, const char *needle)
{
    char *before = vgw_cfg_serialize(cfg, NULL);
    uint64_t revs = tu_rev_sum(cfg);
    char err[256] = "";
    vgw_cfg_txn_t *txn = (vgw_cfg_txn_t *)1;
    int rc = vgw_cfg_delta_begin(cfg, delta, strlen(delta), &txn, err, sizeof err);
    char *after = vgw_cfg_serialize(cfg, NULL);
    if (rc == 0 || !strstr(err, needle))
        fail_msg("delta:\n%s-> rc=%d err='%s' (wanted '%s')", delta, rc, err, needle);
    assert_null(txn);
    assert_string_equal(before, after);
    assert_int_equal(tu_rev_sum(cfg), revs);
    free(before), free(after);
    vgw_cfg_free(cfg);
}

/* An engine for nworkers with cfg applied (NULL: none); the test fails on a config error. */
static inline vgw_dp_t *tu_dp(uint32_t nworkers, const char *cfg)
{
    vgw_dp_t *dp = vgw_dp_create(&(vgw_dp_params_t){.nworkers = nworkers});
    assert_non_null(dp);
    char err[256];
    if (cfg && vgw_dp_apply_text(dp, cfg, strlen(cfg), err, sizeof err))
        fail_msg("config: %s", err);
    return dp;
}

/* A worker of dp; the test fails if it cannot be created. */
static inline vgw_worker_t *tu_worker(vgw_dp_t *dp, vgw_worker_params_t wp)
{
    vgw_worker_t *w = vgw_worker_create(dp, &wp);
    assert_non_null(w);
    return w;
}

/* Full verification of IPv4 + L4 checksums of a frame (independent of the incremental code). */
static inline int tu_csums_ok(const vgw_pkt_t *p)
{
    const uint8_t *l3 = p->data + 14;
    uint32_t ihl = (uint32_t)(l3[0] & 15) * 4;
    uint32_t tot = n2h16(ld16(l3 + 2));
    if (vgw_csum_fold(vgw_csum_partial(l3, ihl, 0)) != 0xffff)
        return 0;
    const uint8_t *l4 = l3 + ihl;
    if (l3[9] == VGW_PROTO_UDP && ld16(l4 + 6) == 0)
        return 1;
    return vgw_l4_csum_v4(ld32(l3 + 12), ld32(l3 + 16), l3[9], l4, (uint16_t)(tot - ihl)) == 0;
}

#endif
