/* SPDX-License-Identifier: Apache-2.0
 * The per-packet path: parse/validate, connection lookup, scheduling, FULLNAT, TOA, ICMP.
 *
 * A burst runs in passes so that independent memory accesses of different packets overlap
 * (Katran/l3fwd style): parse every packet and prefetch its hash bucket, then prefetch the
 * connection record the bucket points to, then do the real work with both already in cache.
 * Lookups in the last pass are done again for real, so packets of the same new flow within one
 * burst see each other's inserts.
 */
#include <stdlib.h>

#include "fastpath.h"
#include "text.h"
#include "vgw/persist.h"

#define ETH_HLEN 14u
#define ETHERTYPE_IPV4 0x0800u
#define ETHERTYPE_IPV6 0x86ddu
#define ETHERTYPE_VLAN 0x8100u
#define ETHERTYPE_QINQ 0x88a8u


#define ICMP_DEST_UNREACH 3u
#define ICMP_TIME_EXCEEDED 11u
#define ICMP_PARAMETERPROB 12u
#define ICMP_FRAG_NEEDED 4u

#define IP6_HLEN 40u
#define IP6_MAX_EXT 8u /* extension headers walked before a packet is refused */
#define IP6_MIN_MTU 1280u
#define NH_HOPOPTS 0u
#define NH_ROUTING 43u
#define NH_FRAGMENT 44u
#define NH_ICMPV6 58u
#define NH_DSTOPTS 60u
#define ICMP6_DEST_UNREACH 1u
#define ICMP6_PACKET_TOO_BIG 2u
#define ICMP6_PARAMPROB 4u

/* Lowest LIP port handed out; below are well-known ports a real server might treat specially. */
#define LPORT_MIN 1024u
/* New connection: LIP/port candidates tried before giving up (each costs a table probe). */
#define LPORT_TRIES 64u
/* Slots examined to find an expired connection when the free list is empty. */
#define FULL_SWEEP_BUDGET 256u

static const char *const event_names[] = {
#define VGW_X_(e, s) s,
    VGW_EVENT_COUNTERS(VGW_X_)
#undef VGW_X_
};
static const char *const drop_names[] = {
#define VGW_X_(e, s) s,
    VGW_DROP_REASONS(VGW_X_)
#undef VGW_X_
};
static const char *const drop_counter_names[] = {
#define VGW_X_(e, s) "drop_" s,
    VGW_DROP_REASONS(VGW_X_)
#undef VGW_X_
};

const char *vgw_counter_name(unsigned idx)
{
    if (idx < VGW_CNT_EVENTS_MAX)
        return event_names[idx];
    if (idx < VGW_CNT_MAX)
        return drop_counter_names[idx - VGW_CNT_EVENTS_MAX];
    return NULL;
}

const char *vgw_drop_reason_name(unsigned reason)
{
    return reason < VGW_DROP_MAX ? drop_names[reason] : NULL;
}

/* LVS's TCP state table (ip_vs_proto_tcp.c), the behaviour DPVS and LVS operators know.
 * Direction 0 = from the client, 1 = from the real server; events syn, fin, ack, rst. */
enum { sNO = VGW_TCP_NONE, sES = VGW_TCP_ESTABLISHED, sSS = VGW_TCP_SYN_SENT, sSR = VGW_TCP_SYN_RECV,
       sFW = VGW_TCP_FIN_WAIT, sTW = VGW_TCP_TIME_WAIT, sCL = VGW_TCP_CLOSE, sCW = VGW_TCP_CLOSE_WAIT,
       sLA = VGW_TCP_LAST_ACK, sLI = VGW_TCP_LISTEN, sSA = VGW_TCP_SYNACK };

static const uint8_t tcp_fsm[2][4][11] = {
    {
        /*        sNO  sES  sSS  sSR  sFW  sTW  sCL  sCW  sLA  sLI  sSA */
        /*syn*/ {sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSR},
        /*fin*/ {sCL, sCW, sSS, sTW, sTW, sTW, sCL, sCW, sLA, sLI, sTW},
        /*ack*/ {sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES},
        /*rst*/ {sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sSR},
    },
    {
        /*syn*/ {sSS, sES, sSS, sSR, sSS, sSS, sSS, sSS, sSS, sLI, sSR},
        /*fin*/ {sTW, sFW, sSS, sTW, sFW, sTW, sCL, sTW, sLA, sLI, sTW},
        /*ack*/ {sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sLA, sES, sES},
        /*rst*/ {sCL, sCL, sSS, sCL, sCL, sTW, sCL, sCL, sCL, sCL, sCL},
    },
};

static inline int tcp_event(uint8_t flags)
{
    if (flags & TCP_RST)
        return 3;
    if (flags & TCP_SYN)
        return 0;
    if (flags & TCP_FIN)
        return 1;
    if (flags & TCP_ACK)
        return 2;
    return -1;
}

uint32_t vgw_flow_hash_v4(uint32_t saddr, uint32_t daddr, uint16_t sport, uint16_t dport, uint8_t proto)
{
    /* Fixed constants, no per-process seed: Maglev needs every node to agree. */
    uint64_t a = ((uint64_t)saddr << 32) | daddr;
    uint64_t b = ((uint64_t)sport << 32) | ((uint64_t)dport << 16) | proto;
    return (uint32_t)(vgw_mix64(a ^ 0x2545f4914f6cdd1dULL) ^ vgw_mix64(b + 0x9e3779b97f4a7c15ULL));
}

uint32_t vgw_flow_hash_v6(const uint8_t *saddr, const uint8_t *daddr, uint16_t sport, uint16_t dport, uint8_t proto)
{
    /* Fixed constants, like the IPv4 hash: every node must agree. */
    uint64_t x[4];
    memcpy(x, saddr, 16);
    memcpy(x + 2, daddr, 16);
    uint64_t a = vgw_mix64(x[0] ^ 0x2545f4914f6cdd1dULL) + vgw_mix64(x[1] ^ 0x4f1bbcdcbfa53e0bULL);
    a ^= vgw_mix64(x[2] + 0x61c8864680b583ebULL) + vgw_mix64(x[3] ^ 0x94d049bb133111ebULL);
    uint64_t b = ((uint64_t)sport << 32) | ((uint64_t)dport << 16) | proto;
    return (uint32_t)(vgw_mix64(a) ^ vgw_mix64(b + 0x9e3779b97f4a7c15ULL));
}

uint32_t vgw_client_owner(uint32_t saddr, uint32_t daddr, uint16_t sport, uint16_t dport, uint8_t proto,
                          uint32_t nworkers)
{
    return nworkers > 1 ? vgw_flow_hash_v4(saddr, daddr, sport, dport, proto) % nworkers : 0;
}

/* ---- worker lifecycle ---------------------------------------------------------------------- */

vgw_worker_t *vgw_worker_create(vgw_dp_t *dp, const vgw_worker_params_t *p)
{
    if (p && p->report)
        memset(p->report, 0, sizeof *p->report);
    if (!dp || !p || p->id >= dp->nworkers || p->conn_capacity == 0)
        return NULL;
    vgw_worker_t *w = NULL;
    if (posix_memalign((void **)&w, VGW_CACHE_LINE, sizeof *w))
        return NULL;
    memset(w, 0, sizeof *w);
    w->dp = dp;
    w->id = p->id;
    w->nworkers = dp->nworkers;
    w->mtu = p->mtu ? p->mtu : 1500;
    w->flags = p->flags;
    atomic_init(&w->qsbr_gen, UINT64_MAX);
    w->rr_pos = calloc(VGW_MAX_SERVICES, sizeof(uint32_t));
    w->lip_pos = calloc(VGW_MAX_SERVICES, sizeof(uint32_t));
    w->be_conns = calloc(VGW_MAX_BACKENDS, sizeof(uint32_t));
    w->be_new = calloc(VGW_MAX_BACKENDS, sizeof(uint64_t));
    /* Start port cursors apart so workers restarted together do not retrace the same ports. */
    w->port_cursor = (uint32_t)(p->hash_seed * 2654435761u);
    uint64_t seed = p->hash_seed ^ 0x6a09e667f3bcc909ULL;
    /* A persisted table is opened after protect_init: re-attaching rebuilds the half-open ring
     * and count, and re-derives uids from the state applied now (persist.c). */
    if (!w->rr_pos || !w->lip_pos || !w->be_conns || !w->be_new || vgw_protect_init(w, p->hash_seed) ||
        (p->persist ? vgw_persist_open(w, p, seed) : vgw_ctab_init(&w->ct, p->conn_capacity, seed))) {
        if (p->report && p->persist && p->report->status == VGW_PERSIST_NONE)
            p->report->status = VGW_PERSIST_ERROR;
        vgw_worker_destroy(w);
        return NULL;
    }
    if (dp->v6)
        vgw_ctab_enable_v6(&w->ct, (const uint8_t(*)[16])dp->addr6.addr);
    vgw_worker_t *expected = NULL;
    if (!atomic_compare_exchange_strong(&dp->workers[p->id], &expected, w)) {
        vgw_persist_close(w);
        vgw_ctab_fini(&w->ct);
        vgw_protect_fini(w);
        free(w->rr_pos), free(w->lip_pos), free(w->be_conns), free(w->be_new);
        free(w);
        return NULL;
    }
    return w;
}

