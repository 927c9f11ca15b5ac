/* SPDX-License-Identifier: Apache-2.0
 * Registries: stable small uids for services and backends, kept across generations (connections
 * and per-worker arrays refer to them). A persistent key -> uid map, so a generation that changes
 * one service touches only that service's keys. Control thread only. */
#include <stdlib.h>

#include "internal.h"

int vgw_reg_init(vgw_registry_t *r, uint32_t space)
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

void vgw_reg_fini(vgw_registry_t *r)
{
    free(r->keys), free(r->uids), free(r->free_fifo);
    memset(r, 0, sizeof *r);
}

/* Slot of key, or of the empty slot that ends its probe sequence. */
static uint32_t reg_slot(const vgw_registry_t *r, uint64_t key)
{
    uint32_t i = (uint32_t)vgw_mix64(key) & r->mask;
    while (r->keys[i] != 0 && r->keys[i] != key)
        i = (i + 1) & r->mask;
    return i;
}

uint32_t vgw_reg_find(const vgw_registry_t *r, uint64_t key)
{
    uint32_t i = reg_slot(r, key);
    return r->keys[i] ? r->uids[i] : VGW_UID_NONE;
}

uint32_t vgw_reg_acquire(vgw_registry_t *r, uint64_t key)
{
    uint32_t i = reg_slot(r, key);
    if (r->keys[i])
        return r->uids[i];
    uint32_t uid;
    if (r->next_fresh < r->space) {
        uid = r->next_fresh++;
    } else if (r->fifo_len) {
        uid = r->free_fifo[r->fifo_head];
        r->fifo_head = (r->fifo_head + 1) % r->space;
        r->fifo_len--;
    } else {
        return VGW_UID_NONE;
    }
    r->keys[i] = key;
    r->uids[i] = uid;
    r->count++;
    return uid;
}

void vgw_reg_release(vgw_registry_t *r, uint64_t key)
{
    uint32_t i = reg_slot(r, key);
    if (!r->keys[i])
        return;
    r->free_fifo[(r->fifo_head + r->fifo_len) % r->space] = r->uids[i];
    r->fifo_len++;
    r->count--;
    /* Backward-shift deletion keeps probe sequences intact without tombstones. */
    for (uint32_t j = (i + 1) & r->mask; r->keys[j]; j = (j + 1) & r->mask) {
        uint32_t k = (uint32_t)vgw_mix64(r->keys[j]) & r->mask;
        if (!vgw_lp_stays(i, j, k)) {
            r->keys[i] = r->keys[j];
            r->uids[i] = r->uids[j];
            i = j;
        }
    }
    r->keys[i] = 0;
    r->uids[i] = 0;
}
