/* SPDX-License-Identifier: Apache-2.0
 * vgw-fwd worker lcore: the fast path. One loop per worker: hand-off ring, control TX ring, RX
 * queue `id` of every device; a burst goes through the core, then L2 rewrite and TX. Nothing here
 * allocates, locks or makes a system call except the idle back-off sleep. */
#include <string.h>
#include <time.h>

#include <rte_byteorder.h>
#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_ip.h>
#include <rte_lcore.h>
#include <rte_prefetch.h>

#include "fwd.h"
#include "neigh.h"
#include "priv.h"
#include "sync.h"

#define IDLE_SPIN_POLLS 256u   /* empty polls before the first sleep */
#define IDLE_SLEEP_MIN_US 16u
#define SNAPSHOT_MS 100u
#define HOUSEKEEP_BUDGET 256u

/* Minimal L3/L4 view of a frame the core has already validated (or will): Ethernet, up to two
 * VLAN tags, IPv4. Returns 0 if it is IPv4 TCP/UDP with ports present. */
static inline int l34(const uint8_t *d, uint32_t len, uint32_t *src, uint32_t *dst, uint16_t *sport,
                      uint16_t *dport, uint8_t *proto, uint8_t *tcpflags)
{
    uint32_t off = 12;
    if (len < 14)
        return -1;
    uint16_t et = (uint16_t)(d[off] << 8 | d[off + 1]);
    for (int t = 0; t < 2 && (et == 0x8100 || et == 0x88a8); t++) {
        off += 4;
        if (len < off + 2)
            return -1;
        et = (uint16_t)(d[off] << 8 | d[off + 1]);
    }
    off += 2;
    if (et != 0x0800 || len < off + 20)
        return -1;
    const uint8_t *ip = d + off;
    uint32_t ihl = (uint32_t)(ip[0] & 0xf) * 4;
    if ((ip[0] >> 4) != 4 || ihl < 20 || len < off + ihl + 14)
        return -1;
    *proto = ip[9];
    if (*proto != 6 && *proto != 17)
        return -1;
    memcpy(src, ip + 12, 4);
    memcpy(dst, ip + 16, 4);
    const uint8_t *l4 = ip + ihl;
    memcpy(sport, l4, 2);
    memcpy(dport, l4 + 2, 2);
    *tcpflags = *proto == 6 ? l4[13] : 0;
    return 0;
}

static inline uint64_t *svc_ctr(fwd_worker_t *fw, uint32_t slot)
{
    return &fw->svc[(size_t)slot * SVC_CNT_MAX];
}

void fwd_worker_publish(fwd_worker_t *fw)
{
    uint32_t s = atomic_load_explicit(&fw->snap_seq, memory_order_relaxed);
    atomic_store_explicit(&fw->snap_seq, s + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    vgw_worker_counters(fw->w, &fw->snap.core);
    memcpy(fw->snap.fwd, fw->fwd, sizeof fw->fwd);
    memcpy(fw->snap.port, fw->port, sizeof fw->port);
    fw->snap.busy_polls = fw->busy_polls;
    fw->snap.idle_polls = fw->idle_polls;
    fw->snap.sleeps = fw->sleeps;
    fw->snap.conns = vgw_worker_conn_count(fw->w);
    memcpy(fw->svc_snap, fw->svc, sizeof(uint64_t) * FWD_MAX_SVC_SLOTS * SVC_CNT_MAX);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&fw->snap_seq, s + 2, memory_order_relaxed);
}

void fwd_read_snapshot(const fwd_worker_t *fw, worker_snapshot_t *out, uint64_t *svc_out)
{
    for (int tries = 0; tries < 1000; tries++) {
        uint32_t s1 = atomic_load_explicit(&fw->snap_seq, memory_order_acquire);
        if (s1 & 1) {
            rte_pause();
            continue;
        }
        memcpy(out, &fw->snap, sizeof *out);
        if (svc_out)
            memcpy(svc_out, fw->svc_snap, sizeof(uint64_t) * FWD_MAX_SVC_SLOTS * SVC_CNT_MAX);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&fw->snap_seq, memory_order_relaxed) == s1)
            return;
    }
}

typedef struct txbuf {
    uint16_t n;
    struct rte_mbuf *m[FWD_BURST * 2];
} txbuf_t;

