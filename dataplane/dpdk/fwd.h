/* SPDX-License-Identifier: Apache-2.0
 * vgw-fwd: the DPDK forwarder around the portable FULLNAT core (dataplane/core).
 *
 * Threads:
 *  - worker lcores: RX burst -> vgw_worker_process -> L2 rewrite -> TX burst; replies that belong
 *    to another worker go over that worker's hand-off ring; ARP and packets whose next hop is not
 *    resolved yet go to the control thread over the slow-path ring;
 *  - the main lcore (control thread): control socket, ARP/neighbours, config generations and
 *    reclaim, stats snapshots for telemetry. It never touches a worker's connection table.
 *  - DPDK's telemetry thread runs the /vgw/... callbacks on published snapshots.
 */
#ifndef VGW_FWD_H
#define VGW_FWD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdint.h>

#include <rte_ether.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_ring.h>
#include <rte_version.h>

#include "vgw/config.h"
#include "vgw/counters.h"
#include "vgw/engine.h"

#include "svcmap.h"

#define FWD_MAX_PORTS 2u /* EXT and INT (the same device in single-arm mode) */
#define FWD_MAX_ROUTES 64u
#define FWD_NEIGH_SIZE 1024u /* per port, power of two */
#define FWD_BURST 32u
#define FWD_SLOW_RING 4096u
#define FWD_HANDOFF_RING 4096u
#define FWD_TXQ_RING 1024u
#define FWD_PENDING_PER_NEIGH 16u

/* Forwarder-level drop reasons and events (the core's reasons are counted by the core). */
#define FWD_COUNTERS(X)                                                                            \
    X(RX_PKTS, "rx_packets")                                                                        \
    X(TX_PKTS, "tx_packets")                                                                        \
    X(TX_BYTES, "tx_bytes")                                                                         \
    X(HANDOFF_OUT, "handoff_sent")                                                                  \
    X(HANDOFF_IN, "handoff_received")                                                               \
    X(SLOW_OUT, "slowpath_sent")                                                                    \
    X(DROP_TX_FULL, "drop_tx_full")          /* the NIC queue did not take it */                   \
    X(DROP_HANDOFF_FULL, "drop_handoff_full")/* owner's hand-off ring full */                      \
    X(DROP_SLOW_FULL, "drop_slowpath_full")  /* slow-path ring full */                              \
    X(DROP_NO_ROUTE, "drop_no_route")        /* no connected subnet or route for the next hop */   \
    X(DROP_LOCAL, "drop_local")              /* not for us: IPv6, pings, node traffic */           \
    X(DROP_OWN_MAC, "drop_own_frame")        /* a frame we sent, seen again (af_packet) */         \
    X(DROP_CORE, "drop_core")                /* dropped by the core (see drop_<reason>) */ \
    X(SYNC_TX_MSGS, "sync_sent_messages")    /* connection sync (sync.c): messages built */      \
    X(SYNC_TX_RECS, "sync_sent_records")                                                           \
    X(SYNC_OVERFLOW, "sync_overflow")        /* notes lost: the worker's outbox was full */      \
    X(SYNC_RX_MSGS, "sync_received_messages")                                                      \
    X(SYNC_IMPORTED, "sync_imported_records")                                                      \
    X(SYNC_NO_SERVICE, "sync_refused_no_service") /* records this node cannot take ... */          \
    X(SYNC_NO_BACKEND, "sync_refused_no_backend")                                                  \
    X(SYNC_CONFLICT, "sync_refused_conflict")                                                      \
    X(SYNC_FULL, "sync_refused_table_full")                                                        \
    X(DROP_SYNC_PEER, "drop_sync_unknown_peer") /* not from a sync-peer, or not TTL 255 */         \
    X(DROP_SYNC_INVALID, "drop_sync_invalid")   /* malformed, wrong MAC or version */              \
    X(DROP_SYNC_REPLAY, "drop_sync_replayed")                                                      \
    X(DROP_SYNC_NOMBUF, "drop_sync_no_mbuf")    /* no mbuf to send a message in */

enum fwd_counter {
#define FWD_X_(e, s) FWD_CNT_##e,
    FWD_COUNTERS(FWD_X_)
#undef FWD_X_
    FWD_CNT_MAX
};

