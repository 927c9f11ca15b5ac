/* SPDX-License-Identifier: Apache-2.0
 * The FULLNAT engine API the DPDK forwarder links against.
 *
 * Threading model:
 *  - one vgw_dp_t per process, shared read-only by the fast path; vgw_dp_apply*,
 *    vgw_dp_reclaim and vgw_worker_create/destroy are called from one control thread (the first
 *    apply with an IPv6 service gives the existing workers their IPv6 tables);
 *  - one vgw_worker_t per worker lcore, never shared: it owns its connection table, counters and
 *    scheduler cursors, so the fast path takes no locks and no atomics beyond one acquire load
 *    and one release store per burst.
 * Config generations are immutable snapshots swapped in with an atomic pointer store. A retired
 * snapshot is freed once every worker has started a burst on a newer one (built-in QSBR), or
 * handed to a caller-provided retire hook (e.g. rte_rcu_qsbr) instead.
 */
#ifndef VGW_ENGINE_H
#define VGW_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "vgw/config.h"
#include "vgw/counters.h"
#include "vgw/types.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VGW_MAX_WORKERS 128u
#define VGW_BURST_MAX 64u /* vgw_worker_process takes up to this many packets per call */

typedef struct vgw_dp vgw_dp_t;
typedef struct vgw_worker vgw_worker_t;
typedef struct vgw_state vgw_state_t; /* one immutable config generation */

typedef void (*vgw_retire_fn)(vgw_state_t *old, uint64_t generation, void *arg);

typedef struct vgw_dp_params {
    uint32_t nworkers; /* 1..VGW_MAX_WORKERS; LIP ports are partitioned by it */
    /* SYN cookie key. All zero = a random key from the kernel (a node's cookies are then only
     * valid on that node and process; give every node the same key to let a flow's ACK land on
     * another node after an ECMP change). */
    uint8_t cookie_key[16];
    /* Added to now_ms for the cookie clock only (e.g. wall clock - monotonic clock, so nodes
     * sharing a key agree on the cookie period); 0 = the monotonic clock. */
    int64_t cookie_clock_offset_ms;
} vgw_dp_params_t;

vgw_dp_t *vgw_dp_create(const vgw_dp_params_t *params);
/* Workers must be destroyed first. */
void vgw_dp_destroy(vgw_dp_t *dp);

/* Builds the state for cfg (schedulers included) off the fast path and publishes it atomically.
 * Rejects a generation that is not newer than the applied one. Returns 0 or -1 with err set;
 * on error nothing changes. */
int vgw_dp_apply(vgw_dp_t *dp, const vgw_cfg_t *cfg, char *err, size_t errlen);
/* Parse + apply in one step (what the control socket does). */
int vgw_dp_apply_text(vgw_dp_t *dp, const char *text, size_t len, char *err, size_t errlen);
/* Generation currently visible to workers (0 = none). */
uint64_t vgw_dp_generation(const vgw_dp_t *dp);
/* With a hook installed, retired states go to it and the caller frees them with vgw_state_free
 * after its own grace period; without one, vgw_dp_reclaim frees them. */
void vgw_dp_set_retire_hook(vgw_dp_t *dp, vgw_retire_fn fn, void *arg);
/* Frees retired states no worker can still see. Returns how many remain pending. */
uint32_t vgw_dp_reclaim(vgw_dp_t *dp);
void vgw_state_free(vgw_state_t *st);

/* LIP port -> owning worker. Worker w allocates only ports with port % nworkers == w, so any
 * worker can hand a reply to its owner from the port alone, without NIC flow steering. */
static inline uint32_t vgw_owner_of_port(uint16_t port_host_order, uint32_t nworkers)
{
    return nworkers > 1 ? (uint32_t)port_host_order % nworkers : 0;
}

#define VGW_WF_NO_SW_L4_CSUM 0x0001u /* trust the caller: skip software TCP/UDP checksum checks */
/* Client packets are owned by vgw_client_owner() and handed over when they arrive elsewhere: for
 * ports whose receive spreading is not a stable function of the tuple (af_packet's fanout rolls
 * over to another socket when one is full), where a flow would otherwise change workers. */
#define VGW_WF_STEER_CLIENTS 0x0002u

/* The worker that owns a client flow under VGW_WF_STEER_CLIENTS (addresses and ports as on the wire). */
uint32_t vgw_client_owner(uint32_t saddr, uint32_t daddr, uint16_t sport, uint16_t dport, uint8_t proto,
                          uint32_t nworkers);

typedef struct vgw_worker_params {
    uint32_t id;            /* 0..nworkers-1 */
    uint32_t conn_capacity; /* connections (each has two table entries) */
    uint16_t mtu;           /* IP MTU towards real servers; TOA never makes a packet exceed it */
    uint16_t flags;         /* VGW_WF_* */
    uint64_t hash_seed;     /* per-worker secret for the connection hash (flooding resistance) */
    /* Connection table in a file that outlives the process (vgw/persist.h); NULL = private
     * memory. An attached file keeps its own hash seed. With report set, the create says what
     * it found there (and why it refused a file: the create then returns NULL). */
    const struct vgw_persist_params *persist;
    struct vgw_persist_report *report;
} vgw_worker_params_t;

