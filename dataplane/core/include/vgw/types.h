/* SPDX-License-Identifier: Apache-2.0
 * VGW dataplane core: basic types shared by every public header.
 *
 * The core never includes DPDK headers: packets come in as plain (pointer, length, headroom)
 * descriptors so the same code runs under DPDK, in unit tests, under libFuzzer and in the bench.
 */
#ifndef VGW_TYPES_H
#define VGW_TYPES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VGW_AF_INET  4u
#define VGW_AF_INET6 6u

#define VGW_PROTO_ICMP 1u
#define VGW_PROTO_TCP  6u
#define VGW_PROTO_UDP  17u

/* Addresses are kept exactly as they appear on the wire (network byte order) so the fast path
 * never byte-swaps them. The union is sized for IPv6 so that config, registries and verdicts do
 * not change shape when IPv6 forwarding lands; IPv4 uses v4 and leaves the rest zero. */
typedef union vgw_addr {
    uint32_t v4;
    uint32_t w[4];
    uint8_t v6[16];
} vgw_addr_t;

/* Bytes TOA (TCP option 254, IPv4 flavour) adds to a packet; callers must leave at least this
 * much headroom in front of every packet buffer (VGW_TOA6_LEN for IPv6 services) or TOA is
 * skipped (and counted). */
#define VGW_TOA_LEN 8u
/* TOA for an IPv6 client (DPVS's layout: kind 254, length 20, port, 16-byte address). */
#define VGW_TOA6_LEN 20u

/* Input hints, normally filled from NIC offload results. Without them the core verifies in
 * software, which is the safe default. */
#define VGW_PKT_F_IP_CSUM_GOOD 0x0001u
#define VGW_PKT_F_L4_CSUM_GOOD 0x0002u

typedef struct vgw_pkt {
    uint8_t *data;     /* first byte of the Ethernet header; may move back by the TOA size */
    uint16_t len;      /* frame length in bytes (contiguous buffer) */
    uint16_t headroom; /* writable bytes in front of data */
    uint16_t flags;    /* VGW_PKT_F_* */
    uint16_t tailroom; /* writable bytes after data + len (the SYN proxy builds replies in place) */
} vgw_pkt_t;

enum vgw_action {
    VGW_ACT_DROP = 0,    /* arg = enum vgw_drop_reason */
    VGW_ACT_FORWARD = 1, /* port + nexthop say where; L2 rewrite is the caller's job */
    VGW_ACT_HANDOFF = 2, /* arg = worker id that owns this flow; pass the untouched packet */
    VGW_ACT_LOCAL = 3,   /* not for the load balancer (ARP, neighbour discovery, node traffic, pings) */
};

enum vgw_port {
    VGW_PORT_EXT = 0, /* towards clients (the side VIPs are announced on) */
    VGW_PORT_INT = 1, /* towards real servers; the same NIC in single-arm mode */
};

typedef struct vgw_verdict {
    uint8_t action; /* enum vgw_action */
    uint8_t port;   /* enum vgw_port, for VGW_ACT_FORWARD */
    uint16_t arg;   /* drop reason or owner worker */
    uint8_t af;     /* family of nexthop */
    uint8_t reserved[3];
    vgw_addr_t nexthop; /* destination IP to resolve (the caller applies its routes/ARP) */
} vgw_verdict_t;

enum vgw_sched_kind {
    VGW_SCHED_MAGLEV = 0,
    VGW_SCHED_WRR = 1,
    VGW_SCHED_WLC = 2,
};

enum vgw_backend_state {
    VGW_BE_ACTIVE = 0,   /* receives new connections */
    VGW_BE_DRAINING = 1, /* keeps its connections, gets no new ones */
    VGW_BE_DISABLED = 2, /* administratively out; existing connections are left alone */
};

/* Connection states; the TCP ones follow LVS/DPVS naming so operators can compare. Values are
 * also indexes into the timeout table. */
enum vgw_conn_state {
    VGW_TCP_NONE = 0,
    VGW_TCP_ESTABLISHED,
    VGW_TCP_SYN_SENT,
    VGW_TCP_SYN_RECV,
    VGW_TCP_FIN_WAIT,
    VGW_TCP_TIME_WAIT,
    VGW_TCP_CLOSE,
    VGW_TCP_CLOSE_WAIT,
    VGW_TCP_LAST_ACK,
    VGW_TCP_LISTEN,
    VGW_TCP_SYNACK,
    VGW_UDP_NORMAL,
    VGW_STATE_MAX
};

#ifdef __cplusplus
}
#endif
#endif
