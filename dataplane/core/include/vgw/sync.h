/* SPDX-License-Identifier: Apache-2.0
 * Connection sync between the nodes of a cluster (docs/forwarder.md, "Connection sync").
 *
 * A worker with VGW_WF_SYNC notes the connections it creates, the state changes they go through
 * and, for long-lived ones, a refresh every half timeout; the caller takes those notes after each
 * burst (vgw_worker_sync_take), packs them into messages (vgw_sync_encode) and sends them to the
 * other nodes, which check and unpack them (vgw_sync_decode) and give each record to the worker
 * that owns its client flow (vgw_worker_sync_import). A peer's copy lets that node carry the
 * connection on when ECMP moves its client packets there (a withdrawn, drained or failed node):
 * it forwards with the original node's LIP and port, so the real server sees the same tuple.
 *
 * Wire format, version 1, all integers in network order (LVS's sync protocol v1 is the model: a
 * small header and fixed-size records, several per datagram):
 *
 *   header, 24 bytes:  magic "VS" (2) | version (1) | count (1) | sender (4, its IPv4 address)
 *                      | epoch (8, the sender's start time in ns) | seq (4) | nworkers (2) | 0 (2)
 *   count records, 48 bytes each (vgw_sync_rec_t below, in that order)
 *   MAC, 8 bytes:      SipHash-2-4 over header and records under the cluster's 128-bit sync key
 *
 * The MAC (with the receiver's replay window over (sender, epoch, seq)) is what makes the records
 * trustworthy: a record creates forwarding state, so nothing unauthenticated is ever imported.
 */
#ifndef VGW_SYNC_H
#define VGW_SYNC_H

#include <stddef.h>
#include <stdint.h>

#include "vgw/engine.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VGW_SYNC_VERSION 1u
#define VGW_SYNC_HDR_LEN 24u
#define VGW_SYNC_REC_LEN 48u
#define VGW_SYNC_MAC_LEN 8u
/* Records per message: 24 + 29 * 48 + 8 = 1424 bytes, inside a 1500-byte MTU with IP and UDP
 * headers (and a VLAN tag) to spare. */
#define VGW_SYNC_MAX_RECS 29u
#define VGW_SYNC_MAX_MSG (VGW_SYNC_HDR_LEN + VGW_SYNC_MAX_RECS * VGW_SYNC_REC_LEN + VGW_SYNC_MAC_LEN)
/* Notes a worker keeps between takes; beyond this they are dropped and counted (sync_overflow). */
#define VGW_SYNC_OUTBOX 256u

/* Heartbeats: a message without records says "alive"; peers take over the LIPs of a sender they
 * stop hearing from (vgw_dp_foreign_lip_add). */
#define VGW_FOREIGN_SLOTS 1024u /* foreign LIPs a node can answer for: at most half of this */

/* Worker flag: note connections for sync (vgw_worker_params_t.flags). */
#define VGW_WF_SYNC 0x0004u

/* Record flags (a subset of the connection's: what a peer needs to continue it). */
#define VGW_SYNC_F_TOA 0x01u    /* insert TOA into the client's segments */
#define VGW_SYNC_F_RS_ISN 0x02u /* rs_isn1 is valid */
#define VGW_SYNC_F_PROXY 0x04u  /* opened by the SYN proxy: sp_* translate sequence numbers */
#define VGW_SYNC_F_SP_TS 0x10u  /* proxied with timestamps */
#define VGW_SYNC_F_SP_WIN 0x20u /* proxied with different window scales */
#define VGW_SYNC_F_ALL (VGW_SYNC_F_TOA | VGW_SYNC_F_RS_ISN | VGW_SYNC_F_PROXY | VGW_SYNC_F_SP_TS | VGW_SYNC_F_SP_WIN)

/* One connection as a peer needs it. Addresses and ports in network order (as in packets);
 * other fields in host order here, network order on the wire. */
typedef struct vgw_sync_rec {
    uint8_t af, proto, state, flags;
    uint32_t cip, vip, lip, rip;
    uint16_t cport, vport, lport, rport;
    uint32_t timeout_ms; /* how long the sender's entry has left */
    uint32_t rs_isn1;    /* network order, as in the connection */
    uint32_t sp_seq, sp_ts;
    uint16_t sp_win;
    uint8_t sp_ws[2];
} vgw_sync_rec_t;

