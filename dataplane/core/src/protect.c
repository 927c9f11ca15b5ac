/* SPDX-License-Identifier: Apache-2.0
 * Flood protection outside the SYN proxy itself: rate caps (token buckets, per worker, no
 * locks), the auto mode of the proxy, half-open eviction under table pressure, answers to
 * segments that have no connection, per-service and per-LIP counters, and the packet builder
 * the proxy and the RST path share. docs/forwarder.md, "Under attack", explains the policy. */
#include <stdlib.h>
#include <sys/random.h>

#include "fastpath.h"

/* Auto mode stays engaged this long after the last trigger, so a pulsing flood does not flip it. */
#define AUTO_HOLD_MS 10000u
#define SYN_WINDOW_MS 100u
/* Table pressure: above 3/4 full, half-open entries get a short timeout (engine.c); when full, a
 * new connection evicts the oldest half-open one (vgw_evict_halfopen). */
/* RSTs for segments without a connection, per worker. */
#define RST_RATE 1000u

static const char *const svc_counter_names[] = {
#define VGW_X_(e, s) s,
    VGW_SVC_COUNTERS(VGW_X_)
#undef VGW_X_
};

const char *vgw_svc_counter_name(unsigned idx)
{
    return idx < VGW_SCNT_MAX ? svc_counter_names[idx] : NULL;
}

int vgw_protect_init(vgw_worker_t *w, uint64_t seed)
{
    vgw_protect_t *pr = &w->pr;
    memset(pr, 0, sizeof *pr);
    pr->svc = calloc(VGW_MAX_SERVICES, sizeof *pr->svc);
    pr->svc_cnt = calloc((size_t)VGW_MAX_SERVICES * VGW_SCNT_MAX, sizeof(uint64_t));
    pr->src24 = calloc(VGW_SRC24_SLOTS, sizeof *pr->src24);
    pr->held = malloc((size_t)VGW_HELD_SLOTS * sizeof *pr->held);
    pr->lip_exh = calloc(VGW_LIP_TRACK_MAX, sizeof *pr->lip_exh);
    if (!pr->svc || !pr->svc_cnt || !pr->src24 || !pr->held || !pr->lip_exh) {
        vgw_protect_fini(w);
        return -1;
    }
    pr->src24_seed = vgw_mix64(seed ^ 0x3c6ef372fe94f82bULL);
    for (uint32_t i = 0; i < VGW_HELD_SLOTS; i++)
        pr->held_free[i] = (uint8_t)(VGW_HELD_SLOTS - 1 - i);
    pr->held_top = VGW_HELD_SLOTS;
    return 0;
}

void vgw_protect_fini(vgw_worker_t *w)
{
    vgw_protect_t *pr = &w->pr;
    free(pr->svc), free(pr->svc_cnt), free(pr->src24), free(pr->held), free(pr->lip_exh);
    memset(pr, 0, sizeof *pr);
}

void vgw_protect_burst(vgw_worker_t *w, uint32_t now)
{
    w->pr.last_now = now;
    w->pr.pressure = w->ct.count > w->ct.capacity - w->ct.capacity / 4;
}

/* ---- rates ------------------------------------------------------------------------------------ */

bool vgw_tb_take(vgw_tb_t *tb, uint32_t rate, uint32_t now)
{
    uint64_t cap = (uint64_t)rate * 1000u;
    if (cap < 1000)
        cap = 1000;
    if (cap > UINT32_MAX)
        cap = UINT32_MAX;
    uint32_t el = now - tb->last_ms;
    tb->last_ms = now;
    uint64_t t = tb->tokens + (uint64_t)el * rate;
    if (t > cap || el > 1000u)
        t = cap;
    if (t < 1000) {
        tb->tokens = (uint32_t)t;
        return false;
    }
    tb->tokens = (uint32_t)(t - 1000);
    return true;
}

uint32_t vgw_src_net4(uint32_t saddr)
{
    return (saddr & h2n32(0xffffff00u)) | h2n32(1u);
}

