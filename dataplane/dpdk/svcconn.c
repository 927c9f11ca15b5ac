/* SPDX-License-Identifier: Apache-2.0
 * Per-service active connections, kept by each worker beside the core's table.
 *
 * The core's public API counts connections per worker, not per service. Each worker therefore
 * keeps a shadow set of the client tuples (CIP, CPORT, VIP, VPORT, proto) of the connections it
 * forwarded, each with the service's counter slot: a tuple enters the set the first time a
 * forwarded client packet that can open a connection (TCP SYN, UDP) is seen in a burst in which
 * the core created connections, and leaves it when a bounded background sweep no longer finds the
 * connection in the core (vgw_worker_conn_find: ended or expired). The per-service gauge is
 * exact up to the sweep's lag (a full pass takes well under a second when idle; under load
 * proportionally longer). Only the worker touches its set: no locks, no sharing.
 */
#include <stdlib.h>
#include <string.h>

#include <rte_byteorder.h>

#include "fwd.h"

static inline uint32_t shash(uint32_t cip, uint32_t vip, uint16_t cport, uint16_t vport, uint8_t proto)
{
    uint64_t a = ((uint64_t)cip << 32) | vip;
    uint64_t b = ((uint64_t)cport << 24) | ((uint64_t)vport << 8) | proto;
    a ^= b * 0x9e3779b97f4a7c15ULL;
    a ^= a >> 29;
    a *= 0xbf58476d1ce4e5b9ULL;
    a ^= a >> 32;
    return (uint32_t)a;
}

int shadow_init(shadow_t *s, uint32_t capacity)
{
    uint32_t size = 1024;
    while (size < capacity * 2u && size < (1u << 30))
        size <<= 1;
    s->tab = calloc(size, sizeof *s->tab);
    if (!s->tab)
        return -1;
    s->mask = size - 1;
    s->capacity = capacity;
    s->count = s->sweep = 0;
    return 0;
}

void shadow_fini(shadow_t *s)
{
    free(s->tab);
    s->tab = NULL;
}

/* 1 = inserted (a connection we did not know), 0 = known, -1 = set full (not tracked). */
int shadow_add(shadow_t *s, uint32_t cip, uint16_t cport, uint32_t vip, uint16_t vport, uint8_t proto,
               uint16_t slot)
{
    uint32_t i = shash(cip, vip, cport, vport, proto) & s->mask;
    for (;; i = (i + 1) & s->mask) {
        shadow_ent_t *e = &s->tab[i];
        if (!e->used) {
            if (s->count >= s->capacity)
                return -1;
            *e = (shadow_ent_t){.cip = cip, .vip = vip, .cport = cport, .vport = vport, .proto = proto,
                                .used = 1, .slot = slot};
            s->count++;
            return 1;
        }
        if (e->cip == cip && e->vip == vip && e->cport == cport && e->vport == vport && e->proto == proto)
            return 0;
    }
}

/* Backward-shift deletion (linear probing without tombstones). */
static void shadow_del(shadow_t *s, uint32_t i)
{
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & s->mask;
        shadow_ent_t *e = &s->tab[j];
        if (!e->used)
            break;
        uint32_t k = shash(e->cip, e->vip, e->cport, e->vport, e->proto) & s->mask;
        /* e (home k) may move to the hole at i unless k lies cyclically in (i, j] */
        bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            s->tab[i] = *e;
            i = j;
        }
    }
    s->tab[i].used = 0;
    s->count--;
}

/* Looks at up to `budget` slots; ended connections leave the set and their service's gauge. */
void shadow_sweep(fwd_worker_t *fw, uint64_t now_ms, uint32_t budget)
{
    shadow_t *s = &fw->shadow;
    if (!s->count)
        return;
    vgw_conn_info_t info;
    while (budget--) {
        uint32_t i = s->sweep;
        shadow_ent_t *e = &s->tab[i];
        if (e->used &&
            vgw_worker_conn_find(fw->w, e->proto, e->cip, rte_be_to_cpu_16(e->cport), e->vip,
                                 rte_be_to_cpu_16(e->vport), now_ms, &info) != 0) {
            fw->svc[(size_t)e->slot * SVC_CNT_MAX + SVC_CNT_ACTIVE]--;
            shadow_del(s, i);
            continue; /* an entry may have shifted into slot i: look again */
        }
        s->sweep = (i + 1) & s->mask;
    }
}
