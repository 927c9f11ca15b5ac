/* SPDX-License-Identifier: Apache-2.0
 * vgw-fwd slow path (control thread): ARP answers for the node's own addresses, VIPs and LIPs;
 * ARP resolution and a neighbour table per port for backends and gateways; static routes.
 *
 * Workers read the neighbour table lock-free: an entry's address, MAC and validity change only
 * inside its sequence lock, so a reader sees an entry whole or retries. Only the control thread
 * writes. Entries in use are refreshed; unused ones stop being refreshed, go invalid and are
 * removed (a removed slot stays a marker that lookups probe past, and is reused by the next new
 * neighbour); a full table replaces its least recently useful entry. ARP from outside the
 * port's subnet is ignored, so a stranger on the link cannot fill the table. */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include <rte_arp.h>
#include <rte_icmp.h>
#include <rte_ip.h>
#include <rte_ethdev.h>
#include <rte_malloc.h>

#include "neigh.h"
#include "vgw/sync.h"
#include "priv.h"

#define ARP_RETRY_MS 200u
#define PENDING_MAX_MS 3000u
/* Timers (settings neigh-refresh-s, neigh-stale-s, neigh-expire-s): a valid entry is re-ARPed
 * every refresh while a worker used it within stale; without an answer for stale it becomes
 * invalid; invalid and unused for expire, it is removed. */

static inline uint32_t nhash(uint32_t ip)
{
    return (uint32_t)(((uint64_t)ip * 0x9e3779b97f4a7c15ULL) >> 40) & (FWD_NEIGH_SIZE - 1);
}

int neigh_lookup(const fwd_port_t *p, uint32_t ip, struct rte_ether_addr *mac)
{
    uint32_t h = nhash(ip);
    for (uint32_t i = 0; i < FWD_NEIGH_SIZE; i++) {
        neigh_entry_t *e = &p->neigh[(h + i) & (FWD_NEIGH_SIZE - 1)];
        for (int tries = 0;; tries++) {
            if (tries == 64)
                return -1; /* a writer keeps the entry busy: take the slow path */
            uint32_t s1 = atomic_load_explicit(&e->seq, memory_order_acquire);
            if (s1 & 1)
                continue;
            uint32_t eip = atomic_load_explicit(&e->ip, memory_order_relaxed);
            uint8_t valid = atomic_load_explicit(&e->valid, memory_order_relaxed);
            struct rte_ether_addr m;
            memcpy(m.addr_bytes, e->mac, 6);
            atomic_thread_fence(memory_order_acquire);
            if (atomic_load_explicit(&e->seq, memory_order_relaxed) != s1)
                continue;
            if (eip == NEIGH_IP_EMPTY)
                return -1;
            if (eip != ip)
                break; /* another address, or a removed one: keep probing */
            if (!valid)
                return -1;
            if (!atomic_load_explicit(&e->used, memory_order_relaxed))
                atomic_store_explicit(&e->used, 1, memory_order_relaxed);
            *mac = m;
            return 0;
        }
    }
    return -1;
}

int route_nexthop(const fwd_t *f, uint8_t role, uint32_t dst, uint32_t *nexthop)
{
    if (f->single_arm)
        role = VGW_PORT_EXT;
    const fwd_port_t *p = &f->port[role];
    if (p->plen && (dst & p->mask) == (p->ip & p->mask)) {
        *nexthop = dst;
        return 0;
    }
    int best = -1;
    for (uint32_t i = 0; i < f->nroutes; i++) {
        const route_t *r = &f->routes[i];
        if (r->port != role || (dst & r->mask) != r->prefix)
            continue;
        if (best < 0 || r->plen > f->routes[best].plen)
            best = (int)i;
    }
    if (best < 0)
        return -1;
    *nexthop = f->routes[best].gateway ? f->routes[best].gateway : dst;
    return 0;
}

