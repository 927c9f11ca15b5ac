/* SPDX-License-Identifier: Apache-2.0
 * The SYN proxy (docs/forwarder.md, "Under attack").
 *
 * A SYN to a proxied service is answered here with a SYN-ACK whose sequence number is a cookie;
 * nothing is stored. The client's ACK proves it owns its address: the cookie is checked, the
 * connection is created, and the client's SYN is rebuilt (from what the cookie encodes) and sent
 * to the chosen server through the normal path, TOA included. The server's SYN-ACK completes the
 * second handshake; from then on every segment has its sequence numbers, SACK blocks, timestamps
 * and, where the two legs scale windows differently, its window translated.
 *
 * The cookie (32 bits): period (2) | MSS index (2) | window scale (4, 15 = none) | SACK (1) |
 * MAC (23). The MAC is SipHash-2-4 under the node's key over the client's tuple, its ISN, the
 * period number (16 bits) and the options, so none of them can be altered. Linux puts window scale
 * and SACK in the timestamp's low bits and loses them for clients without timestamps; keeping
 * them in the cookie serves those clients (e.g. Windows) too, for one MAC bit. A cookie is valid
 * in its period (65.5 s) and the next, like Linux's two minutes. MSS uses Linux's IPv4 table.
 *
 * While the server handshakes, one client segment (typically the request that follows the ACK)
 * is held and sent as the handshake's final ACK; our SYN-ACK offers a window of one segment so a
 * client does not send more before the server's window arrives. */
#include "fastpath.h"

#define OUR_WSCALE 7u
#define COOKIE_PERIOD_SHIFT 16u
#define MAC_BITS 23u
#define WS_NONE 0xfu

static const uint16_t msstab[4] = {536, 1300, 1440, 1460};

/* ---- SipHash-2-4 (Aumasson & Bernstein, "SipHash: a fast short-input PRF", 2012) -------------------- */

static inline uint64_t rotl64(uint64_t x, unsigned b)
{
    return (x << b) | (x >> (64 - b));
}

#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1, v1 = rotl64(v1, 13), v1 ^= v0, v0 = rotl64(v0, 32);                              \
        v2 += v3, v3 = rotl64(v3, 16), v3 ^= v2;                                                   \
        v0 += v3, v3 = rotl64(v3, 21), v3 ^= v0;                                                   \
        v2 += v1, v1 = rotl64(v1, 17), v1 ^= v2, v2 = rotl64(v2, 32);                              \
    } while (0)

static inline uint64_t le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

