/* SPDX-License-Identifier: Apache-2.0
 * Edits of a configuration (cfgint.h): the indexes (services by name and by (VIP, port,
 * protocol), VIP and LIP addresses, backends by address), the primitive edits that keep them
 * right and check their rules, and the undo journal that reverses them exactly. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "cfgint.h"
#include "internal.h"

#define FAIL(...) (snprintf(reason, rlen, __VA_ARGS__), -1)

/* ---- revisions, services -------------------------------------------------------------------- */

uint64_t vgw_cfg_next_rev(void)
{
    static _Atomic uint64_t rev;
    return atomic_fetch_add_explicit(&rev, 1, memory_order_relaxed) + 1;
}

vgw_cfg_service_t *vgw_cfg_svc_alloc(void)
{
    vgw_cfg_service_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->rev = vgw_cfg_next_rev();
    /* Defaults of a service line without options (config.c parses over these). */
    s->maglev_m = VGW_MAGLEV_DEFAULT_M;
    s->protect.syn_proxy = VGW_SYNPROXY_OFF;
    s->protect.auto_halfopen = VGW_AUTO_HALFOPEN_DEFAULT;
    s->protect.auto_syn_rate = VGW_AUTO_SYN_RATE_DEFAULT;
    return s;
}

void vgw_cfg_svc_free(vgw_cfg_service_t *s)
{
    if (!s)
        return;
    if (s->be_index) {
        vgw_vset_fini(&s->be_index->set);
        free(s->be_index);
    }
    free(s->backends);
    free(s->lips);
    free(s);
}

/* ---- index keys ----------------------------------------------------------------------------- */

static uint64_t name_hash(const char *name)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a, then mixed */
    for (const char *c = name; *c; c++)
        h = (h ^ (uint8_t)*c) * 0x100000001b3ULL;
    return vgw_mix64(h);
}

static uint64_t by_name_hash(const void *ctx, uintptr_t v)
{
    (void)ctx;
    return name_hash(((const vgw_cfg_service_t *)v)->name);
}

static int by_name_eq(const void *ctx, uintptr_t v, const void *key)
{
    (void)ctx;
    return strcmp(((const vgw_cfg_service_t *)v)->name, key) == 0;
}

static uint64_t svc_key_hash(const vgw_cfg_service_t *s)
{
    return vgw_mix64(vgw_addr_hash(s->af, &s->vip) ^ ((uint64_t)s->port << 8 | s->proto));
}

static uint64_t by_key_hash(const void *ctx, uintptr_t v)
{
    (void)ctx;
    return svc_key_hash((const vgw_cfg_service_t *)v);
}

static int by_key_eq(const void *ctx, uintptr_t v, const void *key)
{
    (void)ctx;
    const vgw_cfg_service_t *a = (const vgw_cfg_service_t *)v, *b = key;
    return a->af == b->af && a->port == b->port && a->proto == b->proto && memcmp(&a->vip, &b->vip, sizeof a->vip) == 0;
}

static uint64_t be_hash(const vgw_cfg_backend_t *b)
{
    return vgw_mix64(vgw_addr_hash(b->af, &b->addr) + b->port);
}

static uint64_t be_index_hash(const void *ctx, uintptr_t v)
{
    return be_hash(&((const vgw_cfg_service_t *)ctx)->backends[v - 1]);
}

static int be_same(const vgw_cfg_backend_t *a, const vgw_cfg_backend_t *b)
{
    return a->af == b->af && a->port == b->port && memcmp(&a->addr, &b->addr, sizeof a->addr) == 0;
}

static int be_index_eq(const void *ctx, uintptr_t v, const void *key)
{
    return be_same(&((const vgw_cfg_service_t *)ctx)->backends[v - 1], key);
}

/* Small services are scanned; from this size on a service keeps a hash index of its backends. */
#define BE_INDEX_MIN 16u