/* Changes an entry's identity and contents inside its sequence lock. */
static void entry_write(neigh_entry_t *e, uint32_t ip, const uint8_t *mac, uint8_t valid)
{
    uint32_t s = atomic_load_explicit(&e->seq, memory_order_relaxed);
    atomic_store_explicit(&e->seq, s + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&e->ip, ip, memory_order_relaxed);
    if (mac)
        memcpy(e->mac, mac, 6);
    atomic_store_explicit(&e->valid, valid, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&e->seq, s + 2, memory_order_release);
}

static void entry_free_pending(fwd_t *f, neigh_entry_t *e)
{
    for (uint32_t k = 0; k < e->npending; k++)
        rte_pktmbuf_free(e->pending[k]);
    f->ctl[CTL_CNT_NEIGH_UNRESOLVED_DROP] += e->npending;
    e->npending = 0;
}

/* When the table is full: the entry whose loss hurts least (invalid before valid, then the
 * longest unused); never a static one or one holding packets. */
static neigh_entry_t *victim(fwd_port_t *p)
{
    neigh_entry_t *best = NULL;
    bool best_valid = true;
    for (uint32_t i = 0; i < FWD_NEIGH_SIZE; i++) {
        neigh_entry_t *e = &p->neigh[i];
        if (e->is_static || e->npending)
            continue;
        bool valid = atomic_load_explicit(&e->valid, memory_order_relaxed);
        if (!best || (best_valid && !valid) || (valid == best_valid && e->touched < best->touched))
            best = e, best_valid = valid;
    }
    return best;
}

static neigh_entry_t *neigh_find(fwd_t *f, fwd_port_t *p, uint32_t ip, bool create, uint64_t now)
{
    uint32_t h = nhash(ip);
    neigh_entry_t *gone = NULL, *e = NULL;
    for (uint32_t i = 0; i < FWD_NEIGH_SIZE; i++) {
        neigh_entry_t *c = &p->neigh[(h + i) & (FWD_NEIGH_SIZE - 1)];
        uint32_t cip = atomic_load_explicit(&c->ip, memory_order_relaxed);
        if (cip == ip)
            return c;
        if (cip == NEIGH_IP_GONE && !gone)
            gone = c;
        if (cip == NEIGH_IP_EMPTY) {
            e = c;
            break;
        }
    }
    if (!create)
        return NULL;
    if (gone)
        e = gone;
    if (!e) {
        /* Full: with no empty slot a lookup probes the whole table, so any slot will do. */
        e = victim(p);
        if (!e)
            return NULL;
        f->ctl[CTL_CNT_NEIGH_EVICTED]++;
    }
    e->created_ms = e->used_ms = now;
    e->updated_ms = e->requested_ms = e->pending_since_ms = 0;
    e->touched = ++f->neigh_seq;
    e->npending = 0;
    atomic_store_explicit(&e->used, 0, memory_order_relaxed);
    entry_write(e, ip, NULL, 0);
    return e;
}

/* Sends a ready frame through worker 0's control TX ring. */
static void ctl_tx(fwd_t *f, uint8_t role, struct rte_mbuf *m)
{
    fwd_priv_t *pv = fwd_priv(m);
    pv->kind = FWD_PRIV_TX;
    pv->role = role;
    if (rte_ring_mp_enqueue(f->workers[0].txq, m) != 0) {
        f->ctl[CTL_CNT_CTL_TX_FULL]++;
        rte_pktmbuf_free(m);
    }
}

static void neigh_set(fwd_t *f, fwd_port_t *p, neigh_entry_t *e, const struct rte_ether_addr *mac,
                      uint64_t now)
{
    bool changed = !atomic_load_explicit(&e->valid, memory_order_relaxed) || memcmp(e->mac, mac->addr_bytes, 6);
    if (changed)
        entry_write(e, atomic_load_explicit(&e->ip, memory_order_relaxed), mac->addr_bytes, 1);
    e->touched = ++f->neigh_seq;
    e->updated_ms = now;
    uint8_t role = (uint8_t)(p - f->port);
    for (uint32_t i = 0; i < e->npending; i++) {
        struct rte_mbuf *m = e->pending[i];
        struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
        rte_ether_addr_copy(mac, &eh->dst_addr);
        rte_ether_addr_copy(&p->mac, &eh->src_addr);
        ctl_tx(f, f->single_arm ? VGW_PORT_EXT : role, m);
    }
    e->npending = 0;
}