uint32_t vgw_src_net6(const uint8_t *saddr)
{
    /* A client /64 as 32 bits, for slots that compare 32 bits: its last byte is even and non-zero
     * where an IPv4 net's is 1, so the two never meet (and never look like an empty slot). */
    uint64_t net;
    memcpy(&net, saddr, 8);
    return ((uint32_t)vgw_mix64(net) & ~h2n32(1u)) | h2n32(2u);
}

static vgw_tb_t *src24_bucket(vgw_worker_t *w, uint16_t svc_uid, uint32_t net, uint32_t now, uint32_t rate)
{
    uint64_t h = vgw_mix64(((uint64_t)net << 16 | svc_uid) ^ w->pr.src24_seed);
    vgw_src24_slot_t *sl = &w->pr.src24[h & (VGW_SRC24_SLOTS - 1)];
    if (sl->net != net || sl->svc_uid != svc_uid) {
        /* Direct mapped: a colliding /24 takes the slot over with a full bucket. The seed is
         * secret, so a client cannot choose whose bucket it resets. */
        sl->net = net;
        sl->svc_uid = svc_uid;
        sl->tb.last_ms = now;
        sl->tb.tokens = rate > UINT32_MAX / 1000u ? UINT32_MAX : rate * 1000u;
    }
    return &sl->tb;
}

unsigned vgw_limit_check(vgw_worker_t *w, const vgw_svc_t *svc, uint32_t src_net, uint32_t now)
{
    if (VGW_LIKELY(!svc->conn_rate_w && !svc->conn_rate_src24_w))
        return 0;
    uint64_t *sc = svc_cnt(w, svc->uid);
    if (svc->conn_rate_src24_w &&
        !vgw_tb_take(src24_bucket(w, svc->uid, src_net, now, svc->conn_rate_src24_w), svc->conn_rate_src24_w, now)) {
        sc[VGW_SCNT_LIMIT_SRC24]++;
        return VGW_DROP_LIMIT_SRC24;
    }
    if (svc->conn_rate_w && !vgw_tb_take(&w->pr.svc[svc->uid].conn_rate, svc->conn_rate_w, now)) {
        sc[VGW_SCNT_LIMIT_CPS]++;
        return VGW_DROP_LIMIT_CPS;
    }
    return 0;
}

bool vgw_synproxy_engaged(vgw_worker_t *w, const vgw_svc_t *svc, uint32_t now)
{
    if (svc->synproxy == VGW_SYNPROXY_ON)
        return true;
    if (svc->synproxy != VGW_SYNPROXY_AUTO)
        return false;
    vgw_svc_rt_t *rt = &w->pr.svc[svc->uid];
    if (now - rt->syn_win_start >= SYN_WINDOW_MS) {
        rt->syn_win_start = now;
        rt->syn_win_count = 0;
    }
    rt->syn_win_count++;
    /* the rate threshold per 100 ms window, rounded up so a small threshold still triggers */
    uint32_t per_window = (svc->auto_syn_rate_w + 9) / 10;
    if (w->pr.halfopen >= svc->auto_halfopen_w || rt->syn_win_count > per_window) {
        rt->auto_until = now + AUTO_HOLD_MS;
        rt->auto_on = 1;
        return true;
    }
    return rt->auto_on && !vgw_expired(rt->auto_until, now);
}

/* ---- table pressure ------------------------------------------------------------------------- */

void vgw_ring_push(vgw_worker_t *w, uint32_t idx)
{
    vgw_ctab_t *t = &w->ct;
    if (t->ring_len == t->capacity) { /* full of mostly stale entries: forget the oldest */
        t->ring_head = t->ring_head + 1 == t->capacity ? 0 : t->ring_head + 1;
        t->ring_len--;
    }
    uint32_t tail = t->ring_head + t->ring_len;
    if (tail >= t->capacity)
        tail -= t->capacity;
    t->ring[tail] = (uint64_t)t->conns[idx].gen << 32 | idx;
    t->ring_len++;
}