typedef struct vgw_sync_hdr {
    uint32_t sender; /* network order: the sender's internal IPv4 address */
    uint64_t epoch;  /* the sender's start (ns); a restarted sender has a newer one */
    uint32_t seq;    /* per (sender, epoch), one per message */
    uint16_t nworkers;
    uint8_t count;
} vgw_sync_hdr_t;

/* Errors of vgw_sync_decode (negative return values) and of vgw_worker_sync_import. */
enum vgw_sync_err {
    VGW_SYNC_OK = 0,
    VGW_SYNC_E_SHORT = 1,     /* shorter than a header and a MAC */
    VGW_SYNC_E_MAGIC = 2,     /* not a sync message */
    VGW_SYNC_E_VERSION = 3,   /* a version this build does not speak */
    VGW_SYNC_E_LENGTH = 4,    /* length does not match the record count, or too many records */
    VGW_SYNC_E_MAC = 5,       /* MAC does not verify: wrong key, corrupted or forged */
    VGW_SYNC_E_RECORD = 6,    /* a record with impossible values (af, proto, state, flags) */
    VGW_SYNC_E_NO_SERVICE = 7, /* import: no such service (proto, VIP, port) here */
    VGW_SYNC_E_NO_BACKEND = 8, /* import: the real server is not a backend of the service here */
    VGW_SYNC_E_CONFLICT = 9,   /* import: this node has another live connection on the client tuple */
    VGW_SYNC_E_FULL = 10,      /* import: the connection table is full */
    VGW_SYNC_E_MAX
};

const char *vgw_sync_err_name(int err);

/* Writes a message of n (0..VGW_SYNC_MAX_RECS; 0 = a heartbeat) records into buf (cap >= its
 * size). Returns its length, or 0 if n or cap is out of range. hdr->count is ignored. */
size_t vgw_sync_encode(const vgw_sync_hdr_t *hdr, const vgw_sync_rec_t *recs, uint32_t n, const uint8_t key[16],
                       uint8_t *buf, size_t cap);

/* Checks and unpacks a message: the MAC first, then the header, then every record, so a message
 * is taken whole or not at all. Returns the record count (0 for a heartbeat) or -enum vgw_sync_err. */
int vgw_sync_decode(const uint8_t *buf, size_t len, const uint8_t key[16], vgw_sync_hdr_t *hdr,
                    vgw_sync_rec_t recs[VGW_SYNC_MAX_RECS]);

/* Takes up to max notes as records (oldest first), skipping connections that ended since. */
uint32_t vgw_worker_sync_take(vgw_worker_t *w, vgw_sync_rec_t *out, uint32_t max, uint64_t now_ms);
/* Notes dropped because the outbox was full. */
uint64_t vgw_worker_sync_overflow(const vgw_worker_t *w);

/* Creates or updates the connection of r in this worker's table (the caller picks the worker:
 * vgw_sync_owner). Control of the record's content is the decoder's; this checks it against the
 * applied config. Returns VGW_SYNC_OK or an enum vgw_sync_err. */
int vgw_worker_sync_import(vgw_worker_t *w, const vgw_sync_rec_t *r, uint64_t now_ms);

/* The LIPs of a failed peer: replies to them are looked up like replies to the node's own LIPs
 * (the connections came from the peer's sync). Control thread; workers see changes at once.
 * add: 0, or -1 if addr is 0/255.255.255.255 or the set is full; del: 0, or -1 if absent. */
int vgw_dp_foreign_lip_add(vgw_dp_t *dp, uint32_t addr);
int vgw_dp_foreign_lip_del(vgw_dp_t *dp, uint32_t addr);
int vgw_dp_foreign_lip_has(const vgw_dp_t *dp, uint32_t addr);
uint32_t vgw_dp_foreign_lip_count(const vgw_dp_t *dp);

/* The worker that must hold r: the one that will receive its client's packets. With client
 * steering (which vgw-fwd turns on for sync with several workers) that is vgw_client_owner();
 * otherwise the owner of its LIP port (where the sender, if it runs as many workers, had it). */
static inline uint32_t vgw_sync_owner(const vgw_sync_rec_t *r, uint32_t nworkers, int steering)
{
    if (nworkers <= 1)
        return 0;
    if (steering)
        return vgw_client_owner(r->cip, r->vip, r->cport, r->vport, r->proto, nworkers);
    const uint8_t *lp = (const uint8_t *)&r->lport; /* network order */
    return vgw_owner_of_port((uint16_t)(lp[0] << 8 | lp[1]), nworkers);
}

#ifdef __cplusplus
}
#endif
#endif
