/* SPDX-License-Identifier: Apache-2.0
 * Config generations: build an immutable state from a parsed config, publish it with one atomic
 * pointer store, retire the old one through QSBR (or a caller hook, e.g. DPDK's rte_rcu). */
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

/* ---- registries: stable uids --------------------------------------------------------------- */

static int reg_init(vgw_registry_t *r, uint32_t space)
{
    memset(r, 0, sizeof *r);
    r->space = space;
    r->mask = 1;
    while (r->mask + 1 < space * 2)
        r->mask = r->mask * 2 + 1;
    r->keys = calloc((size_t)r->mask + 1, sizeof(uint64_t));
    r->uids = calloc((size_t)r->mask + 1, sizeof(uint32_t));
    r->free_fifo = calloc(space, sizeof(uint32_t));
    return (r->keys && r->uids && r->free_fifo) ? 0 : -1;
}

static void reg_fini(vgw_registry_t *r)
{
    free(r->keys), free(r->uids), free(r->free_fifo);
    memset(r, 0, sizeof *r);
}

/* Keys carry bit 63 so that 0 can mean "empty". */
static uint32_t reg_find(const vgw_registry_t *r, uint64_t key)
{
    for (uint32_t i = (uint32_t)vgw_mix64(key) & r->mask;; i = (i + 1) & r->mask) {
        if (r->keys[i] == 0)
            return UINT32_MAX;
        if (r->keys[i] == key)
            return r->uids[i];
    }
}

static void reg_put(uint64_t *keys, uint32_t *uids, uint32_t mask, uint64_t key, uint32_t uid)
{
    uint32_t i = (uint32_t)vgw_mix64(key) & mask;
    while (keys[i] != 0)
        i = (i + 1) & mask;
    keys[i] = key;
    uids[i] = uid;
}

/* Assigns uids for keys[0..n): existing keys keep theirs, new keys get fresh or the oldest freed
 * ones, vanished keys are freed. Builds the new map aside and commits only if all fit. */
static int reg_assign(vgw_registry_t *r, const uint64_t *keys, uint32_t n, uint32_t *uids_out)
{
    if (n > r->space)
        return -1;
    uint64_t *nk = calloc((size_t)r->mask + 1, sizeof(uint64_t));
    uint32_t *nu = calloc((size_t)r->mask + 1, sizeof(uint32_t));
    uint8_t *kept = calloc(r->space, 1);
    if (!nk || !nu || !kept) {
        free(nk), free(nu), free(kept);
        return -1;
    }
    uint32_t fresh = r->next_fresh, head = r->fifo_head, len = r->fifo_len;
    uint32_t *pending = malloc(sizeof(uint32_t) * (n ? n : 1));
    uint32_t npending = 0;
    if (!pending) {
        free(nk), free(nu), free(kept);
        return -1;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t uid = reg_find(r, keys[i]);
        if (uid != UINT32_MAX) {
            kept[uid] = 1;
            uids_out[i] = uid;
            reg_put(nk, nu, r->mask, keys[i], uid);
        } else {
            pending[npending++] = i;
        }
    }
    /* Freed uids of this round go to the FIFO tail after the older ones. */
    uint32_t *fifo = r->free_fifo;
    for (uint32_t s = 0; s <= r->mask; s++) {
        if (r->keys[s] && !kept[r->uids[s]]) {
            fifo[(head + len) % r->space] = r->uids[s];
            len++;
        }
    }
    for (uint32_t k = 0; k < npending; k++) {
        uint32_t uid;
        if (fresh < r->space) {
            uid = fresh++;
        } else if (len > 0) {
            uid = fifo[head];
            head = (head + 1) % r->space;
            len--;
        } else {
            free(nk), free(nu), free(kept), free(pending);
            return -1;
        }
        uids_out[pending[k]] = uid;
        reg_put(nk, nu, r->mask, keys[pending[k]], uid);
    }
    free(r->keys), free(r->uids);
    r->keys = nk;
    r->uids = nu;
    r->count = n;
    r->next_fresh = fresh;
    r->fifo_head = head;
    r->fifo_len = len;
    free(kept), free(pending);
    return 0;
}

static uint64_t svc_key(const vgw_cfg_service_t *s)
{
    return (1ULL << 63) | ((uint64_t)s->proto << 48) | ((uint64_t)s->port << 32) | s->vip.v4;
}

static uint64_t be_key(uint32_t svc_uid, const vgw_cfg_backend_t *b)
{
    return (1ULL << 63) | ((uint64_t)(svc_uid & 0x7fff) << 48) | ((uint64_t)b->port << 32) | b->addr.v4;
}