void vgw_worker_destroy(vgw_worker_t *w)
{
    if (!w)
        return;
    vgw_worker_t *self = w;
    atomic_compare_exchange_strong(&w->dp->workers[w->id], &self, NULL);
    vgw_persist_close(w); /* a persisted table stays in its file, marked closed cleanly */
    vgw_ctab_fini(&w->ct);
    vgw_protect_fini(w);
    free(w->rr_pos), free(w->lip_pos), free(w->be_conns), free(w->be_new);
    free(w);
}

void vgw_worker_quiesce(vgw_worker_t *w)
{
    atomic_store_explicit(&w->qsbr_gen, UINT64_MAX, memory_order_release);
}

void vgw_worker_counters(const vgw_worker_t *w, vgw_counters_t *out)
{
    memcpy(out->v, w->cnt, sizeof out->v);
    out->v[VGW_CNT_CONN_ACTIVE] = w->ct.count;
    out->v[VGW_CNT_CONN_HALFOPEN] = w->pr.halfopen;
}

uint32_t vgw_worker_conn_count(const vgw_worker_t *w)
{
    return w->ct.count;
}

uint64_t vgw_worker_conn_bytes(const vgw_worker_t *w)
{
    return w->ct.capacity ? w->ct.bytes / w->ct.capacity : 0;
}

void vgw_conn_release(vgw_worker_t *w, uint32_t idx)
{
    vgw_conn_t *c = &w->ct.conns[idx];
    if (w->be_conns[c->be_uid])
        w->be_conns[c->be_uid]--;
    if (c->proto == VGW_PROTO_TCP && !(c->flags & VGW_CF_PROXY) && tcp_halfopen_state(c->state))
        w->pr.halfopen--;
    vgw_sp_release(w, c);
    vgw_ctab_remove(&w->ct, idx);
}

uint32_t vgw_worker_housekeep(vgw_worker_t *w, uint64_t now_ms, uint32_t budget)
{
    vgw_ctab_t *t = &w->ct;
    uint32_t now = (uint32_t)now_ms, removed = 0;
    if (budget > t->capacity)
        budget = t->capacity;
    for (uint32_t i = 0; i < budget; i++) {
        uint32_t idx = t->sweep_pos;
        t->sweep_pos = idx + 1 == t->capacity ? 0 : idx + 1;
        vgw_conn_t *c = &t->conns[idx];
        if ((c->flags & VGW_CF_USED) && vgw_expired(c->expire, now)) {
            vgw_conn_release(w, idx);
            removed++;
        }
    }
    w->cnt[VGW_CNT_SWEPT] += budget;
    w->cnt[VGW_CNT_CONN_EXPIRED] += removed;
    return removed;
}

/* ---- per-packet metadata ------------------------------------------------------------------- */


/* TTL (IPv4) or hop limit (IPv6) of the parsed packet. */
static inline uint8_t hops_left(const pm_t *m)
{
    return m->af == VGW_AF_INET6 ? m->l3[7] : m->l3[8];
}

static inline void set_local(vgw_worker_t *w, vgw_verdict_t *v)
{
    v->action = VGW_ACT_LOCAL;
    w->cnt[VGW_CNT_LOCAL]++;
}

static inline void set_handoff(vgw_worker_t *w, vgw_verdict_t *v, uint32_t owner)
{
    v->action = VGW_ACT_HANDOFF;
    v->arg = (uint16_t)owner;
    w->cnt[VGW_CNT_HANDOFF]++;
}

static inline int martian_src(uint32_t a_net)
{
    uint32_t top = n2h32(a_net) >> 24;
    return top == 0 || top == 127 || top >= 224;
}

static int ip_options_check(const uint8_t *opt, uint32_t len)
{
    uint32_t i = 0;
    while (i < len) {
        uint8_t kind = opt[i];
        if (kind == 0)
            return 0;
        if (kind == 1) {
            i++;
            continue;
        }
        if (i + 1 >= len || opt[i + 1] < 2 || opt[i + 1] > len - i)
            return VGW_DROP_IP_BAD_OPTIONS;
        /* Loose/strict source routing would let a client steer our translated packets. */
        if (kind == 131 || kind == 137)
            return VGW_DROP_IP_SRC_ROUTE;
        i += opt[i + 1];
    }
    return 0;
}

static inline int parse_l4(vgw_worker_t *w, vgw_pkt_t *p, pm_t *m, vgw_verdict_t *v);
static int parse6(vgw_worker_t *w, const vgw_state_t *st, vgw_pkt_t *p, pm_t *m, vgw_verdict_t *v, uint32_t off);

/* Parses and validates one packet. Returns the next stage; on PM_DONE the verdict is set. */
static int parse(vgw_worker_t *w, const vgw_state_t *st, vgw_pkt_t *p, pm_t *m, vgw_verdict_t *v)
{
    uint8_t *d = p->data;
    uint32_t len = p->len;
    if (VGW_UNLIKELY(len < ETH_HLEN))
        return set_drop(w, v, VGW_DROP_ETH_TRUNC), PM_DONE;
    uint32_t off = ETH_HLEN;
    uint16_t et = n2h16(ld16(d + 12));
    for (int tags = 0; (et == ETHERTYPE_VLAN || et == ETHERTYPE_QINQ) && tags < 2; tags++) {
        if (off + 4 > len)
            return set_drop(w, v, VGW_DROP_ETH_TRUNC), PM_DONE;
        et = n2h16(ld16(d + off + 2));
        off += 4;
    }
    if (et == ETHERTYPE_IPV6 && st)
        return parse6(w, st, p, m, v, off);
    if (et != ETHERTYPE_IPV4 || !st)
        return set_local(w, v), PM_DONE; /* ARP, LLDP, ... and no config yet */

    uint8_t *l3 = d + off;
    uint32_t avail = len - off;
    if (VGW_UNLIKELY(avail < 20))
        return set_drop(w, v, VGW_DROP_IP_TRUNC), PM_DONE;
    if (VGW_UNLIKELY((l3[0] >> 4) != 4))
        return set_drop(w, v, VGW_DROP_IP_VERSION), PM_DONE;
    uint32_t ihl = (uint32_t)(l3[0] & 0x0f) * 4;
    if (VGW_UNLIKELY(ihl < 20))
        return set_drop(w, v, VGW_DROP_IP_BAD_IHL), PM_DONE;
    if (VGW_UNLIKELY(ihl > avail))
        return set_drop(w, v, VGW_DROP_IP_TRUNC), PM_DONE;
    uint32_t totlen = n2h16(ld16(l3 + 2));
    if (VGW_UNLIKELY(totlen < ihl || totlen > avail))
        return set_drop(w, v, VGW_DROP_IP_BAD_LEN), PM_DONE;

    uint32_t dst = ld32(l3 + 16);
    uint32_t kind = vgw_state_addr_kind(st, dst);
    if (kind == 0 && VGW_UNLIKELY(vgw_foreign_lip(w->dp, dst)))
        kind = VGW_ADDR_LIP; /* a failed peer's LIP: its synced connections' replies (sync.c) */
    if (kind == 0)
        return set_local(w, v), PM_DONE; /* node traffic: BGP, ssh, ... never touches the tables */

    if (!(p->flags & VGW_PKT_F_IP_CSUM_GOOD) && VGW_UNLIKELY(vgw_csum_fold(vgw_csum_partial(l3, ihl, 0)) != 0xffff))
        return set_drop(w, v, VGW_DROP_IP_BAD_CSUM), PM_DONE;
    if (VGW_UNLIKELY(ihl > 20)) {
        int r = ip_options_check(l3 + 20, ihl - 20);
        if (r)
            return set_drop(w, v, (unsigned)r), PM_DONE;
    }
    uint32_t src = ld32(l3 + 12);
    if (VGW_UNLIKELY(martian_src(src)))
        return set_drop(w, v, VGW_DROP_IP_BAD_SRC), PM_DONE;
    /* Fragments: without the L4 header a non-first fragment cannot be matched to a connection,
     * and reassembly is a memory-exhaustion target, so fragments to VIPs/LIPs are dropped and
     * counted. Clients discover the path MTU instead (we translate frag-needed both ways). */
    if (VGW_UNLIKELY(ld16(l3 + 6) & h2n16(0x3fff)))
        return set_drop(w, v, VGW_DROP_IP_FRAG), PM_DONE;

    m->l3 = l3, m->l4 = l3 + ihl;
    m->l2len = (uint16_t)off, m->ihl = (uint16_t)ihl, m->totlen = (uint16_t)totlen, m->l4len = (uint16_t)(totlen - ihl);
    m->proto = l3[9];
    m->kind = (uint8_t)kind;
    m->af = VGW_AF_INET;
    m->toa_len = VGW_TOA_LEN;
    return parse_l4(w, p, m, v);
}

