/* SPDX-License-Identifier: Apache-2.0
 * Per-worker connection table: preallocated records (one cache line each) plus a bucketised
 * open-addressing index with one entry per direction. No allocation after init. */
#include <stdlib.h>
#include <sys/mman.h>

#include "internal.h"

#define HUGE_2M (2u << 20)

/* Lookups touch random buckets and records: with 4 KiB pages nearly every one is also a TLB
 * miss, which prefetching does not hide. Large tables are therefore 2 MiB aligned and offered to
 * transparent huge pages (a no-op where THP is off). */
static void *alloc_aligned(size_t bytes)
{
    void *p = NULL;
    size_t align = bytes >= HUGE_2M ? HUGE_2M : VGW_CACHE_LINE;
    bytes = (bytes + align - 1) & ~(size_t)(align - 1);
    if (posix_memalign(&p, align, bytes))
        return NULL;
#ifdef MADV_HUGEPAGE
    if (align == HUGE_2M)
        (void)madvise(p, bytes, MADV_HUGEPAGE);
#endif
    return p;
}

uint64_t vgw_ctab_nbuckets(uint32_t capacity)
{
    /* Two entries per connection at <= 50% slot load keeps probe chains short; the power of two
     * rounding puts the load between 25% and 50%. */
    uint64_t entries = (uint64_t)capacity * 2;
    uint64_t want = (entries * 2 + VGW_BUCKET_SLOTS - 1) / VGW_BUCKET_SLOTS;
    uint64_t nb = 1;
    while (nb < want)
        nb *= 2;
    return nb;
}

/* The parts every table has in private memory: the free stack and the half-open ring are derived
 * from the records (persist.c rebuilds them at attach), so they never need a stable layout. */
static int ctab_init_common(vgw_ctab_t *t, uint32_t capacity, uint64_t seed, uint64_t nb)
{
    t->free_stack = malloc((size_t)capacity * sizeof(uint32_t));
    t->ring = malloc((size_t)capacity * sizeof(uint64_t));
    if (!t->free_stack || !t->ring)
        return -1;
    t->bmask = (uint32_t)(nb - 1);
    t->capacity = capacity;
    t->seed = seed;
    t->bytes = nb * sizeof(vgw_bucket_t) +
               (uint64_t)capacity * (sizeof(vgw_conn_t) + sizeof(uint32_t) + sizeof(uint64_t));
    return 0;
}

static void ctab_fill_free(vgw_ctab_t *t)
{
    /* Pop order = ascending indexes, so a young table touches memory sequentially. */
    for (uint32_t i = 0; i < t->capacity; i++)
        t->free_stack[i] = t->capacity - 1 - i;
    t->free_top = t->capacity;
}

int vgw_ctab_init(vgw_ctab_t *t, uint32_t capacity, uint64_t seed)
{
    memset(t, 0, sizeof *t);
    if (capacity == 0 || capacity > (1u << 30))
        return -1;
    uint64_t nb = vgw_ctab_nbuckets(capacity);
    t->buckets = alloc_aligned(nb * sizeof(vgw_bucket_t));
    t->conns = alloc_aligned((size_t)capacity * sizeof(vgw_conn_t));
    if (!t->buckets || !t->conns || ctab_init_common(t, capacity, seed, nb)) {
        vgw_ctab_fini(t);
        return -1;
    }
    memset(t->buckets, 0, nb * sizeof(vgw_bucket_t));
    memset(t->conns, 0, (size_t)capacity * sizeof(vgw_conn_t));
    ctab_fill_free(t);
    return 0;
}

int vgw_ctab_init_ext(vgw_ctab_t *t, uint32_t capacity, uint64_t seed, vgw_conn_t *conns, vgw_bucket_t *buckets,
                      bool fresh)
{
    memset(t, 0, sizeof *t);
    if (capacity == 0 || capacity > (1u << 30))
        return -1;
    uint64_t nb = vgw_ctab_nbuckets(capacity);
    t->ext = true;
    t->conns = conns;
    t->buckets = buckets;
    if (ctab_init_common(t, capacity, seed, nb)) {
        vgw_ctab_fini(t);
        return -1;
    }
    if (fresh) {
        memset(buckets, 0, nb * sizeof(vgw_bucket_t));
        memset(conns, 0, (size_t)capacity * sizeof(vgw_conn_t));
        ctab_fill_free(t);
    }
    return 0;
}

void vgw_ctab_enable_v6(vgw_ctab_t *t, const uint8_t (*addr6)[16])
{
    t->addr6 = addr6;
}

void vgw_ctab_fini(vgw_ctab_t *t)
{
    if (!t->ext)
        free(t->buckets), free(t->conns);
    free(t->free_stack), free(t->ring);
    memset(t, 0, sizeof *t);
}