vgw_worker_t *vgw_worker_create(vgw_dp_t *dp, const vgw_worker_params_t *params);
void vgw_worker_destroy(vgw_worker_t *w);

/* Processes n (<= VGW_BURST_MAX) packets in place. For each, out[i] says what to do with it;
 * for FORWARD, pkts[i].data/len may have changed (TOA insertion moves data back into headroom).
 * now_ms is a monotonic clock in milliseconds. */
void vgw_worker_process(vgw_worker_t *w, vgw_pkt_t *pkts, vgw_verdict_t *out, uint32_t n,
                        uint64_t now_ms);

/* Removes expired connections, looking at no more than budget slots. Call from the idle path
 * and after bursts; lookups already ignore expired entries, so this only recycles memory.
 * Returns the number of connections removed. */
uint32_t vgw_worker_housekeep(vgw_worker_t *w, uint64_t now_ms, uint32_t budget);

/* Tells the built-in QSBR this worker holds no state reference (call when idle). */
void vgw_worker_quiesce(vgw_worker_t *w);

void vgw_worker_counters(const vgw_worker_t *w, vgw_counters_t *out);
uint32_t vgw_worker_conn_count(const vgw_worker_t *w);
/* Bytes allocated for the connection table divided by its capacity (records, hash, free list). */
uint64_t vgw_worker_conn_bytes(const vgw_worker_t *w);

/* Service uid of (proto, VIP, port) in the applied generation, or UINT32_MAX. Control thread.
 * A uid is reused for another service after its service is removed: consumers that report
 * per-service counters keep a baseline per (uid, service) pair. */
uint32_t vgw_dp_svc_uid(const vgw_dp_t *dp, uint8_t proto, uint32_t vip, uint16_t port_host_order);
/* The same for an IPv6 VIP (16 bytes, network order). */
uint32_t vgw_dp_svc_uid6(const vgw_dp_t *dp, uint8_t proto, const uint8_t *vip, uint16_t port_host_order);
/* Per-service flood-protection counters of one worker (plain reads of counters the worker
 * writes: each value is exact, the set is not a snapshot). */
void vgw_worker_svc_counters(const vgw_worker_t *w, uint32_t svc_uid, vgw_svc_counters_t *out);

/* One backend's counters, summed over the workers. There is no per-backend packet count: it would
 * cost the per-packet path a counter in a 65,536-entry array per worker (docs/forwarder.md). */
typedef struct vgw_backend_counters {
    uint32_t addr;        /* network order */
    uint16_t port;        /* host order */
    uint16_t reserved;
    uint64_t conn_active; /* connections to it in the workers' tables now */
    uint64_t conn_new;    /* connections created to it since it (service, address, port) appeared */
} vgw_backend_counters_t;
/* The backends of service svc_uid in the applied generation, in configuration order, from index
 * `first` on: writes up to max of them to out and returns how many the service has (0 when the uid
 * is not applied), so a caller pages through any number with a fixed buffer. Plain reads of
 * counters only their worker writes: each value is exact, the set is not a snapshot. Control
 * thread (the same one that applies). */
uint32_t vgw_dp_backend_counters(const vgw_dp_t *dp, uint32_t svc_uid, uint32_t first, vgw_backend_counters_t *out,
                                 uint32_t max);

/* LIP port exhaustion per LIP: how often a new connection found no free port on it. */
typedef struct vgw_lip_count {
    uint32_t lip; /* network order */
    uint32_t reserved;
    uint64_t exhausted;
} vgw_lip_count_t;
#define VGW_LIP_TRACK_MAX 1024u /* LIPs a worker keeps exhaustion counts for */
/* Copies up to max entries; returns how many there are. */
uint32_t vgw_worker_lip_exhaustion(const vgw_worker_t *w, vgw_lip_count_t *out, uint32_t max);

/* Connection snapshot for tests and the control socket's "show conn". */
typedef struct vgw_conn_info {
    uint8_t af, proto, state, flags;
    vgw_addr_t cip, vip, lip, rip;
    uint16_t cport, vport, lport, rport; /* host order */
    uint32_t expires_in_ms;
} vgw_conn_info_t;

/* Looks up the connection a client tuple (cip:cport -> vip:vport, host order ports) belongs to. */
int vgw_worker_conn_find(vgw_worker_t *w, uint8_t proto, uint32_t cip, uint16_t cport, uint32_t vip,
                         uint16_t vport, uint64_t now_ms, vgw_conn_info_t *out);
/* The same for either family (af VGW_AF_INET or VGW_AF_INET6, addresses as on the wire). */
int vgw_worker_conn_find_af(vgw_worker_t *w, uint8_t af, uint8_t proto, const vgw_addr_t *cip, uint16_t cport,
                            const vgw_addr_t *vip, uint16_t vport, uint64_t now_ms, vgw_conn_info_t *out);

/* Flow hash used by Maglev: same on every node and worker, a pure function of the 5-tuple. */
uint32_t vgw_flow_hash_v4(uint32_t saddr, uint32_t daddr, uint16_t sport, uint16_t dport, uint8_t proto);
uint32_t vgw_flow_hash_v6(const uint8_t *saddr, const uint8_t *daddr, uint16_t sport, uint16_t dport, uint8_t proto);

#ifdef __cplusplus
}
#endif
#endif