/* The worker that owns an IPv6 client flow under VGW_WF_STEER_CLIENTS (vgw_client_owner's twin). */
static inline uint32_t client_owner6(const uint8_t *saddr, const uint8_t *daddr, uint16_t sport, uint16_t dport,
                                     uint8_t proto, uint32_t nworkers)
{
    return nworkers > 1 ? vgw_flow_hash_v6(saddr, daddr, sport, dport, proto) % nworkers : 0;
}

/* IPv6: the fixed header and the extension headers before TCP/UDP/ICMPv6. Hop-by-hop and
 * destination options are skipped (their contents are for the end host), a routing header only
 * when no segments are left (else the packet asks to be steered on: never honoured, as IPv4
 * source routing), fragments are dropped like IPv4 fragments, anything else (ESP, AH, no next
 * header, mobility) is not ours to balance. */
static int parse6(vgw_worker_t *w, const vgw_state_t *st, vgw_pkt_t *p, pm_t *m, vgw_verdict_t *v, uint32_t off)
{
    uint8_t *l3 = p->data + off;
    uint32_t avail = p->len - off;
    if (VGW_UNLIKELY(avail < IP6_HLEN))
        return set_drop(w, v, VGW_DROP_IP_TRUNC), PM_DONE;
    if (VGW_UNLIKELY((l3[0] >> 4) != 6))
        return set_drop(w, v, VGW_DROP_IP_VERSION), PM_DONE;
    uint32_t totlen = IP6_HLEN + n2h16(ld16(l3 + 4));
    if (VGW_UNLIKELY(totlen > avail))
        return set_drop(w, v, VGW_DROP_IP_BAD_LEN), PM_DONE;
    uint32_t kind = vgw_state_addr_kind6(st, l3 + 24);
    if (kind == 0)
        return set_local(w, v), PM_DONE; /* neighbour discovery, node traffic */
    /* the configuration's unicast rule: multicast, link-local, ::/96 and v4-mapped are martians */
    if (VGW_UNLIKELY(!vgw_ipv6_unicast(l3 + 8)))
        return set_drop(w, v, VGW_DROP_IP_BAD_SRC), PM_DONE;
    uint32_t nh = l3[6], pos = IP6_HLEN;
    for (uint32_t n = 0; nh != VGW_PROTO_TCP && nh != VGW_PROTO_UDP && nh != NH_ICMPV6; n++) {
        if (nh == NH_FRAGMENT)
            return set_drop(w, v, VGW_DROP_IP_FRAG), PM_DONE;
        if (nh != NH_HOPOPTS && nh != NH_ROUTING && nh != NH_DSTOPTS)
            return set_drop(w, v, VGW_DROP_PROTO_UNSUPPORTED), PM_DONE;
        if (VGW_UNLIKELY(n == IP6_MAX_EXT || pos + 8 > totlen || (nh == NH_HOPOPTS && pos != IP6_HLEN)))
            return set_drop(w, v, VGW_DROP_IP6_BAD_EXT), PM_DONE;
        uint32_t hlen = ((uint32_t)l3[pos + 1] + 1) * 8;
        if (VGW_UNLIKELY(pos + hlen > totlen))
            return set_drop(w, v, VGW_DROP_IP6_BAD_EXT), PM_DONE;
        if (nh == NH_ROUTING && l3[pos + 3] != 0)
            return set_drop(w, v, VGW_DROP_IP_SRC_ROUTE), PM_DONE;
        nh = l3[pos];
        pos += hlen;
    }
    m->l3 = l3, m->l4 = l3 + pos;
    m->l2len = (uint16_t)off, m->ihl = (uint16_t)pos, m->totlen = (uint16_t)totlen, m->l4len = (uint16_t)(totlen - pos);
    m->proto = (uint8_t)nh;
    m->kind = (uint8_t)kind;
    m->af = VGW_AF_INET6;
    m->toa_len = VGW_TOA6_LEN;
    return parse_l4(w, p, m, v);
}

VGW_HOT_INLINE uint16_t l4_csum(const pm_t *m)
{
    if (m->af == VGW_AF_INET6)
        return vgw_l4_csum_v6(m->l3 + 8, m->l3 + 24, m->proto, m->l4, m->l4len);
    return vgw_l4_csum_v4(ld32(m->l3 + 12), ld32(m->l3 + 16), m->proto, m->l4, m->l4len);
}

/* Both families from the L4 header on (m->l3, l4, lengths, proto, kind and af set). Inlined into
 * each family's parser, where the family is a constant: the IPv4 path keeps no IPv6 branch. */
static inline __attribute__((always_inline)) int parse_l4(vgw_worker_t *w, vgw_pkt_t *p, pm_t *m,
                                                          vgw_verdict_t *v)
{
    uint8_t *l4 = m->l4;
    uint32_t l4len = m->l4len;
    uint8_t proto = m->proto;
    bool v6 = m->af == VGW_AF_INET6;
    int verify = !(p->flags & VGW_PKT_F_L4_CSUM_GOOD) && !(w->flags & VGW_WF_NO_SW_L4_CSUM);

    if (proto == VGW_PROTO_TCP) {
        if (VGW_UNLIKELY(l4len < 20))
            return set_drop(w, v, VGW_DROP_TCP_TRUNC), PM_DONE;
        uint32_t doff = (uint32_t)(l4[12] >> 4) * 4;
        if (VGW_UNLIKELY(doff < 20 || doff > l4len))
            return set_drop(w, v, VGW_DROP_TCP_BAD_OFF), PM_DONE;
        uint8_t fl = l4[13];
        if (VGW_UNLIKELY((fl & (TCP_SYN | TCP_FIN)) == (TCP_SYN | TCP_FIN) ||
                         (fl & (TCP_SYN | TCP_RST)) == (TCP_SYN | TCP_RST) || (fl & 0x3f) == 0))
            return set_drop(w, v, VGW_DROP_TCP_BAD_FLAGS), PM_DONE;
        m->tcpflags = fl;
    } else if (proto == VGW_PROTO_UDP) {
        if (VGW_UNLIKELY(l4len < 8))
            return set_drop(w, v, VGW_DROP_UDP_TRUNC), PM_DONE;
        if (VGW_UNLIKELY(n2h16(ld16(l4 + 4)) != l4len))
            return set_drop(w, v, VGW_DROP_UDP_BAD_LEN), PM_DONE;
        if (ld16(l4 + 6) == 0) {
            if (v6) /* RFC 8200 8.1: mandatory over IPv6 */
                return set_drop(w, v, VGW_DROP_L4_BAD_CSUM), PM_DONE;
            verify = 0; /* IPv4 UDP without checksum */
        }
    } else if (proto == (v6 ? NH_ICMPV6 : VGW_PROTO_ICMP)) {
        if (VGW_UNLIKELY(l4len < 8))
            return set_drop(w, v, VGW_DROP_ICMP_TRUNC), PM_DONE;
        if (v6 ? l4_csum(m) != 0 : vgw_csum_fold(vgw_csum_partial(l4, l4len, 0)) != 0xffff)
            return set_drop(w, v, VGW_DROP_ICMP_BAD_CSUM), PM_DONE;
        uint8_t type = l4[0];
        if (v6 ? (type >= ICMP6_DEST_UNREACH && type <= ICMP6_PARAMPROB)
               : (type == ICMP_DEST_UNREACH || type == ICMP_TIME_EXCEEDED || type == ICMP_PARAMETERPROB))
            return PM_ICMP_ERR;
        /* Echo, neighbour discovery and friends addressed to a VIP/LIP are the local stack's. */
        return set_local(w, v), PM_DONE;
    } else {
        return set_drop(w, v, VGW_DROP_PROTO_UNSUPPORTED), PM_DONE;
    }

    uint16_t sport = ld16(l4), dport = ld16(l4 + 2);
    if (VGW_UNLIKELY(sport == 0 || dport == 0))
        return set_drop(w, v, VGW_DROP_L4_BAD_PORT), PM_DONE;
    if (verify && VGW_UNLIKELY(l4_csum(m) != 0))
        return set_drop(w, v, VGW_DROP_L4_BAD_CSUM), PM_DONE;
    const uint8_t *l3 = m->l3;
    /* Replies reach whichever worker the NIC chose; the LIP port names the real owner. */
    if ((m->kind & VGW_ADDR_LIP) && w->nworkers > 1) {
        uint32_t owner = vgw_owner_of_port(n2h16(dport), w->nworkers);
        if (owner != w->id)
            return set_handoff(w, v, owner), PM_DONE;
    } else if ((w->flags & VGW_WF_STEER_CLIENTS) && w->nworkers > 1) {
        uint32_t owner = v6 ? client_owner6(l3 + 8, l3 + 24, sport, dport, proto, w->nworkers)
                            : vgw_client_owner(ld32(l3 + 12), ld32(l3 + 16), sport, dport, proto, w->nworkers);
        if (owner != w->id)
            return set_handoff(w, v, owner), PM_DONE;
    }
    if (v6) {
        vgw_key6_t *k = &m->key6;
        memcpy(k->src, l3 + 8, 16), memcpy(k->dst, l3 + 24, 16);
        k->sport = sport, k->dport = dport, k->proto = proto;
    } else {
        m->key.src = ld32(l3 + 12), m->key.dst = ld32(l3 + 16);
        m->key.sport = sport, m->key.dport = dport, m->key.proto = proto;
    }
    /* Trailing Ethernet padding is not part of the packet we forward. */
    p->len = (uint16_t)(m->l2len + m->totlen);
    return PM_LOOKUP;
}

