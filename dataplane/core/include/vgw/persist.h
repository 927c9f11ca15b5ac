/* SPDX-License-Identifier: Apache-2.0
 * Connection tables that outlive the process (docs/forwarder.md, "Restarts and upgrades").
 *
 * With vgw_worker_params_t.persist set, a worker's connection records and hash index live in a
 * file mapped MAP_SHARED (hugetlbfs or tmpfs: memory, no disk I/O), so a process that exits, is
 * killed or is replaced by a newer binary leaves them behind and the next one continues every
 * connection. The file is
 *
 *   header (4 KiB, padded to 2 MiB) | records: capacity x 64 B (to 2 MiB) | buckets: nb x 64 B
 *
 * The header names the layout: magic, VGW_PERSIST_LAYOUT, header/record/bucket sizes, capacity,
 * bucket mask, the table's hash seed (reused: the index was built with it), worker id and count,
 * the boot it was written on and a checksum over all of that; then what changes per process:
 * whether the last writer closed it cleanly, its pid, and its clock offset (records' expiry
 * times are on the writer's clock; they are shifted onto the new one). A file whose layout
 * differs in anything is refused with a message saying what differs and what to do; nothing
 * in it is changed. Everything else a worker keeps (free list, half-open ring, WLC counts,
 * half-open count, SYN-proxy held segments) is derived from the records at attach, so it needs
 * no layout and cannot disagree with them.
 *
 * Service and backend uids are small ids of the process that created a connection; at attach
 * they are re-derived from the records' (VIP, port, proto) and (real server, port) in the state
 * applied at that moment: apply the last configuration before creating the workers (vgw-fwd
 * keeps it beside the tables). A record whose service or backend is not there keeps forwarding
 * like a connection of a removed service or backend does: its packets still flow, it uses the
 * document's default timeouts and counts for no backend's WLC load.
 *
 * IPv6 records name their VIP and LIP by id in the node's IPv6 address table: the header's
 * padding keeps a copy of it (its count in a per-process header field that older files leave 0),
 * written before any connection can name a new id. At attach the copy's addresses are taken into
 * the node's table and the records' ids rewritten to the node's (the same ids when the table was
 * built in the same order); a record the copy cannot name is dropped and counted (v6_lost).
 */
#ifndef VGW_PERSIST_H
#define VGW_PERSIST_H

#include <stddef.h>
#include <stdint.h>

#include "vgw/engine.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bump when vgw_conn_t, vgw_bucket_t, the hash, the header or the meaning of a field changes
 * in a way an older or newer binary would misread. Adding a flag bit old binaries ignore, or
 * giving reserved bytes that are zero in old records a meaning where zero is harmless, is not. */
#define VGW_PERSIST_LAYOUT 1u
#define VGW_PERSIST_HDR_SIZE 4096u

/* vgw_persist_params_t.flags */
#define VGW_PERSIST_F_DISCARD 0x1u /* start empty whatever the file holds (it is re-initialised) */

typedef struct vgw_persist_params {
    const char *path;        /* this worker's file; created (mode 0600) if absent */
    uint32_t flags;          /* VGW_PERSIST_F_* */
    int64_t clock_offset_ms; /* now_ms + this = a clock shared by every process of this boot
                              * (CLOCK_MONOTONIC in ms): records' expiry times are moved onto
                              * the new process's now_ms with it */
    uint64_t now_ms;         /* the caller's clock at create: records expired by then are dropped */
    const char *writer;      /* recorded in the header (e.g. "vgw-fwd 1.4.0 pid 42"); may be NULL */
} vgw_persist_params_t;

enum vgw_persist_status {
    VGW_PERSIST_NONE = 0,     /* no persistence (private memory) */
    VGW_PERSIST_CREATED = 1,  /* a new, empty file */
    VGW_PERSIST_ATTACHED = 2, /* an existing file: its connections continue */
    VGW_PERSIST_REFUSED = 3,  /* an existing file this build cannot use: see err; file untouched */
    VGW_PERSIST_ERROR = 4,    /* I/O or memory error: see err */
};

typedef struct vgw_persist_report {
    int status;             /* enum vgw_persist_status */
    uint32_t restored;      /* connections continued */
    uint32_t expired;       /* records that had expired by now (dropped) */
    uint32_t invalid;       /* records with impossible contents (dropped; a torn write) */
    uint32_t orphaned;      /* restored, but their service or backend is not in the applied state */
    uint32_t v6_lost;       /* IPv6 records whose VIP or LIP id the file's copy of the address
                             * table does not name, or the node's table had no room for (dropped) */
    uint32_t prev_pid;      /* the process that wrote the file last */
    uint8_t prev_clean;     /* 1 = it closed the file (stop), 0 = it died with the file open */
    uint8_t index_rebuilt;  /* 1 = the hash index did not match the records and was rebuilt */
    uint8_t reserved[2];
    uint32_t attaches;      /* processes that attached this file before, including the last */
    uint64_t attach_us;     /* time the attach took (validate, remap, recount) */
    char prev_writer[64];
    char err[384];
} vgw_persist_report_t;

/* The layout this build writes, as the header states it: what vgw_persist_check compares. */
typedef struct vgw_persist_layout {
    uint32_t capacity;
    uint32_t worker_id, nworkers;
} vgw_persist_layout_t;

/* Checks a file's header bytes (the first len bytes of a file of file_size bytes) against the
 * layout this build would use. Returns 0 if the file can be attached, 1 if it is empty/zeroed
 * (never completed: safe to re-initialise), -1 if refused (err says why and what to do).
 * vgw_worker_create does this itself; exposed for tools and the fuzzer. */
int vgw_persist_check(const void *hdr, size_t len, uint64_t file_size, const vgw_persist_layout_t *want,
                      char *err, size_t errlen);

/* Bytes of the file a worker of this capacity uses. */
uint64_t vgw_persist_file_size(uint32_t capacity);

/* Re-derives service/backend uids and per-backend counts of w's connections from the state
 * applied now (after the first apply, when the workers were created before it). Call on the
 * worker's thread, or while it does not run. Returns the number of orphaned connections. */
uint32_t vgw_worker_persist_remap(vgw_worker_t *w);

#ifdef __cplusplus
}
#endif
#endif
