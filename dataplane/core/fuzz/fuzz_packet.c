/* SPDX-License-Identifier: Apache-2.0
 * libFuzzer harness over the packet path.
 *
 * Input: a burst of frames, each prefixed by a 2-byte big-endian length. Each input runs on a
 * fresh worker holding two known connections (client 203.0.113.5:40000 -> 192.0.2.10:80 and
 * [2001:db8:c::5]:40000 -> [2001:db8::10]:80), so replies, ICMP errors and TOA paths of both
 * families are reachable and runs are reproducible.
 * Oracle beyond the sanitizers: every forwarded frame stays inside its buffer and carries valid
 * IP and L4 checksums and lengths (inputs with bad checksums must have been dropped, not
 * forwarded).
 *
 * The SYN proxy only goes deep with valid cookies, which a fuzzer cannot guess: every forwarded
 * TCP frame is therefore answered by its peer in two more rounds (a cookie SYN-ACK by the
 * client's ACK, a SYN to a server by the server's SYN-ACK, ...), with flags, options and payload
 * taken from the input's tail, so validation, the second handshake, held data and translation
 * are all exercised.
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
                               "service sp tcp 192.0.2.12 80 maglev toa=on syn_proxy=on rst_unknown=on "
                               "conn_rate=1000 conn_rate_src24=100\n"
                               "lip sp 198.18.0.3\n"
                               "backend sp 198.18.1.5 80 1 active\n"
                               "service spa tcp 192.0.2.13 80 wlc syn_proxy=auto syn_proxy_halfopen=2\n"
                               "lip spa 198.18.0.3\n"
                               "backend spa 198.18.1.6 80 1 active\n"
                               "service web6 tcp 2001:db8::10 80 maglev toa=on table=251\n"
                               "lip web6 2001:db8:ff::1\n"
                               "backend web6 2001:db8:1::1 8080 1 active\n"
                               "backend web6 2001:db8:1::2 8080 2 active\n"
                               "service dns6 udp 2001:db8::10 53 wlc conn_rate=1000 conn_rate_src24=100\n"
                               "lip dns6 2001:db8:ff::1\n"
                               "backend dns6 2001:db8:1::1 5353 1 active\n"
                               "end\n";

static const uint8_t client6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5};
static const uint8_t vip6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10};

static vgw_dp_t *dp;

static void check_forwarded6(const vgw_pkt_t *p, const uint8_t *l3, uint32_t off)
{
    uint32_t tot = 40u + n2h16(ld16(l3 + 4)), pos = 40, nh = l3[6];
    if (off + tot != p->len)
        abort();
    while (nh == 0 || nh == 43 || nh == 60) { /* what the engine lets through */
        nh = l3[pos];
        pos += ((uint32_t)l3[pos + 1] + 1) * 8;
        if (pos > tot)
            abort();
    }
    if (nh != VGW_PROTO_TCP && nh != VGW_PROTO_UDP && nh != 58)
        abort();
    if (vgw_l4_csum_v6(l3 + 8, l3 + 24, (uint8_t)nh, l3 + pos, tot - pos) != 0)
        abort();
}

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
    if (et == 0x86dd) {
        check_forwarded6(p, l3, off);
        return;
    }
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

    /* The same over IPv6. */
    memset(buf, 0, BUFSZ);
    l3 = d + 14, l4 = l3 + 40;
    d[12] = 0x86, d[13] = 0xdd;
    l3[0] = 0x60;
    st16(l3 + 4, h2n16(20));
    l3[6] = 6;
    l3[7] = 64;
    memcpy(l3 + 8, client6, 16);
    memcpy(l3 + 24, vip6, 16);
    st16(l4, h2n16(40000));
    st16(l4 + 2, h2n16(80));
    st32(l4 + 4, h2n32(1000));
    l4[12] = 0x50;
    l4[13] = 0x02;
    st16(l4 + 14, 0xffff);
    st16(l4 + 16, vgw_l4_csum_v6(client6, vip6, 6, l4, 20));
    p = (vgw_pkt_t){.data = d, .len = 74, .headroom = HEADROOM};
    vgw_worker_process(w, &p, &v, 1, 1000);
    if (v.action != VGW_ACT_FORWARD)
        abort();
}

/* The peer's answer to a forwarded TCP frame: addresses and ports swapped, sequence numbers
 * following the frame's, flags/options/payload from tail. Returns the frame length or 0. */
