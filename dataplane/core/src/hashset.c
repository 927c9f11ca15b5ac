/* SPDX-License-Identifier: Apache-2.0
 * Control-plane hash tables (hashset.h). */
#include <stdlib.h>

#include "hashset.h"
#include "internal.h"

#define MIN_SLOTS 16u

/* ---- vset ---------------------------------------------------------------------------------- */

void vgw_vset_fini(vgw_vset_t *s)
{
    free(s->slot);
    memset(s, 0, sizeof *s);
}

uintptr_t vgw_vset_find(const vgw_vset_t *s, uint64_t h, vgw_vset_eq_fn eq, const void *ctx, const void *key)
{
    if (!s->slot)
        return 0;
    for (uint32_t i = (uint32_t)h & s->mask;; i = (i + 1) & s->mask) {
        uintptr_t v = s->slot[i];
        if (!v)
            return 0;
        if (eq(ctx, v, key))
            return v;
    }
}

static void vset_put(uintptr_t *slot, uint32_t mask, uint64_t h, uintptr_t v)
{
    uint32_t i = (uint32_t)h & mask;
    while (slot[i])
        i = (i + 1) & mask;
    slot[i] = v;
}

int vgw_vset_add(vgw_vset_t *s, uintptr_t v, vgw_vset_hash_fn hash, const void *ctx)
{
    if (!s->slot || (s->count + 1) * 2 > s->mask + 1) {
        uint32_t n = s->slot ? (s->mask + 1) * 2 : MIN_SLOTS;
        uintptr_t *ns = calloc(n, sizeof *ns);
        if (!ns)
            return -1;
        if (s->slot)
            for (uint32_t i = 0; i <= s->mask; i++)
                if (s->slot[i])
                    vset_put(ns, n - 1, hash(ctx, s->slot[i]), s->slot[i]);
        free(s->slot);
        s->slot = ns;
        s->mask = n - 1;
    }
    vset_put(s->slot, s->mask, hash(ctx, v), v);
    s->count++;
    return 0;
}

/* Slot holding v, or UINT32_MAX if v is not in the set. */
static uint32_t vset_slot_of(const vgw_vset_t *s, uintptr_t v, uint64_t h)
{
    if (!s->slot)
        return UINT32_MAX;
    for (uint32_t i = (uint32_t)h & s->mask;; i = (i + 1) & s->mask) {
        if (s->slot[i] == v)
            return i;
        if (!s->slot[i])
            return UINT32_MAX;
    }
}

void vgw_vset_del(vgw_vset_t *s, uintptr_t v, vgw_vset_hash_fn hash, const void *ctx)
{
    uint32_t i = vset_slot_of(s, v, hash(ctx, v));
    if (i == UINT32_MAX)
        return;
    /* Backward shift: pull later entries of the cluster into the hole. */
    for (uint32_t j = (i + 1) & s->mask; s->slot[j]; j = (j + 1) & s->mask) {
        uint32_t k = (uint32_t)hash(ctx, s->slot[j]) & s->mask;
        if (!vgw_lp_stays(i, j, k)) {
            s->slot[i] = s->slot[j];
            i = j;
        }
    }
    s->slot[i] = 0;
    s->count--;
}

void vgw_vset_replace(vgw_vset_t *s, uintptr_t v, uintptr_t nv, vgw_vset_hash_fn hash, const void *ctx)
{
    uint32_t i = vset_slot_of(s, v, hash(ctx, v));
    if (i != UINT32_MAX)
        s->slot[i] = nv;
}

uint64_t vgw_vset_bytes(const vgw_vset_t *s)
{
    return s->slot ? (uint64_t)(s->mask + 1) * sizeof(uintptr_t) : 0;
}

/* ---- amap ---------------------------------------------------------------------------------- */

uint64_t vgw_addr_hash(uint8_t af, const vgw_addr_t *a)
{
    uint64_t x = ((uint64_t)a->w[0] << 32 | a->w[1]) ^ vgw_mix64(((uint64_t)a->w[2] << 32 | a->w[3]) + af);
    return vgw_mix64(x);
}

static int addr_eq(const vgw_amap_ent_t *e, uint8_t af, const vgw_addr_t *a)
{
    return e->af == af && memcmp(&e->addr, a, sizeof *a) == 0;
}

void vgw_amap_fini(vgw_amap_t *m)
{
    free(m->ent);
    memset(m, 0, sizeof *m);
}

static vgw_amap_ent_t *amap_find(const vgw_amap_t *m, uint8_t af, const vgw_addr_t *a)
{
    if (!m->ent)
        return NULL;
    for (uint32_t i = (uint32_t)vgw_addr_hash(af, a) & m->mask;; i = (i + 1) & m->mask) {
        vgw_amap_ent_t *e = &m->ent[i];
        if (!e->count)
            return NULL;
        if (addr_eq(e, af, a))
            return e;
    }
}

uint32_t vgw_amap_get(const vgw_amap_t *m, uint8_t af, const vgw_addr_t *a)
{
    const vgw_amap_ent_t *e = amap_find(m, af, a);
    return e ? e->count : 0;
}

static void amap_put(vgw_amap_ent_t *ent, uint32_t mask, const vgw_amap_ent_t *src)
{
    uint32_t i = (uint32_t)vgw_addr_hash(src->af, &src->addr) & mask;
    while (ent[i].count)
        i = (i + 1) & mask;
    ent[i] = *src;
}

int vgw_amap_inc(vgw_amap_t *m, uint8_t af, const vgw_addr_t *a)
{
    vgw_amap_ent_t *e = amap_find(m, af, a);
    if (e) {
        e->count++;
        return 0;
    }
    if (!m->ent || (m->count + 1) * 2 > m->mask + 1) {
        uint32_t n = m->ent ? (m->mask + 1) * 2 : MIN_SLOTS;
        vgw_amap_ent_t *ne = calloc(n, sizeof *ne);
        if (!ne)
            return -1;
        if (m->ent)
            for (uint32_t i = 0; i <= m->mask; i++)
                if (m->ent[i].count)
                    amap_put(ne, n - 1, &m->ent[i]);
        free(m->ent);
        m->ent = ne;
        m->mask = n - 1;
    }
    vgw_amap_ent_t add;
    memset(&add, 0, sizeof add);
    add.addr = *a, add.af = af, add.count = 1;
    amap_put(m->ent, m->mask, &add);
    m->count++;
    return 0;
}

void vgw_amap_dec(vgw_amap_t *m, uint8_t af, const vgw_addr_t *a)
{
    vgw_amap_ent_t *e = amap_find(m, af, a);
    if (!e || --e->count)
        return;
    uint32_t i = (uint32_t)(e - m->ent);
    for (uint32_t j = (i + 1) & m->mask; m->ent[j].count; j = (j + 1) & m->mask) {
        uint32_t k = (uint32_t)vgw_addr_hash(m->ent[j].af, &m->ent[j].addr) & m->mask;
        if (!vgw_lp_stays(i, j, k)) {
            m->ent[i] = m->ent[j];
            i = j;
        }
    }
    memset(&m->ent[i], 0, sizeof m->ent[i]);
    m->count--;
}