/* ---- translation --------------------------------------------------------------------------- */

/* Under table pressure half-open entries live this long at most (LVS's secure_tcp idea). */
#define PRESSURE_HALFOPEN_MS 3000u

static inline uint32_t conn_timeout(const vgw_worker_t *w, const vgw_state_t *st, const vgw_conn_t *c)
{
    const vgw_svc_t *s = st->svc_by_uid[c->svc_uid];
    /* A service removed from the config keeps its connections on the document defaults. */
    uint32_t t = s ? s->timeout_ms[c->state] : st->default_timeout_ms[c->state];
    if (VGW_UNLIKELY(w->pr.pressure) && c->proto == VGW_PROTO_TCP && tcp_halfopen_state(c->state) &&
        t > PRESSURE_HALFOPEN_MS)
        t = PRESSURE_HALFOPEN_MS;
    return t;
}

/* l4_extra: checksum delta of other TCP edits (the SYN proxy's), applied together with ours. */
static inline void xlate(uint8_t *l3, uint8_t *l4, uint8_t proto, const vgw_conn_t *c, uint32_t dir,
                         uint32_t l4_extra)
{
    uint32_t nsrc, ndst;
    uint16_t nsport, ndport;
    if (dir == 0)
        nsrc = c->lip, ndst = c->rip, nsport = c->lport, ndport = c->rport;
    else
        nsrc = c->vip, ndst = c->cip, nsport = c->vport, ndport = c->cport;
    uint16_t ttlw = ld16(l3 + 8);
    l3[8]--;
    uint32_t ipd = c->ip_delta[dir] + csum_delta16(ttlw, ld16(l3 + 8));
    st32(l3 + 12, nsrc);
    st32(l3 + 16, ndst);
    st16(l3 + 10, csum_apply(ld16(l3 + 10), ipd));
    st16(l4, nsport);
    st16(l4 + 2, ndport);
    if (proto == VGW_PROTO_TCP) {
        st16(l4 + 16, csum_apply(ld16(l4 + 16), c->l4_delta[dir] + l4_extra));
    } else {
        uint16_t cs = ld16(l4 + 6);
        if (cs) {
            cs = csum_apply(cs, c->l4_delta[dir]);
            st16(l4 + 6, cs ? cs : 0xffff); /* 0 means "no checksum" in UDP */
        }
    }
}

/* IPv6 records keep no checksum deltas (their bytes hold the VIP and LIP ids): the L4 delta of
 * direction dir is computed here, from addresses the record and the address table give. */
static inline uint16_t l4_delta6(const vgw_conn_t *c, const vgw_conn_addrs6_t *a, uint32_t dir)
{
    if (dir == 0)
        return vgw_csum_fold(csum_delta128(a->cip, a->lip) + csum_delta128(a->vip, a->rip) +
                             csum_delta16(c->cport, c->lport) + csum_delta16(c->vport, c->rport));
    return vgw_csum_fold(csum_delta128(a->rip, a->vip) + csum_delta128(a->lip, a->cip) +
                         csum_delta16(c->rport, c->vport) + csum_delta16(c->lport, c->cport));
}

static inline void xlate6(uint8_t *l3, uint8_t *l4, uint8_t proto, const vgw_conn_t *c, const vgw_conn_addrs6_t *a,
                          uint32_t dir, uint32_t l4_extra)
{
    const uint8_t *nsrc, *ndst;
    uint16_t nsport, ndport;
    if (dir == 0)
        nsrc = a->lip, ndst = a->rip, nsport = c->lport, ndport = c->rport;
    else
        nsrc = a->vip, ndst = a->cip, nsport = c->vport, ndport = c->cport;
    uint16_t delta = l4_delta6(c, a, dir);
    l3[7]--; /* hop limit: no header checksum in IPv6 */
    memcpy(l3 + 8, nsrc, 16);
    memcpy(l3 + 24, ndst, 16);
    st16(l4, nsport);
    st16(l4 + 2, ndport);
    if (proto == VGW_PROTO_TCP) {
        st16(l4 + 16, csum_apply(ld16(l4 + 16), delta + l4_extra));
    } else {
        uint16_t cs = csum_apply(ld16(l4 + 6), delta);
        st16(l4 + 6, cs ? cs : 0xffff);
    }
}

/* Inserts TOA right after the fixed TCP header, where DPVS puts it and where the toa module
 * parses it. Headers (not payload) move back into headroom, so a data segment costs a short
 * memmove. Returns 1 when inserted. */
static int toa_insert(vgw_worker_t *w, vgw_pkt_t *p, pm_t *m, const vgw_conn_t *c)
{
    uint8_t *l4 = m->l4;
    uint32_t doff = (uint32_t)(l4[12] >> 4) * 4, len = m->toa_len;
    if (doff + len > 60 || p->headroom < len || (uint32_t)m->totlen + len > w->mtu) {
        w->cnt[VGW_CNT_TOA_NO_ROOM]++;
        return 0;
    }
    size_t hdr = (size_t)(l4 - p->data) + 20;
    memmove(p->data - len, p->data, hdr);
    p->data -= len;
    p->headroom = (uint16_t)(p->headroom - len);
    p->len = (uint16_t)(p->len + len);
    m->l3 -= len;
    m->l4 -= len;
    l4 = m->l4;
    uint8_t *l3 = m->l3;
    uint8_t *opt = l4 + 20;
    opt[0] = TCPOPT_TOA;
    opt[1] = (uint8_t)len;
    st16(opt + 2, c->cport);
    uint16_t off_old = ld16(l4 + 12);
    l4[12] = (uint8_t)(l4[12] + ((len / 4) << 4));
    uint16_t off_new = ld16(l4 + 12);
    if (m->af == VGW_AF_INET6) {
        /* The client's address, before the rewrite: l3 still holds the client's source. */
        memcpy(opt + 4, l3 + 8, 16);
        st16(l3 + 4, h2n16((uint16_t)(m->totlen + len - IP6_HLEN)));
    } else {
        st32(opt + 4, c->cip);
        uint16_t tot_old = ld16(l3 + 2);
        uint16_t tot_new = h2n16((uint16_t)(m->totlen + len));
        st16(l3 + 2, tot_new);
        st16(l3 + 10, csum_apply(ld16(l3 + 10), csum_delta16(tot_old, tot_new)));
    }
    /* TCP checksum: new option words are added data; the pseudo header length and the data
     * offset word change. */
    uint32_t d = csum_delta16(off_old, off_new) +
                 csum_delta16(h2n16(m->l4len), h2n16((uint16_t)(m->l4len + len))) + vgw_csum_partial(opt, len, 0);
    st16(l4 + 16, csum_apply(ld16(l4 + 16), d));
    m->totlen = (uint16_t)(m->totlen + len);
    m->l4len = (uint16_t)(m->l4len + len);
    w->cnt[VGW_CNT_TOA_ADDED]++;
    return 1;
}