bool vgw_evict_halfopen(vgw_worker_t *w)
{
    vgw_ctab_t *t = &w->ct;
    while (t->ring_len) {
        uint64_t e = t->ring[t->ring_head];
        t->ring_head = t->ring_head + 1 == t->capacity ? 0 : t->ring_head + 1;
        t->ring_len--;
        uint32_t idx = (uint32_t)e;
        vgw_conn_t *c = &t->conns[idx];
        if ((c->flags & VGW_CF_USED) && c->gen == (uint8_t)(e >> 32) && c->proto == VGW_PROTO_TCP &&
            !(c->flags & VGW_CF_PROXY) && tcp_halfopen_state(c->state)) {
            svc_cnt(w, c->svc_uid)[VGW_SCNT_CONN_EVICTED]++;
            vgw_conn_release(w, idx);
            w->cnt[VGW_CNT_CONN_EVICTED]++;
            return true;
        }
    }
    return false;
}

/* ---- counters ---------------------------------------------------------------------------------- */

void vgw_lip_exhausted(vgw_worker_t *w, uint32_t lip)
{
    uint32_t i = (uint32_t)vgw_mix64(lip) & (VGW_LIP_TRACK_MAX - 1);
    for (uint32_t n = 0; n < VGW_LIP_TRACK_MAX; n++, i = (i + 1) & (VGW_LIP_TRACK_MAX - 1)) {
        vgw_lip_count_t *e = &w->pr.lip_exh[i];
        if (e->lip == lip) {
            e->exhausted++;
            return;
        }
        if (e->lip == 0) {
            e->lip = lip;
            e->exhausted = 1;
            return;
        }
    }
}

uint32_t vgw_worker_lip_exhaustion(const vgw_worker_t *w, vgw_lip_count_t *out, uint32_t max)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < VGW_LIP_TRACK_MAX; i++) {
        const vgw_lip_count_t *e = &w->pr.lip_exh[i];
        if (!e->lip)
            continue;
        if (n < max)
            out[n] = *e;
        n++;
    }
    return n;
}

uint32_t vgw_dp_svc_uid(const vgw_dp_t *dp, uint8_t proto, uint32_t vip, uint16_t port_host_order)
{
    const vgw_state_t *st = atomic_load(&dp->state);
    if (!st)
        return UINT32_MAX;
    const vgw_svc_t *s = vgw_state_find_svc(st, vip, h2n16(port_host_order), proto);
    return s ? s->uid : UINT32_MAX;
}

uint32_t vgw_dp_svc_uid6(const vgw_dp_t *dp, uint8_t proto, const uint8_t *vip, uint16_t port_host_order)
{
    const vgw_state_t *st = atomic_load(&dp->state);
    if (!st)
        return UINT32_MAX;
    const vgw_svc_t *s = vgw_state_find_svc6(st, vip, h2n16(port_host_order), proto);
    return s ? s->uid : UINT32_MAX;
}

void vgw_worker_svc_counters(const vgw_worker_t *w, uint32_t svc_uid, vgw_svc_counters_t *out)
{
    memset(out, 0, sizeof *out);
    if (svc_uid >= VGW_MAX_SERVICES)
        return;
    memcpy(out->v, &w->pr.svc_cnt[(size_t)svc_uid * VGW_SCNT_MAX], sizeof out->v);
    const vgw_state_t *st = atomic_load(&w->dp->state);
    const vgw_svc_t *s = st ? st->svc_by_uid[svc_uid] : NULL;
    const vgw_svc_rt_t *rt = &w->pr.svc[svc_uid];
    out->v[VGW_SCNT_SYNPROXY_ACTIVE] =
        s && (s->synproxy == VGW_SYNPROXY_ON ||
              (s->synproxy == VGW_SYNPROXY_AUTO && rt->auto_on && !vgw_expired(rt->auto_until, w->pr.last_now)));
}

/* ---- packets ------------------------------------------------------------------------------------ */

