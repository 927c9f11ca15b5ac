/* SPDX-License-Identifier: Apache-2.0
 * Internal structures of the core. Not installed; the DPDK layer uses include/vgw only. */
#ifndef VGW_INTERNAL_H
#define VGW_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "vgw/config.h"
#include "vgw/counters.h"
#include "vgw/engine.h"
#include "vgw/maglev.h"
#include "vgw/sync.h"
#include "vgw/types.h"

#define VGW_LIKELY(x) __builtin_expect(!!(x), 1)
/* For the few-instruction helpers of the per-packet path: the compiler's inlining heuristics change
 * as a file grows (when IPv6 doubled engine.c, csum_apply and the L4 checksum check became calls
 * and IPv4 forwarding lost ~5%). */
#define VGW_HOT_INLINE static inline __attribute__((always_inline))
#define VGW_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define VGW_CACHE_LINE 64u

static inline void vgw_prefetch(const void *p)
{
    __builtin_prefetch(p, 0, 3);
}
static inline void vgw_prefetch_w(const void *p)
{
    __builtin_prefetch(p, 1, 3);
}

/* Unaligned loads/stores: packet headers have no alignment guarantee (VLAN tags, IP options). */
static inline uint16_t ld16(const void *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}
static inline uint32_t ld32(const void *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static inline void st16(void *p, uint16_t v)
{
    memcpy(p, &v, 2);
}
static inline void st32(void *p, uint32_t v)
{
    memcpy(p, &v, 4);
}
static inline uint16_t bswap16(uint16_t v)
{
    return __builtin_bswap16(v);
}
/* Host <-> network for the few places we need numbers (lengths, ports as integers). */
static inline uint16_t n2h16(uint16_t v)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return __builtin_bswap16(v);
#else
    return v;
#endif
}
static inline uint32_t n2h32(uint32_t v)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return __builtin_bswap32(v);
#else
    return v;
#endif
}
#define h2n16 n2h16
#define h2n32 n2h32

