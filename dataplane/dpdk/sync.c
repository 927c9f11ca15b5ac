/* SPDX-License-Identifier: Apache-2.0
 * Connection sync in vgw-fwd: each worker sends its notes (vgw_worker_sync_take) after every
 * loop as UDP datagrams from the internal port's address to every peer's; a worker that receives
 * one authenticates it (the core's MAC, then this node's replay window per peer), imports the
 * records whose client flows it owns and hands the message to the other workers for theirs.
 *
 * The datagrams carry TTL 255 and only TTL 255 is accepted (RFC 5082's idea): peers share the
 * internal segment, so a datagram from off-link cannot pass even before its MAC is checked. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rte_byteorder.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_udp.h>

#include "neigh.h"
#include "priv.h"
#include "sync.h"
#include "vbuf.h"

fwd_sync_t g_sync = {.port = RTE_BE16(SYNC_DEFAULT_PORT), .heartbeat_ms = SYNC_DEFAULT_HEARTBEAT_MS,
                     .dead_ms = SYNC_DEFAULT_DEAD_MS};

static int parse_ip(const char *s, uint32_t *out)
{
    unsigned a, b, c, d;
    char tail;
    if (sscanf(s, "%u.%u.%u.%u%c", &a, &b, &c, &d, &tail) != 4 || a > 255 || b > 255 || c > 255 || d > 255)
        return -1;
    *out = rte_cpu_to_be_32(a << 24 | b << 16 | c << 8 | d);
    return 0;
}

int sync_setting(const char *key, char **v, int n)
{
    if (!strcmp(key, "sync-peer") && n == 1) {
        uint32_t ip;
        if (parse_ip(v[0], &ip) || ip == 0)
            return -1;
        for (uint32_t i = 0; i < g_sync.npeers; i++)
            if (g_sync.peers[i].ip == ip)
                return 0; /* listed twice: once is enough */
        if (g_sync.npeers == SYNC_MAX_PEERS) {
            fprintf(stderr, "vgw-fwd: sync-peer %s: at most %u peers\n", v[0], SYNC_MAX_PEERS);
            return -1;
        }
        g_sync.peers[g_sync.npeers++].ip = ip;
        return 0;
    }
    if (!strcmp(key, "sync-port") && n == 1) {
        char *end;
        unsigned long p = strtoul(v[0], &end, 10);
        if (*end || p == 0 || p > 65535)
            return -1;
        g_sync.port = rte_cpu_to_be_16((uint16_t)p);
        return 0;
    }
    if ((!strcmp(key, "sync-heartbeat-ms") || !strcmp(key, "sync-dead-ms")) && n == 1) {
        char *end;
        unsigned long ms = strtoul(v[0], &end, 10);
        bool beat = key[5] == 'h';
        if (*end || !v[0][0] || ms > 600000 || (beat && ms < 10))
            return -1;
        *(beat ? &g_sync.heartbeat_ms : &g_sync.dead_ms) = (uint32_t)ms;
        return 0;
    }
    if (!strcmp(key, "sync-key-file") && n == 1 && v[0][0] && strlen(v[0]) < sizeof g_sync.key_file) {
        snprintf(g_sync.key_file, sizeof g_sync.key_file, "%s", v[0]);
        return 0;
    }
    return -1;
}

int sync_init(void)
{
    rte_spinlock_init(&g_sync.lock);
    if (!g_sync.npeers)
        return 0;
    if (!g_sync.key_file[0])
        return fprintf(stderr, "vgw-fwd: sync-peer needs sync-key-file: connection sync is authenticated, "
                               "and every node of the cluster must have the same key\n"), -1;
    if (!g_fwd.port[VGW_PORT_INT].present || !g_fwd.port[VGW_PORT_INT].ip)
        return fprintf(stderr, "vgw-fwd: sync-peer needs the internal port's address\n"), -1;
    for (uint32_t i = 0; i < g_sync.npeers; i++) {
        const fwd_port_t *p = &g_fwd.port[VGW_PORT_INT];
        uint32_t ip = g_sync.peers[i].ip;
        if (ip == p->ip || (ip & p->mask) != (p->ip & p->mask)) {
            char s[16];
            uint32_t h = rte_be_to_cpu_32(ip);
            snprintf(s, sizeof s, "%u.%u.%u.%u", h >> 24, (h >> 16) & 255, (h >> 8) & 255, h & 255);
            return fprintf(stderr, "vgw-fwd: sync-peer %s: %s\n", s,
                           ip == p->ip ? "is this node's own internal address"
                                       : "is not on the internal port's subnet (peers must share the segment)"),
                   -1;
        }
    }
    if (g_sync.dead_ms && g_sync.dead_ms < 3 * g_sync.heartbeat_ms)
        return fprintf(stderr, "vgw-fwd: sync-dead-ms %u: at least 3 heartbeats (%u ms each), or 0 for no takeover\n",
                       g_sync.dead_ms, g_sync.heartbeat_ms),
               -1;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    g_sync.epoch = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    return 0;
}

