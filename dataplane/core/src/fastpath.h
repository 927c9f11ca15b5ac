/* SPDX-License-Identifier: Apache-2.0
 * What the per-packet modules share: the parse result of one packet, verdict helpers, and the
 * engine's connection primitives (engine.c) used by the SYN proxy and flood protection. */
#ifndef VGW_FASTPATH_H
#define VGW_FASTPATH_H

#include "internal.h"

#define TCP_FIN 0x01u
#define TCP_SYN 0x02u
#define TCP_RST 0x04u
#define TCP_PSH 0x08u
#define TCP_ACK 0x10u

#define TCPOPT_EOL 0u
#define TCPOPT_NOP 1u
#define TCPOPT_MSS 2u
#define TCPOPT_WSCALE 3u
#define TCPOPT_SACK_PERM 4u
#define TCPOPT_SACK 5u
#define TCPOPT_TS 8u
#define TCPOPT_TOA 254u

enum { PM_DONE = 0, PM_LOOKUP = 1, PM_ICMP_ERR = 2 };

typedef struct pm {
    uint8_t *l3, *l4;
    uint16_t l2len, ihl, totlen, l4len;
    uint8_t proto, stage, kind, tcpflags;
    uint8_t af;      /* VGW_AF_INET: key; VGW_AF_INET6: key6 */
    uint8_t toa_len; /* TOA bytes for this family */
    vgw_key4_t key;
    uint64_t hash;
    const vgw_bucket_t *bucket;
    vgw_key6_t key6; /* last: an IPv4 packet's fields stay in the first cache line */
} pm_t;

static inline void set_drop(vgw_worker_t *w, vgw_verdict_t *v, unsigned reason)
{
    v->action = VGW_ACT_DROP;
    v->arg = (uint16_t)reason;
    w->cnt[VGW_CNT_DROP]++;
    w->cnt[VGW_CNT_DROP_BASE + reason]++;
}

static inline void set_forward(vgw_verdict_t *v, unsigned port, uint32_t nexthop)
{
    v->action = VGW_ACT_FORWARD;
    v->port = (uint8_t)port;
    v->af = VGW_AF_INET;
    memset(&v->nexthop, 0, sizeof v->nexthop);
    v->nexthop.v4 = nexthop;
}

static inline void set_forward6(vgw_verdict_t *v, unsigned port, const uint8_t *nexthop)
{
    v->action = VGW_ACT_FORWARD;
    v->port = (uint8_t)port;
    v->af = VGW_AF_INET6;
    memcpy(v->nexthop.v6, nexthop, 16);
}

static inline uint64_t *svc_cnt(vgw_worker_t *w, uint32_t svc_uid)
{
    return &w->pr.svc_cnt[(size_t)svc_uid * VGW_SCNT_MAX];
}

static inline bool tcp_halfopen_state(uint8_t state)
{
    return state == VGW_TCP_NONE || state == VGW_TCP_SYN_RECV;
}

/* Every TCP state change goes through here so the half-open count stays exact. */
static inline void conn_set_state(vgw_worker_t *w, vgw_conn_t *c, uint8_t state)
{
    if (c->proto == VGW_PROTO_TCP && !(c->flags & VGW_CF_PROXY)) {
        w->pr.halfopen += (uint32_t)tcp_halfopen_state(state) - (uint32_t)tcp_halfopen_state(c->state);
    }
    /* Peers learn of every state change, from the SYN on: a flow the routers move in the middle
     * of its handshake (an isolate, a drain) finds its copy on the new node; their copy's timeout
     * follows the state. */
    if (VGW_UNLIKELY(w->flags & VGW_WF_SYNC) && state != c->state)
        vgw_sync_note(w, c, w->pr.last_now);
    c->state = state;
}

/* Walks the TCP options of the segment at l4: returns the offset of the next option whose kind
 * and length are sane (*pos advances past it), or 0 at the end, at EOL or at a malformed one. */
static inline uint32_t tcpopt_next(const uint8_t *l4, uint32_t *pos)
{
    uint32_t end = (uint32_t)(l4[12] >> 4) * 4, i = *pos;
    while (i < end && l4[i] == TCPOPT_NOP)
        i++;
    if (i >= end || l4[i] == TCPOPT_EOL || i + 1 >= end || l4[i + 1] < 2 || l4[i + 1] > end - i)
        return 0;
    *pos = i + l4[i + 1];
    return i;
}

/* The frame grows to newlen bytes: into the tailroom, then (moving the L2 header back) into the
 * headroom. 0, or -1 if it cannot (nothing changed). */
static inline int pkt_make_room(vgw_pkt_t *p, const pm_t *m, uint32_t newlen)
{
    uint32_t room = (uint32_t)p->len + p->tailroom;
    if (newlen > 0xffffu || newlen > room + p->headroom)
        return -1;
    if (newlen > room) {
        uint32_t back = newlen - room;
        memmove(p->data - back, p->data, m->l2len);
        p->data -= back;
        p->headroom = (uint16_t)(p->headroom - back);
        p->tailroom = (uint16_t)(p->tailroom + back);
    }
    p->tailroom = (uint16_t)((int32_t)p->tailroom - ((int32_t)newlen - (int32_t)p->len));
    p->len = (uint16_t)newlen;
    return 0;
}

/* engine.c */
/* xflags: VGW_CF_* the new connection starts with (VGW_CF_PROXY: not half-open, not evictable). */
uint32_t vgw_conn_create(vgw_worker_t *w, const vgw_svc_t *svc, const pm_t *m, uint32_t now, vgw_verdict_t *v,
                         uint8_t xflags);
