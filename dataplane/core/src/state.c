/* SPDX-License-Identifier: Apache-2.0
 * Config generations: build an immutable state from a configuration, publish it with one atomic
 * pointer store, retire the old one through QSBR (or a caller hook, e.g. DPDK's rte_rcu).
 *
 * A generation is built incrementally: a service whose configuration did not change (same rev,
 * or equal content after a full apply) is shared with the previous generation, a changed one is
 * rebuilt (keeping its scheduler table when its schedulable backends did not change), and the
 * lookup tables are shared unless a service or LIP came or went. Only the registry entries of
 * changed services are touched. So a one-backend change costs one service, not the node. */
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

/* ---- shared pieces ---------------------------------------------------------------------------- */

vgw_table_t *vgw_table_new(uint32_t len)
{
    vgw_table_t *t = malloc(sizeof *t + sizeof(uint16_t) * (len ? len : 1));
    if (!t)
        return NULL;
    atomic_init(&t->refs, 1);
    t->len = len;
    return t;
}

void vgw_table_put(vgw_table_t *t)
{
    if (t && atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) == 1)
        free(t);
}

static void svc_put(vgw_svc_t *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    free(s->backends), free(s->cand), free(s->lips), free(s->lips6), free(s->be6), free(s->lip6_ids);
    vgw_table_put(s->tab);
    free(s);
}

static void lookup_put(vgw_lookup_t *lk)
{
    if (!lk || atomic_fetch_sub_explicit(&lk->refs, 1, memory_order_acq_rel) != 1)
        return;
    free(lk->svc_slots), free(lk->addr_slots), free(lk->svc6_slots), free(lk->addr6_slots);
    free(lk);
}

void vgw_state_free(vgw_state_t *st)
{
    if (!st)
        return;
    for (uint32_t i = 0; i < st->nservices; i++)
        svc_put(st->services[i]);
    lookup_put(st->lookup);
    free(st->services);
    free(st);
}

/* ---- fast-path lookups ------------------------------------------------------------------------ */

static inline uint32_t svc_slot_hash(uint32_t vip, uint16_t port, uint8_t proto)
{
    return (uint32_t)vgw_mix64(((uint64_t)vip << 24) ^ ((uint64_t)port << 8) ^ proto);
}

const vgw_svc_t *vgw_state_find_svc(const vgw_state_t *st, uint32_t vip, uint16_t port, uint8_t proto)
{
    for (uint32_t i = svc_slot_hash(vip, port, proto) & st->svc_mask;; i = (i + 1) & st->svc_mask) {
        const vgw_svc_slot_t *s = &st->svc_slots[i];
        if (!s->used)
            return NULL;
        if (s->vip == vip && s->port == port && s->proto == proto)
            return st->svc_by_uid[s->uid];
    }
}

uint32_t vgw_state_addr_kind(const vgw_state_t *st, uint32_t addr)
{
    for (uint32_t i = (uint32_t)vgw_mix64(addr) & st->addr_mask;; i = (i + 1) & st->addr_mask) {
        const vgw_addr_slot_t *s = &st->addr_slots[i];
        if (s->addr == 0)
            return 0;
        if (s->addr == addr)
            return s->kind;
    }
}

static inline uint32_t hash6(const uint8_t *a, uint64_t extra)
{
    uint64_t x[2];
    memcpy(x, a, 16);
    return (uint32_t)vgw_mix64((x[0] ^ extra) + x[1] * 0x9e3779b97f4a7c15ULL);
}

const vgw_svc_t *vgw_state_find_svc6(const vgw_state_t *st, const uint8_t *vip, uint16_t port, uint8_t proto)
{
    for (uint32_t i = hash6(vip, (uint64_t)port << 8 | proto) & st->svc6_mask;; i = (i + 1) & st->svc6_mask) {
        const vgw_svc6_slot_t *s = &st->svc6_slots[i];
        if (!s->used)
            return NULL;
        if (s->port == port && s->proto == proto && memcmp(s->vip, vip, 16) == 0)
            return st->svc_by_uid[s->uid];
    }
}