/* ---- receiving ------------------------------------------------------------------------------ */

/* Accepts (sender, epoch, seq) once: an IPsec-style window of 64 over each peer's sequence. */
static bool replay_ok(sync_peer_t *p, uint64_t epoch, uint32_t seq)
{
    if (epoch < p->epoch)
        return false; /* a previous run of the peer: stale or replayed */
    if (epoch > p->epoch) {
        p->epoch = epoch, p->top = seq, p->window = 1;
        return true;
    }
    if ((int32_t)(seq - p->top) > 0) {
        uint32_t shift = seq - p->top;
        p->window = shift >= 64 ? 1 : (p->window << shift) | 1;
        p->top = seq;
        return true;
    }
    uint32_t back = p->top - seq;
    if (back >= 64 || (p->window >> back) & 1)
        return false;
    p->window |= 1ull << back;
    return true;
}

/* Imports the records fw owns; marks the other owners in others[] and returns how many. */
static uint32_t import_owned(fwd_worker_t *fw, const vgw_sync_rec_t *recs, int n, uint64_t now_ms,
                             uint8_t others[VGW_MAX_WORKERS])
{
    uint32_t nothers = 0;
    for (int i = 0; i < n; i++) {
        uint32_t owner = vgw_sync_owner(&recs[i], g_fwd.nworkers, g_fwd.steering);
        if (owner != fw->id) {
            nothers += !others[owner];
            others[owner] = 1;
            continue;
        }
        int rc = vgw_worker_sync_import(fw->w, &recs[i], now_ms);
        switch (rc) {
        case VGW_SYNC_OK: fw->fwd[FWD_CNT_SYNC_IMPORTED]++; break;
        case VGW_SYNC_E_NO_SERVICE: fw->fwd[FWD_CNT_SYNC_NO_SERVICE]++; break;
        case VGW_SYNC_E_NO_BACKEND: fw->fwd[FWD_CNT_SYNC_NO_BACKEND]++; break;
        case VGW_SYNC_E_CONFLICT: fw->fwd[FWD_CNT_SYNC_CONFLICT]++; break;
        default: fw->fwd[FWD_CNT_SYNC_FULL]++; break;
        }
    }
    return nothers;
}

