/* SPDX-License-Identifier: Apache-2.0
 * Maglev consistent hashing (Eisenbud et al., NSDI'16) with weights.
 * Exposed on its own so the bench and tests can measure build time and disruption directly. */
#ifndef VGW_MAGLEV_H
#define VGW_MAGLEV_H

#include <stdint.h>

#include "vgw/types.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VGW_MAGLEV_EMPTY 0xffffu

typedef struct vgw_maglev_backend {
    vgw_addr_t addr;
    uint16_t port; /* host order */
    uint16_t weight; /* > 0 */
    uint8_t af;
} vgw_maglev_backend_t;

/* Fills table[0..m) with indexes into b[]. m must be prime, n <= 65535, weights > 0.
 * Backend permutations depend only on (af, addr, port), so every node and every rebuild computes
 * the same table for the same backend set, whatever the order of b[]. Returns 0, or -1 on bad
 * arguments or allocation failure. Allocates temporary memory: never call on the fast path. */
int vgw_maglev_build(uint16_t *table, uint32_t m, const vgw_maglev_backend_t *b, uint32_t n);

int vgw_is_prime(uint32_t n);

#ifdef __cplusplus
}
#endif
#endif