uint32_t vgw_state_addr_kind6(const vgw_state_t *st, const uint8_t *addr)
{
    for (uint32_t i = hash6(addr, 0) & st->addr6_mask;; i = (i + 1) & st->addr6_mask) {
        const vgw_addr6_slot_t *s = &st->addr6_slots[i];
        if (s->kind == 0)
            return 0;
        if (memcmp(s->addr, addr, 16) == 0)
            return s->kind;
    }
}

/* ---- registry keys ---------------------------------------------------------------------------- */

/* IPv4 keys spell their fields out and leave bit 62 clear (protocols and service uids are small);
 * IPv6 keys set it and carry a 62-bit hash of the same fields: two IPv6 services (or backends of
 * one service) share a uid only if their hashes collide, about 2^-30 for a node's worth. */
#define KEY6_BIT (1ULL << 62)
static uint64_t key6(const uint8_t *a, uint64_t fields)
{
    uint64_t x[2];
    memcpy(x, a, 16);
    uint64_t h = vgw_mix64(vgw_mix64(x[0] ^ 0x243f6a8885a308d3ULL) ^ x[1] ^ vgw_mix64(fields + 0x13198a2e03707344ULL));
    return (1ULL << 63) | KEY6_BIT | (h & (KEY6_BIT - 1));
}

static uint64_t svc_key(const vgw_cfg_service_t *s)
{
    if (s->af == VGW_AF_INET6)
        return key6(s->vip.v6, (uint64_t)s->proto << 16 | s->port);
    return (1ULL << 63) | ((uint64_t)s->proto << 48) | ((uint64_t)s->port << 32) | s->vip.v4;
}

static uint64_t svc_key_of(const vgw_svc_t *s)
{
    if (s->af == VGW_AF_INET6)
        return key6(s->vip6, (uint64_t)s->proto << 16 | n2h16(s->port));
    return (1ULL << 63) | ((uint64_t)s->proto << 48) | ((uint64_t)n2h16(s->port) << 32) | s->vip;
}

static uint64_t be_key(const vgw_svc_t *s, uint32_t j)
{
    const vgw_be_t *b = &s->backends[j];
    if (s->af == VGW_AF_INET6)
        return key6(s->be6[j], (uint64_t)s->uid << 16 | n2h16(b->port));
    return (1ULL << 63) | ((uint64_t)(s->uid & 0x7fff) << 48) | ((uint64_t)n2h16(b->port) << 32) | b->addr;
}

/* ---- building a service ---------------------------------------------------------------------- */

static void resolve_timeouts(uint32_t *out_ms, const vgw_cfg_t *cfg, const vgw_cfg_service_t *cs)
{
    for (unsigned k = 0; k < VGW_STATE_MAX; k++)
        out_ms[k] = (cs->timeout_s[k] ? cs->timeout_s[k] : cfg->timeout_s[k]) * 1000u;
}

/* Does p (built earlier) already say everything cs says? */
static bool svc_matches(const vgw_svc_t *p, const vgw_cfg_t *cfg, const vgw_cfg_service_t *cs)
{
    uint32_t t[VGW_STATE_MAX];
    resolve_timeouts(t, cfg, cs);
    if (memcmp(t, p->timeout_ms, sizeof t) != 0)
        return false;
    if (memcmp(&p->protect, &cs->protect, sizeof p->protect) != 0)
        return false;
    if (p->cfg_rev == cs->rev)
        return true;
    if (p->sched != cs->sched || p->flags != cs->flags || p->nbackends != cs->nbackends || p->nlips != cs->nlips ||
        (cs->sched == VGW_SCHED_MAGLEV && p->maglev_m != cs->maglev_m))
        return false;
    for (uint32_t j = 0; j < cs->nbackends; j++) {
        const vgw_cfg_backend_t *b = &cs->backends[j];
        const vgw_be_t *o = &p->backends[j];
        if (o->port != h2n16(b->port) || o->weight != b->weight || o->state != b->state || o->af != b->af)
            return false;
        if (p->af == VGW_AF_INET6 ? memcmp(p->be6[j], b->addr.v6, 16) != 0 : o->addr != b->addr.v4)
            return false;
    }
    for (uint32_t j = 0; j < cs->nlips; j++)
        if (p->af == VGW_AF_INET6 ? memcmp(p->lips6[j], cs->lips[j].v6, 16) != 0 : p->lips[j] != cs->lips[j].v4)
            return false;
    return true;
}