/* The client's segments will carry TOA, so the MSS the server announces shrinks by its size
 * (DPVS tcp_out_adjust_mss). Malformed options are left alone: they came from our own server. */
static void mss_clamp(vgw_worker_t *w, uint8_t *l4, uint32_t toa_len)
{
    uint32_t pos = 20, i;
    while ((i = tcpopt_next(l4, &pos)) != 0) {
        if (l4[i] == TCPOPT_MSS && l4[i + 1] == 4) {
            uint16_t old = ld16(l4 + i + 2);
            uint16_t mss = n2h16(old);
            if (mss <= 536 + toa_len)
                return;
            uint16_t nw = h2n16((uint16_t)(mss - toa_len));
            st16(l4 + i + 2, nw);
            /* A field at an odd offset straddles two checksum words: swap to realign. */
            uint32_t d = ((i + 2) & 1) ? csum_delta16(bswap16(old), bswap16(nw)) : csum_delta16(old, nw);
            st16(l4 + 16, csum_apply(ld16(l4 + 16), d));
            w->cnt[VGW_CNT_MSS_CLAMPED]++;
            return;
        }
    }
}

void vgw_conn_deltas(vgw_conn_t *c)
{
    uint32_t d = csum_delta32(c->cip, c->lip) + csum_delta32(c->vip, c->rip);
    c->ip_delta[0] = vgw_csum_fold(d);
    c->l4_delta[0] = vgw_csum_fold(d + csum_delta16(c->cport, c->lport) + csum_delta16(c->vport, c->rport));
    d = csum_delta32(c->rip, c->vip) + csum_delta32(c->lip, c->cip);
    c->ip_delta[1] = vgw_csum_fold(d);
    c->l4_delta[1] = vgw_csum_fold(d + csum_delta16(c->rport, c->vport) + csum_delta16(c->lport, c->cport));
}

/* Is the reply tuple (backend -> LIP j, port) free in this worker's table? */
static inline bool reply_tuple_free(const vgw_ctab_t *t, const vgw_svc_t *svc, const vgw_be_t *be, uint32_t bi,
                                    uint32_t lip_idx, uint16_t lport, uint8_t proto)
{
    if (svc->af == VGW_AF_INET6) {
        vgw_key6_t rk;
        memset(&rk, 0, sizeof rk);
        memcpy(rk.src, svc->be6[bi], 16), memcpy(rk.dst, svc->lips6[lip_idx], 16);
        rk.sport = be->port, rk.dport = lport, rk.proto = proto;
        return vgw_ctab_lookup6(t, &rk, vgw_ctab_hash6(t, &rk)) == UINT32_MAX;
    }
    vgw_key4_t rk = {.src = be->addr, .dst = svc->lips[lip_idx], .sport = be->port, .dport = lport, .proto = proto};
    return vgw_ctab_lookup(t, &rk, vgw_ctab_hash(t, &rk)) == UINT32_MAX;
}

/* New connection from a client: schedule, pick LIP + port, insert. Returns the conn index or
 * sets a drop verdict and returns UINT32_MAX. */
uint32_t vgw_conn_create(vgw_worker_t *w, const vgw_svc_t *svc, const pm_t *m, uint32_t now, vgw_verdict_t *v,
                         uint8_t xflags)
{
    const vgw_key4_t *k = &m->key;
    const vgw_key6_t *k6 = &m->key6;
    bool v6 = m->af == VGW_AF_INET6;
    uint8_t proto = m->proto;
    uint32_t fh = v6 ? vgw_flow_hash_v6(k6->src, k6->dst, k6->sport, k6->dport, proto)
                     : vgw_flow_hash_v4(k->src, k->dst, k->sport, k->dport, proto);
    int32_t bi = vgw_sched_pick(w, svc, fh);
    if (VGW_UNLIKELY(bi < 0))
        return set_drop(w, v, VGW_DROP_NO_BACKEND), UINT32_MAX;
    const vgw_be_t *be = &svc->backends[bi];

    vgw_ctab_t *t = &w->ct;
    if (VGW_UNLIKELY(t->free_top == 0)) {
        /* Full: the oldest half-open entry makes room, so a SYN flood only ever displaces its own
         * kind; without one, expired entries are looked for; established connections are never
         * evicted (policy: refuse new, keep old). */
        if (!vgw_evict_halfopen(w))
            vgw_worker_housekeep(w, now, FULL_SWEEP_BUDGET);
        if (t->free_top == 0)
            return set_drop(w, v, VGW_DROP_CONN_TABLE_FULL), UINT32_MAX;
    }

    /* Port p belongs to worker p % nworkers; the reply tuple (rs, lip, lport) must be unused in
     * this worker's table (only this worker hands out such ports, so that check is complete). */
    uint32_t nw = w->nworkers;
    uint32_t nslots = (65535u - LPORT_MIN - w->id) / nw + 1;
    uint32_t lp = w->lip_pos[svc->uid]++;
    uint32_t li = 0;
    uint16_t lport = 0;
    int found = 0;
    for (uint32_t tries = 0; tries < LPORT_TRIES && !found; tries++) {
        li = (lp + tries / 8) % svc->nlips;
        uint16_t port = h2n16((uint16_t)(LPORT_MIN + (w->port_cursor++ % nslots) * nw + w->id));
        if (reply_tuple_free(t, svc, be, (uint32_t)bi, li, port, proto)) {
            lport = port;
            found = 1;
        }
    }
    if (VGW_UNLIKELY(!found)) {
        /* per-LIP counts are kept for IPv4 LIPs (vgw_lip_count_t holds 32 bits) */
        for (uint32_t j = 0; !v6 && j < LPORT_TRIES / 8 && j < svc->nlips; j++)
            vgw_lip_exhausted(w, svc->lips[(lp + j) % svc->nlips]);
        w->cnt[VGW_CNT_LPORT_EXHAUSTED]++;
        svc_cnt(w, svc->uid)[VGW_SCNT_LPORT_EXHAUSTED]++;
        return set_drop(w, v, VGW_DROP_NO_LPORT), UINT32_MAX;
    }

    uint32_t idx = vgw_ctab_alloc(t);
    vgw_conn_t *c = &t->conns[idx];
    uint8_t gen = (uint8_t)(c->gen + 1);
    memset(c, 0, sizeof *c);
    c->gen = gen;
    c->lport = lport, c->rport = be->port;
    c->proto = proto;
    if (v6) {
        memcpy(c->cip6, k6->src, 16);
        vgw_conn_set_rip6(c, svc->be6[bi]);
        c->vip6_id = svc->vip6_id, c->lip6_id = svc->lip6_ids[li];
        c->cport = k6->sport, c->vport = k6->dport;
        c->af = VGW_AF_INET6;
    } else {
        c->cip = k->src, c->vip = k->dst, c->lip = svc->lips[li], c->rip = be->addr;
        c->cport = k->sport, c->vport = k->dport;
        c->af = VGW_AF_INET;
    }
    c->state = proto == VGW_PROTO_TCP ? VGW_TCP_NONE : VGW_UDP_NORMAL;
    c->flags = VGW_CF_USED | xflags | ((svc->flags & VGW_SVC_F_TOA) ? VGW_CF_TOA : 0);
    c->expire = now;
    c->be_uid = (uint16_t)be->uid;
    c->svc_uid = svc->uid;
    if (!v6)
        vgw_conn_deltas(c);
    vgw_ctab_insert(t, idx);
    if (proto == VGW_PROTO_TCP && !(xflags & VGW_CF_PROXY)) {
        w->pr.halfopen++;
        vgw_ring_push(w, idx);
    }
    w->be_conns[be->uid]++;
    w->be_new[be->uid]++;
    w->cnt[VGW_CNT_CONN_NEW]++;
    /* Not synced yet: UDP at its next datagram (either way: the refresh in vgw_conn_forward finds it
     * due), so a flood of one-datagram flows sends the peers nothing; TCP at its first state change,
     * which follows at once. */
    c->sync_t = (uint16_t)((now >> 10) - (proto == VGW_PROTO_TCP ? 0u : 0x8000u));
    return idx;
}

