/* SPDX-License-Identifier: Apache-2.0
 * The node's IPv6 VIP and LIP addresses by id (internal.h, vgw_addr6_tab_t). Control thread only;
 * workers read entries through the ids the published state gives them. */
#include <stdlib.h>

#include "internal.h"

int vgw_addr6_init(vgw_addr6_tab_t *t)
{
    memset(t, 0, sizeof *t);
    t->addr = calloc(VGW_ADDR6_MAX, 16);
    t->slot = calloc(VGW_ADDR6_SLOTS, sizeof(uint32_t));
    if (t->addr && t->slot)
        return 0;
    vgw_addr6_fini(t);
    return -1;
}

void vgw_addr6_fini(vgw_addr6_tab_t *t)
{
    free(t->addr), free(t->slot);
    memset(t, 0, sizeof *t);
}

/* The slot holding a's id, or the empty slot that ends its probe sequence. */
static uint32_t slot_of(const vgw_addr6_tab_t *t, const uint8_t *a)
{
    uint64_t h[2];
    memcpy(h, a, 16);
    uint32_t i = (uint32_t)vgw_mix64(h[0] ^ vgw_mix64(h[1])) & (VGW_ADDR6_SLOTS - 1);
    while (t->slot[i] && memcmp(t->addr[t->slot[i] - 1], a, 16) != 0)
        i = (i + 1) & (VGW_ADDR6_SLOTS - 1);
    return i;
}

uint32_t vgw_addr6_find(const vgw_addr6_tab_t *t, const uint8_t *a)
{
    uint32_t s = t->slot[slot_of(t, a)];
    return s ? s - 1 : VGW_UID_NONE;
}

uint32_t vgw_addr6_intern(vgw_addr6_tab_t *t, const uint8_t *a)
{
    uint32_t i = slot_of(t, a);
    if (t->slot[i])
        return t->slot[i] - 1;
    if (t->count == VGW_ADDR6_MAX)
        return VGW_UID_NONE;
    uint32_t id = t->count++;
    memcpy(t->addr[id], a, 16);
    t->slot[i] = id + 1;
    return id;
}