void vgw_ctab_rebuild_index(vgw_ctab_t *t)
{
    memset(t->buckets, 0, ((size_t)t->bmask + 1) * sizeof(vgw_bucket_t));
    t->count = 0;
    for (uint32_t i = 0; i < t->capacity; i++)
        if (t->conns[i].flags & VGW_CF_USED)
            vgw_ctab_insert(t, i);
}

/* The ref whose record matches key k (of either family: match knows which), walking the buckets
 * from h's home while entries that overflowed it may lie further on. Inlined into each family's
 * lookup, so the match is a direct call. */
static inline __attribute__((always_inline)) uint32_t
ctab_walk(const vgw_ctab_t *t, const void *k, uint64_t h,
          bool (*match)(const vgw_ctab_t *t, uint32_t ref, const void *k))
{
    uint16_t tag = vgw_tag(h);
    uint32_t bi = (uint32_t)h & t->bmask;
    for (uint32_t probes = 0; probes <= t->bmask; probes++) {
        const vgw_bucket_t *b = &t->buckets[bi];
        for (uint32_t s = 0; s < VGW_BUCKET_SLOTS; s++)
            if (b->tag[s] == tag && match(t, b->ref[s], k))
                return b->ref[s];
        if (VGW_LIKELY(b->ovf == 0))
            return UINT32_MAX;
        bi = (bi + 1) & t->bmask;
    }
    return UINT32_MAX;
}

static inline bool match4(const vgw_ctab_t *t, uint32_t ref, const void *k)
{
    return vgw_conn_match(&t->conns[ref >> 1], ref & 1, k);
}

static inline bool match6(const vgw_ctab_t *t, uint32_t ref, const void *k)
{
    return vgw_conn_match6(t, ref >> 1, ref & 1, k);
}

uint32_t vgw_ctab_lookup(const vgw_ctab_t *t, const vgw_key4_t *k, uint64_t h)
{
    return ctab_walk(t, k, h, match4);
}

uint32_t vgw_ctab_lookup6(const vgw_ctab_t *t, const vgw_key6_t *k, uint64_t h)
{
    return ctab_walk(t, k, h, match6);
}

/* The index hash of direction dir of record idx, for either family. */
static uint64_t ref_hash(const vgw_ctab_t *t, uint32_t idx, uint32_t dir)
{
    if (t->conns[idx].af == VGW_AF_INET6) {
        vgw_key6_t k6;
        vgw_conn_key6(t, idx, dir, &k6);
        return vgw_ctab_hash6(t, &k6);
    }
    vgw_key4_t k;
    vgw_conn_key(&t->conns[idx], dir, &k);
    return vgw_ctab_hash(t, &k);
}

static void insert_ref(vgw_ctab_t *t, uint32_t ref, uint64_t h)
{
    uint16_t tag = vgw_tag(h);
    uint32_t bi = (uint32_t)h & t->bmask;
    /* Capacity guarantees a free slot exists (entries <= 50% of slots), so this terminates. */
    for (;;) {
        vgw_bucket_t *b = &t->buckets[bi];
        for (uint32_t s = 0; s < VGW_BUCKET_SLOTS; s++) {
            if (b->tag[s] == 0) {
                b->tag[s] = tag;
                b->ref[s] = ref;
                return;
            }
        }
        b->ovf++;
        bi = (bi + 1) & t->bmask;
    }
}

static void remove_ref(vgw_ctab_t *t, uint32_t ref, uint64_t h)
{
    uint32_t bi = (uint32_t)h & t->bmask;
    uint32_t home = bi;
    for (uint32_t probes = 0; probes <= t->bmask; probes++) {
        vgw_bucket_t *b = &t->buckets[bi];
        for (uint32_t s = 0; s < VGW_BUCKET_SLOTS; s++) {
            if (b->tag[s] != 0 && b->ref[s] == ref) {
                b->tag[s] = 0;
                b->ref[s] = 0;
                /* Undo the overflow marks this entry left on the way from its home bucket. */
                for (uint32_t j = home; j != bi; j = (j + 1) & t->bmask)
                    t->buckets[j].ovf--;
                return;
            }
        }
        bi = (bi + 1) & t->bmask;
    }
}

void vgw_ctab_insert(vgw_ctab_t *t, uint32_t idx)
{
    for (uint32_t dir = 0; dir < 2; dir++)
        insert_ref(t, idx << 1 | dir, ref_hash(t, idx, dir));
    t->count++;
}

void vgw_ctab_remove(vgw_ctab_t *t, uint32_t idx)
{
    vgw_conn_t *c = &t->conns[idx];
    for (uint32_t dir = 0; dir < 2; dir++)
        remove_ref(t, idx << 1 | dir, ref_hash(t, idx, dir));
    c->flags = 0;
    t->free_stack[t->free_top++] = idx;
    t->count--;
}
