/* SPDX-License-Identifier: Apache-2.0
 * The forwarder's configuration: a validated desired state, and the two text formats that
 * change it (documented in docs/dataplane-core.md and docs/forwarder.md):
 *
 *  - "vgw-config 1": a whole document (vgw_cfg_parse);
 *  - "vgw-delta 1":  operations that edit a configuration in place (vgw_cfg_delta_begin).
 *
 * The same bytes travel over the DPDK control socket, so both parsers treat their input as
 * hostile: every line, token and number is bounded and checked, and on any error nothing
 * changes and the error names the line and the reason. A configuration keeps indexes (services
 * by name and by (VIP, port, protocol), which addresses are VIPs and LIPs, backends by address)
 * so an edit costs what it changes, not what the configuration holds.
 *
 * Not thread-safe: one thread (the forwarder's control thread) owns a configuration.
 */
#ifndef VGW_CONFIG_H
#define VGW_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "vgw/types.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VGW_CFG_VERSION 1u
#define VGW_CFG_MAX_BYTES (64u << 20)    /* whole document */
#define VGW_CFG_MAX_LINE 1024u           /* one line, without the newline */
#define VGW_CFG_MAX_NAME 63u             /* service name */
#define VGW_MAX_SERVICES 4096u           /* also the service uid space */
#define VGW_MAX_BACKENDS 65536u          /* all services together; also the backend uid space */
#define VGW_MAX_BACKENDS_PER_SVC 65535u  /* Maglev slots store 16-bit backend indexes */
#define VGW_MAX_LIPS_PER_SVC 256u
#define VGW_MAGLEV_DEFAULT_M 65537u
#define VGW_MAGLEV_MAX_M 1048573u        /* largest prime below 2^20 */
#define VGW_MAX_TIMEOUT_S 86400u         /* timeouts are kept in ms in 32 bits */

/* Service flags. */
#define VGW_SVC_F_TOA 0x01u /* insert TOA into client->server TCP (SYN and first data) */

/* Flood protection of one TCP service (docs/forwarder.md, "Under attack"). Rates and counts are
 * node-wide; the engine divides them among its workers (RSS spreads flows evenly). */
enum vgw_synproxy_mode {
    VGW_SYNPROXY_OFF = 0,  /* every SYN creates a half-open entry (LVS behaviour) */
    VGW_SYNPROXY_ON = 1,   /* every SYN is answered with a cookie; state only after the ACK */
    VGW_SYNPROXY_AUTO = 2, /* on while half-open entries or the SYN rate exceed the thresholds */
};

#define VGW_AUTO_HALFOPEN_DEFAULT 10000u /* half-open entries on the node */
#define VGW_AUTO_SYN_RATE_DEFAULT 100000u /* SYNs per second to the service on the node */
#define VGW_MAX_RATE 100000000u          /* upper bound of every rate/threshold option */

typedef struct vgw_cfg_protect {
    uint8_t syn_proxy;        /* enum vgw_synproxy_mode; "syn_proxy=off|on|auto" */
    uint8_t rst_unknown;      /* "rst_unknown=on": answer segments with no connection with RST */
    uint16_t reserved;
    uint32_t auto_halfopen;   /* "syn_proxy_halfopen=N" (default VGW_AUTO_HALFOPEN_DEFAULT) */
    uint32_t auto_syn_rate;   /* "syn_proxy_syn_rate=N" per second (default VGW_AUTO_SYN_RATE_DEFAULT) */
    uint32_t conn_rate;       /* "conn_rate=N": new connections per second; 0 = unlimited */
    uint32_t conn_rate_src24; /* "conn_rate_src24=N": ... from one client /24; 0 = unlimited */
} vgw_cfg_protect_t;

typedef struct vgw_cfg_backend {
    vgw_addr_t addr;
    uint16_t port; /* host order */
    uint16_t weight;
    uint8_t af;
    uint8_t state;  /* enum vgw_backend_state */
    uint8_t edited; /* while a delta is applied: what it set already (a second set is an error) */
    uint8_t reserved;
} vgw_cfg_backend_t;

typedef struct vgw_cfg_service {
    char name[VGW_CFG_MAX_NAME + 1];
    vgw_addr_t vip;
    uint16_t port; /* host order */
    uint8_t af;
    uint8_t proto;
    uint8_t sched; /* enum vgw_sched_kind */
    uint8_t flags; /* VGW_SVC_F_* */
    uint32_t maglev_m;
    uint32_t timeout_s[VGW_STATE_MAX]; /* 0 = inherit the document default */
    vgw_cfg_protect_t protect;
    vgw_cfg_backend_t *backends; /* order is not meaningful: removal moves the last one */
    uint32_t nbackends, backends_cap;
    vgw_addr_t *lips;
    uint32_t nlips, lips_cap;
    /* A value no other version of any service had: changes with every edit of this service, so
     * the engine can tell an untouched service from a changed one without comparing it. */
    uint64_t rev;
    struct vgw_be_index *be_index; /* (address, port) -> backend, built for larger services */
} vgw_cfg_service_t;