static inline uint32_t vgw_gcd32(uint32_t a, uint32_t b)
{
    while (b) {
        uint32_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* Backward-shift deletion in a linear-probing table: with a hole at i, the entry at j (home slot
 * k) stays where it is only if k lies cyclically in (i, j]; otherwise it moves into the hole. */
static inline bool vgw_lp_stays(uint32_t i, uint32_t j, uint32_t k)
{
    return i <= j ? (i < k && k <= j) : (i < k || k <= j);
}

/* ---- checksums (RFC 1071 sums, RFC 1624 incremental updates) ---------------------------- */


static inline uint16_t vgw_csum_fold(uint32_t sum)
{
    sum = (sum & 0xffffu) + (sum >> 16);
    sum = (sum & 0xffffu) + (sum >> 16);
    return (uint16_t)sum;
}
/* Delta for replacing raw 16/32-bit field values: ~old + new, summed. */
static inline uint32_t csum_delta16(uint16_t old, uint16_t new_)
{
    return (uint32_t)(uint16_t)~old + new_;
}
static inline uint32_t csum_delta32(uint32_t old, uint32_t new_)
{
    return (uint32_t)(uint16_t)~(old & 0xffffu) + (uint16_t)~(old >> 16) + (new_ & 0xffffu) +
           (new_ >> 16);
}
/* RFC 1624 eqn. 3: HC' = ~(~HC + sum(~m + m')). */
VGW_HOT_INLINE uint16_t csum_apply(uint16_t csum, uint32_t delta)
{
    return (uint16_t)~vgw_csum_fold((uint32_t)(uint16_t)~csum + vgw_csum_fold(delta));
}
/* One's-complement sum of raw 16-bit words. Raw (network-order) words can be summed directly:
 * the one's-complement sum is byte-order independent (RFC 1071 2.B), so nothing is swapped.
 * Inline: headers are short and often of constant length, and a call plus a generic loop cost
 * more than the sum itself (a SYN flood verifies and builds four checksums per packet). The
 * 64-bit accumulator over 32-bit loads lets carries pile up in the high half, folded once. */
static inline uint32_t vgw_csum_partial(const void *buf, size_t len, uint32_t sum)
{
    const uint8_t *p = buf;
    uint64_t acc = sum;
    while (len >= 16) {
        acc += (uint64_t)ld32(p) + ld32(p + 4) + ld32(p + 8) + ld32(p + 12);
        p += 16;
        len -= 16;
    }
    while (len >= 4) {
        acc += ld32(p);
        p += 4;
        len -= 4;
    }
    if (len >= 2) {
        acc += ld16(p);
        p += 2;
        len -= 2;
    }
    if (len) {
        /* The odd byte is the high-order byte of a word padded with zero, in memory order. */
        uint8_t tail[2] = {p[0], 0};
        acc += ld16(tail);
    }
    acc = (acc & 0xffffffffu) + (acc >> 32);
    acc = (acc & 0xffffffffu) + (acc >> 32);
    return vgw_csum_fold((uint32_t)acc);
}

/* Checksum over an IPv4 pseudo header + L4 bytes, as a raw value ready to compare/store. */
static inline uint16_t vgw_l4_csum_v4(uint32_t saddr, uint32_t daddr, uint8_t proto, const void *l4, uint16_t l4len)
{
    /* The pseudo header's words, raw: addresses as loaded, then (0, proto) and the length. */
    uint32_t s = (saddr & 0xffffu) + (saddr >> 16) + (daddr & 0xffffu) + (daddr >> 16) + h2n16(proto) +
                 h2n16(l4len);
    return (uint16_t)~vgw_csum_fold(vgw_csum_partial(l4, l4len, s));
}

/* Checksum over an IPv6 pseudo header (RFC 8200 8.1) + L4 bytes, as a raw value ready to compare/store. */
static inline uint16_t vgw_l4_csum_v6(const uint8_t *saddr, const uint8_t *daddr, uint8_t proto, const void *l4,
                                      uint32_t l4len)
{
    /* The pseudo header's eight address words summed in 64 bits, folded once. */
    uint64_t acc = (uint64_t)ld32(saddr) + ld32(saddr + 4) + ld32(saddr + 8) + ld32(saddr + 12) + ld32(daddr) +
                   ld32(daddr + 4) + ld32(daddr + 8) + ld32(daddr + 12);
    acc += (uint32_t)h2n16((uint16_t)(l4len >> 16)) + h2n16((uint16_t)l4len) + h2n16(proto);
    acc = (acc & 0xffffffffu) + (acc >> 32);
    return (uint16_t)~vgw_csum_fold(vgw_csum_partial(l4, l4len, vgw_csum_fold((uint32_t)acc + (uint32_t)(acc >> 32))));
}

/* Delta for replacing a 128-bit address (raw bytes). */
static inline uint32_t csum_delta128(const uint8_t *old, const uint8_t *new_)
{
    uint32_t d = 0;
    for (uint32_t i = 0; i < 16; i += 4)
        d += csum_delta32(ld32(old + i), ld32(new_ + i));
    return d;
}

/* ---- config state ------------------------------------------------------------------------ */

/* A scheduler table (Maglev slots or the WRR cycle), shared by consecutive versions of a service
 * whose schedulable backends did not change. */
typedef struct vgw_table {
    _Atomic uint32_t refs;
    uint32_t len;
    uint16_t idx[]; /* indexes into the service's backends */
} vgw_table_t;

vgw_table_t *vgw_table_new(uint32_t len);
void vgw_table_put(vgw_table_t *t);

typedef struct vgw_be {
    uint32_t addr; /* network order */
    uint16_t port; /* network order */
    uint16_t weight;
    uint8_t state;
    uint8_t af;
    uint16_t reserved;
    uint32_t uid; /* stable across generations while the (service, addr, port) exists */
} vgw_be_t;

/* One service as the fast path sees it. Immutable once published; shared by every generation in
 * which its configuration did not change (reference counted, freed by the last state). */
typedef struct vgw_svc {
    uint32_t vip;  /* network order */
    uint16_t port; /* network order */
    uint8_t proto, af, sched, flags;
    uint16_t uid; /* stable across generations; conns refer to services by uid */
    uint32_t timeout_ms[VGW_STATE_MAX];
    uint32_t nbackends;
    vgw_be_t *backends;
    uint32_t ncand; /* schedulable backends (active, weight > 0) */
    uint16_t *cand; /* indexes into backends */
    uint32_t nlips;
    uint32_t *lips; /* network order */
    uint32_t maglev_m;
    uint16_t *maglev; /* = tab->idx for Maglev */
    uint32_t wrr_len;
    uint16_t *wrr; /* = tab->idx for WRR: precomputed smooth WRR order */
    vgw_table_t *tab;
    /* IPv6 services (af == VGW_AF_INET6): the full addresses; vip, lips[] and backends[].addr then
     * hold vgw_fold6() of them (never looked up: the v6 tables below are) */
    uint8_t vip6[16];
    uint8_t (*lips6)[16];
    uint8_t (*be6)[16]; /* [nbackends], parallel to backends */
    uint16_t vip6_id;   /* the VIP's and LIPs' ids in the node's address table */
    uint16_t *lip6_ids; /* [nlips] */
    /* flood protection (vgw_cfg_protect_t), rates and counts already divided among workers */
    uint8_t synproxy, rst_unknown;
    uint32_t auto_halfopen_w, auto_syn_rate_w;
    uint32_t conn_rate_w, conn_rate_src24_w;
    vgw_cfg_protect_t protect; /* as configured (control thread: change detection) */
    /* control thread only */
    _Atomic uint32_t refs;
    uint64_t cfg_rev; /* rev of the configuration entry it was built from (or matched) */
} vgw_svc_t;

#define VGW_ADDR_VIP VGW_ADDR_F_VIP
#define VGW_ADDR_LIP VGW_ADDR_F_LIP

typedef struct vgw_addr_slot {
    uint32_t addr; /* 0 = empty (0.0.0.0 is rejected by config) */
    uint32_t kind;
} vgw_addr_slot_t;

typedef struct vgw_svc_slot {
    uint32_t vip;
    uint16_t port;
    uint8_t proto;
    uint8_t used;
    uint32_t uid;
} vgw_svc_slot_t;

typedef struct vgw_addr6_slot {
    uint8_t addr[16];
    uint32_t kind; /* 0 = empty */
} vgw_addr6_slot_t;

typedef struct vgw_svc6_slot {
    uint8_t vip[16];
    uint16_t port;
    uint8_t proto;
    uint8_t used;
    uint32_t uid;
} vgw_svc6_slot_t;

/* The (VIP, port, proto) -> service and address -> kind tables. They depend only on which
 * services exist and on their LIPs, so generations that change neither share them. */
typedef struct vgw_lookup {
    _Atomic uint32_t refs;
    uint32_t svc_mask; /* open addressing, power of two */
    vgw_svc_slot_t *svc_slots;
    uint32_t addr_mask;
    vgw_addr_slot_t *addr_slots;
    uint32_t svc6_mask;
    vgw_svc6_slot_t *svc6_slots;
    uint32_t addr6_mask;
    vgw_addr6_slot_t *addr6_slots;
} vgw_lookup_t;

struct vgw_state {
    uint64_t generation;
    /* fast path: copies of lookup's fields, so a packet needs no extra pointer hop */
    uint32_t svc_mask;
    const vgw_svc_slot_t *svc_slots;
    uint32_t addr_mask;
    const vgw_addr_slot_t *addr_slots;
    uint32_t svc6_mask;
    const vgw_svc6_slot_t *svc6_slots;
    uint32_t addr6_mask;
    const vgw_addr6_slot_t *addr6_slots;
    uint32_t default_timeout_ms[VGW_STATE_MAX];
    vgw_svc_t *svc_by_uid[VGW_MAX_SERVICES]; /* NULL = not in this generation */
    /* control thread */
    vgw_lookup_t *lookup;
    uint32_t nservices;
    vgw_svc_t **services; /* configuration order */
    struct vgw_state *retired_next;
};

const vgw_svc_t *vgw_state_find_svc(const vgw_state_t *st, uint32_t vip, uint16_t port, uint8_t proto);
uint32_t vgw_state_addr_kind(const vgw_state_t *st, uint32_t addr);
const vgw_svc_t *vgw_state_find_svc6(const vgw_state_t *st, const uint8_t *vip, uint16_t port, uint8_t proto);
uint32_t vgw_state_addr_kind6(const vgw_state_t *st, const uint8_t *addr);

/* Registry: stable small ids for services and backends across generations, reused oldest-freed
 * first so per-worker state of a departed id (WLC counts) ages out. Control thread only. */
typedef struct vgw_registry {
    uint64_t *keys; /* 0 = empty; keys have a non-zero tag bit */
    uint32_t *uids;
    uint32_t mask;
    uint32_t count;
    uint32_t space; /* uid space size */
    uint32_t next_fresh;
    uint32_t *free_fifo;
    uint32_t fifo_head, fifo_len;
} vgw_registry_t;

#define VGW_UID_NONE UINT32_MAX
int vgw_reg_init(vgw_registry_t *r, uint32_t space);
void vgw_reg_fini(vgw_registry_t *r);
uint32_t vgw_reg_find(const vgw_registry_t *r, uint64_t key);
/* The key's uid, assigning one if it has none; VGW_UID_NONE only if the space is exhausted. */
uint32_t vgw_reg_acquire(vgw_registry_t *r, uint64_t key);
void vgw_reg_release(vgw_registry_t *r, uint64_t key);

/* ---- connection table ------------------------------------------------------------------- */

#define VGW_CF_TOA 0x01u      /* conn inserts TOA (service had it when the conn was made) */
#define VGW_CF_RS_ISN 0x02u   /* rs_isn1 is valid */
#define VGW_CF_PROXY 0x04u    /* opened by the SYN proxy: sequence numbers are translated */
#define VGW_CF_SP_WAIT 0x08u  /* proxied, the server's SYN-ACK has not arrived yet */
#define VGW_CF_SP_TS 0x10u    /* proxied with timestamps: TSval/TSecr are translated */
#define VGW_CF_SP_WIN 0x20u   /* proxied with different window scales on the two legs */
#define VGW_CF_SYNCED 0x40u   /* learned from a peer node's connection sync, not created here */
#define VGW_CF_USED 0x80u

/* One cache line per connection, for both families. Both directions' keys live here, so a hit in
 * either direction needs exactly this line. An IPv6 connection (af == VGW_AF_INET6) keeps its
 * client and backend addresses inline, in the bytes IPv4 uses for its four addresses, its IP
 * checksum deltas and its SYN proxy state (IPv6 has no header checksum, and no SYN proxy yet),
 * and its VIP and LIP as ids into the node's IPv6 address table (vgw_addr6_tab_t), where its L4
 * checksum deltas would be: those it computes per packet. The fields both families use keep their
 * IPv4 offsets, so a persisted IPv4 table keeps its layout. */
typedef struct vgw_conn {
    union {
        struct {
            uint32_t cip, vip, lip, rip; /* IPv4, network order */
        };
        uint8_t cip6[16]; /* IPv6 */
    };
    uint16_t cport, vport, lport, rport; /* network order */
    uint8_t proto, af, state, flags;
    uint32_t expire; /* ms, compared wrap-safe */
    union {
        uint16_t ip_delta[2]; /* IPv4, per direction: RFC 1624 delta of the address rewrite */
        uint8_t rip6_head[4]; /* IPv6: the backend's first 4 bytes (vgw_conn_rip6) */
    };
    union {
        uint16_t l4_delta[2]; /* IPv4: ... plus the port rewrite and pseudo header */
        struct {
            uint16_t vip6_id, lip6_id; /* IPv6: in the node's address table */
        };
    };
    uint32_t rs_isn1; /* server ISN + 1: client segments acking it get TOA */
    uint16_t be_uid;  /* < VGW_MAX_BACKENDS */
    uint16_t svc_uid;
    union {
        /* SYN proxy (VGW_CF_PROXY), IPv4. While VGW_CF_SP_WAIT: sp_seq = our cookie ISN and sp_ts
         * = the TSval we sent the client; afterwards the deltas server - ours (seq) and ours -
         * server (ts). */
        struct {
            uint32_t sp_seq;
            uint32_t sp_ts;
            uint16_t sp_win; /* the client's window in its validating ACK (for our ACK to the server) */
            uint8_t sp_ws[2]; /* per direction: left shift << 4 | right shift applied to the window */
        };
        uint8_t rip6_tail[12]; /* IPv6: the backend's last 12 bytes */
    };
    uint8_t held;    /* slot + 1 of a client segment held while waiting; 0 = none */
    uint8_t gen;     /* bumped on every allocation of this record (eviction ring check) */
    uint16_t sync_t; /* connection sync: (now_ms >> 10) when peers last heard of it (sync.c) */
} __attribute__((aligned(64))) vgw_conn_t;

_Static_assert(sizeof(vgw_conn_t) == 64, "connection record must stay one cache line");
_Static_assert(offsetof(vgw_conn_t, cport) == 16 && offsetof(vgw_conn_t, expire) == 28 &&
                   offsetof(vgw_conn_t, ip_delta) == 32 && offsetof(vgw_conn_t, rs_isn1) == 40 &&
                   offsetof(vgw_conn_t, sp_seq) == 48 && offsetof(vgw_conn_t, held) == 60,
               "the IPv4 layout is the persisted one (persist.h): change it only with VGW_PERSIST_LAYOUT");

/* The node's IPv6 VIP and LIP addresses by 16-bit id, as IPv6 connection records name them.
 * Append-only: an id names one address for the life of the process, so a record never needs to
 * know whether its service still exists. Written by the control thread before the state that
 * uses an id is published (release order), read by workers. */
#define VGW_ADDR6_MAX 65535u    /* ids 0 .. VGW_ADDR6_MAX - 1 */
#define VGW_ADDR6_SLOTS 131072u /* the control thread's address -> id index, at most half full */
typedef struct vgw_addr6_tab {
    uint8_t (*addr)[16]; /* [VGW_ADDR6_MAX] */
    uint32_t *slot;      /* [VGW_ADDR6_SLOTS]: id + 1, 0 = empty */
    uint32_t count;
} vgw_addr6_tab_t;
int vgw_addr6_init(vgw_addr6_tab_t *t); /* 0, or -1 when out of memory */
void vgw_addr6_fini(vgw_addr6_tab_t *t);
/* a's id, giving it the next one if it has none; VGW_UID_NONE when the table is full. */
uint32_t vgw_addr6_intern(vgw_addr6_tab_t *t, const uint8_t *a);
/* a's id, or VGW_UID_NONE. */
uint32_t vgw_addr6_find(const vgw_addr6_tab_t *t, const uint8_t *a);

/* The four addresses of an IPv6 connection, gathered from its record and the address table. */
typedef struct vgw_conn_addrs6 {
    uint8_t cip[16], vip[16], lip[16], rip[16];
} vgw_conn_addrs6_t;

static inline uint32_t vgw_fold6(const uint8_t *a)
{
    uint32_t x[4];
    memcpy(x, a, 16);
    return x[0] ^ x[1] ^ x[2] ^ x[3];
}

#define VGW_BUCKET_SLOTS 10u
/* 10 (tag, ref) pairs per 64-byte bucket; tag 0 = empty. ovf counts entries whose home bucket is
 * earlier and that probed past this bucket because it was full: a lookup only continues to the
 * next bucket while ovf > 0, so misses usually cost one bucket (folly F14's scheme). */
typedef struct vgw_bucket {
    uint16_t tag[VGW_BUCKET_SLOTS];
    uint16_t ovf;
    uint16_t reserved;
    uint32_t ref[VGW_BUCKET_SLOTS]; /* conn index << 1 | direction */
} __attribute__((aligned(64))) vgw_bucket_t;

_Static_assert(sizeof(vgw_bucket_t) == 64, "bucket must be one cache line");

typedef struct vgw_ctab {
    vgw_bucket_t *buckets;
    uint32_t bmask;
    uint32_t capacity;
    uint32_t count;
    uint32_t free_top;
    vgw_conn_t *conns;
    const uint8_t (*addr6)[16]; /* the node's IPv6 address table (vgw_addr6_tab_t.addr); NULL until
                                 * the node has an IPv6 service */
    uint32_t *free_stack;
    uint32_t sweep_pos;
    uint64_t seed;
    uint64_t bytes;
    /* Half-open eviction ring: (gen << 32 | idx) of TCP connections created by a client SYN,
     * oldest first. Entries go stale when the connection completes or ends; eviction skips those. */
    uint64_t *ring;
    uint32_t ring_head, ring_len;
    /* Records and buckets in a file that outlives the process (persist.c), not ours to free. */
    bool ext;
    struct vgw_pfile *pf;
} vgw_ctab_t;

typedef struct vgw_key4 {
    uint32_t src, dst;
    uint16_t sport, dport;
    uint8_t proto;
} vgw_key4_t;

typedef struct vgw_key6 {
    uint8_t src[16], dst[16];
    uint16_t sport, dport;
    uint8_t proto;
} vgw_key6_t;

int vgw_ctab_init(vgw_ctab_t *t, uint32_t capacity, uint64_t seed);
void vgw_ctab_fini(vgw_ctab_t *t);
/* Buckets of a table of this capacity (a power of two). */
uint64_t vgw_ctab_nbuckets(uint32_t capacity);
/* Over records and buckets the caller maps (persist.c); fresh = zero them and fill the free
 * stack, else the caller rebuilds the derived state from the records. */
int vgw_ctab_init_ext(vgw_ctab_t *t, uint32_t capacity, uint64_t seed, vgw_conn_t *conns, vgw_bucket_t *buckets,
                      bool fresh);
/* Gives the table the node's IPv6 address table (records name VIPs and LIPs by id in it). */
void vgw_ctab_enable_v6(vgw_ctab_t *t, const uint8_t (*addr6)[16]);
/* Empties the index and inserts every record in use again (count follows). */
void vgw_ctab_rebuild_index(vgw_ctab_t *t);

/* persist.c: the table of worker w in the file params->persist names (vgw/persist.h). 0, or -1
 * with the report's status/err set (and w->ct left empty). */
int vgw_persist_open(vgw_worker_t *w, const vgw_worker_params_t *params, uint64_t seed);
/* Brings the copy of the node's IPv6 address table in w's file (if it has one) up to the table. */
void vgw_persist_addr6_write(vgw_worker_t *w);
/* Marks the file closed cleanly and unmaps it (the workers must not run). */
void vgw_persist_close(vgw_worker_t *w);
/* The header's checksum over its fixed fields (exposed for the fuzzer, which forges headers). */
uint64_t vgw_persist_hdr_sum(const void *hdr);

static inline uint64_t vgw_mix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static inline uint64_t vgw_ctab_hash(const vgw_ctab_t *t, const vgw_key4_t *k)
{
    uint64_t a = ((uint64_t)k->src << 32) | k->dst;
    uint64_t b = ((uint64_t)k->sport << 32) | ((uint64_t)k->dport << 16) | k->proto;
    return vgw_mix64(a ^ t->seed) ^ vgw_mix64(b + (t->seed >> 7) + 0x9e3779b97f4a7c15ULL);
}
/* The source is the peer's (a client's, chosen by whoever sends): each of its halves goes
 * through the seeded mix, so colliding sources cannot be computed without the seed. The
 * destination is ours (a VIP or a LIP) and is folded in with the ports. Three independent mixes:
 * one mix deep, like the IPv4 hash. */
static inline uint64_t vgw_ctab_hash6(const vgw_ctab_t *t, const vgw_key6_t *k)
{
    uint64_t s[4];
    memcpy(s, k->src, 16);
    memcpy(s + 2, k->dst, 16);
    uint64_t b = ((uint64_t)k->sport << 32) | ((uint64_t)k->dport << 16) | k->proto | (1ULL << 48);
    uint64_t d = s[2] ^ ((s[3] << 29) | (s[3] >> 35));
    return (vgw_mix64(s[0] ^ t->seed) + vgw_mix64(s[1] ^ (t->seed >> 3) ^ 0x3c6ef372fe94f82bULL)) ^
           vgw_mix64(d + b + (t->seed >> 7) + 0x9e3779b97f4a7c15ULL);
}
static inline uint16_t vgw_tag(uint64_t h)
{
    uint16_t tag = (uint16_t)(h >> 48);
    return tag ? tag : 1;
}
static inline vgw_bucket_t *vgw_ctab_home(const vgw_ctab_t *t, uint64_t h)
{
    return &t->buckets[(uint32_t)h & t->bmask];
}

/* Key of direction d of c. */
static inline bool vgw_conn_match(const vgw_conn_t *c, uint32_t dir, const vgw_key4_t *k)
{
    if (c->proto != k->proto || c->af != VGW_AF_INET)
        return false;
    if (dir == 0)
        return c->cip == k->src && c->vip == k->dst && c->cport == k->sport && c->vport == k->dport;
    return c->rip == k->src && c->lip == k->dst && c->rport == k->sport && c->lport == k->dport;
}
static inline void vgw_conn_rip6(const vgw_conn_t *c, uint8_t *out)
{
    memcpy(out, c->rip6_head, 4);
    memcpy(out + 4, c->rip6_tail, 12);
}
static inline void vgw_conn_set_rip6(vgw_conn_t *c, const uint8_t *a)
{
    memcpy(c->rip6_head, a, 4);
    memcpy(c->rip6_tail, a + 4, 12);
}
static inline void vgw_conn_addrs6(const vgw_ctab_t *t, const vgw_conn_t *c, vgw_conn_addrs6_t *a)
{
    memcpy(a->cip, c->cip6, 16);
    memcpy(a->vip, t->addr6[c->vip6_id], 16);
    memcpy(a->lip, t->addr6[c->lip6_id], 16);
    vgw_conn_rip6(c, a->rip);
}
static inline bool vgw_conn_match6(const vgw_ctab_t *t, uint32_t idx, uint32_t dir, const vgw_key6_t *k)
{
    const vgw_conn_t *c = &t->conns[idx];
    if (c->proto != k->proto || c->af != VGW_AF_INET6)
        return false;
    if (dir == 0)
        return c->cport == k->sport && c->vport == k->dport && memcmp(c->cip6, k->src, 16) == 0 &&
               memcmp(t->addr6[c->vip6_id], k->dst, 16) == 0;
    return c->rport == k->sport && c->lport == k->dport && memcmp(c->rip6_head, k->src, 4) == 0 &&
           memcmp(c->rip6_tail, k->src + 4, 12) == 0 && memcmp(t->addr6[c->lip6_id], k->dst, 16) == 0;
}
static inline void vgw_conn_key6(const vgw_ctab_t *t, uint32_t idx, uint32_t dir, vgw_key6_t *k)
{
    const vgw_conn_t *c = &t->conns[idx];
    memset(k, 0, sizeof(*k));
    k->proto = c->proto;
    if (dir == 0) {
        memcpy(k->src, c->cip6, 16), memcpy(k->dst, t->addr6[c->vip6_id], 16), k->sport = c->cport,
            k->dport = c->vport;
    } else {
        vgw_conn_rip6(c, k->src), memcpy(k->dst, t->addr6[c->lip6_id], 16), k->sport = c->rport,
            k->dport = c->lport;
    }
}
static inline void vgw_conn_key(const vgw_conn_t *c, uint32_t dir, vgw_key4_t *k)
{
    memset(k, 0, sizeof(*k));
    k->proto = c->proto;
    if (dir == 0) {
        k->src = c->cip, k->dst = c->vip, k->sport = c->cport, k->dport = c->vport;
    } else {
        k->src = c->rip, k->dst = c->lip, k->sport = c->rport, k->dport = c->lport;
    }
}

/* Returns the ref (idx << 1 | dir) or UINT32_MAX. Does not look at expiry. */
uint32_t vgw_ctab_lookup(const vgw_ctab_t *t, const vgw_key4_t *k, uint64_t h);
uint32_t vgw_ctab_lookup6(const vgw_ctab_t *t, const vgw_key6_t *k, uint64_t h);
/* Inserts both directions of an initialised record c (from vgw_ctab_alloc). */
void vgw_ctab_insert(vgw_ctab_t *t, uint32_t idx);
/* Removes both directions and frees the slot. */
void vgw_ctab_remove(vgw_ctab_t *t, uint32_t idx);
static inline uint32_t vgw_ctab_alloc(vgw_ctab_t *t)
{
    if (VGW_UNLIKELY(t->free_top == 0))
        return UINT32_MAX;
    return t->free_stack[--t->free_top];
}
static inline bool vgw_expired(uint32_t expire, uint32_t now)
{
    return (int32_t)(expire - now) <= 0;
}

/* ---- dp / worker -------------------------------------------------------------------------- */

struct vgw_dp {
    _Atomic(vgw_state_t *) state;
    uint64_t cookie_k0, cookie_k1;
    int64_t cookie_clock_offset_ms;
    _Atomic uint64_t generation;
    uint32_t nworkers;
    _Atomic(vgw_worker_t *) workers[VGW_MAX_WORKERS];
    vgw_state_t *retired; /* list, newest first */
    vgw_retire_fn retire_fn;
    void *retire_arg;
    vgw_registry_t svc_reg;
    vgw_registry_t be_reg;
    /* Connection sync takeover (sync.c): LIPs of failed peers this node answers for. Open
     * addressing over atomic slots (0 = empty, VGW_FOREIGN_GONE = removed), written by the control
     * thread, read by workers only for packets to an address that is not the node's own. */
    /* An IPv6 service was applied: the address table exists and every worker's connection table
     * has it (conn.c), given by the apply that brought the first one (or at the worker's creation
     * after it), so a node that serves IPv4 only never pays for it. */
    bool v6;
    vgw_addr6_tab_t addr6;
    _Atomic uint32_t foreign_n;
    _Atomic uint32_t foreign[VGW_FOREIGN_SLOTS];
    /* Build marks: which uids the generation being built keeps (stamp == build_seq). */
    uint32_t build_seq;
    uint32_t svc_stamp[VGW_MAX_SERVICES];
    uint32_t *be_stamp; /* VGW_MAX_BACKENDS */
    /* Per backend uid: the workers' be_new sum when the uid was last given to a backend, so a
     * reused uid's counter starts from zero for its new backend (vgw_dp_backend_counters). */
    uint64_t *be_new_base; /* VGW_MAX_BACKENDS */
};

/* Creates the node's IPv6 address table and gives it to every worker (once; 0 or -1 when out of
 * memory). */
int vgw_dp_enable_v6(vgw_dp_t *dp);

/* Sum over the workers of be_new[uid]: plain reads of counters only their worker writes. */
uint64_t vgw_dp_be_new_sum(const vgw_dp_t *dp, uint32_t uid);

/* Token bucket in milli-tokens: refilled by rate milli-tokens per ms, capped at one second. */
typedef struct vgw_bucket_tb {
    uint32_t last_ms;
    uint32_t tokens;
} vgw_tb_t;

/* Per worker, per service uid. */
typedef struct vgw_svc_rt {
    vgw_tb_t conn_rate;
    uint32_t syn_win_start, syn_win_count; /* SYNs in the current 100 ms window (auto mode) */
    uint32_t auto_until;                   /* auto proxy engaged until (ms) */
    uint32_t auto_on;                      /* 1 after the first engagement (auto_until valid) */
} vgw_svc_rt_t;

typedef struct vgw_src24_slot {
    uint32_t net;     /* client /24 (network order, host bits 0) | 1 when used: bit 0 is a host bit */
    uint16_t svc_uid;
    uint16_t reserved;
    vgw_tb_t tb;
} vgw_src24_slot_t;

#define VGW_SRC24_SLOTS 16384u
#define VGW_HELD_SLOTS 128u
#define VGW_HELD_BYTES 2048u

typedef struct vgw_held {
    uint16_t len; /* IPv4 packet bytes (header + TCP) */
    uint8_t pkt[VGW_HELD_BYTES - 2];
} vgw_held_t;

typedef struct vgw_protect {
    uint32_t halfopen;     /* TCP connections in NONE/SYN_RECV (created by a client SYN) */
    uint32_t last_now;     /* worker's clock at its last burst (readers judge auto mode with it) */
    uint8_t pressure;      /* table above the pressure mark: half-open timeout shortened */
    vgw_tb_t rst;          /* RSTs for segments without a connection */
    vgw_svc_rt_t *svc;     /* [VGW_MAX_SERVICES] */
    uint64_t *svc_cnt;     /* [VGW_MAX_SERVICES][VGW_SCNT_MAX] */
    vgw_src24_slot_t *src24;
    uint64_t src24_seed;
    vgw_held_t *held;
    uint8_t held_free[VGW_HELD_SLOTS];
    uint32_t held_top;
    vgw_lip_count_t *lip_exh; /* [VGW_LIP_TRACK_MAX], open addressing by address */
} vgw_protect_t;

struct vgw_worker {
    vgw_dp_t *dp;
    uint32_t id, nworkers;
    uint16_t mtu, flags;
    /* Generation this worker may still be using; UINT64_MAX = none (quiescent). */
    _Atomic uint64_t qsbr_gen;
    vgw_ctab_t ct;
    uint64_t cnt[VGW_CNT_MAX];
    uint32_t port_cursor;
    uint32_t *rr_pos;     /* per service uid: WRR position */
    uint32_t *lip_pos;    /* per service uid: next LIP */
    uint32_t *be_conns;   /* per backend uid: connections this worker holds (WLC) */
    uint64_t *be_new;     /* per backend uid: connections this worker created (never decreases) */
    vgw_protect_t pr;     /* flood protection (protect.c) */
    /* Connection sync (sync.c, VGW_WF_SYNC): connections to tell the peers about, as
     * (gen << 32 | idx), a ring read by vgw_worker_sync_take after each burst. */
    uint32_t sync_head, sync_len;
    uint64_t sync_overflow;
    uint64_t sync_box[VGW_SYNC_OUTBOX];
};

#define VGW_FOREIGN_GONE 0xffffffffu /* a removed slot: lookups probe past it */

/* sync.c: is addr a failed peer's LIP this node took over? */
static inline bool vgw_foreign_lip(const vgw_dp_t *dp, uint32_t addr)
{
    if (VGW_LIKELY(atomic_load_explicit(&dp->foreign_n, memory_order_relaxed) == 0))
        return false;
    uint32_t i = (uint32_t)vgw_mix64(addr) & (VGW_FOREIGN_SLOTS - 1);
    for (uint32_t probes = 0; probes < VGW_FOREIGN_SLOTS; probes++, i = (i + 1) & (VGW_FOREIGN_SLOTS - 1)) {
        uint32_t a = atomic_load_explicit(&dp->foreign[i], memory_order_relaxed);
        if (a == addr)
            return true;
        if (a == 0)
            return false;
    }
    return false;
}

/* sync.c: note connection c (changed, created or due for a refresh) for the peers. */
static inline void vgw_sync_note(vgw_worker_t *w, vgw_conn_t *c, uint32_t now)
{
    if (c->af != VGW_AF_INET)
        return; /* the sync records carry IPv4 addresses (vgw/sync.h) */
    c->sync_t = (uint16_t)(now >> 10);
    if (VGW_UNLIKELY(w->sync_len == VGW_SYNC_OUTBOX)) {
        w->sync_overflow++;
        return;
    }
    uint32_t idx = (uint32_t)(c - w->ct.conns);
    w->sync_box[(w->sync_head + w->sync_len++) % VGW_SYNC_OUTBOX] = (uint64_t)c->gen << 32 | idx;
}

/* synproxy.c: SipHash-2-4 of data under the 128-bit key (k0, k1) (little-endian halves). */
uint64_t vgw_siphash24(uint64_t k0, uint64_t k1, const void *data, size_t len);

/* protect.c: the SYN cookie key from the parameters, or random. */
int vgw_cookie_key_init(vgw_dp_t *dp, const vgw_dp_params_t *params);

/* Schedulers (sched.c). Return an index into svc->backends or -1. */
int32_t vgw_sched_pick(vgw_worker_t *w, const vgw_svc_t *svc, uint32_t flow_hash);
/* Builds the smooth-WRR cycle of svc's candidates into svc->tab. */
int vgw_wrr_build(vgw_svc_t *svc);

#endif