/* Can s use p's scheduler table? Yes when the table's inputs are the same: scheduler, size, and
 * the same backend at every index with the same candidacy and (for candidates) weight. */
static bool table_reusable(const vgw_svc_t *p, const vgw_svc_t *s)
{
    if (!p || !p->tab || p->sched != s->sched || p->nbackends != s->nbackends || p->ncand != s->ncand ||
        (s->sched == VGW_SCHED_MAGLEV && p->maglev_m != s->maglev_m))
        return false;
    for (uint32_t j = 0; j < s->nbackends; j++) {
        const vgw_be_t *a = &p->backends[j], *b = &s->backends[j];
        bool ca = a->state == VGW_BE_ACTIVE && a->weight > 0, cb = b->state == VGW_BE_ACTIVE && b->weight > 0;
        if (a->addr != b->addr || a->port != b->port || a->af != b->af || ca != cb || (cb && a->weight != b->weight))
            return false;
        if (s->af == VGW_AF_INET6 && memcmp(p->be6[j], s->be6[j], 16) != 0)
            return false;
    }
    return true;
}

static int build_maglev(vgw_svc_t *s, const vgw_cfg_service_t *cs)
{
    s->maglev_m = cs->maglev_m;
    vgw_table_t *t = vgw_table_new(s->maglev_m);
    vgw_maglev_backend_t *mb = calloc(s->ncand ? s->ncand : 1, sizeof *mb);
    if (!t || !mb) {
        free(mb);
        vgw_table_put(t);
        return -1;
    }
    for (uint32_t k = 0; k < s->ncand; k++) {
        const vgw_cfg_backend_t *b = &cs->backends[s->cand[k]];
        mb[k].addr = b->addr;
        mb[k].port = b->port;
        mb[k].weight = b->weight;
        mb[k].af = b->af;
    }
    int rc = vgw_maglev_build(t->idx, s->maglev_m, mb, s->ncand);
    free(mb);
    if (rc) {
        vgw_table_put(t);
        return -1;
    }
    /* The table holds candidate positions; store backend indexes so the fast path does a single
     * load. */
    for (uint32_t k = 0; k < s->maglev_m; k++)
        if (t->idx[k] != VGW_MAGLEV_EMPTY)
            t->idx[k] = s->cand[t->idx[k]];
    s->tab = t;
    return 0;
}

/* A new engine service for cs, without uids (assigned once the generation is certain). p is the
 * previous version of the same service, if any. */
/* A node-wide rate or count as one worker's share (RSS spreads flows evenly), never below 1. */
static uint32_t per_worker(uint32_t v, uint32_t nworkers)
{
    return v ? (v + nworkers - 1) / nworkers : 0;
}