static void tx_flush(fwd_worker_t *fw, uint8_t role, txbuf_t *tb)
{
    if (!tb->n)
        return;
    const fwd_port_t *p = &g_fwd.port[role];
    uint64_t bytes = 0;
    for (uint16_t i = 0; i < tb->n; i++)
        bytes += tb->m[i]->pkt_len;
    uint16_t sent = rte_eth_tx_burst(p->port_id, (uint16_t)fw->id, tb->m, tb->n);
    if (VGW_UNLIKELY_FWD(sent < tb->n)) {
        for (uint16_t i = sent; i < tb->n; i++) {
            bytes -= tb->m[i]->pkt_len;
            rte_pktmbuf_free(tb->m[i]);
        }
        fw->fwd[FWD_CNT_DROP_TX_FULL] += (uint64_t)(tb->n - sent);
        fw->port[role].tx_drops += (uint64_t)(tb->n - sent);
    }
    fw->fwd[FWD_CNT_TX_PKTS] += sent;
    fw->fwd[FWD_CNT_TX_BYTES] += bytes;
    fw->port[role].tx_pkts += sent;
    fw->port[role].tx_bytes += bytes;
    tb->n = 0;
}

static inline void tx_add(fwd_worker_t *fw, txbuf_t *tbs, uint8_t role, struct rte_mbuf *m)
{
    /* In single-arm mode both roles are the same device: queue on EXT's buffer. */
    uint8_t dev = g_fwd.single_arm ? VGW_PORT_EXT : role;
    txbuf_t *tb = &tbs[dev];
    tb->m[tb->n++] = m;
    if (tb->n == RTE_DIM(tb->m))
        tx_flush(fw, dev, tb);
}

static inline void to_slow(fwd_worker_t *fw, struct rte_mbuf *m)
{
    if (rte_ring_mp_enqueue(g_fwd.slow, m) != 0) {
        fw->fwd[FWD_CNT_DROP_SLOW_FULL]++;
        rte_pktmbuf_free(m);
        return;
    }
    fw->fwd[FWD_CNT_SLOW_OUT]++;
}