static struct rte_mbuf *arp_frame(fwd_t *f, const fwd_port_t *p, uint16_t op, const struct rte_ether_addr *eth_dst,
                                  const struct rte_ether_addr *tha, uint32_t sip, uint32_t tip)
{
    struct rte_mbuf *m = rte_pktmbuf_alloc(f->pool);
    if (!m)
        return NULL;
    size_t len = sizeof(struct rte_ether_hdr) + sizeof(struct rte_arp_hdr);
    uint8_t *d = (uint8_t *)rte_pktmbuf_append(m, (uint16_t)(len < 60 ? 60 : len));
    if (!d) {
        rte_pktmbuf_free(m);
        return NULL;
    }
    memset(d, 0, len < 60 ? 60 : len);
    struct rte_ether_hdr *eh = (struct rte_ether_hdr *)d;
    rte_ether_addr_copy(eth_dst, &eh->dst_addr);
    rte_ether_addr_copy(&p->mac, &eh->src_addr);
    eh->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP);
    struct rte_arp_hdr *a = (struct rte_arp_hdr *)(eh + 1);
    a->arp_hardware = rte_cpu_to_be_16(RTE_ARP_HRD_ETHER);
    a->arp_protocol = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
    a->arp_hlen = RTE_ETHER_ADDR_LEN;
    a->arp_plen = 4;
    a->arp_opcode = rte_cpu_to_be_16(op);
    rte_ether_addr_copy(&p->mac, &a->arp_data.arp_sha);
    a->arp_data.arp_sip = sip;
    rte_ether_addr_copy(tha, &a->arp_data.arp_tha);
    a->arp_data.arp_tip = tip;
    return m;
}

static void arp_request(fwd_t *f, fwd_port_t *p, neigh_entry_t *e, uint64_t now)
{
    static const struct rte_ether_addr bcast = {.addr_bytes = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}};
    static const struct rte_ether_addr zero = {.addr_bytes = {0}};
    uint32_t ip = atomic_load_explicit(&e->ip, memory_order_relaxed);
    struct rte_mbuf *m = arp_frame(f, p, RTE_ARP_OP_REQUEST, &bcast, &zero, p->ip, ip);
    e->requested_ms = now;
    if (!m)
        return;
    f->ctl[CTL_CNT_ARP_REQUESTS_TX]++;
    ctl_tx(f, f->single_arm ? VGW_PORT_EXT : (uint8_t)(p - f->port), m);
}

/* Is `ip` an address this node answers ARP for on port `role`? Its own address there; VIPs on
 * the external side, LIPs on the internal side (both on the one port in single-arm mode). */
static bool is_ours(const fwd_t *f, uint8_t role, uint32_t ip)
{
    if (ip == f->port[role].ip || (f->single_arm && ip == f->port[VGW_PORT_EXT].ip))
        return true;
    vgw_addr_t a;
    memset(&a, 0, sizeof a);
    a.v4 = ip;
    unsigned kind = f->cfg ? vgw_cfg_addr_kind(f->cfg, VGW_AF_INET, &a) : 0;
    if (vgw_dp_foreign_lip_has(f->dp, ip)) /* a failed sync peer's LIP (sync.c) */
        kind |= VGW_ADDR_F_LIP;
    if (f->single_arm)
        return kind != 0;
    return (kind & (role == VGW_PORT_EXT ? VGW_ADDR_F_VIP : VGW_ADDR_F_LIP)) != 0;
}

static bool on_link(const fwd_port_t *p, uint32_t ip)
{
    return p->plen && (ip & p->mask) == (p->ip & p->mask) && ip != p->ip;
}

