/* SPDX-License-Identifier: Apache-2.0
 * Weighted Maglev table build. Runs on the control thread only. */
#include <stdlib.h>

#include "internal.h"

/* Two independent hashes of the backend identity give each backend its own permutation of the
 * table (offset, skip). Fixed seeds: the table must be identical on every node behind ECMP so a
 * flow that moves between nodes still lands on the same backend. */
static uint64_t backend_hash(const vgw_maglev_backend_t *b, uint64_t seed)
{
    uint64_t h = seed;
    for (int i = 0; i < 4; i++)
        h = vgw_mix64(h ^ ((uint64_t)b->addr.w[i] + 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1)));
    return vgw_mix64(h ^ ((uint64_t)b->port << 8) ^ b->af);
}

int vgw_maglev_build(uint16_t *table, uint32_t m, const vgw_maglev_backend_t *b, uint32_t n)
{
    if (!table || m < 2 || !vgw_is_prime(m) || n > VGW_MAX_BACKENDS_PER_SVC)
        return -1;
    for (uint32_t i = 0; i < m; i++)
        table[i] = VGW_MAGLEV_EMPTY;
    if (n == 0)
        return 0;
    uint32_t *next = malloc(sizeof(uint32_t) * n);
    uint32_t *skip = malloc(sizeof(uint32_t) * n);
    uint32_t *acc = calloc(n, sizeof(uint32_t));
    uint32_t *order = malloc(sizeof(uint32_t) * n);
    uint64_t *keys = malloc(sizeof(uint64_t) * n);
    if (!next || !skip || !acc || !order || !keys) {
        free(next), free(skip), free(acc), free(order), free(keys);
        return -1;
    }
    uint32_t wmax = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (b[i].weight == 0) {
            free(next), free(skip), free(acc), free(order), free(keys);
            return -1;
        }
        uint64_t h1 = backend_hash(&b[i], 0x5bd1e9955bd1e995ULL);
        uint64_t h2 = backend_hash(&b[i], 0xcbf29ce484222325ULL);
        next[i] = (uint32_t)(h1 % m);
        skip[i] = (uint32_t)(h2 % (m - 1)) + 1;
        keys[i] = h1;
        if (b[i].weight > wmax)
            wmax = b[i].weight;
    }
    /* Visit backends in an order fixed by their identity, not by config order: the turn order
     * decides who wins contested slots, and it must not change when an unrelated backend is
     * added or the operator reorders the list. Insertion sort on indexes is fine off the fast
     * path for realistic n and avoids a qsort context pointer. */
    for (uint32_t i = 0; i < n; i++) {
        uint32_t j = i;
        while (j > 0 && keys[order[j - 1]] > keys[i]) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = i;
    }
    /* Weights: in each round a backend accumulates its weight and takes one slot per wmax it has
     * banked, so slot shares converge to weight/sum(weights) while every backend still walks its
     * own permutation (which is what keeps disruption near 1/N on changes). */
    uint32_t filled = 0;
    while (filled < m) {
        for (uint32_t k = 0; k < n && filled < m; k++) {
            uint32_t i = order[k];
            acc[i] += b[i].weight;
            while (acc[i] >= wmax && filled < m) {
                acc[i] -= wmax;
                uint32_t c = next[i];
                while (table[c] != VGW_MAGLEV_EMPTY) {
                    c += skip[i];
                    if (c >= m)
                        c -= m;
                }
                table[c] = (uint16_t)i;
                c += skip[i];
                if (c >= m)
                    c -= m;
                next[i] = c;
                filled++;
            }
        }
    }
    free(next), free(skip), free(acc), free(order), free(keys);
    return 0;
}