void sync_rx(fwd_worker_t *fw, struct rte_mbuf *m, bool handed, uint64_t now_ms)
{
    const uint8_t *d = rte_pktmbuf_mtod(m, const uint8_t *);
    uint32_t len = m->data_len, off = 14;
    /* The caller parsed Ethernet (maybe VLAN-tagged) + IPv4 + UDP to get here: find them again. */
    uint16_t et = (uint16_t)(d[12] << 8 | d[13]);
    while ((et == 0x8100 || et == 0x88a8) && off + 4 <= len) {
        et = (uint16_t)(d[off + 2] << 8 | d[off + 3]);
        off += 4;
    }
    const struct rte_ipv4_hdr *ip = (const struct rte_ipv4_hdr *)(d + off);
    uint32_t ihl = (uint32_t)(ip->version_ihl & 0xf) * 4;
    uint32_t tot = rte_be_to_cpu_16(ip->total_length);
    const struct rte_udp_hdr *udp = (const struct rte_udp_hdr *)(d + off + ihl);
    uint32_t ulen = off + ihl + 8 <= len ? rte_be_to_cpu_16(udp->dgram_len) : 0;
    if (!handed)
        fw->fwd[FWD_CNT_SYNC_RX_MSGS]++;
    sync_peer_t *peer = NULL;
    for (uint32_t i = 0; i < g_sync.npeers && !peer; i++)
        if (g_sync.peers[i].ip == ip->src_addr)
            peer = &g_sync.peers[i];
    if (!peer || ip->time_to_live != 255) {
        fw->fwd[FWD_CNT_DROP_SYNC_PEER]++;
        rte_pktmbuf_free(m);
        return;
    }
    if (ihl < 20 || tot < ihl + 8 || off + tot > len || (rte_be_to_cpu_16(ip->fragment_offset) & 0x3fff) ||
        ulen < 8 || ulen != tot - ihl) {
        fw->fwd[FWD_CNT_DROP_SYNC_INVALID]++;
        rte_pktmbuf_free(m);
        return;
    }
    vgw_sync_hdr_t h;
    vgw_sync_rec_t recs[VGW_SYNC_MAX_RECS];
    int n = vgw_sync_decode((const uint8_t *)(udp + 1), ulen - 8, g_sync.key, &h, recs);
    if (n < 0 || h.sender != ip->src_addr) {
        fw->fwd[FWD_CNT_DROP_SYNC_INVALID]++;
        rte_pktmbuf_free(m);
        return;
    }
    if (!handed) {
        rte_spinlock_lock(&g_sync.lock);
        bool fresh = replay_ok(peer, h.epoch, h.seq);
        if (fresh) {
            atomic_store_explicit(&peer->heard_ms, now_ms ? now_ms : 1, memory_order_relaxed);
            for (int i = 0; i < n; i++) {
                uint32_t k = 0;
                while (k < peer->nlips && peer->lips[k] != recs[i].lip)
                    k++;
                if (k == peer->nlips && k < SYNC_PEER_LIPS)
                    peer->lips[peer->nlips++] = recs[i].lip;
            }
        }
        rte_spinlock_unlock(&g_sync.lock);
        if (!fresh) {
            fw->fwd[FWD_CNT_DROP_SYNC_REPLAY]++;
            rte_pktmbuf_free(m);
            return;
        }
    }
    uint8_t others[VGW_MAX_WORKERS] = {0};
    if (n == 0 || handed || import_owned(fw, recs, n, now_ms, others) == 0) {
        rte_pktmbuf_free(m);
        return;
    }
    /* The other owners get the same (read-only) message: one reference each. */
    for (uint32_t wid = 0; wid < g_fwd.nworkers; wid++) {
        if (!others[wid])
            continue;
        rte_mbuf_refcnt_update(m, 1);
        if (rte_ring_mp_enqueue(g_fwd.workers[wid].handoff, m) != 0) {
            rte_mbuf_refcnt_update(m, -1);
            fw->fwd[FWD_CNT_DROP_HANDOFF_FULL]++;
        } else {
            fw->fwd[FWD_CNT_HANDOFF_OUT]++;
        }
    }
    rte_pktmbuf_free(m);
}

/* ---- sending -------------------------------------------------------------------------------- */

static struct rte_mbuf *frame(uint64_t *nombuf, uint32_t peer, const uint8_t *msg, uint16_t len)
{
    struct rte_mbuf *m = rte_pktmbuf_alloc(g_fwd.pool);
    if (!m) {
        (*nombuf)++;
        return NULL;
    }
    uint16_t total = (uint16_t)(sizeof(struct rte_ether_hdr) + 20 + 8 + len);
    uint8_t *d = (uint8_t *)rte_pktmbuf_append(m, total);
    if (!d) {
        rte_pktmbuf_free(m);
        (*nombuf)++;
        return NULL;
    }
    const fwd_port_t *p = &g_fwd.port[VGW_PORT_INT];
    struct rte_ether_hdr *eh = (struct rte_ether_hdr *)d;
    memset(eh, 0, sizeof *eh);
    rte_ether_addr_copy(&p->mac, &eh->src_addr);
    eh->ether_type = RTE_BE16(RTE_ETHER_TYPE_IPV4);
    struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eh + 1);
    memset(ip, 0, sizeof *ip);
    ip->version_ihl = 0x45;
    ip->type_of_service = 0xc0; /* CS6, network control: ahead of bulk traffic in the queues */
    ip->total_length = rte_cpu_to_be_16((uint16_t)(20 + 8 + len));
    ip->fragment_offset = RTE_BE16(RTE_IPV4_HDR_DF_FLAG);
    ip->time_to_live = 255;
    ip->next_proto_id = 17;
    ip->src_addr = p->ip;
    ip->dst_addr = peer;
    ip->hdr_checksum = rte_ipv4_cksum(ip);
    struct rte_udp_hdr *udp = (struct rte_udp_hdr *)(ip + 1);
    udp->src_port = g_sync.port;
    udp->dst_port = g_sync.port;
    udp->dgram_len = rte_cpu_to_be_16((uint16_t)(8 + len));
    udp->dgram_cksum = 0;
    memcpy(udp + 1, msg, len);
    udp->dgram_cksum = rte_ipv4_udptcp_cksum(ip, udp);
    fwd_priv_t *pv = fwd_priv(m);
    pv->kind = FWD_PRIV_NONE;
    pv->role = VGW_PORT_INT;
    pv->nexthop = peer;
    return m;
}

