/* SPDX-License-Identifier: Apache-2.0
 * Packets the in-memory benchmarks feed the core (include after internal.h). */
#ifndef VGW_BENCHPKT_H
#define VGW_BENCHPKT_H

#include <string.h>

/* A TCP frame of len bytes (Ethernet + IPv4 + TCP + payload, len >= 54) with valid checksums;
 * addresses and ports in network order; an ACK acknowledges 5001. */
static inline void bench_tcp_frame(uint8_t *f, uint16_t len, uint32_t src, uint32_t dst, uint16_t sport,
                                   uint16_t dport, uint8_t flags)
{
    memset(f, 0, len);
    f[12] = 0x08;
    uint8_t *l3 = f + 14, *l4 = l3 + 20;
    l3[0] = 0x45;
    st16(l3 + 2, h2n16((uint16_t)(len - 14)));
    l3[8] = 64;
    l3[9] = VGW_PROTO_TCP;
    st32(l3 + 12, src);
    st32(l3 + 16, dst);
    st16(l3 + 10, (uint16_t)~vgw_csum_fold(vgw_csum_partial(l3, 20, 0)));
    st16(l4, sport);
    st16(l4 + 2, dport);
    st32(l4 + 4, h2n32(1000));
    st32(l4 + 8, h2n32((flags & 0x10) ? 5001 : 0));
    l4[12] = 5 << 4;
    l4[13] = flags;
    st16(l4 + 14, h2n16(65535));
    for (uint16_t i = 54; i < len; i++)
        f[i] = (uint8_t)('0' + (i - 54) % 10);
    st16(l4 + 16, vgw_l4_csum_v4(src, dst, VGW_PROTO_TCP, l4, (uint16_t)(len - 34)));
}

#endif