static void handle_arp(fwd_t *f, uint8_t role, struct rte_mbuf *m, uint64_t now)
{
    fwd_port_t *p = &f->port[role];
    f->ctl[CTL_CNT_ARP_RX]++;
    if (m->data_len < sizeof(struct rte_ether_hdr) + sizeof(struct rte_arp_hdr)) {
        f->ctl[CTL_CNT_ARP_BAD]++;
        rte_pktmbuf_free(m);
        return;
    }
    struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
    struct rte_arp_hdr *a = (struct rte_arp_hdr *)(eh + 1);
    uint16_t op = rte_be_to_cpu_16(a->arp_opcode);
    if (a->arp_hardware != rte_cpu_to_be_16(RTE_ARP_HRD_ETHER) ||
        a->arp_protocol != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) || a->arp_hlen != 6 || a->arp_plen != 4 ||
        (op != RTE_ARP_OP_REQUEST && op != RTE_ARP_OP_REPLY) ||
        !rte_is_unicast_ether_addr(&a->arp_data.arp_sha)) {
        f->ctl[CTL_CNT_ARP_BAD]++;
        rte_pktmbuf_free(m);
        return;
    }
    uint32_t sip = a->arp_data.arp_sip, tip = a->arp_data.arp_tip;
    struct rte_ether_addr sha = a->arp_data.arp_sha;
    /* Learn only from the port's subnet: a sender outside it (or claiming our own address) is no
     * neighbour we could ever use, and learning from it would let anyone on the link fill or
     * poison the table. A request for one of our addresses is still answered: Linux hosts send
     * ARP from the packet's source address, which may be off-subnet (a backend's loopback). */
    bool learnable = sip && (!p->plen || on_link(p, sip));
    bool for_us = is_ours(f, role, tip);
    neigh_entry_t *e = learnable ? neigh_find(f, p, sip, for_us, now) : NULL;
    if (e && !e->is_static)
        neigh_set(f, p, e, &sha, now);
    if (op == RTE_ARP_OP_REQUEST && for_us && sip != tip) {
        struct rte_mbuf *r = arp_frame(f, p, RTE_ARP_OP_REPLY, &sha, &sha, tip, sip);
        if (r) {
            f->ctl[CTL_CNT_ARP_REPLIES_TX]++;
            ctl_tx(f, f->single_arm ? VGW_PORT_EXT : role, r);
        }
    } else if (!e) {
        f->ctl[CTL_CNT_ARP_IGNORED]++;
    }
    rte_pktmbuf_free(m);
}

static void handle_unresolved(fwd_t *f, struct rte_mbuf *m, uint64_t now)
{
    fwd_priv_t *pv = fwd_priv(m);
    fwd_port_t *p = &f->port[pv->role];
    neigh_entry_t *e = neigh_find(f, p, pv->nexthop, true, now);
    if (!e) {
        f->ctl[CTL_CNT_NEIGH_UNRESOLVED_DROP]++;
        rte_pktmbuf_free(m);
        return;
    }
    struct rte_ether_addr mac;
    if (neigh_lookup(p, pv->nexthop, &mac) == 0) { /* resolved since the worker looked */
        struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
        rte_ether_addr_copy(&mac, &eh->dst_addr);
        rte_ether_addr_copy(&p->mac, &eh->src_addr);
        ctl_tx(f, f->single_arm ? VGW_PORT_EXT : pv->role, m);
        return;
    }
    if (e->npending >= FWD_PENDING_PER_NEIGH) {
        f->ctl[CTL_CNT_NEIGH_PENDING_DROP]++;
        rte_pktmbuf_free(m);
    } else {
        if (!e->npending)
            e->pending_since_ms = now;
        e->pending[e->npending++] = m;
    }
    if (now - e->requested_ms >= ARP_RETRY_MS)
        arp_request(f, p, e, now);
}

/* ICMP echo replies for the forwarder's addresses, VIPs and LIPs (what ping-based monitors and
 * operators expect), at most ECHO_PER_S per second. */