/* Established path for a TCP/UDP packet of connection idx in direction dir. */
void vgw_conn_forward(vgw_worker_t *w, const vgw_state_t *st, vgw_pkt_t *p, pm_t *m, uint32_t idx, uint32_t dir,
                      uint32_t now, vgw_verdict_t *v)
{
    vgw_conn_t *c = &w->ct.conns[idx];
    if (VGW_UNLIKELY(hops_left(m) <= 1))
        return set_drop(w, v, VGW_DROP_TTL_EXCEEDED);
    uint32_t spd = 0;
    if (m->proto == VGW_PROTO_TCP) {
        if (VGW_UNLIKELY(c->flags & VGW_CF_PROXY)) {
            if (VGW_LIKELY(!(c->flags & VGW_CF_SP_WAIT) && !(m->tcpflags & TCP_SYN)))
                spd = sp_xlate_inline(c, dir, m);
            else if (vgw_sp_segment(w, st, p, m, idx, dir, now, v, &spd))
                return;
        }
        uint8_t fl = m->tcpflags;
        int ev = tcp_event(fl);
        if (ev >= 0 && c->state < 11)
            conn_set_state(w, c, tcp_fsm[dir][ev][c->state]);
        uint8_t *l4 = m->l4;
        if (dir == 0) {
            if ((c->flags & VGW_CF_TOA) &&
                (((fl & (TCP_SYN | TCP_ACK)) == TCP_SYN) ||
                 ((c->flags & VGW_CF_RS_ISN) && !(fl & (TCP_SYN | TCP_RST | TCP_FIN)) &&
                  ld32(l4 + 8) == c->rs_isn1)))
                toa_insert(w, p, m, c);
        } else if ((fl & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK)) {
            c->rs_isn1 = h2n32(n2h32(ld32(l4 + 4)) + 1);
            c->flags |= VGW_CF_RS_ISN;
            if (c->flags & VGW_CF_TOA)
                mss_clamp(w, l4, m->toa_len);
        }
    }
    uint32_t timeout = conn_timeout(w, st, c);
    bool first = c->expire == now; /* vgw_conn_create leaves it at now: this is the first packet */
    c->expire = now + timeout;
    /* A long-lived connection is refreshed at the peers every half timeout (in ~1 s units), so
     * their copy never expires while it is alive here; a new UDP flow is due at once, but noted
     * from its second datagram on. */
    if (VGW_UNLIKELY(w->flags & VGW_WF_SYNC) && (uint16_t)((now >> 10) - c->sync_t) > (timeout >> 11) &&
        (m->proto == VGW_PROTO_TCP || !first))
        vgw_sync_note(w, c, now);
    if (VGW_UNLIKELY(c->af == VGW_AF_INET6)) {
        vgw_conn_addrs6_t a;
        vgw_conn_addrs6(&w->ct, c, &a);
        xlate6(m->l3, m->l4, m->proto, c, &a, dir, spd);
        set_forward6(v, dir == 0 ? VGW_PORT_INT : VGW_PORT_EXT, dir == 0 ? a.rip : a.cip);
    } else {
        xlate(m->l3, m->l4, m->proto, c, dir, spd);
        set_forward(v, dir == 0 ? VGW_PORT_INT : VGW_PORT_EXT, dir == 0 ? c->rip : c->cip);
    }
    w->cnt[dir == 0 ? VGW_CNT_FWD_IN : VGW_CNT_FWD_OUT]++;
}

/* ref if its connection is live, else UINT32_MAX (an expired hit is removed on the way). */
static uint32_t live_ref(vgw_worker_t *w, uint32_t ref, uint32_t now)
{
    if (ref != UINT32_MAX && VGW_UNLIKELY(vgw_expired(w->ct.conns[ref >> 1].expire, now))) {
        vgw_conn_release(w, ref >> 1);
        w->cnt[VGW_CNT_CONN_EXPIRED]++;
        return UINT32_MAX;
    }
    return ref;
}

static uint32_t lookup_live(vgw_worker_t *w, const vgw_key4_t *k, uint64_t h, uint32_t now)
{
    return live_ref(w, vgw_ctab_lookup(&w->ct, k, h), now);
}

/* The packet's own tuple (parsed into m->key or m->key6, hashed into m->hash). */
static uint32_t lookup_pkt(vgw_worker_t *w, const pm_t *m, uint32_t now)
{
    if (m->af == VGW_AF_INET6)
        return live_ref(w, vgw_ctab_lookup6(&w->ct, &m->key6, m->hash), now);
    return lookup_live(w, &m->key, m->hash, now);
}

static void handle_lookup(vgw_worker_t *w, const vgw_state_t *st, vgw_pkt_t *p, pm_t *m, uint32_t now,
                          vgw_verdict_t *v)
{
    uint32_t ref = lookup_pkt(w, m, now);
    if (ref != UINT32_MAX) {
        vgw_conn_t *c = &w->ct.conns[ref >> 1];
        /* A new SYN on a closing tuple starts a new connection (LVS conn_reuse_mode). */
        if (VGW_UNLIKELY((ref & 1) == 0 && m->proto == VGW_PROTO_TCP &&
                         (m->tcpflags & (TCP_SYN | TCP_ACK)) == TCP_SYN &&
                         (c->state == VGW_TCP_TIME_WAIT || c->state == VGW_TCP_CLOSE))) {
            vgw_conn_release(w, ref >> 1);
            w->cnt[VGW_CNT_CONN_REUSED]++;
        } else {
            vgw_conn_forward(w, st, p, m, ref >> 1, ref & 1, now, v);
            return;
        }
    }
    if (!(m->kind & VGW_ADDR_VIP))
        return set_drop(w, v, VGW_DROP_LIP_NO_CONN);
    bool v6 = m->af == VGW_AF_INET6;
    const vgw_svc_t *svc = v6 ? vgw_state_find_svc6(st, m->key6.dst, m->key6.dport, m->proto)
                              : vgw_state_find_svc(st, m->key.dst, m->key.dport, m->key.proto);
    if (!svc)
        return set_drop(w, v, VGW_DROP_NO_SERVICE);
    if (VGW_UNLIKELY(hops_left(m) <= 1))
        return set_drop(w, v, VGW_DROP_TTL_EXCEEDED);
    if (m->proto == VGW_PROTO_TCP) {
        if ((m->tcpflags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN)) != TCP_SYN) {
            /* Mid-flow segment without state: an ACK flood, a connection lost in a restart, or
             * the ACK that completes a cookie handshake. */
            if (svc->synproxy != VGW_SYNPROXY_OFF) {
                if (vgw_sp_ack(w, st, svc, p, m, now, v))
                    return;
                if ((m->tcpflags & (TCP_ACK | TCP_SYN | TCP_RST)) == TCP_ACK)
                    return vgw_no_conn(w, svc, p, m, VGW_DROP_SYNPROXY_BAD_COOKIE, now, v);
            }
            return vgw_no_conn(w, svc, p, m, VGW_DROP_TCP_NO_CONN, now, v);
        }
        if (svc->synproxy != VGW_SYNPROXY_OFF && vgw_synproxy_engaged(w, svc, now))
            return vgw_sp_syn(w, svc, p, m, now, v);
    }
    unsigned lim = vgw_limit_check(w, svc, v6 ? vgw_src_net6(m->key6.src) : vgw_src_net4(m->key.src), now);
    if (VGW_UNLIKELY(lim))
        return set_drop(w, v, lim);
    uint32_t idx = vgw_conn_create(w, svc, m, now, v, 0);
    if (idx == UINT32_MAX)
        return;
    vgw_conn_forward(w, st, p, m, idx, 0, now, v);
}

/* ---- ICMP errors ----------------------------------------------------------------------------- */

/* The quoted TCP/UDP checksum after the quoted header's edits (checksum delta l4d), when the quote
 * holds it: TCP needs 18 quoted bytes; a UDP checksum of 0 (none) stays 0. */
static inline void quoted_l4_fix(uint8_t *in4, uint8_t iproto, uint32_t quoted, uint32_t l4d)
{
    if (iproto == VGW_PROTO_TCP && quoted >= 18) {
        st16(in4 + 16, csum_apply(ld16(in4 + 16), l4d));
    } else if (iproto == VGW_PROTO_UDP && ld16(in4 + 6) != 0) {
        uint16_t cs = csum_apply(ld16(in4 + 6), l4d);
        st16(in4 + 6, cs ? cs : 0xffff);
    }
}