vgw_cfg_backend_t *vgw_cfg_be_find(vgw_cfg_service_t *s, uint8_t af, const vgw_addr_t *addr, uint16_t port)
{
    vgw_cfg_backend_t key;
    memset(&key, 0, sizeof key);
    key.af = af, key.addr = *addr, key.port = port;
    if (s->be_index) {
        uintptr_t v = vgw_vset_find(&s->be_index->set, be_hash(&key), be_index_eq, s, &key);
        return v ? &s->backends[v - 1] : NULL;
    }
    for (uint32_t i = 0; i < s->nbackends; i++)
        if (be_same(&s->backends[i], &key))
            return &s->backends[i];
    return NULL;
}

static int be_index_build(vgw_cfg_service_t *s)
{
    struct vgw_be_index *x = calloc(1, sizeof *x);
    if (!x)
        return -1;
    for (uint32_t i = 0; i < s->nbackends; i++)
        if (vgw_vset_add(&x->set, (uintptr_t)i + 1, be_index_hash, s)) {
            vgw_vset_fini(&x->set);
            free(x);
            return -1;
        }
    s->be_index = x;
    return 0;
}

vgw_cfg_service_t *vgw_cfg_lookup(vgw_cfg_t *cfg, const char *name)
{
    return (vgw_cfg_service_t *)vgw_vset_find(&cfg->index->by_name, name_hash(name), by_name_eq, NULL, name);
}

const vgw_cfg_service_t *vgw_cfg_find(const vgw_cfg_t *cfg, const char *name)
{
    return (const vgw_cfg_service_t *)vgw_vset_find(&cfg->index->by_name, name_hash(name), by_name_eq, NULL, name);
}

const vgw_cfg_service_t *vgw_cfg_first_of_af(const vgw_cfg_t *cfg, uint8_t af)
{
    for (uint32_t i = 0; cfg && i < cfg->nservices; i++)
        if (cfg->services[i]->af == af)
            return cfg->services[i];
    return NULL;
}

unsigned vgw_cfg_addr_kind(const vgw_cfg_t *cfg, uint8_t af, const vgw_addr_t *addr)
{
    return (vgw_amap_get(&cfg->index->vips, af, addr) ? VGW_ADDR_F_VIP : 0u) |
           (vgw_amap_get(&cfg->index->lips, af, addr) ? VGW_ADDR_F_LIP : 0u);
}

void vgw_cfg_each_addr(const vgw_cfg_t *cfg, unsigned kind, void (*fn)(void *arg, uint8_t af, const vgw_addr_t *a),
                       void *arg)
{
    const vgw_amap_t *m = kind == VGW_ADDR_F_VIP ? &cfg->index->vips : &cfg->index->lips;
    if (!m->ent)
        return;
    for (uint32_t i = 0; i <= m->mask; i++)
        if (m->ent[i].count)
            fn(arg, m->ent[i].af, &m->ent[i].addr);
}

static int grow(void **arr, uint32_t *cap, uint32_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    uint32_t ncap = *cap ? *cap * 2 : 4;
    while (ncap < need)
        ncap *= 2;
    void *n = realloc(*arr, (size_t)ncap * elem);
    if (!n)
        return -1;
    *arr = n;
    *cap = ncap;
    return 0;
}

/* ---- the undo journal ----------------------------------------------------------------------- */

enum undo_kind {
    U_SVC_ADD,    /* s was appended: detach and free it */
    U_SVC_REMOVE, /* s was detached from pos: put it back (commit frees it) */
    U_LIP_ADD,    /* a LIP was appended to s */
    U_LIP_REMOVE, /* lip was removed from s at pos */
    U_BE_ADD,     /* a backend was appended to s */
    U_BE_REMOVE,  /* be was removed from s at pos (the last one moved there) */
    U_BE_SET,     /* weight/state of s->backends[pos] were be.weight/be.state */
    U_GENERATION, /* generation was gen */
};

typedef struct undo_rec {
    uint8_t kind;
    uint8_t af;
    uint32_t pos;
    vgw_cfg_service_t *s;
    uint64_t rev; /* s->rev before the edit */
    union {
        vgw_cfg_backend_t be;
        vgw_addr_t lip;
        uint64_t gen;
    } u;
} undo_rec_t;

