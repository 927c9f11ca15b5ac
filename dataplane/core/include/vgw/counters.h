/* SPDX-License-Identifier: Apache-2.0
 * Per-worker counters. Every dropped packet increments exactly one drop_* counter; the list is
 * an X-macro so names, enum values and docs cannot drift apart. */
#ifndef VGW_COUNTERS_H
#define VGW_COUNTERS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Drop reasons (the verdict's arg for VGW_ACT_DROP). */
#define VGW_DROP_REASONS(X)                                                                        \
    X(NONE, "none")                                                                                \
    X(ETH_TRUNC, "eth_trunc")                   /* shorter than an Ethernet/VLAN header */         \
    X(IP_TRUNC, "ip_trunc")                     /* shorter than the IP header it claims */         \
    X(IP_VERSION, "ip_version")                 /* version differs from the ethertype */          \
    X(IP_BAD_IHL, "ip_bad_ihl")                 /* IHL < 5 */                                      \
    X(IP_BAD_LEN, "ip_bad_len")                 /* total length < IHL or > frame */                \
    X(IP_BAD_CSUM, "ip_bad_csum")               /* IPv4 header checksum */                         \
    X(IP_BAD_OPTIONS, "ip_bad_options")         /* malformed option TLVs */                        \
    X(IP_SRC_ROUTE, "ip_src_route")             /* LSRR/SSRR options: never honoured */            \
    X(IP_FRAG, "ip_frag")                       /* fragment to a VIP/LIP: see docs policy */       \
    X(IP_BAD_SRC, "ip_bad_src")                 /* martian source (0/8, 127/8, multicast, bcast) */\
    X(TTL_EXCEEDED, "ttl_exceeded")             /* TTL would reach 0 when forwarded */             \
    X(TCP_TRUNC, "tcp_trunc")                   /* fewer than 20 bytes of TCP */                   \
    X(TCP_BAD_OFF, "tcp_bad_off")               /* data offset < 5 or beyond the segment */        \
    X(TCP_BAD_FLAGS, "tcp_bad_flags")           /* SYN+FIN, SYN+RST, no flags */                   \
    X(UDP_TRUNC, "udp_trunc")                   /* fewer than 8 bytes of UDP */                    \
    X(UDP_BAD_LEN, "udp_bad_len")               /* UDP length != IP payload length */              \
    X(L4_BAD_PORT, "l4_bad_port")               /* source or destination port 0 */                 \
    X(L4_BAD_CSUM, "l4_bad_csum")               /* TCP/UDP checksum */                             \
    X(ICMP_TRUNC, "icmp_trunc")                 /* shorter than the ICMP header */                 \
    X(ICMP_BAD_CSUM, "icmp_bad_csum")           /* ICMP checksum */                                \
    X(ICMP_INNER_BAD, "icmp_inner_bad")         /* quoted packet too short or inconsistent */      \
    X(ICMP_NO_CONN, "icmp_no_conn")             /* error quoting a flow we do not know */          \
    X(PROTO_UNSUPPORTED, "proto_unsupported")   /* not TCP/UDP/ICMP to a VIP/LIP */                \
    X(NO_SERVICE, "no_service")                 /* VIP known, (port, proto) not served */          \
    X(NO_BACKEND, "no_backend")                 /* no schedulable backend */                       \
    X(TCP_NO_CONN, "tcp_no_conn")               /* non-SYN segment with no connection */           \
    X(LIP_NO_CONN, "lip_no_conn")               /* packet to a LIP with no connection */           \
    X(NO_LPORT, "no_lport")                     /* LIP ports exhausted for this backend */         \
    X(CONN_TABLE_FULL, "conn_table_full")       /* no free connection slot */                      \
    X(LIMIT_CPS, "limit_cps")                   /* service's new-connection rate cap */            \
    X(LIMIT_SRC24, "limit_src24")               /* service's per-client-/24 rate cap */            \
    X(SYNPROXY_BAD_COOKIE, "synproxy_bad_cookie") /* ACK with no connection and no valid cookie */ \
    X(SYNPROXY_NO_ROOM, "synproxy_no_room")     /* no headroom/tailroom to build a reply */        \
    X(SYNPROXY_WAIT, "synproxy_wait")           /* client segment while the server handshakes */  \
    X(SYNPROXY_SYN_ON_CONN, "synproxy_syn_on_conn") /* SYN on a live proxied connection */    \
    X(IP6_BAD_EXT, "ip6_bad_ext")               /* IPv6 extension header malformed, or > 8 of them */

enum vgw_drop_reason {
#define VGW_X_(e, s) VGW_DROP_##e,
    VGW_DROP_REASONS(VGW_X_)
#undef VGW_X_
    VGW_DROP_MAX
};

