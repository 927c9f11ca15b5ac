/* SPDX-License-Identifier: Apache-2.0
 * Two small open-addressing tables for the control plane (never the fast path):
 *  - vgw_vset: a set of non-zero values (pointers or index+1) whose hash and equality come from
 *    the caller, so one implementation indexes services by name, by (VIP, port, protocol), and
 *    a service's backends by (address, port);
 *  - vgw_amap: address -> reference count (which addresses are VIPs, which are LIPs).
 * Both use linear probing with backward-shift deletion (no tombstones) and grow at half load.
 * They never shrink, so undoing a removal can never need memory: a rollback cannot fail. */
#ifndef VGW_HASHSET_H
#define VGW_HASHSET_H

#include <stdint.h>

#include "vgw/types.h"

typedef uint64_t (*vgw_vset_hash_fn)(const void *ctx, uintptr_t v);
typedef int (*vgw_vset_eq_fn)(const void *ctx, uintptr_t v, const void *key);

typedef struct vgw_vset {
    uintptr_t *slot; /* 0 = empty */
    uint32_t mask, count;
} vgw_vset_t;

void vgw_vset_fini(vgw_vset_t *s);
/* The value whose hash is h and that eq() matches with key; 0 if none. */
uintptr_t vgw_vset_find(const vgw_vset_t *s, uint64_t h, vgw_vset_eq_fn eq, const void *ctx, const void *key);
/* Adds v (not present). hash(ctx, x) must give the hash of every value in the set. -1 = OOM. */
int vgw_vset_add(vgw_vset_t *s, uintptr_t v, vgw_vset_hash_fn hash, const void *ctx);
/* Removes v (present). */
void vgw_vset_del(vgw_vset_t *s, uintptr_t v, vgw_vset_hash_fn hash, const void *ctx);
/* Replaces v (present) by nv, which has the same hash. */
void vgw_vset_replace(vgw_vset_t *s, uintptr_t v, uintptr_t nv, vgw_vset_hash_fn hash, const void *ctx);
/* Bytes allocated. */
uint64_t vgw_vset_bytes(const vgw_vset_t *s);

typedef struct vgw_amap_ent {
    vgw_addr_t addr;
    uint32_t count; /* 0 = empty slot */
    uint8_t af;
} vgw_amap_ent_t;

typedef struct vgw_amap {
    vgw_amap_ent_t *ent;
    uint32_t mask, count;
} vgw_amap_t;

void vgw_amap_fini(vgw_amap_t *m);
uint32_t vgw_amap_get(const vgw_amap_t *m, uint8_t af, const vgw_addr_t *a);
/* count+1 (inserting at 1); -1 = OOM. */
int vgw_amap_inc(vgw_amap_t *m, uint8_t af, const vgw_addr_t *a);
/* count-1 (removing at 0); the address must be present. */
void vgw_amap_dec(vgw_amap_t *m, uint8_t af, const vgw_addr_t *a);

uint64_t vgw_addr_hash(uint8_t af, const vgw_addr_t *a);

#endif