struct vgw_undo {
    undo_rec_t *rec;
    uint32_t n, cap;
};

vgw_undo_t *vgw_undo_new(void)
{
    return calloc(1, sizeof(vgw_undo_t));
}

/* Reserves a record before anything changes, so journaling itself can never leave a half edit. */
static undo_rec_t *undo_reserve(vgw_undo_t *u)
{
    if (!u)
        return NULL;
    if (grow((void **)&u->rec, &u->cap, u->n + 1, sizeof *u->rec))
        return NULL;
    undo_rec_t *r = &u->rec[u->n];
    memset(r, 0, sizeof *r);
    return r;
}

#define RESERVE(rec)                                                                               \
    undo_rec_t *rec = undo_reserve(u);                                                             \
    if (u && !rec)                                                                                 \
    return FAIL("out of memory")

static void undo_push(vgw_undo_t *u, undo_rec_t *r, uint8_t kind, vgw_cfg_service_t *s)
{
    if (!u)
        return;
    r->kind = kind;
    r->s = s;
    r->rev = s ? s->rev : 0;
    u->n++;
}

static void touch(vgw_cfg_service_t *s)
{
    s->rev = vgw_cfg_next_rev();
}

/* ---- index maintenance (cannot fail once capacity is reserved) ------------------------------ */

static int index_svc(vgw_cfg_t *cfg, vgw_cfg_service_t *s)
{
    struct vgw_cfg_index *x = cfg->index;
    if (vgw_vset_add(&x->by_name, (uintptr_t)s, by_name_hash, NULL))
        return -1;
    if (vgw_vset_add(&x->by_key, (uintptr_t)s, by_key_hash, NULL)) {
        vgw_vset_del(&x->by_name, (uintptr_t)s, by_name_hash, NULL);
        return -1;
    }
    if (vgw_amap_inc(&x->vips, s->af, &s->vip)) {
        vgw_vset_del(&x->by_name, (uintptr_t)s, by_name_hash, NULL);
        vgw_vset_del(&x->by_key, (uintptr_t)s, by_key_hash, NULL);
        return -1;
    }
    for (uint32_t i = 0; i < s->nlips; i++)
        if (vgw_amap_inc(&x->lips, s->af, &s->lips[i])) {
            while (i--)
                vgw_amap_dec(&x->lips, s->af, &s->lips[i]);
            vgw_amap_dec(&x->vips, s->af, &s->vip);
            vgw_vset_del(&x->by_name, (uintptr_t)s, by_name_hash, NULL);
            vgw_vset_del(&x->by_key, (uintptr_t)s, by_key_hash, NULL);
            return -1;
        }
    cfg->nbackends += s->nbackends;
    return 0;
}

static void unindex_svc(vgw_cfg_t *cfg, vgw_cfg_service_t *s)
{
    struct vgw_cfg_index *x = cfg->index;
    vgw_vset_del(&x->by_name, (uintptr_t)s, by_name_hash, NULL);
    vgw_vset_del(&x->by_key, (uintptr_t)s, by_key_hash, NULL);
    vgw_amap_dec(&x->vips, s->af, &s->vip);
    for (uint32_t i = 0; i < s->nlips; i++)
        vgw_amap_dec(&x->lips, s->af, &s->lips[i]);
    cfg->nbackends -= s->nbackends;
}

static uint32_t svc_pos(const vgw_cfg_t *cfg, const vgw_cfg_service_t *s)
{
    for (uint32_t i = cfg->nservices; i-- > 0;)
        if (cfg->services[i] == s)
            return i;
    return UINT32_MAX;
}

static void detach_at(vgw_cfg_t *cfg, uint32_t pos)
{
    unindex_svc(cfg, cfg->services[pos]);
    memmove(&cfg->services[pos], &cfg->services[pos + 1], sizeof(cfg->services[0]) * (cfg->nservices - pos - 1));
    cfg->nservices--;
}