static vgw_svc_t *build_service(const vgw_dp_t *dp, const vgw_cfg_t *cfg, const vgw_cfg_service_t *cs, const vgw_svc_t *p,
                                uint32_t nworkers)
{
    vgw_svc_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    atomic_init(&s->refs, 1);
    s->cfg_rev = cs->rev;
    bool v6 = cs->af == VGW_AF_INET6;
    s->vip = v6 ? vgw_fold6(cs->vip.v6) : cs->vip.v4;
    if (v6)
        memcpy(s->vip6, cs->vip.v6, 16);
    s->port = h2n16(cs->port);
    s->proto = cs->proto;
    s->af = cs->af;
    s->sched = cs->sched;
    s->flags = cs->flags;
    s->protect = cs->protect;
    /* The SYN proxy and RST answers build IPv4/TCP packets: off for UDP and for IPv6 whatever the
     * configuration says (its validation refuses them there too). */
    bool tcp4 = cs->proto == VGW_PROTO_TCP && !v6;
    s->synproxy = tcp4 ? cs->protect.syn_proxy : VGW_SYNPROXY_OFF;
    s->rst_unknown = tcp4 && cs->protect.rst_unknown;
    s->auto_halfopen_w = per_worker(cs->protect.auto_halfopen, nworkers);
    s->auto_syn_rate_w = per_worker(cs->protect.auto_syn_rate, nworkers);
    s->conn_rate_w = per_worker(cs->protect.conn_rate, nworkers);
    s->conn_rate_src24_w = per_worker(cs->protect.conn_rate_src24, nworkers);
    s->maglev_m = cs->sched == VGW_SCHED_MAGLEV ? cs->maglev_m : 0;
    resolve_timeouts(s->timeout_ms, cfg, cs);
    s->nbackends = cs->nbackends;
    s->backends = calloc(cs->nbackends ? cs->nbackends : 1, sizeof(vgw_be_t));
    s->cand = calloc(cs->nbackends ? cs->nbackends : 1, sizeof(uint16_t));
    s->lips = calloc(cs->nlips ? cs->nlips : 1, sizeof(uint32_t));
    if (v6) {
        s->be6 = calloc(cs->nbackends ? cs->nbackends : 1, 16);
        s->lips6 = calloc(cs->nlips ? cs->nlips : 1, 16);
        s->lip6_ids = calloc(cs->nlips ? cs->nlips : 1, sizeof(uint16_t));
        s->vip6_id = (uint16_t)vgw_addr6_find(&dp->addr6, cs->vip.v6); /* interned by intern_v6 */
    }
    if (!s->backends || !s->cand || !s->lips || (v6 && (!s->be6 || !s->lips6 || !s->lip6_ids)))
        goto oom;
    for (uint32_t j = 0; j < cs->nbackends; j++) {
        const vgw_cfg_backend_t *b = &cs->backends[j];
        vgw_be_t *o = &s->backends[j];
        o->addr = v6 ? vgw_fold6(b->addr.v6) : b->addr.v4;
        if (v6)
            memcpy(s->be6[j], b->addr.v6, 16);
        o->port = h2n16(b->port);
        o->weight = b->weight;
        o->state = b->state;
        o->af = b->af;
        if (b->state == VGW_BE_ACTIVE && b->weight > 0)
            s->cand[s->ncand++] = (uint16_t)j;
    }
    s->nlips = cs->nlips;
    for (uint32_t j = 0; j < cs->nlips; j++) {
        s->lips[j] = v6 ? vgw_fold6(cs->lips[j].v6) : cs->lips[j].v4;
        if (v6) {
            memcpy(s->lips6[j], cs->lips[j].v6, 16);
            s->lip6_ids[j] = (uint16_t)vgw_addr6_find(&dp->addr6, cs->lips[j].v6);
        }
    }
    if (table_reusable(p, s)) {
        atomic_fetch_add_explicit(&p->tab->refs, 1, memory_order_relaxed);
        s->tab = p->tab;
    } else if (s->sched == VGW_SCHED_MAGLEV) {
        if (build_maglev(s, cs))
            goto oom;
    } else if (s->sched == VGW_SCHED_WRR) {
        if (vgw_wrr_build(s))
            goto oom;
    }
    if (s->tab && s->sched == VGW_SCHED_MAGLEV)
        s->maglev = s->tab->idx;
    else if (s->tab && s->sched == VGW_SCHED_WRR)
        s->wrr = s->tab->idx, s->wrr_len = s->tab->len;
    return s;
oom:
    svc_put(s);
    return NULL;
}

static bool lips_equal(const vgw_svc_t *a, const vgw_svc_t *b)
{
    return a->nlips == b->nlips && memcmp(a->lips, b->lips, sizeof(uint32_t) * a->nlips) == 0 &&
           (a->af != VGW_AF_INET6 || memcmp(a->lips6, b->lips6, 16u * a->nlips) == 0);
}

/* ---- lookup tables ------------------------------------------------------------------------------ */

static uint32_t pow2_at_least(uint32_t n)
{
    uint32_t p = 8;
    while (p < n)
        p *= 2;
    return p;
}