/* Control-thread-only counters. */
#define CTL_COUNTERS(X)                                                                            \
    X(ARP_RX, "arp_rx")                                                                             \
    X(ARP_REPLIES_TX, "arp_replies_sent")                                                          \
    X(ARP_REQUESTS_TX, "arp_requests_sent")                                                        \
    X(ARP_BAD, "arp_invalid")                                                                       \
    X(ARP_IGNORED, "arp_ignored")                                                                   \
    X(NEIGH_PENDING_DROP, "drop_neigh_pending_full")                                               \
    X(NEIGH_UNRESOLVED_DROP, "drop_neigh_unresolved")                                              \
    X(ICMP_ECHO_REPLIES, "icmp_echo_replies")                                                      \
    X(ICMP_ECHO_LIMITED, "drop_icmp_echo_ratelimited")                                             \
    X(ICMP_ECHO_BAD, "drop_icmp_echo_invalid")                                                     \
    X(CTL_FRAMES, "ctl_frames")                                                                     \
    X(CTL_ERRORS, "ctl_errors")                                                                     \
    X(CTL_REJECTED, "ctl_rejected_peers")   /* connections from a uid/gid not allowed */           \
    X(NEIGH_EVICTED, "neigh_evicted")       /* neighbour entries replaced or expired */            \
    X(CTL_TX_FULL, "drop_ctl_tx_full")      /* ARP/echo frames the control TX ring had no room for */\
    X(SYNC_HEARTBEATS, "sync_heartbeats_sent")                                                      \
    X(SYNC_TAKEOVERS, "sync_takeovers")     /* a silent peer's LIPs taken over */                  \
    X(SYNC_RELEASES, "sync_releases")       /* ... given back when it was heard again */           \
    X(SYNC_NOMBUF, "drop_sync_heartbeat_no_mbuf")                                                  \
    X(APPLIES, "applies")                                                                           \
    X(DELTAS, "deltas")

enum ctl_counter {
#define FWD_X_(e, s) CTL_CNT_##e,
    CTL_COUNTERS(FWD_X_)
#undef FWD_X_
    CTL_CNT_MAX
};

typedef struct port_stats {
    uint64_t rx_pkts, rx_bytes, tx_pkts, tx_bytes, tx_drops;
} port_stats_t;

/* Everything the telemetry thread and control socket read about one worker: published by the
 * worker under a sequence lock every ~100 ms (and when it goes idle). */
typedef struct worker_snapshot {
    vgw_counters_t core;
    uint64_t fwd[FWD_CNT_MAX];
    port_stats_t port[FWD_MAX_PORTS];
    uint64_t busy_polls, idle_polls, sleeps;
    uint32_t conns;
} worker_snapshot_t;

/* ip, mac and valid change only inside the entry's sequence lock (seq odd while writing), so a
 * worker reading lock-free sees an entry whole. */
#define NEIGH_IP_EMPTY 0u          /* never used: ends a probe sequence */
#define NEIGH_IP_GONE 0xffffffffu  /* removed: probing continues past it */
typedef struct neigh_entry {
    _Atomic uint32_t seq;
    _Atomic uint32_t ip; /* network order, or NEIGH_IP_EMPTY / NEIGH_IP_GONE */
    uint8_t mac[6];
    _Atomic uint8_t valid;
    _Atomic uint8_t used; /* set by a worker that used the entry, cleared by housekeeping */
    uint8_t is_static;    /* never expires or re-resolves */
    /* control-thread-only fields */
    uint64_t created_ms, updated_ms, requested_ms, pending_since_ms, used_ms;
    uint64_t touched; /* order of the last learn, answer or observed use: least recent goes first */
    uint32_t npending;
    struct rte_mbuf *pending[FWD_PENDING_PER_NEIGH];
} neigh_entry_t;

typedef struct route {
    uint32_t prefix, mask; /* network order */
    uint32_t gateway;      /* network order; 0 = connected */
    uint8_t port;          /* enum vgw_port */
    uint8_t plen;
} route_t;

typedef struct fwd_port {
    bool present;
    char name[64];      /* DPDK device name (e.g. net_af_packet0) */
    uint16_t port_id;   /* DPDK port id */
    struct rte_ether_addr mac;
    uint32_t ip, mask;  /* the forwarder's own address on this link (network order) */
    uint8_t plen;
    uint16_t mtu;
    neigh_entry_t *neigh; /* FWD_NEIGH_SIZE entries */
} fwd_port_t;

/* Per-worker shadow set of the client tuples of its connections (svcconn.c). */
typedef struct shadow_ent {
    uint32_t cip, vip;     /* network order */
    uint16_t cport, vport; /* network order */
    uint8_t proto, used;
    uint16_t slot;
} shadow_ent_t;

typedef struct shadow {
    shadow_ent_t *tab;
    uint32_t mask, capacity, count, sweep;
} shadow_t;

enum fwd_steer { FWD_STEER_AUTO = 0, FWD_STEER_ON = 1, FWD_STEER_OFF = 2 };

/* Flood-protection totals per service slot and per LIP (protect.c). */
#define PROT_LIP_TABLE 4096u /* LIPs the forwarder keeps totals for (power of two) */

typedef struct svc_prot {
    uint8_t bound;
    uint8_t proto;
    uint16_t port; /* network order */
    uint32_t vip;  /* network order */
    uint32_t uid;  /* UINT32_MAX: the service is not in the applied generation */
    char name[VGW_CFG_MAX_NAME + 1];
    uint64_t last[VGW_SCNT_MAX];  /* the uid's sums over workers at the last read */
    uint64_t total[VGW_SCNT_MAX]; /* what is reported */
} svc_prot_t;

typedef struct lip_total {
    uint32_t lip; /* network order; 0 = empty */
    uint32_t reserved;
    uint64_t cur;   /* scratch: this read's sum over workers */
    uint64_t last;  /* the sum at the last read */
    uint64_t total; /* what is reported */
} lip_total_t;