static void lip_remove_at(vgw_cfg_t *cfg, vgw_cfg_service_t *s, uint32_t pos)
{
    vgw_amap_dec(&cfg->index->lips, s->af, &s->lips[pos]);
    memmove(&s->lips[pos], &s->lips[pos + 1], sizeof s->lips[0] * (s->nlips - pos - 1));
    s->nlips--;
}

/* Removes backend i: the last one moves into its place (order is not meaningful, indexes stay
 * valid for everything else). */
static void be_remove_at(vgw_cfg_t *cfg, vgw_cfg_service_t *s, uint32_t i)
{
    uint32_t last = s->nbackends - 1;
    if (s->be_index) {
        vgw_vset_del(&s->be_index->set, (uintptr_t)i + 1, be_index_hash, s);
        if (i != last)
            vgw_vset_replace(&s->be_index->set, (uintptr_t)last + 1, (uintptr_t)i + 1, be_index_hash, s);
    }
    s->backends[i] = s->backends[last];
    s->nbackends--;
    cfg->nbackends--;
}

/* Exact inverse of be_remove_at(s, i) that removed `saved`. */
static void be_unremove_at(vgw_cfg_t *cfg, vgw_cfg_service_t *s, uint32_t i, const vgw_cfg_backend_t *saved)
{
    uint32_t n = s->nbackends;
    if (i != n) {
        if (s->be_index)
            vgw_vset_replace(&s->be_index->set, (uintptr_t)i + 1, (uintptr_t)n + 1, be_index_hash, s);
        s->backends[n] = s->backends[i];
    }
    s->backends[i] = *saved;
    s->nbackends++;
    cfg->nbackends++;
    if (s->be_index)
        vgw_vset_add(&s->be_index->set, (uintptr_t)i + 1, be_index_hash, s); /* capacity exists */
}

/* ---- primitives ------------------------------------------------------------------------------ */

/* A service's LIPs and backends have its VIP's family: the engine translates within one family
 * (FULLNAT v4 -> v4, v6 -> v6), and a service's LIPs are stored without a family of their own. */
static int be_family_fail(const vgw_cfg_service_t *s, const vgw_cfg_backend_t *b, char *reason, size_t rlen)
{
    char a[VGW_ENDPOINT_STR_MAX];
    vgw_endpoint_str(b->af, &b->addr, b->port, a, sizeof a);
    if (s->af == VGW_AF_INET6)
        return FAIL("service %s: backend %s is IPv4 but the VIP is IPv6 (IPv6 VIP with IPv4 backends (NAT64) is not "
                    "supported yet)",
                    s->name, a);
    return FAIL("service %s: backend %s is IPv6 but the VIP is IPv4 (IPv4 VIP with IPv6 backends (NAT46) is not "
                "supported)",
                s->name, a);
}

int vgw_cfg_svc_add(vgw_cfg_t *cfg, vgw_cfg_service_t *s, vgw_undo_t *u, char *reason, size_t rlen)
{
    char a[VGW_ENDPOINT_STR_MAX];
    const vgw_cfg_service_t *o;
    if (vgw_cfg_lookup(cfg, s->name))
        return FAIL("service %s: duplicate (a service of that name exists)", s->name);
    if ((o = (const vgw_cfg_service_t *)vgw_vset_find(&cfg->index->by_key, svc_key_hash(s), by_key_eq, NULL, s)))
        return FAIL("service %s: same VIP, port and protocol as %s", s->name, o->name);
    if (cfg->nservices >= VGW_MAX_SERVICES)
        return FAIL("too many services (max %u)", VGW_MAX_SERVICES);
    if (vgw_amap_get(&cfg->index->lips, s->af, &s->vip))
        return FAIL("service %s: VIP %s is also a LIP", s->name, vgw_addr_str(s->af, &s->vip, a, sizeof a));
    for (uint32_t i = 0; i < s->nbackends; i++)
        if (s->backends[i].af != s->af)
            return be_family_fail(s, &s->backends[i], reason, rlen);
    for (uint32_t i = 0; i < s->nlips; i++)
        if (vgw_amap_get(&cfg->index->vips, s->af, &s->lips[i]))
            return FAIL("service %s: lip %s is also the VIP of a service", s->name,
                        vgw_addr_str(s->af, &s->lips[i], a, sizeof a));
    if (cfg->nbackends + s->nbackends > VGW_MAX_BACKENDS)
        return FAIL("too many backends (max %u)", VGW_MAX_BACKENDS);
    RESERVE(r);
    if (grow((void **)&cfg->services, &cfg->services_cap, cfg->nservices + 1, sizeof cfg->services[0]) ||
        index_svc(cfg, s))
        return FAIL("out of memory");
    cfg->services[cfg->nservices++] = s;
    undo_push(u, r, U_SVC_ADD, s);
    return 0;
}

