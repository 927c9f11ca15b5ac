/* SPDX-License-Identifier: Apache-2.0
 * Connection sync in vgw-fwd (sync.c): settings, sending the workers' records to the peer nodes
 * over the internal port, and receiving, authenticating and importing theirs. The format and the
 * import are the core's (include/vgw/sync.h); docs/forwarder.md, "Connection sync". */
#ifndef VGW_FWD_SYNC_H
#define VGW_FWD_SYNC_H

#include <stdbool.h>
#include <stdint.h>

#include <rte_mbuf.h>
#include <rte_spinlock.h>

#include "vgw/sync.h"

#include "fwd.h"

#define SYNC_MAX_PEERS 16u
#define SYNC_DEFAULT_PORT 8473u
/* Frames one flush may build: the whole outbox, to every peer. */
#define SYNC_MAX_FRAMES 64u

#define SYNC_PEER_LIPS 64u            /* LIPs remembered per peer (from its records) */
#define SYNC_DEFAULT_HEARTBEAT_MS 200u
#define SYNC_DEFAULT_DEAD_MS 1000u

typedef struct sync_peer {
    uint32_t ip;     /* network order */
    /* under g_sync.lock (any receiving worker writes, the control thread reads) */
    uint64_t epoch;  /* the peer's current epoch (0 = none heard yet) */
    uint32_t top;    /* highest sequence number accepted in it */
    uint64_t window; /* bit i: top - i was accepted */
    uint32_t lips[SYNC_PEER_LIPS]; /* the LIPs its connections use: what to take over */
    uint32_t nlips;
    _Atomic uint64_t heard_ms; /* last authentic message (0 = never) */
    /* control thread */
    bool down;             /* silent too long: its LIPs are this node's */
    uint32_t taken[SYNC_PEER_LIPS];
    uint32_t ntaken;
} sync_peer_t;

typedef struct fwd_sync {
    uint32_t npeers; /* 0 = sync off */
    sync_peer_t peers[SYNC_MAX_PEERS];
    uint16_t port; /* network order */
    char key_file[512];
    uint8_t key[16];
    uint32_t heartbeat_ms; /* a message at least this often, records or not */
    uint32_t dead_ms;      /* a peer silent this long has failed: take over its LIPs (0 = never) */
    uint64_t last_beat_ms;
    uint64_t epoch; /* this process's start (wall clock, ns) */
    _Atomic uint32_t seq;
    rte_spinlock_t lock; /* the peers' replay windows: any worker may receive */
} fwd_sync_t;

extern fwd_sync_t g_sync;

/* One settings line ("sync-peer IP", "sync-port N", "sync-key-file PATH", "sync-heartbeat-ms N",
 * "sync-dead-ms N"): 0 if taken, -1 if not a sync setting or invalid. */
int sync_setting(const char *key, char **v, int n);
/* After the settings and the ports: checks them (prints why not) and starts the epoch. */
int sync_init(void);

/* Is this (already parsed) packet a sync message for this node? */
static inline bool sync_is_msg(uint32_t dst, uint16_t dport, uint8_t proto)
{
    return g_sync.npeers && proto == 17 && dport == g_sync.port && dst == g_fwd.port[VGW_PORT_INT].ip;
}

/* A sync message received by worker fw (from the wire, or handed over by the worker that
 * received it: handed). Imports the records this worker owns; a received one is authenticated
 * first and handed to the other workers. Consumes m. */
void sync_rx(fwd_worker_t *fw, struct rte_mbuf *m, bool handed, uint64_t now_ms);

/* Control thread, every loop: heartbeats to the peers; a peer silent for dead_ms is taken over
 * (its LIPs answered for and announced), one heard again is released. */
void sync_tick(fwd_t *f, uint64_t now_ms);
/* STATS: "sync":{...} (peers, their state, foreign LIPs). */
struct vbuf;
void sync_json(struct vbuf *b, uint64_t now_ms);

/* Takes fw's notes and builds frames for the peers (Ethernet destination left to the caller,
 * the next hop in each frame's fwd_priv). Returns how many. */
uint16_t sync_build(fwd_worker_t *fw, struct rte_mbuf **out, uint16_t max, uint64_t now_ms);

#endif