/* ---- state --------------------------------------------------------------------------------- */

void vgw_state_free(vgw_state_t *st)
{
    if (!st)
        return;
    for (uint32_t i = 0; i < st->nservices; i++) {
        vgw_svc_t *s = &st->services[i];
        free(s->backends), free(s->cand), free(s->lips), free(s->maglev), free(s->wrr);
    }
    free(st->services), free(st->svc_slots), free(st->addr_slots);
    free(st);
}

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
            return &st->services[s->idx];
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

static void addr_add(vgw_state_t *st, uint32_t addr, uint32_t kind)
{
    uint32_t i = (uint32_t)vgw_mix64(addr) & st->addr_mask;
    while (st->addr_slots[i].addr != 0 && st->addr_slots[i].addr != addr)
        i = (i + 1) & st->addr_mask;
    st->addr_slots[i].addr = addr;
    st->addr_slots[i].kind |= kind;
}

static uint32_t pow2_at_least(uint32_t n)
{
    uint32_t p = 8;
    while (p < n)
        p *= 2;
    return p;
}

static int build_service(vgw_svc_t *s, const vgw_cfg_t *cfg, const vgw_cfg_service_t *cs, const uint32_t *be_uids)
{
    s->vip = cs->vip.v4;
    s->port = h2n16(cs->port);
    s->proto = cs->proto;
    s->af = cs->af;
    s->sched = cs->sched;
    s->flags = cs->flags;
    for (unsigned k = 0; k < VGW_STATE_MAX; k++)
        s->timeout_ms[k] = (cs->timeout_s[k] ? cs->timeout_s[k] : cfg->timeout_s[k]) * 1000u;
    s->nbackends = cs->nbackends;
    s->backends = calloc(cs->nbackends ? cs->nbackends : 1, sizeof(vgw_be_t));
    s->cand = calloc(cs->nbackends ? cs->nbackends : 1, sizeof(uint16_t));
    s->lips = calloc(cs->nlips ? cs->nlips : 1, sizeof(uint32_t));
    if (!s->backends || !s->cand || !s->lips)
        return -1;
    for (uint32_t j = 0; j < cs->nbackends; j++) {
        const vgw_cfg_backend_t *b = &cs->backends[j];
        vgw_be_t *o = &s->backends[j];
        o->addr = b->addr.v4;
        o->port = h2n16(b->port);
        o->weight = b->weight;
        o->state = b->state;
        o->af = b->af;
        o->uid = be_uids[j];
        if (b->state == VGW_BE_ACTIVE && b->weight > 0)
            s->cand[s->ncand++] = (uint16_t)j;
    }
    s->nlips = cs->nlips;
    for (uint32_t j = 0; j < cs->nlips; j++)
        s->lips[j] = cs->lips[j].v4;
    if (s->sched == VGW_SCHED_MAGLEV) {
        s->maglev_m = cs->maglev_m;
        s->maglev = malloc(sizeof(uint16_t) * s->maglev_m);
        vgw_maglev_backend_t *mb = calloc(s->ncand ? s->ncand : 1, sizeof *mb);
        if (!s->maglev || !mb) {
            free(mb);
            return -1;
        }
        for (uint32_t k = 0; k < s->ncand; k++) {
            const vgw_cfg_backend_t *b = &cs->backends[s->cand[k]];
            mb[k].addr = b->addr;
            mb[k].port = b->port;
            mb[k].weight = b->weight;
            mb[k].af = b->af;
        }
        int rc = vgw_maglev_build(s->maglev, s->maglev_m, mb, s->ncand);
        free(mb);
        if (rc)
            return -1;
        /* The table holds candidate positions; store backend indexes so the fast path does a
         * single load. */
        for (uint32_t k = 0; k < s->maglev_m; k++)
            if (s->maglev[k] != VGW_MAGLEV_EMPTY)
                s->maglev[k] = s->cand[s->maglev[k]];
    } else if (s->sched == VGW_SCHED_WRR) {
        if (vgw_wrr_build(s))
            return -1;
    }
    return 0;
}