static vgw_lookup_t *lookup_alloc(const vgw_cfg_t *cfg)
{
    vgw_lookup_t *lk = calloc(1, sizeof *lk);
    if (!lk)
        return NULL;
    atomic_init(&lk->refs, 1);
    uint32_t naddr = 0, naddr6 = 0, nsvc6 = 0;
    for (uint32_t i = 0; i < cfg->nservices; i++) {
        if (cfg->services[i]->af == VGW_AF_INET6)
            naddr6 += 1 + cfg->services[i]->nlips, nsvc6++;
        else
            naddr += 1 + cfg->services[i]->nlips;
    }
    lk->svc_mask = pow2_at_least((cfg->nservices - nsvc6) * 2) - 1;
    lk->addr_mask = pow2_at_least(naddr * 2) - 1;
    lk->svc6_mask = pow2_at_least(nsvc6 * 2) - 1;
    lk->addr6_mask = pow2_at_least(naddr6 * 2) - 1;
    lk->svc_slots = calloc((size_t)lk->svc_mask + 1, sizeof(vgw_svc_slot_t));
    lk->addr_slots = calloc((size_t)lk->addr_mask + 1, sizeof(vgw_addr_slot_t));
    lk->svc6_slots = calloc((size_t)lk->svc6_mask + 1, sizeof(vgw_svc6_slot_t));
    lk->addr6_slots = calloc((size_t)lk->addr6_mask + 1, sizeof(vgw_addr6_slot_t));
    if (!lk->svc_slots || !lk->addr_slots || !lk->svc6_slots || !lk->addr6_slots) {
        lookup_put(lk);
        return NULL;
    }
    return lk;
}

static void addr_add(vgw_lookup_t *lk, uint32_t addr, uint32_t kind)
{
    uint32_t i = (uint32_t)vgw_mix64(addr) & lk->addr_mask;
    while (lk->addr_slots[i].addr != 0 && lk->addr_slots[i].addr != addr)
        i = (i + 1) & lk->addr_mask;
    lk->addr_slots[i].addr = addr;
    lk->addr_slots[i].kind |= kind;
}

static void addr6_add(vgw_lookup_t *lk, const uint8_t *addr, uint32_t kind)
{
    uint32_t i = hash6(addr, 0) & lk->addr6_mask;
    while (lk->addr6_slots[i].kind != 0 && memcmp(lk->addr6_slots[i].addr, addr, 16) != 0)
        i = (i + 1) & lk->addr6_mask;
    memcpy(lk->addr6_slots[i].addr, addr, 16);
    lk->addr6_slots[i].kind |= kind;
}

static void lookup_fill6(vgw_lookup_t *lk, const vgw_svc_t *s)
{
    uint32_t h = hash6(s->vip6, (uint64_t)s->port << 8 | s->proto) & lk->svc6_mask;
    while (lk->svc6_slots[h].used)
        h = (h + 1) & lk->svc6_mask;
    vgw_svc6_slot_t *slot = &lk->svc6_slots[h];
    memcpy(slot->vip, s->vip6, 16);
    slot->port = s->port, slot->proto = s->proto, slot->used = 1, slot->uid = s->uid;
    addr6_add(lk, s->vip6, VGW_ADDR_VIP);
    for (uint32_t j = 0; j < s->nlips; j++)
        addr6_add(lk, s->lips6[j], VGW_ADDR_LIP);
}

static void lookup_fill(vgw_lookup_t *lk, vgw_svc_t *const *svcs, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        const vgw_svc_t *s = svcs[i];
        if (s->af == VGW_AF_INET6) {
            lookup_fill6(lk, s);
            continue;
        }
        uint32_t h = svc_slot_hash(s->vip, s->port, s->proto) & lk->svc_mask;
        while (lk->svc_slots[h].used)
            h = (h + 1) & lk->svc_mask;
        lk->svc_slots[h] = (vgw_svc_slot_t){.vip = s->vip, .port = s->port, .proto = s->proto, .used = 1, .uid = s->uid};
        addr_add(lk, s->vip, VGW_ADDR_VIP);
        for (uint32_t j = 0; j < s->nlips; j++)
            addr_add(lk, s->lips[j], VGW_ADDR_LIP);
    }
}

/* ---- building a generation --------------------------------------------------------------------- */

typedef struct plan {
    vgw_svc_t *svc;        /* shared (prev's) or built */
    const vgw_svc_t *prev; /* previous version of the same service */
    uint32_t uid;          /* VGW_UID_NONE until assigned */
    bool built;
} plan_t;

/* Registry changes for the new generation. Nothing here can fail: every key it assigns was
 * validated against the uid spaces (the configuration's limits equal them). */