uint16_t sync_build(fwd_worker_t *fw, struct rte_mbuf **out, uint16_t max, uint64_t now_ms)
{
    vgw_sync_rec_t recs[VGW_SYNC_MAX_RECS];
    uint8_t msg[VGW_SYNC_MAX_MSG];
    uint16_t nout = 0;
    fw->fwd[FWD_CNT_SYNC_OVERFLOW] = vgw_worker_sync_overflow(fw->w);
    while (nout + g_sync.npeers <= max) {
        uint32_t n = vgw_worker_sync_take(fw->w, recs, VGW_SYNC_MAX_RECS, now_ms);
        if (!n)
            break;
        vgw_sync_hdr_t h = {.sender = g_fwd.port[VGW_PORT_INT].ip, .epoch = g_sync.epoch,
                            .seq = atomic_fetch_add_explicit(&g_sync.seq, 1, memory_order_relaxed) + 1,
                            .nworkers = (uint16_t)g_fwd.nworkers};
        size_t len = vgw_sync_encode(&h, recs, n, g_sync.key, msg, sizeof msg);
        fw->fwd[FWD_CNT_SYNC_TX_MSGS]++;
        fw->fwd[FWD_CNT_SYNC_TX_RECS] += n;
        for (uint32_t i = 0; i < g_sync.npeers; i++) {
            struct rte_mbuf *m = frame(&fw->fwd[FWD_CNT_DROP_SYNC_NOMBUF], g_sync.peers[i].ip, msg, (uint16_t)len);
            if (m)
                out[nout++] = m;
        }
    }
    return nout;
}

/* ---- liveness and takeover (control thread) ------------------------------------------------ */

static const char *ipstr(uint32_t a, char buf[16])
{
    uint32_t h = rte_be_to_cpu_32(a);
    snprintf(buf, 16, "%u.%u.%u.%u", h >> 24, (h >> 16) & 255, (h >> 8) & 255, h & 255);
    return buf;
}

static void heartbeat(fwd_t *f, uint64_t now_ms)
{
    uint8_t msg[VGW_SYNC_HDR_LEN + VGW_SYNC_MAC_LEN];
    vgw_sync_hdr_t h = {.sender = f->port[VGW_PORT_INT].ip, .epoch = g_sync.epoch,
                        .seq = atomic_fetch_add_explicit(&g_sync.seq, 1, memory_order_relaxed) + 1,
                        .nworkers = (uint16_t)f->nworkers};
    size_t len = vgw_sync_encode(&h, NULL, 0, g_sync.key, msg, sizeof msg);
    for (uint32_t i = 0; i < g_sync.npeers; i++) {
        struct rte_mbuf *m = frame(&f->ctl[CTL_CNT_SYNC_NOMBUF], g_sync.peers[i].ip, msg, (uint16_t)len);
        if (!m)
            continue;
        /* the slow path resolves the peer's MAC (or asks for it) and sends it */
        fwd_priv(m)->kind = FWD_PRIV_UNRESOLVED;
        if (rte_ring_mp_enqueue(f->slow, m) != 0) {
            rte_pktmbuf_free(m);
            f->ctl[CTL_CNT_SYNC_NOMBUF]++;
            continue;
        }
        f->ctl[CTL_CNT_SYNC_HEARTBEATS]++;
    }
    (void)now_ms;
}

