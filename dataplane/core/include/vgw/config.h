/* SPDX-License-Identifier: Apache-2.0
 * The forwarder's configuration: a parsed, validated desired state (one generation).
 *
 * Text format "vgw-config 1" (documented in docs/dataplane-core.md): line based, versioned,
 * length bounded, every token checked. The same bytes travel over the DPDK control socket, so the
 * parser treats its input as hostile: no partial results, a precise error for the first problem.
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
#define VGW_CFG_MAX_LINE 512u            /* one line, without the newline */
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

typedef struct vgw_cfg_backend {
    vgw_addr_t addr;
    uint16_t port; /* host order */
    uint16_t weight;
    uint8_t af;
    uint8_t state; /* enum vgw_backend_state */
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
    vgw_cfg_backend_t *backends;
    uint32_t nbackends, backends_cap;
    vgw_addr_t *lips;
    uint32_t nlips, lips_cap;
} vgw_cfg_service_t;

typedef struct vgw_cfg {
    uint32_t version;
    uint64_t generation;
    uint32_t timeout_s[VGW_STATE_MAX]; /* document defaults (DPVS-like unless overridden) */
    vgw_cfg_service_t *services;
    uint32_t nservices, services_cap;
} vgw_cfg_t;

/* Parses and validates a whole document. On success returns 0 and *out owns the result (free
 * with vgw_cfg_free). On error returns -1, *out is NULL and err holds "line N: reason". */
int vgw_cfg_parse(const char *text, size_t len, vgw_cfg_t **out, char *err, size_t errlen);
void vgw_cfg_free(vgw_cfg_t *cfg);

/* Default timeout in seconds for a state (DPVS values: established 90, syn_recv 30, ...). */
uint32_t vgw_default_timeout_s(unsigned state);
/* "tcp_established", "udp", ...; NULL for an unknown state. */
const char *vgw_state_name(unsigned state);

#ifdef __cplusplus
}
#endif
#endif