static void commit_uids(vgw_dp_t *dp, const vgw_state_t *prev, const vgw_cfg_t *cfg, plan_t *plan)
{
    uint32_t seq = ++dp->build_seq;
    uint32_t n = cfg->nservices;
    for (uint32_t i = 0; i < n; i++)
        if (plan[i].uid != VGW_UID_NONE)
            dp->svc_stamp[plan[i].uid] = seq;
    /* Services that left: their backends' uids and their own go to the free FIFO. */
    for (uint32_t i = 0; prev && i < prev->nservices; i++) {
        const vgw_svc_t *q = prev->services[i];
        if (dp->svc_stamp[q->uid] == seq)
            continue;
        for (uint32_t j = 0; j < q->nbackends; j++)
            vgw_reg_release(&dp->be_reg, be_key(q, j));
        vgw_reg_release(&dp->svc_reg, svc_key_of(q));
    }
    for (uint32_t i = 0; i < n; i++) {
        if (plan[i].uid == VGW_UID_NONE)
            plan[i].uid = vgw_reg_acquire(&dp->svc_reg, svc_key(cfg->services[i]));
        if (!plan[i].built)
            continue;
        vgw_svc_t *s = plan[i].svc;
        s->uid = (uint16_t)plan[i].uid;
        for (uint32_t j = 0; j < s->nbackends; j++) {
            uint32_t had = dp->be_reg.count;
            uint32_t b = vgw_reg_acquire(&dp->be_reg, be_key(s, j));
            if (dp->be_reg.count != had) /* a uid new to this backend: its new-connection count starts here */
                dp->be_new_base[b] = vgw_dp_be_new_sum(dp, b);
            s->backends[j].uid = b;
            dp->be_stamp[b] = seq;
        }
        const vgw_svc_t *p = plan[i].prev;
        for (uint32_t j = 0; p && j < p->nbackends; j++)
            if (dp->be_stamp[p->backends[j].uid] != seq)
                vgw_reg_release(&dp->be_reg, be_key(p, j));
    }
}

static vgw_state_t *build_state(vgw_dp_t *dp, const vgw_cfg_t *cfg, char *err, size_t errlen)
{
    const vgw_state_t *prev = atomic_load_explicit(&dp->state, memory_order_relaxed);
    uint32_t n = cfg->nservices;
    if (n > VGW_MAX_SERVICES || cfg->nbackends > VGW_MAX_BACKENDS) {
        snprintf(err, errlen, "too many services or backends");
        return NULL;
    }
    vgw_state_t *st = calloc(1, sizeof *st);
    plan_t *plan = calloc(n ? n : 1, sizeof *plan);
    vgw_svc_t **svcs = calloc(n ? n : 1, sizeof *svcs);
    vgw_lookup_t *lk = NULL;
    if (!st || !plan || !svcs)
        goto oom;
    bool addrs_changed = prev == NULL;
    uint32_t kept = 0;
    for (uint32_t i = 0; i < n; i++) {
        const vgw_cfg_service_t *cs = cfg->services[i];
        uint32_t uid = vgw_reg_find(&dp->svc_reg, svc_key(cs));
        vgw_svc_t *p = uid != VGW_UID_NONE && prev ? prev->svc_by_uid[uid] : NULL;
        plan[i].uid = p ? uid : VGW_UID_NONE;
        plan[i].prev = p;
        if (p)
            kept++;
        else
            addrs_changed = true;
        if (p && svc_matches(p, cfg, cs)) {
            p->cfg_rev = cs->rev; /* control-thread field: the next rev check is enough */
            plan[i].svc = p;
            continue;
        }
        plan[i].svc = build_service(dp, cfg, cs, p, dp->nworkers);
        if (!plan[i].svc)
            goto oom;
        plan[i].built = true;
        if (p && !lips_equal(p, plan[i].svc))
            addrs_changed = true;
    }
    if (prev && kept != prev->nservices)
        addrs_changed = true;
    if (addrs_changed && !(lk = lookup_alloc(cfg)))
        goto oom;

    commit_uids(dp, prev, cfg, plan);

    st->generation = cfg->generation;
    for (unsigned k = 0; k < VGW_STATE_MAX; k++)
        st->default_timeout_ms[k] = cfg->timeout_s[k] * 1000u;
    for (uint32_t i = 0; i < n; i++) {
        vgw_svc_t *s = plan[i].svc;
        if (!plan[i].built)
            atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
        svcs[i] = s;
        st->svc_by_uid[s->uid] = s;
    }
    st->services = svcs;
    st->nservices = n;
    if (lk) {
        lookup_fill(lk, svcs, n);
    } else {
        lk = prev->lookup;
        atomic_fetch_add_explicit(&lk->refs, 1, memory_order_relaxed);
    }
    st->lookup = lk;
    st->svc_mask = lk->svc_mask, st->svc_slots = lk->svc_slots;
    st->addr_mask = lk->addr_mask, st->addr_slots = lk->addr_slots;
    st->svc6_mask = lk->svc6_mask, st->svc6_slots = lk->svc6_slots;
    st->addr6_mask = lk->addr6_mask, st->addr6_slots = lk->addr6_slots;
    free(plan);
    return st;
oom:
    snprintf(err, errlen, "out of memory building state");
    for (uint32_t i = 0; plan && i < n; i++)
        if (plan[i].built)
            svc_put(plan[i].svc);
    free(plan), free(svcs), free(st);
    return NULL;
}