/* Other events. */
#define VGW_EVENT_COUNTERS(X)                                                                      \
    X(RX, "rx")                         /* packets given to vgw_worker_process */                  \
    X(FWD_IN, "fwd_inbound")            /* client -> real server, translated */                    \
    X(FWD_OUT, "fwd_outbound")          /* real server -> client, translated */                    \
    X(LOCAL, "local")                   /* handed to the caller's local stack */                   \
    X(HANDOFF, "handoff")               /* belongs to another worker */                            \
    X(DROP, "drop")                     /* sum of all drop_* */                                    \
    X(CONN_NEW, "conn_new")             /* connections created */                                  \
    X(CONN_EXPIRED, "conn_expired")     /* connections removed by timeout */                       \
    X(CONN_REUSED, "conn_reused")       /* SYN on a TIME_WAIT/CLOSE tuple replaced it */           \
    X(CONN_ACTIVE, "conn_active")       /* gauge: connections in the table */                      \
    X(TOA_ADDED, "toa_added")           /* TOA option inserted */                                  \
    X(TOA_NO_ROOM, "toa_no_room")       /* TOA wanted but no option space/headroom/MTU */          \
    X(MSS_CLAMPED, "mss_clamped")       /* SYN-ACK MSS reduced for TOA */                          \
    X(ICMP_XLATE_IN, "icmp_xlate_in")   /* ICMP error from the client side -> real server */       \
    X(ICMP_XLATE_OUT, "icmp_xlate_out") /* ICMP error from the server side -> client */            \
    X(SWEPT, "swept")                   /* connection slots examined by housekeeping */            \
    X(CONN_HALFOPEN, "conn_halfopen")   /* gauge: TCP connections with only the client SYN seen */ \
    X(CONN_EVICTED, "conn_evicted")     /* half-open connections evicted under table pressure */   \
    X(SYN_COOKIE_SENT, "syn_cookie_sent")       /* SYN answered with a cookie SYN-ACK */           \
    X(SYN_COOKIE_OK, "syn_cookie_ok")           /* ACK validated a cookie: connection opened */    \
    X(SYN_COOKIE_BAD, "syn_cookie_bad")         /* ACK to a proxied service failed validation */   \
    X(SYNPROXY_RS_RST, "synproxy_rs_rst")       /* server refused the proxied SYN: client reset */ \
    X(SYNPROXY_HELD, "synproxy_held")           /* client data held until the server answered */   \
    X(RST_SENT, "rst_sent")                     /* RST answered to a segment with no connection */ \
    X(RST_RATELIMITED, "rst_ratelimited")       /* ... not answered: RST rate cap reached */       \
    X(LPORT_EXHAUSTED, "lport_exhausted")       /* no free LIP port (also per LIP) */

enum vgw_event_counter {
#define VGW_X_(e, s) VGW_CNT_##e,
    VGW_EVENT_COUNTERS(VGW_X_)
#undef VGW_X_
    VGW_CNT_EVENTS_MAX
};

/* Flat counter vector: events first, then one slot per drop reason. */
#define VGW_CNT_DROP_BASE VGW_CNT_EVENTS_MAX
#define VGW_CNT_MAX (VGW_CNT_EVENTS_MAX + VGW_DROP_MAX)

typedef struct vgw_counters {
    uint64_t v[VGW_CNT_MAX];
} vgw_counters_t;

/* Per-service counters (vgw_worker_svc_counters): the flood-protection view of one service. */
#define VGW_SVC_COUNTERS(X)                                                                        \
    X(SYN_COOKIE_SENT, "syn_cookie_sent")                                                          \
    X(SYN_COOKIE_OK, "syn_cookie_ok")                                                              \
    X(SYN_COOKIE_BAD, "syn_cookie_bad")                                                            \
    X(CONN_EVICTED, "conn_evicted")                                                                \
    X(LIMIT_CPS, "drop_limit_cps")                                                                 \
    X(LIMIT_SRC24, "drop_limit_src24")                                                             \
    X(NO_CONN, "drop_no_conn")        /* mid-flow TCP segments without a connection */             \
    X(RST_SENT, "rst_sent")                                                                        \
    X(LPORT_EXHAUSTED, "lport_exhausted")                                                          \
    X(SYNPROXY_ACTIVE, "syn_proxy_active") /* gauge: 1 while the proxy answers SYNs (on, or auto engaged) */

enum vgw_svc_counter {
#define VGW_X_(e, s) VGW_SCNT_##e,
    VGW_SVC_COUNTERS(VGW_X_)
#undef VGW_X_
    VGW_SCNT_MAX
};

typedef struct vgw_svc_counters {
    uint64_t v[VGW_SCNT_MAX];
} vgw_svc_counters_t;

const char *vgw_svc_counter_name(unsigned idx);

/* Stable names ("rx", "drop_ip_bad_csum", ...) for telemetry export; NULL past the end. */
const char *vgw_counter_name(unsigned idx);
const char *vgw_drop_reason_name(unsigned reason);

#ifdef __cplusplus
}
#endif
#endif