/* An ICMP error quotes a packet we sent. Translate it so the other side sees an error about the
 * packet it sent: outer and inner addresses, inner ports, inner checksums. */
static void handle_icmp_error(vgw_worker_t *w, vgw_pkt_t *p, pm_t *m, uint32_t now, vgw_verdict_t *v)
{
    uint8_t *icmp = m->l4;
    uint32_t avail = m->l4len - 8u;
    uint8_t *in3 = icmp + 8;
    if (avail < 20 || (in3[0] >> 4) != 4)
        return set_drop(w, v, VGW_DROP_ICMP_INNER_BAD);
    uint32_t iihl = (uint32_t)(in3[0] & 0x0f) * 4;
    if (iihl < 20 || iihl + 8 > avail)
        return set_drop(w, v, VGW_DROP_ICMP_INNER_BAD);
    uint8_t iproto = in3[9];
    if (iproto != VGW_PROTO_TCP && iproto != VGW_PROTO_UDP)
        return set_drop(w, v, VGW_DROP_ICMP_NO_CONN);
    uint8_t *in4 = in3 + iihl;
    uint32_t isrc = ld32(in3 + 12), idst = ld32(in3 + 16);
    uint16_t isport = ld16(in4), idport = ld16(in4 + 2);
    /* The quoted packet went src -> dst; the connection entry that matches is keyed from the
     * peer's side, i.e. the reverse tuple. */
    vgw_key4_t k = {.src = idst, .dst = isrc, .sport = idport, .dport = isport, .proto = iproto};
    uint32_t want_dir;
    if (m->kind & VGW_ADDR_LIP) {
        if (isrc != ld32(m->l3 + 16))
            return set_drop(w, v, VGW_DROP_ICMP_INNER_BAD);
        uint32_t owner = vgw_owner_of_port(n2h16(isport), w->nworkers);
        if (owner != w->id)
            return set_handoff(w, v, owner);
        want_dir = 1;
    } else {
        want_dir = 0;
        /* With client steering the quoted flow (VIP -> client) belongs to its client tuple's owner. */
        if ((w->flags & VGW_WF_STEER_CLIENTS) && w->nworkers > 1) {
            uint32_t owner = vgw_client_owner(idst, isrc, idport, isport, iproto, w->nworkers);
            if (owner != w->id)
                return set_handoff(w, v, owner);
        }
    }
    uint32_t ref = lookup_live(w, &k, vgw_ctab_hash(&w->ct, &k), now);
    if (ref == UINT32_MAX || (ref & 1) != want_dir)
        return set_drop(w, v, VGW_DROP_ICMP_NO_CONN);
    if (m->l3[8] <= 1)
        return set_drop(w, v, VGW_DROP_TTL_EXCEEDED);
    const vgw_conn_t *c = &w->ct.conns[ref >> 1];
    uint32_t osrc, odst, nisrc, nidst;
    uint16_t nisport, nidport;
    if (want_dir == 1) {
        /* From the server side about LIP->RS: becomes VIP->client about client->VIP. */
        osrc = c->vip, odst = c->cip;
        nisrc = c->cip, nidst = c->vip, nisport = c->cport, nidport = c->vport;
        if ((c->flags & VGW_CF_TOA) && icmp[0] == ICMP_DEST_UNREACH && icmp[1] == ICMP_FRAG_NEEDED) {
            /* Client segments may grow by TOA on the way: announce a path that much smaller. */
            uint16_t mtu = n2h16(ld16(icmp + 6));
            if (mtu >= 68 + VGW_TOA_LEN)
                st16(icmp + 6, h2n16((uint16_t)(mtu - VGW_TOA_LEN)));
        }
    } else {
        /* From the client side about VIP->client: becomes LIP->RS about RS->LIP. */
        osrc = c->lip, odst = c->rip;
        nisrc = c->rip, nidst = c->lip, nisport = c->rport, nidport = c->lport;
    }
    uint32_t ipd = csum_delta32(isrc, nisrc) + csum_delta32(idst, nidst);
    st32(in3 + 12, nisrc);
    st32(in3 + 16, nidst);
    st16(in3 + 10, csum_apply(ld16(in3 + 10), ipd));
    st16(in4, nisport);
    st16(in4 + 2, nidport);
    uint32_t l4d = ipd + csum_delta16(isport, nisport) + csum_delta16(idport, nidport);
    uint32_t quoted = avail - iihl;
    if (iproto == VGW_PROTO_TCP && want_dir == 0 && (c->flags & VGW_CF_PROXY) && !(c->flags & VGW_CF_SP_WAIT)) {
        /* The client quotes a segment in its view of the server's numbers: the server checks
         * the quoted sequence number against its own. */
        uint32_t oseq = ld32(in4 + 4), nseq = h2n32(n2h32(oseq) + c->sp_seq);
        st32(in4 + 4, nseq);
        l4d += csum_delta32(oseq, nseq);
    }
    quoted_l4_fix(in4, iproto, quoted, l4d);
    /* Errors are rare and small: recompute the ICMP checksum rather than track every edit. */
    st16(icmp + 2, 0);
    st16(icmp + 2, (uint16_t)~vgw_csum_fold(vgw_csum_partial(icmp, m->l4len, 0)));
    uint8_t *l3 = m->l3;
    uint16_t ttlw = ld16(l3 + 8);
    l3[8]--;
    uint32_t od = csum_delta32(ld32(l3 + 12), osrc) + csum_delta32(ld32(l3 + 16), odst) +
                  csum_delta16(ttlw, ld16(l3 + 8));
    st32(l3 + 12, osrc);
    st32(l3 + 16, odst);
    st16(l3 + 10, csum_apply(ld16(l3 + 10), od));
    p->len = (uint16_t)(m->l2len + m->totlen);
    v->action = VGW_ACT_FORWARD;
    v->af = VGW_AF_INET;
    memset(&v->nexthop, 0, sizeof v->nexthop);
    v->nexthop.v4 = odst;
    if (want_dir == 1) {
        v->port = VGW_PORT_EXT;
        w->cnt[VGW_CNT_ICMP_XLATE_OUT]++;
    } else {
        v->port = VGW_PORT_INT;
        w->cnt[VGW_CNT_ICMP_XLATE_IN]++;
    }
}

/* ICMPv6 errors (destination unreachable, packet too big, time exceeded, parameter problem): as
 * handle_icmp_error. The quoted packet's extension headers are walked like a packet's (what we send
 * keeps the client's hop-by-hop and destination options), to its TCP or UDP header. */
