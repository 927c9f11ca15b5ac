/* SPDX-License-Identifier: Apache-2.0
 * Per-mbuf private area of vgw-fwd's mempool: what the slow path needs to know about a packet a
 * worker handed it (ARP to answer, or a translated packet waiting for its next hop's MAC). */
#ifndef VGW_FWD_PRIV_H
#define VGW_FWD_PRIV_H

#include <stdint.h>

#include <rte_mbuf.h>

#define VGW_UNLIKELY_FWD(x) __builtin_expect(!!(x), 0)

enum fwd_priv_kind {
    FWD_PRIV_NONE = 0,
    FWD_PRIV_ARP = 1,        /* an ARP frame received on port `role` */
    FWD_PRIV_UNRESOLVED = 2, /* translated packet for `role`, next hop `nexthop` unresolved */
    FWD_PRIV_TX = 3,         /* ready frame for port `role` (control thread -> worker txq) */
    FWD_PRIV_ECHO = 4,       /* ICMP echo request received on port `role` (maybe for us) */
};

typedef struct fwd_priv {
    uint8_t kind;
    uint8_t role;
    uint16_t reserved;
    uint32_t nexthop; /* network order */
} fwd_priv_t;

#define FWD_PRIV_SIZE RTE_ALIGN(sizeof(fwd_priv_t), RTE_MBUF_PRIV_ALIGN)

static inline fwd_priv_t *fwd_priv(struct rte_mbuf *m)
{
    return (fwd_priv_t *)rte_mbuf_to_priv(m);
}

#endif