int vgw_build_tcp(vgw_pkt_t *p, pm_t *m, uint32_t saddr, uint32_t daddr, uint16_t sport, uint16_t dport,
                  uint32_t seq, uint32_t ack, uint8_t flags, uint16_t win, const uint8_t *opt, uint32_t optlen)
{
    uint32_t l4len = 20 + optlen, totlen = 20 + l4len;
    if (pkt_make_room(p, m, m->l2len + totlen))
        return -1;
    uint8_t *l3 = p->data + m->l2len, *l4 = l3 + 20;
    if (optlen)
        memmove(l4 + 20, opt, optlen);
    l3[0] = 0x45;
    l3[1] = 0;
    st16(l3 + 2, h2n16((uint16_t)totlen));
    st16(l3 + 4, 0);
    st16(l3 + 6, h2n16(0x4000)); /* DF */
    l3[8] = 64;
    l3[9] = VGW_PROTO_TCP;
    st16(l3 + 10, 0);
    st32(l3 + 12, saddr);
    st32(l3 + 16, daddr);
    st16(l3 + 10, (uint16_t)~vgw_csum_fold(vgw_csum_partial(l3, 20, 0)));
    st16(l4, sport);
    st16(l4 + 2, dport);
    st32(l4 + 4, h2n32(seq));
    st32(l4 + 8, h2n32(ack));
    l4[12] = (uint8_t)((l4len / 4) << 4);
    l4[13] = flags;
    st16(l4 + 14, h2n16(win));
    st16(l4 + 16, 0);
    st16(l4 + 18, 0);
    st16(l4 + 16, vgw_l4_csum_v4(saddr, daddr, VGW_PROTO_TCP, l4, (uint16_t)l4len));
    m->l3 = l3, m->l4 = l4;
    m->ihl = 20, m->totlen = (uint16_t)totlen, m->l4len = (uint16_t)l4len;
    m->tcpflags = flags;
    return 0;
}

void vgw_no_conn(vgw_worker_t *w, const vgw_svc_t *svc, vgw_pkt_t *p, pm_t *m, unsigned reason, uint32_t now,
                 vgw_verdict_t *v)
{
    uint64_t *sc = svc_cnt(w, svc->uid);
    sc[VGW_SCNT_NO_CONN]++;
    uint8_t fl = m->tcpflags;
    if (!svc->rst_unknown || (fl & TCP_RST))
        return set_drop(w, v, reason);
    if (!vgw_tb_take(&w->pr.rst, RST_RATE, now)) {
        w->cnt[VGW_CNT_RST_RATELIMITED]++;
        return set_drop(w, v, reason);
    }
    /* RFC 793 reset generation: take the peer's ACK as our sequence number, else acknowledge
     * everything the segment occupied. */
    const uint8_t *l4 = m->l4;
    uint32_t doff = (uint32_t)(l4[12] >> 4) * 4;
    uint32_t seq = 0, ack = 0;
    uint8_t rfl = TCP_RST;
    if (fl & TCP_ACK) {
        seq = n2h32(ld32(l4 + 8));
    } else {
        ack = n2h32(ld32(l4 + 4)) + (m->l4len - doff) + !!(fl & TCP_SYN) + !!(fl & TCP_FIN);
        rfl |= TCP_ACK;
    }
    uint32_t cip = m->key.src;
    if (vgw_build_tcp(p, m, m->key.dst, cip, m->key.dport, m->key.sport, seq, ack, rfl, 0, NULL, 0))
        return set_drop(w, v, reason);
    sc[VGW_SCNT_RST_SENT]++;
    w->cnt[VGW_CNT_RST_SENT]++;
    set_forward(v, VGW_PORT_EXT, cip);
}

int vgw_cookie_key_init(vgw_dp_t *dp, const vgw_dp_params_t *params)
{
    uint8_t key[16], zero[16] = {0};
    if (memcmp(params->cookie_key, zero, sizeof zero) != 0) {
        memcpy(key, params->cookie_key, sizeof key);
    } else if (getrandom(key, sizeof key, 0) != (ssize_t)sizeof key) {
        return -1;
    }
    memcpy(&dp->cookie_k0, key, 8);
    memcpy(&dp->cookie_k1, key + 8, 8);
    dp->cookie_clock_offset_ms = params->cookie_clock_offset_ms;
    return 0;
}