int vgw_cfg_svc_remove(vgw_cfg_t *cfg, vgw_cfg_service_t *s, vgw_undo_t *u, char *reason, size_t rlen)
{
    RESERVE(r);
    uint32_t pos = svc_pos(cfg, s);
    if (pos == UINT32_MAX)
        return FAIL("no service '%s'", s->name);
    detach_at(cfg, pos);
    if (u) {
        r->pos = pos;
        undo_push(u, r, U_SVC_REMOVE, s);
    } else {
        vgw_cfg_svc_free(s);
    }
    return 0;
}

int vgw_cfg_lip_add(vgw_cfg_t *cfg, vgw_cfg_service_t *s, uint8_t af, const vgw_addr_t *a, vgw_undo_t *u,
                    char *reason, size_t rlen)
{
    char b[VGW_ADDR_STR_MAX];
    if (af != s->af)
        return FAIL("lip %s: family differs from the VIP of service %s (an %s VIP takes %s LIPs)",
                    vgw_addr_str(af, a, b, sizeof b), s->name, vgw_af_name(s->af), vgw_af_name(s->af));
    for (uint32_t i = 0; i < s->nlips; i++)
        if (memcmp(&s->lips[i], a, sizeof *a) == 0)
            return FAIL("lip %s: duplicate in service %s", vgw_addr_str(af, a, b, sizeof b), s->name);
    if (s->nlips >= VGW_MAX_LIPS_PER_SVC)
        return FAIL("too many LIPs in %s (max %u)", s->name, VGW_MAX_LIPS_PER_SVC);
    if (vgw_amap_get(&cfg->index->vips, af, a))
        return FAIL("lip %s of %s is also the VIP of a service", vgw_addr_str(af, a, b, sizeof b), s->name);
    RESERVE(r);
    if (grow((void **)&s->lips, &s->lips_cap, s->nlips + 1, sizeof *s->lips) ||
        vgw_amap_inc(&cfg->index->lips, af, a))
        return FAIL("out of memory");
    undo_push(u, r, U_LIP_ADD, s);
    s->lips[s->nlips++] = *a;
    touch(s);
    return 0;
}

int vgw_cfg_lip_remove(vgw_cfg_t *cfg, vgw_cfg_service_t *s, uint8_t af, const vgw_addr_t *a, vgw_undo_t *u,
                       char *reason, size_t rlen)
{
    char b[VGW_ADDR_STR_MAX];
    uint32_t i = af == s->af ? 0 : s->nlips; /* a LIP has its service's family */
    while (i < s->nlips && memcmp(&s->lips[i], a, sizeof *a) != 0)
        i++;
    if (i == s->nlips)
        return FAIL("no lip %s in service %s", vgw_addr_str(af, a, b, sizeof b), s->name);
    RESERVE(r);
    if (u) {
        r->pos = i;
        r->af = af;
        r->u.lip = *a;
    }
    undo_push(u, r, U_LIP_REMOVE, s);
    lip_remove_at(cfg, s, i);
    touch(s);
    return 0;
}