/* Processes n packets (all from `in_role`'s device, or from the hand-off ring). */
static void process_burst(fwd_worker_t *fw, struct rte_mbuf **ms, uint16_t n, const svcmap_t *sm,
                          txbuf_t *tbs, uint64_t now_ms, bool handed)
{
    vgw_pkt_t vp[FWD_BURST];
    vgw_verdict_t vd[FWD_BURST];
    uint32_t in_slot[FWD_BURST];
    struct {
        uint32_t cip, vip;
        uint16_t cport, vport;
    } pre[FWD_BURST]; /* client tuple before translation (network order) */
    uint16_t keep = 0;
    struct rte_mbuf *mk[FWD_BURST];

    for (uint16_t i = 0; i < n; i++) {
        struct rte_mbuf *m = ms[i];
        if (VGW_UNLIKELY_FWD(m->nb_segs > 1) && rte_pktmbuf_linearize(m) != 0) {
            fw->fwd[FWD_CNT_DROP_LOCAL]++;
            rte_pktmbuf_free(m);
            continue;
        }
        uint8_t *d = rte_pktmbuf_mtod(m, uint8_t *);
        if (m->data_len >= 12 && (rte_is_same_ether_addr((const struct rte_ether_addr *)(d + 6),
                                                         &g_fwd.port[VGW_PORT_EXT].mac) ||
                                  rte_is_same_ether_addr((const struct rte_ether_addr *)(d + 6),
                                                         &g_fwd.port[VGW_PORT_INT].mac))) {
            fw->fwd[FWD_CNT_DROP_OWN_MAC]++;
            rte_pktmbuf_free(m);
            continue;
        }
        vgw_pkt_t *p = &vp[keep];
        p->data = d;
        p->len = m->data_len;
        p->headroom = rte_pktmbuf_headroom(m);
        p->flags = 0;
        if ((m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) == RTE_MBUF_F_RX_IP_CKSUM_GOOD)
            p->flags |= VGW_PKT_F_IP_CSUM_GOOD;
        if ((m->ol_flags & RTE_MBUF_F_RX_L4_CKSUM_MASK) == RTE_MBUF_F_RX_L4_CKSUM_GOOD)
            p->flags |= VGW_PKT_F_L4_CSUM_GOOD;
        p->tailroom = rte_pktmbuf_tailroom(m);
        uint32_t s, dst;
        uint16_t sp, dp;
        uint8_t pr, fl;
        in_slot[keep] = UINT32_MAX;
        if (l34(d, m->data_len, &s, &dst, &sp, &dp, &pr, &fl) == 0) {
            if (VGW_UNLIKELY_FWD(sync_is_msg(dst, dp, pr))) {
                sync_rx(fw, m, handed, now_ms);
                continue;
            }
            in_slot[keep] = svcmap_lookup(sm, dst, dp, pr);
            pre[keep].cip = s, pre[keep].vip = dst, pre[keep].cport = sp, pre[keep].vport = dp;
        }
        mk[keep++] = m;
    }
    if (!keep)
        return;

    uint64_t new_before = 0;
    vgw_counters_t c;
    vgw_worker_counters(fw->w, &c);
    new_before = c.v[VGW_CNT_CONN_NEW];
    vgw_worker_process(fw->w, vp, vd, keep, now_ms);
    vgw_worker_counters(fw->w, &c);
    uint64_t new_conns = c.v[VGW_CNT_CONN_NEW] - new_before;
    bool burst_new = new_conns > 0;

    for (uint16_t i = 0; i < keep; i++) {
        struct rte_mbuf *m = mk[i];
        switch (vd[i].action) {
        case VGW_ACT_FORWARD: {
            uint8_t role = vd[i].port;
            /* The core may have moved the start back into the headroom (TOA, a SYN proxy reply)
             * or grown the frame into the tailroom (a SYN rebuilt with options): the mbuf follows.
             * The frame is one segment (linearized above), so data_len is pkt_len. */
            uint16_t off = (uint16_t)(vp[i].data - (uint8_t *)m->buf_addr);
            m->data_off = off;
            m->data_len = vp[i].len;
            m->pkt_len = vp[i].len;
            uint32_t s, dst;
            uint16_t sp, dp;
            uint8_t pr, fl;
            /* Service accounting. in_slot says the packet came in addressed to a service (a
             * client's); the port it leaves by says what became of it:
             *  - to INT: a client packet on its way to a backend (translated), including the SYN
             *    the SYN proxy opens once a client's ACK validated its cookie: in, and a SYN of
             *    a burst that created connections enters the shadow set with its client tuple;
             *  - to EXT: the forwarder's own answer to the client (a SYN cookie SYN-ACK, a RST for
             *    a segment without a connection): neither way -- the core counts them
             *    (syn_cookie_sent, rst_sent) -- and no shadow entry: a proxied connection
             *    appears when the ACK validates the cookie.
             * Without in_slot, a packet that leaves by EXT is a backend's reply translated back
             * to the client (out); one that leaves by INT is the forwarder's own (the ACK that
             * completes the proxy's handshake with the backend), not service traffic. */
            if (l34(vp[i].data, vp[i].len, &s, &dst, &sp, &dp, &pr, &fl) == 0) {
                if (role == VGW_PORT_INT && in_slot[i] != UINT32_MAX) {
                    uint64_t *sc = svc_ctr(fw, in_slot[i]);
                    sc[SVC_CNT_PKTS_IN]++;
                    sc[SVC_CNT_BYTES_IN] += vp[i].len;
                    if (burst_new && ((pr == 6 && (fl & 0x12) == 0x02) || pr == 17)) {
                        if (new_conns) {
                            sc[SVC_CNT_CONN_NEW]++;
                            new_conns--;
                        }
                        /* the client tuple is the pre-translation one: the packet was rewritten */
                        if (shadow_add(&fw->shadow, pre[i].cip, pre[i].cport, pre[i].vip, pre[i].vport, pr,
                                       (uint16_t)in_slot[i]) == 1)
                            sc[SVC_CNT_ACTIVE]++;
                    }
                } else if (role == VGW_PORT_EXT && in_slot[i] == UINT32_MAX) {
                    uint32_t slot = svcmap_lookup(sm, s, sp, pr);
                    if (slot != UINT32_MAX) {
                        uint64_t *sc = svc_ctr(fw, slot);
                        sc[SVC_CNT_PKTS_OUT]++;
                        sc[SVC_CNT_BYTES_OUT] += vp[i].len;
                    }
                }
            }
            uint32_t nh;
            if (route_nexthop(&g_fwd, role, vd[i].nexthop.v4, &nh) != 0) {
                fw->fwd[FWD_CNT_DROP_NO_ROUTE]++;
                rte_pktmbuf_free(m);
                break;
            }
            const fwd_port_t *p = &g_fwd.port[role];
            struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
            if (neigh_lookup(p, nh, &eh->dst_addr) != 0) {
                fwd_priv_t *pv = fwd_priv(m);
                pv->kind = FWD_PRIV_UNRESOLVED;
                pv->role = role;
                pv->nexthop = nh;
                to_slow(fw, m);
                break;
            }
            rte_ether_addr_copy(&p->mac, &eh->src_addr);
            tx_add(fw, tbs, role, m);
            break;
        }
        case VGW_ACT_HANDOFF: {
            uint16_t owner = vd[i].arg;
            if (owner >= g_fwd.nworkers || rte_ring_mp_enqueue(g_fwd.workers[owner].handoff, m) != 0) {
                fw->fwd[FWD_CNT_DROP_HANDOFF_FULL]++;
                rte_pktmbuf_free(m);
            } else {
                fw->fwd[FWD_CNT_HANDOFF_OUT]++;
            }
            break;
        }
        case VGW_ACT_LOCAL: {
            const uint8_t *d = vp[i].data;
            bool arp = vp[i].len >= 14 && d[12] == 0x08 && d[13] == 0x06;
            /* untagged IPv4 ICMP echo request: the control thread answers it if it is for us */
            bool echo = vp[i].len >= 14 + 20 + 8 && d[12] == 0x08 && d[13] == 0x00 && d[14 + 9] == 1 &&
                        (d[14] & 0xf) >= 5 && vp[i].len >= 14u + (d[14] & 0xfu) * 4u + 8u &&
                        d[14 + (d[14] & 0xf) * 4] == 8;
            if (arp || echo) {
                fwd_priv_t *pv = fwd_priv(m);
                pv->kind = arp ? FWD_PRIV_ARP : FWD_PRIV_ECHO;
                pv->role = g_fwd.single_arm ? VGW_PORT_EXT
                           : (m->port == g_fwd.port[VGW_PORT_INT].port_id ? VGW_PORT_INT : VGW_PORT_EXT);
                to_slow(fw, m);
            } else {
                fw->fwd[FWD_CNT_DROP_LOCAL]++;
                rte_pktmbuf_free(m);
            }
            break;
        }
        default:
            fw->fwd[FWD_CNT_DROP_CORE]++;
            rte_pktmbuf_free(m);
            break;
        }
    }
}