typedef struct prot_ctl {
    svc_prot_t *svc; /* FWD_MAX_SVC_SLOTS, by svcmap slot */
    lip_total_t *lips; /* PROT_LIP_TABLE */
    uint32_t nlips; /* at most 3/4 of PROT_LIP_TABLE: LIPs beyond are not reported */
    vgw_lip_count_t *buf; /* VGW_LIP_TRACK_MAX, scratch for one worker's read */
} prot_ctl_t;

typedef struct fwd_worker {
    uint32_t id;
    unsigned lcore;
    vgw_worker_t *w;
    struct rte_ring *handoff; /* packets other workers received for flows this one owns */
    struct rte_ring *txq;     /* frames ready to send from the control thread (ARP, released) */
    /* per-worker counters (written only by this worker) */
    uint64_t fwd[FWD_CNT_MAX];
    port_stats_t port[FWD_MAX_PORTS];
    uint64_t busy_polls, idle_polls, sleeps;
    uint64_t *svc; /* FWD_MAX_SVC_SLOTS * SVC_CNT_MAX */
    shadow_t shadow;
    _Atomic uint64_t svcmap_gen; /* generation of the svcmap this worker last used (QSBR) */
    /* published snapshot */
    _Atomic uint32_t snap_seq;
    worker_snapshot_t snap;
    uint64_t *svc_snap; /* FWD_MAX_SVC_SLOTS * SVC_CNT_MAX */
} __attribute__((aligned(64))) fwd_worker_t;

typedef struct fwd {
    /* settings */
    char config_path[512];
    char socket_path[108];
    uint32_t nworkers;
    bool single_arm;
    uint32_t conn_capacity;
    uint32_t mbufs;
    uint32_t rxd, txd;
    uint32_t idle_sleep_max_us; /* longest idle sleep while traffic is recent */
    uint32_t deep_idle_us;      /* longest idle sleep after deep_idle_after_ms without packets */
    uint32_t deep_idle_after_ms;
    uint16_t mtu;
    bool no_sw_csum;
    uint8_t steer_clients;  /* FWD_STEER_*: hand client flows to their owner (VGW_WF_STEER_CLIENTS) */
    bool steering;          /* the outcome (auto resolved at start) */
    uint64_t memory_budget; /* bytes; 0 = not enforced */
    uint32_t neigh_refresh_ms, neigh_stale_ms, neigh_expire_ms;
    uint64_t neigh_seq; /* source of neigh_entry_t.touched */
    char socket_group[64];  /* group allowed on the control socket besides root and our uid */
    char cookie_key_file[512]; /* --syn-cookie-key-file: the SYN cookie key shared by the nodes */
    uint8_t cookie_key[16];    /* from cookie_key_file; all zero = a random key per process */
    /* runtime */
    fwd_port_t port[FWD_MAX_PORTS]; /* [VGW_PORT_EXT], [VGW_PORT_INT]; INT mirrors EXT if single-arm */
    uint32_t ndevs;                 /* distinct DPDK devices (1 in single-arm) */
    route_t routes[FWD_MAX_ROUTES];
    uint32_t nroutes;
    struct {
        uint32_t ip;
        struct rte_ether_addr mac;
        uint8_t role;
    } static_neigh[FWD_MAX_ROUTES]; /* permanent entries (settings: neigh IP MAC ext|int) */
    uint32_t nstatic_neigh;
    struct rte_mempool *pool;
    struct rte_ring *slow; /* workers -> control thread */
    vgw_dp_t *dp;
    fwd_worker_t *workers;
    svcmap_ctl_t svc;
    prot_ctl_t prot; /* flood-protection totals (protect.c), under g_ctl_lock */
    _Atomic bool stop;
    uint64_t start_unix_ns;
    uint64_t ctl[CTL_CNT_MAX];
    /* control-thread state */
    vgw_cfg_t *cfg;  /* the applied configuration (deltas edit it; ARP asks it whose addresses) */
    vgw_cost_t cost; /* what cfg costs (vgw_cfg_cost), reported in STATS */
    uint64_t *garp_known_v; /* sorted (role << 32 | address) already announced by gratuitous ARP */
    uint32_t ngarp_known;
} fwd_t;

extern fwd_t g_fwd;

/* time */
uint64_t fwd_now_ms(void);

/* svcconn.c: per-service active connections */
int shadow_init(shadow_t *s, uint32_t capacity);
void shadow_fini(shadow_t *s);
int shadow_add(shadow_t *s, uint32_t cip, uint16_t cport, uint32_t vip, uint16_t vport, uint8_t proto, uint16_t slot);
void shadow_sweep(fwd_worker_t *fw, uint64_t now_ms, uint32_t budget);

/* worker.c */
int fwd_worker_main(void *arg);
void fwd_worker_publish(fwd_worker_t *fw);
void fwd_read_snapshot(const fwd_worker_t *fw, worker_snapshot_t *out, uint64_t *svc_out);

extern pthread_mutex_t g_ctl_lock; /* control thread vs telemetry thread: svc names and keys */

#endif