#define ECHO_PER_S 1000u

static void handle_echo(fwd_t *f, uint8_t role, struct rte_mbuf *m, uint64_t now)
{
    static uint64_t window_ms;
    static uint32_t in_window;
    fwd_port_t *p = &f->port[role];
    if (now - window_ms >= 1000) {
        window_ms = now;
        in_window = 0;
    }
    struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
    struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eh + 1);
    uint32_t ihl = (uint32_t)(ip->version_ihl & 0xf) * 4;
    uint16_t tot = rte_be_to_cpu_16(ip->total_length);
    if ((ip->version_ihl >> 4) != 4 || ihl < 20 || tot < ihl + 8 || sizeof *eh + tot > m->data_len ||
        (ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_MF_FLAG | RTE_IPV4_HDR_OFFSET_MASK)) ||
        rte_ipv4_cksum(ip) != 0 || !is_ours(f, role, ip->dst_addr)) {
        /* rte_ipv4_cksum over a header with a correct checksum gives 0 */
        f->ctl[CTL_CNT_ICMP_ECHO_BAD]++;
        rte_pktmbuf_free(m);
        return;
    }
    struct rte_icmp_hdr *ic = (struct rte_icmp_hdr *)((uint8_t *)ip + ihl);
    uint16_t ilen = (uint16_t)(tot - ihl);
    if (rte_raw_cksum(ic, ilen) != 0xffff) {
        f->ctl[CTL_CNT_ICMP_ECHO_BAD]++;
        rte_pktmbuf_free(m);
        return;
    }
    if (++in_window > ECHO_PER_S) {
        f->ctl[CTL_CNT_ICMP_ECHO_LIMITED]++;
        rte_pktmbuf_free(m);
        return;
    }
    rte_ether_addr_copy(&eh->src_addr, &eh->dst_addr);
    rte_ether_addr_copy(&p->mac, &eh->src_addr);
    uint32_t a = ip->src_addr;
    ip->src_addr = ip->dst_addr;
    ip->dst_addr = a;
    ip->time_to_live = 64;
    ip->hdr_checksum = 0;
    ip->hdr_checksum = rte_ipv4_cksum(ip);
    ic->icmp_type = 0; /* echo reply (macro names changed across DPDK versions) */
    ic->icmp_cksum = 0;
    uint16_t c = (uint16_t)~rte_raw_cksum(ic, ilen);
    ic->icmp_cksum = c ? c : 0xffff;
    rte_pktmbuf_trim(m, (uint16_t)(m->data_len - sizeof *eh - tot)); /* drop Ethernet padding */
    f->ctl[CTL_CNT_ICMP_ECHO_REPLIES]++;
    ctl_tx(f, f->single_arm ? VGW_PORT_EXT : role, m);
}

void slow_path_run(fwd_t *f, uint64_t now_ms)
{
    struct rte_mbuf *ms[64];
    unsigned n = rte_ring_sc_dequeue_burst(f->slow, (void **)ms, RTE_DIM(ms), NULL);
    for (unsigned i = 0; i < n; i++) {
        fwd_priv_t *pv = fwd_priv(ms[i]);
        if (pv->kind == FWD_PRIV_ARP && pv->role < FWD_MAX_PORTS)
            handle_arp(f, pv->role, ms[i], now_ms);
        else if (pv->kind == FWD_PRIV_UNRESOLVED && pv->role < FWD_MAX_PORTS)
            handle_unresolved(f, ms[i], now_ms);
        else if (pv->kind == FWD_PRIV_ECHO && pv->role < FWD_MAX_PORTS)
            handle_echo(f, pv->role, ms[i], now_ms);
        else
            rte_pktmbuf_free(ms[i]);
    }
}

static bool entry_live(const neigh_entry_t *e)
{
    uint32_t ip = atomic_load_explicit(&e->ip, memory_order_relaxed);
    return ip != NEIGH_IP_EMPTY && ip != NEIGH_IP_GONE;
}