static uint32_t reflect(const vgw_pkt_t *p, uint8_t *out, const uint8_t *tail, size_t tlen)
{
    uint32_t off = 14;
    uint16_t et = n2h16(ld16(p->data + 12));
    bool v6 = et == 0x86dd;
    if (et != 0x0800 && !v6)
        return 0;
    const uint8_t *l3 = p->data + off;
    uint32_t ihl = v6 ? 40u : (uint32_t)(l3[0] & 15) * 4;
    if (l3[v6 ? 6 : 9] != VGW_PROTO_TCP)
        return 0;
    const uint8_t *l4 = l3 + ihl;
    uint32_t tot = v6 ? 40u + n2h16(ld16(l3 + 4)) : n2h16(ld16(l3 + 2)), doff = (uint32_t)(l4[12] >> 4) * 4;
    uint8_t fl = l4[13];
    uint8_t knob = tlen > 0 ? tail[0] : 0;
    uint32_t optlen = tlen > 1 ? (uint32_t)(tail[1] % 6) * 4 : 0;
    if (optlen > tlen - 2 && tlen >= 2)
        optlen = (uint32_t)((tlen - 2) / 4 * 4);
    if (tlen < 2)
        optlen = 0;
    const uint8_t *opt = tlen > 2 ? tail + 2 : NULL;
    uint32_t paylen = tlen > 2 + optlen ? (uint32_t)(tlen - 2 - optlen) : 0;
    if (paylen > 200)
        paylen = 200;
    uint8_t nfl;
    if ((fl & 0x12) == 0x02)
        nfl = 0x12; /* SYN -> SYN-ACK */
    else if (fl & 0x02)
        nfl = 0x10 | (knob & 0x09); /* SYN-ACK -> ACK, maybe PSH/FIN */
    else
        nfl = 0x10 | (knob & 0x0d);
    if ((nfl & 0x04) || (nfl & 0x02))
        paylen = 0;
    memset(out, 0, 14);
    uint32_t ohl = v6 ? 40u : 20u;
    uint8_t *o3 = out + 14, *o4 = o3 + ohl;
    uint32_t seglen = tot - ihl - doff + ((fl & 0x03) ? 1u : 0u);
    if (v6) {
        out[12] = 0x86, out[13] = 0xdd;
        memset(o3, 0, 40);
        o3[0] = 0x60;
        st16(o3 + 4, h2n16((uint16_t)(20 + optlen + paylen)));
        o3[6] = 6;
        o3[7] = 64;
        memcpy(o3 + 8, l3 + 24, 16);
        memcpy(o3 + 24, l3 + 8, 16);
    } else {
        out[12] = 0x08;
        o3[0] = 0x45;
        st16(o3 + 2, h2n16((uint16_t)(40 + optlen + paylen)));
        o3[8] = 64;
        o3[9] = 6;
        st32(o3 + 12, ld32(l3 + 16));
        st32(o3 + 16, ld32(l3 + 12));
        st16(o3 + 10, (uint16_t)~vgw_csum_fold(vgw_csum_partial(o3, 20, 0)));
    }
    st16(o4, ld16(l4 + 2));
    st16(o4 + 2, ld16(l4));
    st32(o4 + 4, (fl & 0x10) ? ld32(l4 + 8) : h2n32(0x5000u + knob));
    st32(o4 + 8, h2n32(n2h32(ld32(l4 + 4)) + seglen));
    o4[12] = (uint8_t)((20 + optlen) / 4 << 4);
    o4[13] = nfl;
    st16(o4 + 14, h2n16(1000));
    if (optlen)
        memcpy(o4 + 20, opt, optlen);
    if (paylen)
        memcpy(o4 + 20 + optlen, opt + optlen, paylen);
    uint16_t csum = v6 ? vgw_l4_csum_v6(o3 + 8, o3 + 24, 6, o4, 20 + optlen + paylen)
                       : vgw_l4_csum_v4(ld32(o3 + 12), ld32(o3 + 16), 6, o4, (uint16_t)(20 + optlen + paylen));
    st16(o4 + 16, csum);
    return 14 + ohl + 20 + optlen + paylen;
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
        pkts[n] = (vgw_pkt_t){.data = bufs[n] + HEADROOM, .len = (uint16_t)len, .headroom = HEADROOM,
                              .tailroom = (uint16_t)(BUFSZ - HEADROOM - len)};
        pos += len;
        n++;
    }
    size_t tlen = size < 48 ? size : 48;
    const uint8_t *tail = data + size - tlen;
    for (int round = 0; round < 3 && n; round++) {
        vgw_worker_process(w, pkts, out, n, 2000 + (uint64_t)round);
        static uint8_t next[VGW_BURST_MAX][BUFSZ];
        uint32_t m = 0;
        for (uint32_t i = 0; i < n; i++) {
            if (out[i].action == VGW_ACT_FORWARD) {
                check_forwarded(&pkts[i], bufs[i]);
                uint32_t len = reflect(&pkts[i], next[m] + HEADROOM, tail, tlen);
                if (len)
                    pkts[m++] = (vgw_pkt_t){.data = NULL, .len = (uint16_t)len, .headroom = HEADROOM,
                                            .tailroom = (uint16_t)(BUFSZ - HEADROOM - len)};
            } else if (out[i].action == VGW_ACT_DROP && out[i].arg >= VGW_DROP_MAX) {
                abort();
            }
        }
        for (uint32_t i = 0; i < m; i++) {
            memset(bufs[i], 0xa5, HEADROOM);
            memcpy(bufs[i] + HEADROOM, next[i] + HEADROOM, pkts[i].len);
            memset(bufs[i] + HEADROOM + pkts[i].len, 0xa5, BUFSZ - HEADROOM - pkts[i].len);
            pkts[i].data = bufs[i] + HEADROOM;
        }
        n = m;
    }
    if (getenv("VGW_FUZZ_STATS")) { /* which proxy paths this input reached (corpus checks) */
        vgw_counters_t c;
        vgw_worker_counters(w, &c);
        fprintf(stderr, "cookie_sent=%llu cookie_ok=%llu cookie_bad=%llu held=%llu fwd_in=%llu fwd_out=%llu\n",
                (unsigned long long)c.v[VGW_CNT_SYN_COOKIE_SENT], (unsigned long long)c.v[VGW_CNT_SYN_COOKIE_OK],
                (unsigned long long)c.v[VGW_CNT_SYN_COOKIE_BAD], (unsigned long long)c.v[VGW_CNT_SYNPROXY_HELD],
                (unsigned long long)c.v[VGW_CNT_FWD_IN], (unsigned long long)c.v[VGW_CNT_FWD_OUT]);
    }
    vgw_worker_housekeep(w, 400000, 64);
    vgw_worker_destroy(w);
    return 0;
}