static void take_over(fwd_t *f, sync_peer_t *p, uint64_t silent_ms)
{
    char a[16], b[16];
    rte_spinlock_lock(&g_sync.lock);
    p->ntaken = p->nlips;
    memcpy(p->taken, p->lips, sizeof(uint32_t) * p->nlips);
    rte_spinlock_unlock(&g_sync.lock);
    p->down = true;
    f->ctl[CTL_CNT_SYNC_TAKEOVERS]++;
    uint32_t n = 0;
    for (uint32_t i = 0; i < p->ntaken; i++) {
        if (vgw_dp_foreign_lip_add(f->dp, p->taken[i]) != 0) {
            fprintf(stderr, "vgw-fwd: sync: cannot take over %s (the set of foreign LIPs is full)\n",
                    ipstr(p->taken[i], b));
            continue;
        }
        /* twice: a lost gratuitous ARP would leave a server answering into the void */
        neigh_garp(f, f->single_arm ? VGW_PORT_EXT : VGW_PORT_INT, p->taken[i]);
        neigh_garp(f, f->single_arm ? VGW_PORT_EXT : VGW_PORT_INT, p->taken[i]);
        n++;
    }
    fprintf(stderr, "vgw-fwd: sync: peer %s silent for %llu ms: answering for its %u LIP(s)\n", ipstr(p->ip, a),
            (unsigned long long)silent_ms, n);
}

static void release(fwd_t *f, sync_peer_t *p)
{
    char a[16];
    for (uint32_t i = 0; i < p->ntaken; i++)
        vgw_dp_foreign_lip_del(f->dp, p->taken[i]);
    fprintf(stderr, "vgw-fwd: sync: peer %s is back: its %u LIP(s) are its own again\n", ipstr(p->ip, a),
            p->ntaken);
    p->ntaken = 0;
    p->down = false;
    f->ctl[CTL_CNT_SYNC_RELEASES]++;
}

void sync_tick(fwd_t *f, uint64_t now_ms)
{
    if (!g_sync.npeers)
        return;
    if (now_ms - g_sync.last_beat_ms >= g_sync.heartbeat_ms) {
        heartbeat(f, now_ms);
        g_sync.last_beat_ms = now_ms;
    }
    if (!g_sync.dead_ms)
        return;
    for (uint32_t i = 0; i < g_sync.npeers; i++) {
        sync_peer_t *p = &g_sync.peers[i];
        uint64_t heard = atomic_load_explicit(&p->heard_ms, memory_order_relaxed);
        if (!heard)
            continue; /* never heard: a node that never came up has nothing to take over */
        bool silent = now_ms > heard && now_ms - heard > g_sync.dead_ms;
        if (silent && !p->down)
            take_over(f, p, now_ms - heard);
        else if (!silent && p->down)
            release(f, p);
    }
}

void sync_json(struct vbuf *b, uint64_t now_ms)
{
    char a[16];
    vb_printf(b, "\"sync\":{\"enabled\":%s,\"port\":%u,\"heartbeat_ms\":%u,\"dead_ms\":%u,\"foreign_lips\":%u,\"peers\":[",
              g_sync.npeers ? "true" : "false", rte_be_to_cpu_16(g_sync.port), g_sync.heartbeat_ms, g_sync.dead_ms,
              vgw_dp_foreign_lip_count(g_fwd.dp));
    for (uint32_t i = 0; i < g_sync.npeers; i++) {
        sync_peer_t *p = &g_sync.peers[i];
        uint64_t heard = atomic_load_explicit(&p->heard_ms, memory_order_relaxed);
        rte_spinlock_lock(&g_sync.lock);
        uint32_t nlips = p->nlips;
        rte_spinlock_unlock(&g_sync.lock);
        vb_printf(b, "%s{\"address\":\"%s\",\"state\":\"%s\",\"heard_ms_ago\":%lld,\"lips\":%u,\"taken_over\":%u}",
                  i ? "," : "", ipstr(p->ip, a), !heard ? "unknown" : p->down ? "down" : "up",
                  heard ? (long long)(now_ms - heard) : -1LL, nlips, p->down ? p->ntaken : 0u);
    }
    vb_printf(b, "]}");
}