/* ---- dp ---------------------------------------------------------------------------------------- */

vgw_dp_t *vgw_dp_create(const vgw_dp_params_t *params)
{
    if (!params || params->nworkers == 0 || params->nworkers > VGW_MAX_WORKERS)
        return NULL;
    vgw_dp_t *dp = calloc(1, sizeof *dp);
    if (!dp)
        return NULL;
    dp->nworkers = params->nworkers;
    if (vgw_cookie_key_init(dp, params)) {
        free(dp);
        return NULL;
    }
    atomic_init(&dp->state, NULL);
    atomic_init(&dp->generation, 0);
    for (uint32_t i = 0; i < VGW_MAX_WORKERS; i++)
        atomic_init(&dp->workers[i], NULL);
    dp->be_stamp = calloc(VGW_MAX_BACKENDS, sizeof(uint32_t));
    dp->be_new_base = calloc(VGW_MAX_BACKENDS, sizeof(uint64_t));
    if (!dp->be_stamp || !dp->be_new_base || vgw_reg_init(&dp->svc_reg, VGW_MAX_SERVICES) ||
        vgw_reg_init(&dp->be_reg, VGW_MAX_BACKENDS)) {
        vgw_reg_fini(&dp->svc_reg), vgw_reg_fini(&dp->be_reg);
        free(dp->be_stamp), free(dp->be_new_base);
        free(dp);
        return NULL;
    }
    return dp;
}

void vgw_dp_destroy(vgw_dp_t *dp)
{
    if (!dp)
        return;
    vgw_state_free(atomic_load(&dp->state));
    for (vgw_state_t *s = dp->retired, *n; s; s = n) {
        n = s->retired_next;
        vgw_state_free(s);
    }
    vgw_reg_fini(&dp->svc_reg), vgw_reg_fini(&dp->be_reg);
    free(dp->be_stamp), free(dp->be_new_base);
    vgw_addr6_fini(&dp->addr6);
    free(dp);
}

/* The first configuration with an IPv6 service creates the address table and gives it to every
 * worker before any worker can see such a service (the state is published after, with release
 * order); every configuration's IPv6 VIPs and LIPs get their ids here, so building its state only
 * looks them up, and new ids reach the copies in the workers' persisted files before a
 * connection can name them. A failure leaves the state as it was; ids already given stay
 * (harmless: an id only ever names its address). */