int vgw_cfg_be_add(vgw_cfg_t *cfg, vgw_cfg_service_t *s, const vgw_cfg_backend_t *b, vgw_undo_t *u, char *reason,
                   size_t rlen)
{
    char a[VGW_ENDPOINT_STR_MAX];
    if (b->af != s->af)
        return be_family_fail(s, b, reason, rlen);
    if (vgw_cfg_be_find(s, b->af, &b->addr, b->port))
        return FAIL("backend %s: duplicate in service %s", vgw_endpoint_str(b->af, &b->addr, b->port, a, sizeof a),
                    s->name);
    if (s->nbackends >= VGW_MAX_BACKENDS_PER_SVC)
        return FAIL("too many backends in %s (max %u)", s->name, VGW_MAX_BACKENDS_PER_SVC);
    if (cfg->nbackends >= VGW_MAX_BACKENDS)
        return FAIL("too many backends (max %u)", VGW_MAX_BACKENDS);
    RESERVE(r);
    if (grow((void **)&s->backends, &s->backends_cap, s->nbackends + 1, sizeof *s->backends))
        return FAIL("out of memory");
    if (!s->be_index && s->nbackends + 1 >= BE_INDEX_MIN && be_index_build(s))
        return FAIL("out of memory");
    s->backends[s->nbackends] = *b;
    if (s->be_index && vgw_vset_add(&s->be_index->set, (uintptr_t)s->nbackends + 1, be_index_hash, s))
        return FAIL("out of memory");
    s->nbackends++;
    cfg->nbackends++;
    undo_push(u, r, U_BE_ADD, s);
    touch(s);
    return 0;
}

static vgw_cfg_backend_t *be_lookup(vgw_cfg_service_t *s, const vgw_cfg_backend_t *key, char *reason, size_t rlen)
{
    char a[VGW_ENDPOINT_STR_MAX];
    vgw_cfg_backend_t *be = vgw_cfg_be_find(s, key->af, &key->addr, key->port);
    if (!be)
        snprintf(reason, rlen, "no backend %s in service %s",
                 vgw_endpoint_str(key->af, &key->addr, key->port, a, sizeof a), s->name);
    return be;
}

int vgw_cfg_be_remove(vgw_cfg_t *cfg, vgw_cfg_service_t *s, const vgw_cfg_backend_t *key, vgw_undo_t *u,
                      char *reason, size_t rlen)
{
    vgw_cfg_backend_t *be = be_lookup(s, key, reason, rlen);
    if (!be)
        return -1;
    RESERVE(r);
    uint32_t i = (uint32_t)(be - s->backends);
    if (u) {
        r->pos = i;
        r->u.be = *be;
    }
    undo_push(u, r, U_BE_REMOVE, s);
    be_remove_at(cfg, s, i);
    touch(s);
    return 0;
}

#define EDITED_WEIGHT 0x1u
#define EDITED_STATE 0x2u

int vgw_cfg_be_set(vgw_cfg_t *cfg, vgw_cfg_service_t *s, const vgw_cfg_backend_t *key, int32_t weight, int state,
                   vgw_undo_t *u, char *reason, size_t rlen)
{
    (void)cfg;
    char a[VGW_ENDPOINT_STR_MAX];
    vgw_cfg_backend_t *be = be_lookup(s, key, reason, rlen);
    if (!be)
        return -1;
    uint8_t what = (uint8_t)((weight >= 0 ? EDITED_WEIGHT : 0) | (state >= 0 ? EDITED_STATE : 0));
    /* Setting the same thing twice in one delta is a producer's bug, not an intent. */
    if (u && (be->edited & what))
        return FAIL("backend %s in %s: %s set twice in one delta",
                    vgw_endpoint_str(be->af, &be->addr, be->port, a, sizeof a), s->name,
                    (be->edited & what & EDITED_WEIGHT) ? "weight" : "state");
    RESERVE(r);
    if (u) {
        r->pos = (uint32_t)(be - s->backends);
        r->u.be = *be;
    }
    undo_push(u, r, U_BE_SET, s);
    if (weight >= 0)
        be->weight = (uint16_t)weight;
    if (state >= 0)
        be->state = (uint8_t)state;
    if (u)
        be->edited |= what;
    touch(s);
    return 0;
}