void neigh_housekeep(fwd_t *f, uint64_t now)
{
    for (uint32_t r = 0; r < (f->single_arm ? 1u : 2u); r++) {
        fwd_port_t *p = &f->port[r];
        for (uint32_t i = 0; i < FWD_NEIGH_SIZE; i++) {
            neigh_entry_t *e = &p->neigh[i];
            if (!entry_live(e))
                continue;
            if (e->npending) {
                if (now - e->pending_since_ms > PENDING_MAX_MS)
                    entry_free_pending(f, e);
                else if (now - e->requested_ms >= ARP_RETRY_MS)
                    arp_request(f, p, e, now);
            }
            if (atomic_load_explicit(&e->used, memory_order_relaxed)) {
                e->used_ms = now;
                e->touched = ++f->neigh_seq;
                atomic_store_explicit(&e->used, 0, memory_order_relaxed);
            }
            if (e->is_static)
                continue;
            bool valid = atomic_load_explicit(&e->valid, memory_order_relaxed);
            if (valid && now - e->updated_ms > f->neigh_stale_ms) {
                entry_write(e, atomic_load_explicit(&e->ip, memory_order_relaxed), NULL, 0);
            } else if (valid && now - e->updated_ms > f->neigh_refresh_ms && now - e->used_ms < f->neigh_stale_ms &&
                       now - e->requested_ms > f->neigh_refresh_ms / 4) {
                arp_request(f, p, e, now); /* broadcast: a unicast refresh is not worth the code */
            } else if (!valid && !e->npending) {
                uint64_t last = e->updated_ms > e->created_ms ? e->updated_ms : e->created_ms;
                if (e->used_ms > last)
                    last = e->used_ms;
                if (now - last > f->neigh_expire_ms) {
                    entry_write(e, NEIGH_IP_GONE, NULL, 0);
                    f->ctl[CTL_CNT_NEIGH_EVICTED]++;
                }
            }
        }
    }
}

/* Addresses to announce, as (role << 32 | address) so a sorted array diffs in one pass. */
typedef struct addr_list {
    uint64_t *v;
    uint32_t n, cap;
    uint8_t role;
    bool oom;
} addr_list_t;

static void addr_list_push(addr_list_t *l, uint8_t role, uint32_t ip)
{
    if (l->oom || !ip)
        return;
    if (l->n == l->cap) {
        uint32_t nc = l->cap ? l->cap * 2 : 64;
        uint64_t *nv = realloc(l->v, sizeof *nv * nc);
        if (!nv) {
            l->oom = true;
            return;
        }
        l->v = nv, l->cap = nc;
    }
    l->v[l->n++] = (uint64_t)role << 32 | ip;
}

static void addr_list_cb(void *arg, uint8_t af, const vgw_addr_t *a)
{
    (void)af;
    addr_list_t *l = arg;
    addr_list_push(l, l->role, a->v4);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

#define GARP_MAX_PER_CALL 256u /* the control TX ring holds 1024 frames */

void neigh_announce(fwd_t *f, bool all)
{
    static const struct rte_ether_addr bcast = {.addr_bytes = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}};
    addr_list_t l = {0};
    uint8_t int_role = f->single_arm ? VGW_PORT_EXT : VGW_PORT_INT;
    addr_list_push(&l, VGW_PORT_EXT, f->port[VGW_PORT_EXT].ip);
    if (!f->single_arm)
        addr_list_push(&l, VGW_PORT_INT, f->port[VGW_PORT_INT].ip);
    if (f->cfg) {
        l.role = VGW_PORT_EXT;
        vgw_cfg_each_addr(f->cfg, VGW_ADDR_F_VIP, addr_list_cb, &l);
        l.role = int_role;
        vgw_cfg_each_addr(f->cfg, VGW_ADDR_F_LIP, addr_list_cb, &l);
    }
    if (l.oom) {
        free(l.v);
        return;
    }
    qsort(l.v, l.n, sizeof *l.v, cmp_u64);
    uint32_t sent = 0, k = 0;
    for (uint32_t i = 0; i < l.n && sent < GARP_MAX_PER_CALL; i++) {
        if (i && l.v[i] == l.v[i - 1])
            continue;
        if (!all) {
            while (k < f->ngarp_known && f->garp_known_v[k] < l.v[i])
                k++;
            if (k < f->ngarp_known && f->garp_known_v[k] == l.v[i])
                continue;
        }
        uint8_t role = (uint8_t)(l.v[i] >> 32);
        uint32_t ip = (uint32_t)l.v[i];
        struct rte_mbuf *m = arp_frame(f, &f->port[role], RTE_ARP_OP_REQUEST, &bcast, &bcast, ip, ip);
        if (m) {
            ctl_tx(f, role, m);
            sent++;
        }
    }
    free(f->garp_known_v);
    f->garp_known_v = l.v;
    f->ngarp_known = l.n;
}