static int intern_v6(vgw_dp_t *dp, const vgw_cfg_t *cfg, char *err, size_t errlen)
{
    if (!vgw_cfg_first_of_af(cfg, VGW_AF_INET6))
        return 0;
    if (vgw_dp_enable_v6(dp)) {
        snprintf(err, errlen, "out of memory for the IPv6 address table");
        return -1;
    }
    uint32_t had = dp->addr6.count;
    for (uint32_t i = 0; i < cfg->nservices; i++) {
        const vgw_cfg_service_t *cs = cfg->services[i];
        if (cs->af != VGW_AF_INET6)
            continue;
        bool ok = vgw_addr6_intern(&dp->addr6, cs->vip.v6) != VGW_UID_NONE;
        for (uint32_t j = 0; ok && j < cs->nlips; j++)
            ok = vgw_addr6_intern(&dp->addr6, cs->lips[j].v6) != VGW_UID_NONE;
        if (!ok) {
            snprintf(err, errlen,
                     "service %s: the IPv6 address table is full (%u distinct IPv6 VIPs and LIPs since this "
                     "forwarder started); a restart starts a new one",
                     cs->name, VGW_ADDR6_MAX);
            return -1;
        }
    }
    if (dp->addr6.count != had)
        for (uint32_t i = 0; i < dp->nworkers; i++) {
            vgw_worker_t *w = atomic_load(&dp->workers[i]);
            if (w)
                vgw_persist_addr6_write(w);
        }
    return 0;
}

int vgw_dp_enable_v6(vgw_dp_t *dp)
{
    if (dp->v6)
        return 0;
    if (vgw_addr6_init(&dp->addr6))
        return -1;
    for (uint32_t i = 0; i < dp->nworkers; i++) {
        vgw_worker_t *w = atomic_load(&dp->workers[i]);
        if (w)
            vgw_ctab_enable_v6(&w->ct, (const uint8_t(*)[16])dp->addr6.addr);
    }
    dp->v6 = true;
    return 0;
}

int vgw_dp_apply(vgw_dp_t *dp, const vgw_cfg_t *cfg, char *err, size_t errlen)
{
    char dummy[8];
    if (!err || !errlen)
        err = dummy, errlen = sizeof dummy;
    uint64_t cur = atomic_load(&dp->generation);
    if (cfg->generation <= cur) {
        snprintf(err, errlen, "generation %llu is not newer than applied %llu",
                 (unsigned long long)cfg->generation, (unsigned long long)cur);
        return -1;
    }
    if (intern_v6(dp, cfg, err, errlen))
        return -1;
    vgw_state_t *st = build_state(dp, cfg, err, errlen);
    if (!st)
        return -1;
    vgw_state_t *old = atomic_exchange_explicit(&dp->state, st, memory_order_acq_rel);
    atomic_store_explicit(&dp->generation, cfg->generation, memory_order_release);
    if (old) {
        if (dp->retire_fn) {
            dp->retire_fn(old, old->generation, dp->retire_arg);
        } else {
            old->retired_next = dp->retired;
            dp->retired = old;
        }
    }
    vgw_dp_reclaim(dp);
    return 0;
}

int vgw_dp_apply_text(vgw_dp_t *dp, const char *text, size_t len, char *err, size_t errlen)
{
    vgw_cfg_t *cfg;
    if (vgw_cfg_parse(text, len, &cfg, err, errlen))
        return -1;
    int rc = vgw_dp_apply(dp, cfg, err, errlen);
    vgw_cfg_free(cfg);
    return rc;
}

uint64_t vgw_dp_generation(const vgw_dp_t *dp)
{
    return atomic_load_explicit(&dp->generation, memory_order_acquire);
}

void vgw_dp_set_retire_hook(vgw_dp_t *dp, vgw_retire_fn fn, void *arg)
{
    dp->retire_fn = fn;
    dp->retire_arg = arg;
}

uint32_t vgw_dp_reclaim(vgw_dp_t *dp)
{
    /* A worker publishes the generation it loaded at the start of each burst (UINT64_MAX when
     * quiescent). It can only be using states of that generation or newer, so anything retired
     * with an older generation than every worker's mark is unreachable. */
    uint64_t min = UINT64_MAX;
    for (uint32_t i = 0; i < VGW_MAX_WORKERS; i++) {
        vgw_worker_t *w = atomic_load(&dp->workers[i]);
        if (w) {
            uint64_t g = atomic_load(&w->qsbr_gen);
            if (g < min)
                min = g;
        }
    }
    uint32_t pending = 0;
    vgw_state_t **pp = &dp->retired;
    while (*pp) {
        vgw_state_t *s = *pp;
        if (s->generation < min) {
            *pp = s->retired_next;
            vgw_state_free(s);
        } else {
            pending++;
            pp = &s->retired_next;
        }
    }
    return pending;
}