void vgw_conn_forward(vgw_worker_t *w, const vgw_state_t *st, vgw_pkt_t *p, pm_t *m, uint32_t idx, uint32_t dir,
                      uint32_t now, vgw_verdict_t *v);
void vgw_conn_release(vgw_worker_t *w, uint32_t idx);
/* The checksum deltas of c's two rewrites, from its addresses and ports. */
void vgw_conn_deltas(vgw_conn_t *c);

/* protect.c */
int vgw_protect_init(vgw_worker_t *w, uint64_t seed);
void vgw_protect_fini(vgw_worker_t *w);
void vgw_protect_burst(vgw_worker_t *w, uint32_t now);
bool vgw_tb_take(vgw_tb_t *tb, uint32_t rate_per_s, uint32_t now);
/* 0 = allowed, else the drop reason (limits counted). src_net: the client's network the per-source
 * limit applies to (conn_rate_src24): its /24 for IPv4, its /64 for IPv6. */
unsigned vgw_limit_check(vgw_worker_t *w, const vgw_svc_t *svc, uint32_t src_net, uint32_t now);
uint32_t vgw_src_net4(uint32_t saddr);
uint32_t vgw_src_net6(const uint8_t *saddr);
/* Is the SYN proxy answering SYNs for svc now? Counts the SYN for auto mode. */
bool vgw_synproxy_engaged(vgw_worker_t *w, const vgw_svc_t *svc, uint32_t now);
/* Frees a slot for a new connection under pressure: evicts the oldest half-open one. */
bool vgw_evict_halfopen(vgw_worker_t *w);
void vgw_ring_push(vgw_worker_t *w, uint32_t idx);
void vgw_lip_exhausted(vgw_worker_t *w, uint32_t lip);
/* Rewrites p as a new IPv4/TCP packet (no payload) after its L2 header, growing it with
 * pkt_make_room. Returns 0, or -1 if it does not fit (p unchanged). */
int vgw_build_tcp(vgw_pkt_t *p, pm_t *m, uint32_t saddr, uint32_t daddr, uint16_t sport, uint16_t dport,
                  uint32_t seq, uint32_t ack, uint8_t flags, uint16_t win, const uint8_t *opt, uint32_t optlen);
/* Answers a TCP segment that has no connection (rst_unknown): RST if the rate allows. */
void vgw_no_conn(vgw_worker_t *w, const vgw_svc_t *svc, vgw_pkt_t *p, pm_t *m, unsigned reason, uint32_t now,
                 vgw_verdict_t *v);

/* synproxy.c */
void vgw_sp_syn(vgw_worker_t *w, const vgw_svc_t *svc, vgw_pkt_t *p, pm_t *m, uint32_t now, vgw_verdict_t *v);
/* A non-SYN segment with no connection to a proxied service: 1 if it carried a valid cookie
 * (handled: the connection exists and p became the SYN to the server), 0 if not (v untouched). */
int vgw_sp_ack(vgw_worker_t *w, const vgw_state_t *st, const vgw_svc_t *svc, vgw_pkt_t *p, pm_t *m, uint32_t now,
               vgw_verdict_t *v);
/* A segment of a proxied connection that is not plain established traffic (the handshake, a
 * SYN). Returns 1 when it handled the packet completely (v set), 0 when the caller continues with
 * normal forwarding; then *csum_delta is the TCP checksum delta of the translation already made
 * (0 if none). */
int vgw_sp_segment(vgw_worker_t *w, const vgw_state_t *st, vgw_pkt_t *p, pm_t *m, uint32_t idx, uint32_t dir,
                   uint32_t now, vgw_verdict_t *v, uint32_t *csum_delta);
/* Translates sequence numbers, SACK blocks, timestamps and window of an established proxied
 * segment in place; returns the TCP checksum delta (the caller applies it). */
uint32_t vgw_sp_xlate(vgw_conn_t *c, uint32_t dir, pm_t *m);

static inline uint32_t sp_add32(uint8_t *at, uint32_t delta)
{
    uint32_t old = ld32(at), nw = h2n32(n2h32(old) + delta);
    st32(at, nw);
    return csum_delta32(old, nw);
}

/* vgw_sp_xlate for what nearly every segment looks like: no options, or timestamps alone in
 * Linux's layout (NOP NOP TS), and the same window scale on both legs. */
static inline uint32_t sp_xlate_inline(vgw_conn_t *c, uint32_t dir, pm_t *m)
{
    uint8_t *l4 = m->l4;
    uint32_t doff = (uint32_t)(l4[12] >> 4) * 4;
    int ts_only = doff == 32 && ld32(l4 + 20) == h2n32(0x0101080au);
    if (VGW_UNLIKELY((c->flags & VGW_CF_SP_WIN) || (doff != 20 && !ts_only)))
        return vgw_sp_xlate(c, dir, m);
    uint32_t d;
    if (dir == 0) {
        d = (m->tcpflags & TCP_ACK) ? sp_add32(l4 + 8, c->sp_seq) : 0;
        if (ts_only && (c->flags & VGW_CF_SP_TS))
            d += sp_add32(l4 + 28, (uint32_t)0 - c->sp_ts);
    } else {
        d = sp_add32(l4 + 4, (uint32_t)0 - c->sp_seq);
        if (ts_only && (c->flags & VGW_CF_SP_TS))
            d += sp_add32(l4 + 24, c->sp_ts);
    }
    return d;
}
void vgw_sp_release(vgw_worker_t *w, vgw_conn_t *c);

#endif