static vgw_state_t *build_state(vgw_dp_t *dp, const vgw_cfg_t *cfg, char *err, size_t errlen)
{
    vgw_state_t *st = calloc(1, sizeof *st);
    uint64_t *skeys = calloc(cfg->nservices ? cfg->nservices : 1, sizeof(uint64_t));
    uint32_t *suids = calloc(cfg->nservices ? cfg->nservices : 1, sizeof(uint32_t));
    uint32_t nbe = 0;
    for (uint32_t i = 0; i < cfg->nservices; i++)
        nbe += cfg->services[i].nbackends;
    uint64_t *bkeys = calloc(nbe ? nbe : 1, sizeof(uint64_t));
    uint32_t *buids = calloc(nbe ? nbe : 1, sizeof(uint32_t));
    if (!st || !skeys || !suids || !bkeys || !buids)
        goto oom;
    st->generation = cfg->generation;
    for (unsigned k = 0; k < VGW_STATE_MAX; k++)
        st->default_timeout_ms[k] = cfg->timeout_s[k] * 1000u;
    for (uint32_t i = 0; i < cfg->nservices; i++)
        skeys[i] = svc_key(&cfg->services[i]);
    /* Uids are committed to the registries before the state is known to build; a later failure
     * only leaves uids assigned to keys that are not live yet, which the next apply reconciles. */
    if (reg_assign(&dp->svc_reg, skeys, cfg->nservices, suids)) {
        snprintf(err, errlen, "too many services");
        goto fail;
    }
    for (uint32_t i = 0, k = 0; i < cfg->nservices; i++)
        for (uint32_t j = 0; j < cfg->services[i].nbackends; j++)
            bkeys[k++] = be_key(suids[i], &cfg->services[i].backends[j]);
    if (reg_assign(&dp->be_reg, bkeys, nbe, buids)) {
        snprintf(err, errlen, "too many backends");
        goto fail;
    }
    st->nservices = cfg->nservices;
    st->services = calloc(cfg->nservices ? cfg->nservices : 1, sizeof(vgw_svc_t));
    st->svc_mask = pow2_at_least(cfg->nservices * 2) - 1;
    st->svc_slots = calloc((size_t)st->svc_mask + 1, sizeof(vgw_svc_slot_t));
    uint32_t naddr = 0;
    for (uint32_t i = 0; i < cfg->nservices; i++)
        naddr += 1 + cfg->services[i].nlips;
    st->addr_mask = pow2_at_least(naddr * 2) - 1;
    st->addr_slots = calloc((size_t)st->addr_mask + 1, sizeof(vgw_addr_slot_t));
    if (!st->services || !st->svc_slots || !st->addr_slots)
        goto oom;
    for (uint32_t i = 0, k = 0; i < cfg->nservices; i++) {
        const vgw_cfg_service_t *cs = &cfg->services[i];
        vgw_svc_t *s = &st->services[i];
        s->uid = (uint16_t)suids[i];
        if (build_service(s, cfg, cs, buids + k))
            goto oom;
        k += cs->nbackends;
        st->svc_by_uid[s->uid] = i + 1;
        uint32_t h = svc_slot_hash(s->vip, s->port, s->proto) & st->svc_mask;
        while (st->svc_slots[h].used)
            h = (h + 1) & st->svc_mask;
        st->svc_slots[h] = (vgw_svc_slot_t){.vip = s->vip, .port = s->port, .proto = s->proto, .used = 1, .idx = i};
        addr_add(st, s->vip, VGW_ADDR_VIP);
        for (uint32_t j = 0; j < s->nlips; j++)
            addr_add(st, s->lips[j], VGW_ADDR_LIP);
    }
    free(skeys), free(suids), free(bkeys), free(buids);
    return st;
oom:
    snprintf(err, errlen, "out of memory building state");
fail:
    free(skeys), free(suids), free(bkeys), free(buids);
    vgw_state_free(st);
    return NULL;
}

/* ---- dp ------------------------------------------------------------------------------------ */

vgw_dp_t *vgw_dp_create(const vgw_dp_params_t *params)
{
    if (!params || params->nworkers == 0 || params->nworkers > VGW_MAX_WORKERS)
        return NULL;
    vgw_dp_t *dp = calloc(1, sizeof *dp);
    if (!dp)
        return NULL;
    dp->nworkers = params->nworkers;
    atomic_init(&dp->state, NULL);
    atomic_init(&dp->generation, 0);
    for (uint32_t i = 0; i < VGW_MAX_WORKERS; i++)
        atomic_init(&dp->workers[i], NULL);
    if (reg_init(&dp->svc_reg, VGW_MAX_SERVICES) || reg_init(&dp->be_reg, VGW_MAX_BACKENDS)) {
        reg_fini(&dp->svc_reg), reg_fini(&dp->be_reg);
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
    reg_fini(&dp->svc_reg), reg_fini(&dp->be_reg);
    free(dp);
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