void neigh_garp(fwd_t *f, uint8_t role, uint32_t ip)
{
    static const struct rte_ether_addr bcast = {.addr_bytes = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}};
    struct rte_mbuf *m = arp_frame(f, &f->port[role], RTE_ARP_OP_REQUEST, &bcast, &bcast, ip, ip);
    if (m)
        ctl_tx(f, role, m);
}

int neigh_add_static(fwd_t *f, uint8_t role, uint32_t ip, const struct rte_ether_addr *mac)
{
    fwd_port_t *p = &f->port[f->single_arm ? VGW_PORT_EXT : role];
    neigh_entry_t *e = neigh_find(f, p, ip, true, 0);
    if (!e)
        return -1;
    neigh_set(f, p, e, mac, 0);
    e->is_static = 1;
    return 0;
}

int neigh_init(fwd_t *f)
{
    for (uint32_t r = 0; r < FWD_MAX_PORTS; r++) {
        f->port[r].neigh = rte_zmalloc("neigh", sizeof(neigh_entry_t) * FWD_NEIGH_SIZE, RTE_CACHE_LINE_SIZE);
        if (!f->port[r].neigh)
            return -1;
    }
    return 0;
}

void neigh_fini(fwd_t *f)
{
    for (uint32_t r = 0; r < (f->single_arm ? 1u : FWD_MAX_PORTS); r++) {
        fwd_port_t *p = &f->port[r];
        if (!p->neigh)
            continue;
        for (uint32_t i = 0; i < FWD_NEIGH_SIZE; i++)
            for (uint32_t k = 0; k < p->neigh[i].npending; k++)
                rte_pktmbuf_free(p->neigh[i].pending[k]);
        rte_free(p->neigh);
        p->neigh = NULL;
    }
    free(f->garp_known_v);
    f->garp_known_v = NULL;
    f->ngarp_known = 0;
}

void neigh_dump_json(fwd_t *f, struct vbuf *b)
{
    vb_printf(b, "[");
    bool first = true;
    for (uint32_t r = 0; r < (f->single_arm ? 1u : 2u); r++) {
        fwd_port_t *p = &f->port[r];
        for (uint32_t i = 0; i < FWD_NEIGH_SIZE; i++) {
            neigh_entry_t *e = &p->neigh[i];
            uint32_t ip = atomic_load_explicit(&e->ip, memory_order_relaxed);
            if (!entry_live(e))
                continue;
            char a[INET_ADDRSTRLEN];
            inet_ntop(AF_INET, &ip, a, sizeof a);
            vb_printf(b, "%s{\"port\":\"%s\",\"ip\":\"%s\",\"mac\":\"%02x:%02x:%02x:%02x:%02x:%02x\",\"valid\":%s}",
                      first ? "" : ",", r == VGW_PORT_EXT ? "ext" : "int", a, e->mac[0], e->mac[1], e->mac[2],
                      e->mac[3], e->mac[4], e->mac[5], atomic_load(&e->valid) ? "true" : "false");
            first = false;
        }
    }
    vb_printf(b, "]");
}
