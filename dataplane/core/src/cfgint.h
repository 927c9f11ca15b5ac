/* SPDX-License-Identifier: Apache-2.0
 * Internal interface of the configuration (config.c) for its two grammars (the document parser
 * in config.c, the delta parser in delta.c) and the cost model: indexes, and the primitive edits
 * that keep them right. Each primitive checks its own rule, changes nothing when it fails, and
 * records in an undo journal (when given one) how to reverse itself exactly. */
#ifndef VGW_CFGINT_H
#define VGW_CFGINT_H

#include <stddef.h>
#include <stdint.h>

#include "hashset.h"
#include "vgw/config.h"

struct vgw_cfg_index {
    vgw_vset_t by_name; /* vgw_cfg_service_t * */
    vgw_vset_t by_key;  /* vgw_cfg_service_t *, by (af, VIP, port, protocol) */
    vgw_amap_t vips;    /* address -> services with that VIP */
    vgw_amap_t lips;    /* address -> (service, LIP) pairs with that LIP */
};

/* Backends of one service by (af, address, port); values are backend index + 1. */
struct vgw_be_index {
    vgw_vset_t set;
};

typedef struct vgw_undo vgw_undo_t;

uint64_t vgw_cfg_next_rev(void);
vgw_cfg_service_t *vgw_cfg_svc_alloc(void);
void vgw_cfg_svc_free(vgw_cfg_service_t *s);

/* Parses the arguments of a service definition into s:
 *   <name> <tcp|udp> <vip> <port> <maglev|wrr|wlc> [table=P] [toa=on|off] [syn_proxy=off|on|auto]
 *   [syn_proxy_halfopen=N] [syn_proxy_syn_rate=N] [conn_rate=N] [conn_rate_src24=N]
 *   [rst_unknown=on|off] [timeout.<state>=S]...
 * t[0] is the name; the VIP is IPv4 or IPv6 (s->af), and an IPv6 service takes neither
 * syn_proxy=on|auto nor rst_unknown=on. Returns 0, or -1 with reason set. */
int vgw_cfg_parse_service(char **t, int n, vgw_cfg_service_t *s, char *reason, size_t rlen);
/* "<addr> <port>" of a backend (a unicast IPv4 or IPv6 address, port 1..65535). */
int vgw_cfg_parse_be_addr(const char *addr, const char *port, vgw_cfg_backend_t *b, char *reason, size_t rlen);

vgw_cfg_service_t *vgw_cfg_lookup(vgw_cfg_t *cfg, const char *name);
vgw_cfg_backend_t *vgw_cfg_be_find(vgw_cfg_service_t *s, uint8_t af, const vgw_addr_t *addr, uint16_t port);

/* Primitives. u may be NULL (no journal: a document being built). */
int vgw_cfg_svc_add(vgw_cfg_t *cfg, vgw_cfg_service_t *s, vgw_undo_t *u, char *reason, size_t rlen);
int vgw_cfg_svc_remove(vgw_cfg_t *cfg, vgw_cfg_service_t *s, vgw_undo_t *u, char *reason, size_t rlen);
int vgw_cfg_lip_add(vgw_cfg_t *cfg, vgw_cfg_service_t *s, uint8_t af, const vgw_addr_t *a, vgw_undo_t *u,
                    char *reason, size_t rlen);
int vgw_cfg_lip_remove(vgw_cfg_t *cfg, vgw_cfg_service_t *s, uint8_t af, const vgw_addr_t *a, vgw_undo_t *u,
                       char *reason, size_t rlen);
int vgw_cfg_be_add(vgw_cfg_t *cfg, vgw_cfg_service_t *s, const vgw_cfg_backend_t *b, vgw_undo_t *u, char *reason,
                   size_t rlen);
int vgw_cfg_be_remove(vgw_cfg_t *cfg, vgw_cfg_service_t *s, const vgw_cfg_backend_t *key, vgw_undo_t *u,
                      char *reason, size_t rlen);
/* Sets weight (when weight >= 0) and/or state (when state >= 0) of an existing backend. */
int vgw_cfg_be_set(vgw_cfg_t *cfg, vgw_cfg_service_t *s, const vgw_cfg_backend_t *key, int32_t weight, int state,
                   vgw_undo_t *u, char *reason, size_t rlen);
int vgw_cfg_set_generation(vgw_cfg_t *cfg, uint64_t generation, vgw_undo_t *u, char *reason, size_t rlen);

/* The journal. */
vgw_undo_t *vgw_undo_new(void);
/* Reverses every recorded edit (newest first) and frees the journal. Cannot fail. */
void vgw_undo_rollback(vgw_cfg_t *cfg, vgw_undo_t *u);
/* Keeps the edits: frees what they removed, and the journal. */
void vgw_undo_commit(vgw_undo_t *u);
/* Services the journal added or whose LIPs it removed: each must still have a LIP. Returns 0 or
 * -1 with reason set. */
int vgw_undo_check_lips(vgw_cfg_t *cfg, const vgw_undo_t *u, char *reason, size_t rlen);
/* VGW_CFG_CHANGED_* bits of the recorded edits. */
unsigned vgw_undo_changes(const vgw_undo_t *u);

/* Room for any address's text (INET6_ADDRSTRLEN) and for an endpoint's ("[v6]:65535"). */
#define VGW_ADDR_STR_MAX 48u
#define VGW_ENDPOINT_STR_MAX 56u
/* "192.0.2.1", "2001:db8::1" (RFC 5952: what vgw_parse_addr reads back to the same bytes). */
const char *vgw_addr_str(uint8_t af, const vgw_addr_t *a, char *buf, size_t len);
/* "192.0.2.1:80", "[2001:db8::1]:80". */
const char *vgw_endpoint_str(uint8_t af, const vgw_addr_t *a, uint16_t port, char *buf, size_t len);
/* "IPv4" or "IPv6". */
const char *vgw_af_name(uint8_t af);

#endif