uint64_t vgw_siphash24(uint64_t k0, uint64_t k1, const void *data, size_t len)
{
    uint64_t v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
    uint64_t v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
    const uint8_t *p = data;
    size_t left = len;
    for (; left >= 8; p += 8, left -= 8) {
        uint64_t m = le64(p); /* little-endian words, as the reference */
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)len << 56;
    for (unsigned i = 0; i < left; i++)
        b |= (uint64_t)p[i] << (8 * i);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

static inline uint32_t cookie_period(const vgw_dp_t *dp, uint32_t now)
{
    return (now + (uint32_t)dp->cookie_clock_offset_ms) >> COOKIE_PERIOD_SHIFT;
}

static uint32_t cookie_mac(const vgw_dp_t *dp, const vgw_key4_t *k, uint32_t cisn, uint32_t period, uint32_t meta)
{
    /* 20 bytes: two SipHash blocks and a final one that carries the last four (a period is 16
     * bits of the 32-bit millisecond clock, the options 9). */
    uint8_t m[20];
    st32(m, k->src);
    st32(m + 4, k->dst);
    st16(m + 8, k->sport);
    st16(m + 10, k->dport);
    st32(m + 12, cisn);
    st32(m + 16, (period & 0xffffu) << 9 | meta);
    return (uint32_t)vgw_siphash24(dp->cookie_k0, dp->cookie_k1, m, sizeof m) & ((1u << MAC_BITS) - 1);
}

/* ---- TCP options -------------------------------------------------------------------------------- */

typedef struct synopts {
    uint16_t mss;
    uint8_t ws; /* WS_NONE = absent */
    uint8_t sack, ts;
    uint32_t tsval, tsecr; /* host order */
} synopts_t;

static void parse_opts(const uint8_t *l4, synopts_t *o)
{
    memset(o, 0, sizeof *o);
    o->ws = WS_NONE;
    uint32_t pos = 20, i;
    while ((i = tcpopt_next(l4, &pos)) != 0) {
        uint8_t kind = l4[i], len = l4[i + 1];
        if (kind == TCPOPT_MSS && len == 4)
            o->mss = n2h16(ld16(l4 + i + 2));
        else if (kind == TCPOPT_WSCALE && len == 3)
            o->ws = l4[i + 2] > 14 ? 14 : l4[i + 2];
        else if (kind == TCPOPT_SACK_PERM && len == 2)
            o->sack = 1;
        else if (kind == TCPOPT_TS && len == 10) {
            o->ts = 1;
            o->tsval = n2h32(ld32(l4 + i + 2));
            o->tsecr = n2h32(ld32(l4 + i + 6));
        }
    }
}

/* SYN options in Linux's order: MSS, SACK-permitted + timestamps, window scale. */
static uint32_t put_opts(uint8_t *o, uint16_t mss, uint8_t sack, uint8_t ts, uint32_t tsval, uint32_t tsecr,
                         uint8_t ws)
{
    uint32_t n = 0;
    if (mss) {
        o[n++] = TCPOPT_MSS, o[n++] = 4;
        st16(o + n, h2n16(mss)), n += 2;
    }
    if (ts) {
        if (sack)
            o[n++] = TCPOPT_SACK_PERM, o[n++] = 2;
        else
            o[n++] = TCPOPT_NOP, o[n++] = TCPOPT_NOP;
        o[n++] = TCPOPT_TS, o[n++] = 10;
        st32(o + n, h2n32(tsval)), n += 4;
        st32(o + n, h2n32(tsecr)), n += 4;
    } else if (sack) {
        o[n++] = TCPOPT_NOP, o[n++] = TCPOPT_NOP, o[n++] = TCPOPT_SACK_PERM, o[n++] = 2;
    }
    if (ws != WS_NONE)
        o[n++] = TCPOPT_NOP, o[n++] = TCPOPT_WSCALE, o[n++] = 3, o[n++] = ws;
    return n;
}

/* ---- client SYN -> cookie SYN-ACK ------------------------------------------------------------------ */

void vgw_sp_syn(vgw_worker_t *w, const vgw_svc_t *svc, vgw_pkt_t *p, pm_t *m, uint32_t now, vgw_verdict_t *v)
{
    synopts_t o;
    parse_opts(m->l4, &o);
    uint32_t mi = 0;
    for (uint32_t i = 1; i < 4; i++)
        if (o.mss >= msstab[i])
            mi = i;
    uint32_t cisn = n2h32(ld32(m->l4 + 4));
    uint32_t period = cookie_period(w->dp, now);
    uint32_t meta = (period & 3u) << 7 | mi << 5 | (uint32_t)o.ws << 1 | o.sack;
    uint32_t cookie = meta << MAC_BITS | cookie_mac(w->dp, &m->key, cisn, period, meta);

    uint32_t our_mss = w->mtu - 40u;
    if (our_mss > 1460u)
        our_mss = 1460u;
    if (svc->flags & VGW_SVC_F_TOA)
        our_mss -= VGW_TOA_LEN;
    uint8_t opt[24];
    uint32_t n = put_opts(opt, (uint16_t)our_mss, o.sack, o.ts, now, o.tsval, o.ws == WS_NONE ? WS_NONE : OUR_WSCALE);
    const vgw_key4_t k = m->key;
    if (vgw_build_tcp(p, m, k.dst, k.src, k.dport, k.sport, cookie, cisn + 1, TCP_SYN | TCP_ACK, (uint16_t)our_mss,
                      opt, n))
        return set_drop(w, v, VGW_DROP_SYNPROXY_NO_ROOM);
    w->cnt[VGW_CNT_SYN_COOKIE_SENT]++;
    svc_cnt(w, svc->uid)[VGW_SCNT_SYN_COOKIE_SENT]++;
    set_forward(v, VGW_PORT_EXT, k.src);
}

/* ---- client ACK -> connection + SYN to the server ------------------------------------------------- */

static void hold(vgw_worker_t *w, vgw_conn_t *c, const pm_t *m)
{
    vgw_protect_t *pr = &w->pr;
    if (c->held || !pr->held_top || m->totlen > sizeof pr->held[0].pkt)
        return;
    uint32_t slot = pr->held_free[--pr->held_top];
    pr->held[slot].len = m->totlen;
    memcpy(pr->held[slot].pkt, m->l3, m->totlen);
    c->held = (uint8_t)(slot + 1);
    w->cnt[VGW_CNT_SYNPROXY_HELD]++;
}

void vgw_sp_release(vgw_worker_t *w, vgw_conn_t *c)
{
    if (c->held) {
        w->pr.held_free[w->pr.held_top++] = (uint8_t)(c->held - 1);
        c->held = 0;
    }
}

static inline bool has_payload(const pm_t *m)
{
    return m->l4len > (uint32_t)(m->l4[12] >> 4) * 4 || (m->tcpflags & TCP_FIN);
}

int vgw_sp_ack(vgw_worker_t *w, const vgw_state_t *st, const vgw_svc_t *svc, vgw_pkt_t *p, pm_t *m, uint32_t now,
               vgw_verdict_t *v)
{
    const uint8_t *l4 = m->l4;
    if ((m->tcpflags & (TCP_ACK | TCP_SYN | TCP_RST)) != TCP_ACK)
        return 0;
    uint32_t cookie = n2h32(ld32(l4 + 8)) - 1, cisn = n2h32(ld32(l4 + 4)) - 1;
    uint32_t meta = cookie >> MAC_BITS;
    uint32_t cur = cookie_period(w->dp, now);
    uint32_t age = (cur - (meta >> 7)) & 3u;
    if (age > 1 || (cookie & ((1u << MAC_BITS) - 1)) != cookie_mac(w->dp, &m->key, cisn, cur - age, meta)) {
        w->cnt[VGW_CNT_SYN_COOKIE_BAD]++;
        svc_cnt(w, svc->uid)[VGW_SCNT_SYN_COOKIE_BAD]++;
        return 0;
    }
    unsigned lim = vgw_limit_check(w, svc, vgw_src_net4(m->key.src), now);
    if (lim)
        return set_drop(w, v, lim), 1;
    uint32_t idx = vgw_conn_create(w, svc, m, now, v, VGW_CF_PROXY | VGW_CF_SP_WAIT);
    if (idx == UINT32_MAX)
        return 1;
    w->cnt[VGW_CNT_SYN_COOKIE_OK]++;
    svc_cnt(w, svc->uid)[VGW_SCNT_SYN_COOKIE_OK]++;

    vgw_conn_t *c = &w->ct.conns[idx];
    synopts_t o;
    parse_opts(l4, &o);
    uint8_t ws = (uint8_t)(meta >> 1 & 0xfu), sack = meta & 1u;
    c->sp_seq = cookie;
    c->sp_ts = o.tsecr;
    c->sp_win = n2h16(ld16(l4 + 14));
    c->sp_ws[0] = ws; /* the client's scale until the server's is known */
    if (o.ts)
        c->flags |= VGW_CF_SP_TS;
    if (has_payload(m))
        hold(w, c, m);

    uint32_t win = (uint32_t)c->sp_win << (ws == WS_NONE ? 0 : ws);
    uint8_t opt[24];
    uint32_t n = put_opts(opt, msstab[meta >> 5 & 3u], sack, o.ts, o.tsval, 0, ws);
    const vgw_key4_t k = m->key;
    if (vgw_build_tcp(p, m, k.src, k.dst, k.sport, k.dport, cisn, 0, TCP_SYN, (uint16_t)(win > 65535 ? 65535 : win),
                      opt, n)) {
        vgw_conn_release(w, idx);
        return set_drop(w, v, VGW_DROP_SYNPROXY_NO_ROOM), 1;
    }
    vgw_conn_forward(w, st, p, m, idx, 0, now, v);
    if (v->action == VGW_ACT_FORWARD) {
        conn_set_state(w, c, VGW_TCP_SYN_SENT);
        c->expire = now + svc->timeout_ms[VGW_TCP_SYN_SENT];
    }
    return 1;
}

/* ---- translation ------------------------------------------------------------------------------------ */

/* Checksum delta of a 32-bit field at offset off of the segment (odd offsets pair bytes the
 * other way round: the one's-complement sum of a byte-rotated field is the rotated sum). */
static inline uint32_t field_delta32(uint32_t off, uint32_t old, uint32_t new_)
{
    uint16_t d = vgw_csum_fold(csum_delta32(old, new_));
    return (off & 1) ? bswap16(d) : d;
}

static inline uint32_t add32(uint8_t *at, uint32_t off, uint32_t delta)
{
    uint32_t old = ld32(at), nw = h2n32(n2h32(old) + delta);
    st32(at, nw);
    return field_delta32(off, old, nw);
}

uint32_t vgw_sp_xlate(vgw_conn_t *c, uint32_t dir, pm_t *m)
{
    uint8_t *l4 = m->l4;
    uint8_t fl = m->tcpflags;
    uint32_t d = 0;
    if (dir == 0) {
        if (fl & TCP_ACK)
            d += add32(l4 + 8, 8, c->sp_seq);
    } else {
        d += add32(l4 + 4, 4, (uint32_t)0 - c->sp_seq);
    }
    uint32_t pos = 20, i;
    while ((i = tcpopt_next(l4, &pos)) != 0) {
        uint8_t kind = l4[i], len = l4[i + 1];
        if (kind == TCPOPT_TS && len == 10 && (c->flags & VGW_CF_SP_TS)) {
            if (dir == 0)
                d += add32(l4 + i + 6, i + 6, (uint32_t)0 - c->sp_ts);
            else
                d += add32(l4 + i + 2, i + 2, c->sp_ts);
        } else if (kind == TCPOPT_SACK && dir == 0 && len >= 10 && (len - 2) % 8 == 0) {
            for (uint32_t e = i + 2; e < i + len; e += 4)
                d += add32(l4 + e, e, c->sp_seq);
        }
    }
    if ((c->flags & VGW_CF_SP_WIN) && c->sp_ws[dir]) {
        uint16_t old = ld16(l4 + 14);
        uint32_t win = ((uint32_t)n2h16(old) << (c->sp_ws[dir] >> 4)) >> (c->sp_ws[dir] & 0xfu);
        if (win > 65535)
            win = 65535;
        if (win == 0 && old != 0)
            win = 1; /* never turn an open window into a zero window */
        uint16_t nw = h2n16((uint16_t)win);
        st16(l4 + 14, nw);
        d += csum_delta16(old, nw);
    }
    return d;
}

/* ---- segments of a proxied connection ----------------------------------------------------------------- */

/* Replaces p with the held client segment; 0, or -1 if it does not fit. */
static int replay_held(vgw_worker_t *w, vgw_conn_t *c, vgw_pkt_t *p, pm_t *m)
{
    const vgw_held_t *h = &w->pr.held[c->held - 1];
    if (pkt_make_room(p, m, m->l2len + h->len))
        return -1;
    uint8_t *l3 = p->data + m->l2len;
    memcpy(l3, h->pkt, h->len);
    m->l3 = l3;
    m->ihl = (uint16_t)((l3[0] & 0x0f) * 4);
    m->l4 = l3 + m->ihl;
    m->totlen = h->len;
    m->l4len = (uint16_t)(h->len - m->ihl);
    m->tcpflags = m->l4[13];
    return 0;
}

/* Our ACK for the server's SYN-ACK, written as the client would have sent it (client space), so
 * the normal path translates it. */
static int build_client_ack(vgw_conn_t *c, vgw_pkt_t *p, pm_t *m, uint32_t cseq, uint32_t our_ack, uint32_t tsval,
                            uint32_t tsecr)
{
    uint8_t opt[12];
    uint32_t n = 0;
    if (c->flags & VGW_CF_SP_TS) {
        opt[0] = TCPOPT_NOP, opt[1] = TCPOPT_NOP, opt[2] = TCPOPT_TS, opt[3] = 10;
        st32(opt + 4, h2n32(tsval));
        st32(opt + 8, h2n32(tsecr));
        n = 12;
    }
    return vgw_build_tcp(p, m, c->cip, c->vip, c->cport, c->vport, cseq, our_ack, TCP_ACK, c->sp_win, opt, n);
}

static int server_synack(vgw_worker_t *w, const vgw_state_t *st, vgw_pkt_t *p, pm_t *m, uint32_t idx, uint32_t now,
                         vgw_verdict_t *v)
{
    vgw_conn_t *c = &w->ct.conns[idx];
    synopts_t o;
    parse_opts(m->l4, &o);
    uint32_t rs_isn = n2h32(ld32(m->l4 + 4)), cseq = n2h32(ld32(m->l4 + 8));
    uint32_t our_isn = c->sp_seq, our_ts = c->sp_ts;
    c->sp_seq = rs_isn - our_isn;
    c->rs_isn1 = h2n32(rs_isn + 1);
    c->flags |= VGW_CF_RS_ISN;
    if ((c->flags & VGW_CF_SP_TS) && o.ts)
        c->sp_ts = our_ts - o.tsval;
    else
        c->flags &= (uint8_t)~VGW_CF_SP_TS;
    uint8_t cws = c->sp_ws[0] & 0xfu;
    bool client_scales = cws != WS_NONE, server_scales = client_scales && o.ws != WS_NONE;
    uint8_t shl1 = server_scales ? o.ws : 0, shr1 = client_scales ? OUR_WSCALE : 0;
    uint8_t shl0 = client_scales && !server_scales ? cws : 0;
    c->sp_ws[1] = (uint8_t)(shl1 << 4 | shr1);
    c->sp_ws[0] = (uint8_t)(shl0 << 4);
    if (shl1 != shr1 || shl0)
        c->flags |= VGW_CF_SP_WIN;
    c->flags &= (uint8_t)~VGW_CF_SP_WAIT;
    conn_set_state(w, c, VGW_TCP_ESTABLISHED);

    int rc = -1;
    if (c->held) {
        rc = replay_held(w, c, p, m);
        vgw_sp_release(w, c);
    }
    if (rc && build_client_ack(c, p, m, cseq, our_isn + 1, o.tsecr, our_ts))
        return set_drop(w, v, VGW_DROP_SYNPROXY_NO_ROOM), 1;
    vgw_conn_forward(w, st, p, m, idx, 0, now, v);
    return 1;
}

int vgw_sp_segment(vgw_worker_t *w, const vgw_state_t *st, vgw_pkt_t *p, pm_t *m, uint32_t idx, uint32_t dir,
                   uint32_t now, vgw_verdict_t *v, uint32_t *csum_delta)
{
    vgw_conn_t *c = &w->ct.conns[idx];
    uint8_t fl = m->tcpflags;
    if (c->flags & VGW_CF_SP_WAIT) {
        if (dir == 0) {
            if ((fl & (TCP_SYN | TCP_ACK)) == TCP_SYN)
                return 0; /* the SYN we rebuilt (or the client's retransmission): to the server */
            if (fl & TCP_RST) {
                vgw_conn_release(w, idx);
            } else if (has_payload(m)) {
                hold(w, c, m);
            }
            return set_drop(w, v, VGW_DROP_SYNPROXY_WAIT), 1;
        }
        if ((fl & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK))
            return server_synack(w, st, p, m, idx, now, v);
        if (fl & TCP_RST) {
            /* The server refused: reset the client, which believes it is connected. */
            uint32_t our_isn = c->sp_seq;
            vgw_sp_release(w, c);
            c->flags &= (uint8_t)~VGW_CF_SP_WAIT;
            conn_set_state(w, c, VGW_TCP_CLOSE);
            const vgw_svc_t *s = st->svc_by_uid[c->svc_uid];
            c->expire = now + (s ? s->timeout_ms[VGW_TCP_CLOSE] : st->default_timeout_ms[VGW_TCP_CLOSE]);
            if (vgw_build_tcp(p, m, c->vip, c->cip, c->vport, c->cport, our_isn + 1, 0, TCP_RST, 0, NULL, 0))
                return set_drop(w, v, VGW_DROP_SYNPROXY_NO_ROOM), 1;
            w->cnt[VGW_CNT_SYNPROXY_RS_RST]++;
            set_forward(v, VGW_PORT_EXT, c->cip);
            return 1;
        }
        return set_drop(w, v, VGW_DROP_SYNPROXY_WAIT), 1;
    }
    if (dir == 0 && (fl & TCP_SYN))
        return set_drop(w, v, VGW_DROP_SYNPROXY_SYN_ON_CONN), 1;
    if (dir == 1 && (fl & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK)) {
        /* The server repeats its SYN-ACK: our ACK was lost. Answer it again. */
        synopts_t o;
        parse_opts(m->l4, &o);
        uint32_t cseq = n2h32(ld32(m->l4 + 8)), rs_isn = n2h32(ld32(m->l4 + 4));
        if (build_client_ack(c, p, m, cseq, rs_isn + 1 - c->sp_seq, o.tsecr, o.tsval + c->sp_ts))
            return set_drop(w, v, VGW_DROP_SYNPROXY_NO_ROOM), 1;
        vgw_conn_forward(w, st, p, m, idx, 0, now, v);
        return 1;
    }
    *csum_delta = vgw_sp_xlate(c, dir, m);
    return 0;
}