static void send_sync(fwd_worker_t *fw, txbuf_t *tbs, uint64_t now_ms)
{
    struct rte_mbuf *fr[SYNC_MAX_FRAMES];
    uint16_t n = sync_build(fw, fr, SYNC_MAX_FRAMES, now_ms);
    for (uint16_t i = 0; i < n; i++) {
        struct rte_mbuf *m = fr[i];
        fwd_priv_t *pv = fwd_priv(m);
        struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
        if (neigh_lookup(&g_fwd.port[VGW_PORT_INT], pv->nexthop, &eh->dst_addr) != 0) {
            pv->kind = FWD_PRIV_UNRESOLVED; /* the control thread resolves the peer, then sends */
            to_slow(fw, m);
            continue;
        }
        tx_add(fw, tbs, VGW_PORT_INT, m);
    }
}

static void idle_sleep(uint32_t us)
{
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)us * 1000L};
    nanosleep(&ts, NULL);
}

int fwd_worker_main(void *arg)
{
    fwd_worker_t *fw = arg;
    txbuf_t tbs[FWD_MAX_PORTS];
    memset(tbs, 0, sizeof tbs);
    struct rte_mbuf *ms[FWD_BURST];
    uint32_t empty = 0, sleep_us = IDLE_SLEEP_MIN_US;
    uint64_t last_pub = 0, last_busy = fwd_now_ms(), last_sweep = 0;
    uint8_t roles[FWD_MAX_PORTS] = {VGW_PORT_EXT, VGW_PORT_INT};
    uint32_t nroles = g_fwd.single_arm ? 1 : 2;

    while (!atomic_load_explicit(&g_fwd.stop, memory_order_relaxed)) {
        uint64_t now = fwd_now_ms();
        /* QSBR for the service map: announce the generation before loading the pointer. */
        atomic_store(&fw->svcmap_gen, atomic_load(&g_fwd.svc.cur_gen));
        const svcmap_t *sm = atomic_load(&g_fwd.svc.cur);
        uint32_t got = 0;

        uint16_t n = (uint16_t)rte_ring_sc_dequeue_burst(fw->handoff, (void **)ms, FWD_BURST, NULL);
        if (n) {
            fw->fwd[FWD_CNT_HANDOFF_IN] += n;
            process_burst(fw, ms, n, sm, tbs, now, true);
            got += n;
        }
        n = (uint16_t)rte_ring_sc_dequeue_burst(fw->txq, (void **)ms, FWD_BURST, NULL);
        for (uint16_t i = 0; i < n; i++)
            tx_add(fw, tbs, fwd_priv(ms[i])->role, ms[i]);
        got += n;
        for (uint32_t r = 0; r < nroles; r++) {
            const fwd_port_t *p = &g_fwd.port[roles[r]];
            n = rte_eth_rx_burst(p->port_id, (uint16_t)fw->id, ms, FWD_BURST);
            if (!n)
                continue;
            fw->fwd[FWD_CNT_RX_PKTS] += n;
            fw->port[roles[r]].rx_pkts += n;
            for (uint16_t i = 0; i < n; i++) {
                fw->port[roles[r]].rx_bytes += ms[i]->pkt_len;
                rte_prefetch0(rte_pktmbuf_mtod(ms[i], void *));
            }
            process_burst(fw, ms, n, sm, tbs, now, false);
            got += n;
        }
        /* Peers hear of this loop's new connections before their clients' next segments can
         * reach them (a route change between a SYN and its ACK is then harmless). */
        if (g_sync.npeers && got)
            send_sync(fw, tbs, now);
        for (uint32_t r = 0; r < nroles; r++)
            tx_flush(fw, roles[r], &tbs[roles[r]]);

        if (got) {
            last_busy = now;
            fw->busy_polls++;
            empty = 0;
            sleep_us = IDLE_SLEEP_MIN_US;
            vgw_worker_housekeep(fw->w, now, 32);
            if (now != last_sweep) { /* under load: 64 shadow entries per millisecond */
                shadow_sweep(fw, now, 64);
                last_sweep = now;
            }
        } else {
            fw->idle_polls++;
            vgw_worker_housekeep(fw->w, now, HOUSEKEEP_BUDGET);
            if (++empty >= IDLE_SPIN_POLLS) {
                /* about to sleep anyway: a larger slice of the shadow sweep costs no latency that
                 * the sleep would not (between packets it would: 1024 random lookups are ~100 us) */
                shadow_sweep(fw, now, 1024);
                /* Idle: leave every shared state reference before sleeping. */
                vgw_worker_quiesce(fw->w);
                atomic_store(&fw->svcmap_gen, UINT64_MAX);
                if (now - last_pub >= SNAPSHOT_MS) {
                    fwd_worker_publish(fw);
                    last_pub = now;
                }
                fw->sleeps++;
                idle_sleep(sleep_us);
                /* Back off exponentially to idle_sleep_max_us; after deep_idle_after_ms without a
                 * packet, to deep_idle_us (each wake-up costs a few microseconds of CPU). */
                uint32_t cap = now - last_busy >= g_fwd.deep_idle_after_ms ? g_fwd.deep_idle_us
                                                                           : g_fwd.idle_sleep_max_us;
                if (cap < g_fwd.idle_sleep_max_us)
                    cap = g_fwd.idle_sleep_max_us;
                sleep_us = sleep_us * 2 > cap ? cap : sleep_us * 2;
                continue;
            }
            rte_pause();
        }
        if (now - last_pub >= SNAPSHOT_MS) {
            fwd_worker_publish(fw);
            last_pub = now;
        }
    }
    vgw_worker_quiesce(fw->w);
    atomic_store(&fw->svcmap_gen, UINT64_MAX);
    fwd_worker_publish(fw);
    return 0;
}