int vgw_cfg_set_generation(vgw_cfg_t *cfg, uint64_t generation, vgw_undo_t *u, char *reason, size_t rlen)
{
    RESERVE(r);
    if (u)
        r->u.gen = cfg->generation;
    undo_push(u, r, U_GENERATION, NULL);
    cfg->generation = generation;
    return 0;
}

void vgw_undo_rollback(vgw_cfg_t *cfg, vgw_undo_t *u)
{
    if (!u)
        return;
    while (u->n) {
        undo_rec_t *r = &u->rec[--u->n];
        vgw_cfg_service_t *s = r->s;
        switch (r->kind) {
        case U_SVC_ADD:
            detach_at(cfg, svc_pos(cfg, s));
            vgw_cfg_svc_free(s);
            continue;
        case U_SVC_REMOVE:
            /* Capacity for it exists (it was there): re-indexing cannot fail. */
            memmove(&cfg->services[r->pos + 1], &cfg->services[r->pos],
                    sizeof(cfg->services[0]) * (cfg->nservices - r->pos));
            cfg->services[r->pos] = s;
            cfg->nservices++;
            index_svc(cfg, s);
            continue;
        case U_LIP_ADD:
            lip_remove_at(cfg, s, s->nlips - 1);
            break;
        case U_LIP_REMOVE:
            memmove(&s->lips[r->pos + 1], &s->lips[r->pos], sizeof s->lips[0] * (s->nlips - r->pos));
            s->lips[r->pos] = r->u.lip;
            s->nlips++;
            vgw_amap_inc(&cfg->index->lips, r->af, &r->u.lip);
            break;
        case U_BE_ADD:
            be_remove_at(cfg, s, s->nbackends - 1);
            break;
        case U_BE_REMOVE:
            be_unremove_at(cfg, s, r->pos, &r->u.be);
            break;
        case U_BE_SET:
            s->backends[r->pos] = r->u.be; /* later moves are undone already: pos is right */
            break;
        case U_GENERATION:
            cfg->generation = r->u.gen;
            continue;
        default:
            continue;
        }
        s->rev = r->rev;
    }
    free(u->rec);
    free(u);
}

void vgw_undo_commit(vgw_undo_t *u)
{
    if (!u)
        return;
    for (uint32_t i = 0; i < u->n; i++) {
        const undo_rec_t *r = &u->rec[i];
        vgw_cfg_backend_t *be;
        if (r->kind == U_BE_SET && (be = vgw_cfg_be_find(r->s, r->u.be.af, &r->u.be.addr, r->u.be.port)))
            be->edited = 0;
    }
    for (uint32_t i = 0; i < u->n; i++)
        if (u->rec[i].kind == U_SVC_REMOVE)
            vgw_cfg_svc_free(u->rec[i].s);
    free(u->rec);
    free(u);
}

int vgw_undo_check_lips(vgw_cfg_t *cfg, const vgw_undo_t *u, char *reason, size_t rlen)
{
    for (uint32_t i = 0; u && i < u->n; i++) {
        const undo_rec_t *r = &u->rec[i];
        if ((r->kind == U_SVC_ADD || r->kind == U_LIP_REMOVE) && r->s->nlips == 0 &&
            vgw_cfg_lookup(cfg, r->s->name) == r->s)
            return FAIL("service %s: needs at least one lip", r->s->name);
    }
    return 0;
}

unsigned vgw_undo_changes(const vgw_undo_t *u)
{
    unsigned c = 0;
    for (uint32_t i = 0; u && i < u->n; i++) {
        uint8_t k = u->rec[i].kind;
        if (k == U_SVC_ADD || k == U_SVC_REMOVE)
            c |= VGW_CFG_CHANGED_SERVICES | VGW_CFG_CHANGED_ADDRS;
        else if (k == U_LIP_ADD || k == U_LIP_REMOVE)
            c |= VGW_CFG_CHANGED_ADDRS;
    }
    return c;
}