static void handle_icmp6_error(vgw_worker_t *w, vgw_pkt_t *p, pm_t *m, uint32_t now, vgw_verdict_t *v)
{
    uint8_t *icmp = m->l4;
    uint32_t avail = m->l4len - 8u;
    uint8_t *in3 = icmp + 8;
    if (avail < IP6_HLEN + 8 || (in3[0] >> 4) != 6)
        return set_drop(w, v, VGW_DROP_ICMP_INNER_BAD);
    uint32_t ipos = IP6_HLEN, inh = in3[6];
    for (uint32_t n = 0; inh == NH_HOPOPTS || inh == NH_DSTOPTS || inh == NH_ROUTING; n++) {
        if (n == IP6_MAX_EXT || ipos + 8 > avail)
            return set_drop(w, v, VGW_DROP_ICMP_INNER_BAD);
        inh = in3[ipos];
        ipos += ((uint32_t)in3[ipos + 1] + 1) * 8;
    }
    if (inh != VGW_PROTO_TCP && inh != VGW_PROTO_UDP)
        return set_drop(w, v, VGW_DROP_ICMP_NO_CONN);
    if (ipos + 8 > avail)
        return set_drop(w, v, VGW_DROP_ICMP_INNER_BAD);
    uint8_t iproto = (uint8_t)inh;
    uint8_t *in4 = in3 + ipos;
    uint8_t isrc[16], idst[16];
    memcpy(isrc, in3 + 8, 16), memcpy(idst, in3 + 24, 16);
    uint16_t isport = ld16(in4), idport = ld16(in4 + 2);
    vgw_key6_t k;
    memset(&k, 0, sizeof k);
    memcpy(k.src, idst, 16), memcpy(k.dst, isrc, 16);
    k.sport = idport, k.dport = isport, k.proto = iproto;
    uint32_t want_dir;
    if (m->kind & VGW_ADDR_LIP) {
        if (memcmp(isrc, m->l3 + 24, 16) != 0)
            return set_drop(w, v, VGW_DROP_ICMP_INNER_BAD);
        uint32_t owner = vgw_owner_of_port(n2h16(isport), w->nworkers);
        if (owner != w->id)
            return set_handoff(w, v, owner);
        want_dir = 1;
    } else {
        want_dir = 0;
        if ((w->flags & VGW_WF_STEER_CLIENTS) && w->nworkers > 1) {
            uint32_t owner = client_owner6(idst, isrc, idport, isport, iproto, w->nworkers);
            if (owner != w->id)
                return set_handoff(w, v, owner);
        }
    }
    uint32_t ref = live_ref(w, vgw_ctab_lookup6(&w->ct, &k, vgw_ctab_hash6(&w->ct, &k)), now);
    if (ref == UINT32_MAX || (ref & 1) != want_dir)
        return set_drop(w, v, VGW_DROP_ICMP_NO_CONN);
    if (m->l3[7] <= 1)
        return set_drop(w, v, VGW_DROP_TTL_EXCEEDED);
    const vgw_conn_t *c = &w->ct.conns[ref >> 1];
    vgw_conn_addrs6_t addrs;
    vgw_conn_addrs6(&w->ct, c, &addrs);
    const vgw_conn_addrs6_t *a = &addrs;
    const uint8_t *osrc, *odst, *nisrc, *nidst;
    uint16_t nisport, nidport;
    if (want_dir == 1) {
        osrc = a->vip, odst = a->cip;
        nisrc = a->cip, nidst = a->vip, nisport = c->cport, nidport = c->vport;
        if ((c->flags & VGW_CF_TOA) && icmp[0] == ICMP6_PACKET_TOO_BIG) {
            /* Client segments may grow by TOA on the way: announce a path that much smaller. */
            uint32_t mtu = n2h32(ld32(icmp + 4));
            if (mtu >= IP6_MIN_MTU + VGW_TOA6_LEN)
                st32(icmp + 4, h2n32(mtu - VGW_TOA6_LEN));
        }
    } else {
        osrc = a->lip, odst = a->rip;
        nisrc = a->rip, nidst = a->lip, nisport = c->rport, nidport = c->lport;
    }
    uint32_t l4d = csum_delta128(isrc, nisrc) + csum_delta128(idst, nidst) + csum_delta16(isport, nisport) +
                   csum_delta16(idport, nidport);
    memcpy(in3 + 8, nisrc, 16), memcpy(in3 + 24, nidst, 16);
    st16(in4, nisport), st16(in4 + 2, nidport);
    quoted_l4_fix(in4, iproto, avail - ipos, l4d);
    uint8_t *l3 = m->l3;
    l3[7]--;
    memcpy(l3 + 8, osrc, 16), memcpy(l3 + 24, odst, 16);
    /* The ICMPv6 checksum covers a pseudo header: recomputed over the new addresses. */
    st16(icmp + 2, 0);
    st16(icmp + 2, vgw_l4_csum_v6(osrc, odst, NH_ICMPV6, icmp, m->l4len));
    p->len = (uint16_t)(m->l2len + m->totlen);
    set_forward6(v, want_dir == 1 ? VGW_PORT_EXT : VGW_PORT_INT, odst);
    w->cnt[want_dir == 1 ? VGW_CNT_ICMP_XLATE_OUT : VGW_CNT_ICMP_XLATE_IN]++;
}

/* ---- burst ----------------------------------------------------------------------------------- */

void vgw_worker_process(vgw_worker_t *w, vgw_pkt_t *pkts, vgw_verdict_t *out, uint32_t n, uint64_t now_ms)
{
    pm_t pm[VGW_BURST_MAX];
    if (n > VGW_BURST_MAX)
        n = VGW_BURST_MAX;
    vgw_dp_t *dp = w->dp;
    /* QSBR: announce the generation before taking the pointer (see vgw_dp_reclaim). */
    atomic_store(&w->qsbr_gen, atomic_load(&dp->generation));
    const vgw_state_t *st = atomic_load(&dp->state);
    uint32_t now = (uint32_t)now_ms;
    w->cnt[VGW_CNT_RX] += n;
    vgw_protect_burst(w, now);

    for (uint32_t i = 0; i < n; i++) {
        memset(&out[i], 0, sizeof out[i]);
        pm[i].stage = (uint8_t)parse(w, st, &pkts[i], &pm[i], &out[i]);
        if (pm[i].stage == PM_LOOKUP) {
            pm[i].hash = pm[i].af == VGW_AF_INET6 ? vgw_ctab_hash6(&w->ct, &pm[i].key6) : vgw_ctab_hash(&w->ct, &pm[i].key);
            pm[i].bucket = vgw_ctab_home(&w->ct, pm[i].hash);
            vgw_prefetch(pm[i].bucket);
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        if (pm[i].stage != PM_LOOKUP)
            continue;
        const vgw_bucket_t *b = pm[i].bucket;
        uint16_t tag = vgw_tag(pm[i].hash);
        for (uint32_t s = 0; s < VGW_BUCKET_SLOTS; s++) {
            if (b->tag[s] == tag) {
                vgw_prefetch_w(&w->ct.conns[b->ref[s] >> 1]);
                break;
            }
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        if (pm[i].stage == PM_LOOKUP)
            handle_lookup(w, st, &pkts[i], &pm[i], now, &out[i]);
        else if (pm[i].stage == PM_ICMP_ERR && pm[i].af == VGW_AF_INET6)
            handle_icmp6_error(w, &pkts[i], &pm[i], now, &out[i]);
        else if (pm[i].stage == PM_ICMP_ERR)
            handle_icmp_error(w, &pkts[i], &pm[i], now, &out[i]);
    }
}

int vgw_worker_conn_find(vgw_worker_t *w, uint8_t proto, uint32_t cip, uint16_t cport, uint32_t vip,
                         uint16_t vport, uint64_t now_ms, vgw_conn_info_t *out)
{
    vgw_addr_t c = {.v4 = cip}, v = {.v4 = vip};
    return vgw_worker_conn_find_af(w, VGW_AF_INET, proto, &c, cport, &v, vport, now_ms, out);
}

int vgw_worker_conn_find_af(vgw_worker_t *w, uint8_t af, uint8_t proto, const vgw_addr_t *cip, uint16_t cport,
                            const vgw_addr_t *vip, uint16_t vport, uint64_t now_ms, vgw_conn_info_t *out)
{
    uint32_t ref;
    if (af == VGW_AF_INET6) {
        vgw_key6_t k;
        memset(&k, 0, sizeof k);
        memcpy(k.src, cip->v6, 16), memcpy(k.dst, vip->v6, 16);
        k.sport = h2n16(cport), k.dport = h2n16(vport), k.proto = proto;
        ref = vgw_ctab_lookup6(&w->ct, &k, vgw_ctab_hash6(&w->ct, &k));
    } else {
        vgw_key4_t k = {.src = cip->v4, .dst = vip->v4, .sport = h2n16(cport), .dport = h2n16(vport), .proto = proto};
        ref = vgw_ctab_lookup(&w->ct, &k, vgw_ctab_hash(&w->ct, &k));
    }
    if (ref == UINT32_MAX || (ref & 1))
        return -1;
    const vgw_conn_t *c = &w->ct.conns[ref >> 1];
    uint32_t now = (uint32_t)now_ms;
    if (vgw_expired(c->expire, now))
        return -1;
    memset(out, 0, sizeof *out);
    out->af = c->af, out->proto = c->proto, out->state = c->state, out->flags = c->flags;
    if (c->af == VGW_AF_INET6) {
        vgw_conn_addrs6_t a;
        vgw_conn_addrs6(&w->ct, c, &a);
        memcpy(out->cip.v6, a.cip, 16), memcpy(out->vip.v6, a.vip, 16);
        memcpy(out->lip.v6, a.lip, 16), memcpy(out->rip.v6, a.rip, 16);
    } else {
        out->cip.v4 = c->cip, out->vip.v4 = c->vip, out->lip.v4 = c->lip, out->rip.v4 = c->rip;
    }
    out->cport = n2h16(c->cport), out->vport = n2h16(c->vport);
    out->lport = n2h16(c->lport), out->rport = n2h16(c->rport);
    out->expires_in_ms = c->expire - now;
    return 0;
}