typedef struct vgw_cfg {
    uint32_t version;
    uint64_t generation;
    uint32_t timeout_s[VGW_STATE_MAX]; /* document defaults (DPVS-like unless overridden) */
    vgw_cfg_service_t **services;       /* in document order */
    uint32_t nservices, services_cap;
    uint32_t nbackends; /* over all services */
    struct vgw_cfg_index *index;
} vgw_cfg_t;

/* Parses and validates a whole document. On success returns 0 and *out owns the result (free
 * with vgw_cfg_free). On error returns -1, *out is NULL and err holds "line N: reason". */
int vgw_cfg_parse(const char *text, size_t len, vgw_cfg_t **out, char *err, size_t errlen);
/* An empty configuration (generation 0, default timeouts); NULL if out of memory. */
vgw_cfg_t *vgw_cfg_new(void);
void vgw_cfg_free(vgw_cfg_t *cfg);
const vgw_cfg_service_t *vgw_cfg_find(const vgw_cfg_t *cfg, const char *name);
/* The first service whose VIP has family af (VGW_AF_INET6: does the configuration serve IPv6?),
 * or NULL. */
const vgw_cfg_service_t *vgw_cfg_first_of_af(const vgw_cfg_t *cfg, uint8_t af);
/* VGW_ADDR_F_* bits for an address: is it some service's VIP, some service's LIP? */
#define VGW_ADDR_F_VIP 0x1u
#define VGW_ADDR_F_LIP 0x2u
unsigned vgw_cfg_addr_kind(const vgw_cfg_t *cfg, uint8_t af, const vgw_addr_t *addr);
/* Calls fn for every distinct VIP (kind VGW_ADDR_F_VIP) or LIP address. */
void vgw_cfg_each_addr(const vgw_cfg_t *cfg, unsigned kind, void (*fn)(void *arg, uint8_t af, const vgw_addr_t *a),
                       void *arg);
/* The canonical "vgw-config 1" text of cfg, NUL-terminated, malloc'd (the caller frees it);
 * NULL if out of memory. Parsing it gives an equal configuration. */
char *vgw_cfg_serialize(const vgw_cfg_t *cfg, size_t *len);

/* ---- deltas ---------------------------------------------------------------------------------
 * "vgw-delta 1" edits cfg in place, operation by operation; each must be valid where it stands
 * (a backend added to a service that exists, not twice, ...), and the result is validated like
 * a whole document. vgw_cfg_delta_begin either fails (cfg unchanged, err = "line N: reason") or
 * succeeds with cfg edited and an open transaction: the caller then uses cfg (for instance
 * builds and publishes the engine state from it) and ends the transaction with commit (frees
 * what the delta removed) or rollback (restores cfg exactly, including every service's rev).
 * Neither can fail. While a transaction is open, cfg must not be changed otherwise. */
typedef struct vgw_cfg_txn vgw_cfg_txn_t;

int vgw_cfg_delta_begin(vgw_cfg_t *cfg, const char *text, size_t len, vgw_cfg_txn_t **txn, char *err,
                        size_t errlen);
void vgw_cfg_txn_commit(vgw_cfg_txn_t *txn);
void vgw_cfg_txn_rollback(vgw_cfg_txn_t *txn);
/* Operations the delta held, and what kind of change it made (VGW_CFG_CHANGED_*). */
uint32_t vgw_cfg_txn_ops(const vgw_cfg_txn_t *txn);
#define VGW_CFG_CHANGED_SERVICES 0x1u /* services added or removed */
#define VGW_CFG_CHANGED_ADDRS 0x2u    /* services or LIPs added or removed: the node's addresses */
unsigned vgw_cfg_txn_changes(const vgw_cfg_txn_t *txn);
/* begin + commit. */
int vgw_cfg_apply_delta(vgw_cfg_t *cfg, const char *text, size_t len, char *err, size_t errlen);

/* ---- memory ---------------------------------------------------------------------------------
 * What a configuration costs a forwarder, in bytes: the formula in docs/forwarder.md ("Memory
 * budget"), also implemented by the config service (vgw/config/budget.py) so it can refuse a
 * document before any node sees it. Every figure is an upper bound of what the forwarder
 * allocates outside its hugepage packet memory. */
typedef struct vgw_cost_params {
    uint32_t workers;
    uint32_t conn_capacity; /* per worker */
} vgw_cost_params_t;

typedef struct vgw_cost {
    uint64_t base;         /* process, libraries, fixed tables */
    uint64_t conn_tables;  /* connection tables and per-worker arrays */
    uint64_t services;     /* per-service and per-backend structures */
    uint64_t sched_tables; /* Maglev / WRR tables */
    uint64_t transient;    /* a rebuilt service's table beside the old one during a change */
    uint64_t total;
} vgw_cost_t;

void vgw_cfg_cost(const vgw_cfg_t *cfg, const vgw_cost_params_t *params, vgw_cost_t *out);

/* Default timeout in seconds for a state (DPVS values: established 90, syn_recv 30, ...). */
uint32_t vgw_default_timeout_s(unsigned state);
/* "tcp_established", "udp", ...; NULL for an unknown state. */
const char *vgw_state_name(unsigned state);

#ifdef __cplusplus
}
#endif
#endif
