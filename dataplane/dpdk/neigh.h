/* SPDX-License-Identifier: Apache-2.0
 * Routes, neighbours and ARP of vgw-fwd (neigh.c). Workers call neigh_lookup and route_nexthop;
 * everything else runs on the control thread. */
#ifndef VGW_FWD_NEIGH_H
#define VGW_FWD_NEIGH_H

#include "fwd.h"
#include "vbuf.h"

int neigh_lookup(const fwd_port_t *p, uint32_t ip, struct rte_ether_addr *mac);
int route_nexthop(const fwd_t *f, uint8_t port, uint32_t dst, uint32_t *nexthop);

void slow_path_run(fwd_t *f, uint64_t now_ms);
void neigh_housekeep(fwd_t *f, uint64_t now_ms);
/* Gratuitous ARP for the node's addresses (its own, VIPs, LIPs) that have not been announced
 * yet (all of them when all is set): neighbours learn a (re)started forwarder, or a new VIP, at
 * once. */
void neigh_announce(fwd_t *f, bool all);
/* One gratuitous ARP for ip on port role (connection sync's takeover of a failed peer's LIP). */
void neigh_garp(fwd_t *f, uint8_t role, uint32_t ip);
int neigh_init(fwd_t *f);
int neigh_add_static(fwd_t *f, uint8_t role, uint32_t ip, const struct rte_ether_addr *mac);
void neigh_fini(fwd_t *f);
void neigh_dump_json(fwd_t *f, struct vbuf *b);

#endif
