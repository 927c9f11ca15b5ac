/* SPDX-License-Identifier: Apache-2.0
 * Packets the in-memory benchmarks feed the core (include after internal.h). */
#ifndef VGW_BENCHPKT_H
#define VGW_BENCHPKT_H

#include <string.h>

#define FRAME 64u     /* the established-traffic benchmarks' frame: Ethernet + IPv4 + TCP + 10 bytes */
#define FRAME6 84u    /* the same over IPv6: Ethernet + IPv6 + TCP + 10 bytes */
#define SLOT 256u     /* buffer per packet: headroom + frame */
#define HEADROOM 128u

/* Ethernet + IPv4 + TCP header (hdrlen bytes, options left zero) for a segment of l4len bytes,
 * IPv4 checksum set; returns the TCP header for the caller to add options, payload and checksum. */
static inline uint8_t *bench_ip4_tcp(uint8_t *f, uint16_t l4len, uint32_t src, uint32_t dst, uint16_t sport,
                                     uint16_t dport, uint32_t seq, uint32_t ack, uint8_t flags, uint16_t win,
                                     uint8_t hdrlen)
{
    memset(f, 0, 34u + l4len);
    f[12] = 0x08;
    uint8_t *l3 = f + 14, *l4 = l3 + 20;
    l3[0] = 0x45;
    st16(l3 + 2, h2n16((uint16_t)(20 + l4len)));
    l3[8] = 64;
    l3[9] = VGW_PROTO_TCP;
    st32(l3 + 12, src);
    st32(l3 + 16, dst);
    st16(l3 + 10, (uint16_t)~vgw_csum_fold(vgw_csum_partial(l3, 20, 0)));
    st16(l4, sport);
    st16(l4 + 2, dport);
    st32(l4 + 4, h2n32(seq));
    st32(l4 + 8, h2n32(ack));
    l4[12] = (uint8_t)(hdrlen / 4 << 4);
    l4[13] = flags;
    st16(l4 + 14, h2n16(win));
    return l4;
}

/* A TCP frame of len bytes (Ethernet + IPv4 + TCP + payload, len >= 54) with valid checksums;
 * addresses and ports in network order; an ACK acknowledges 5001. */
static inline void bench_tcp_frame(uint8_t *f, uint16_t len, uint32_t src, uint32_t dst, uint16_t sport,
                                   uint16_t dport, uint8_t flags)
{
    uint16_t l4len = (uint16_t)(len - 34);
    uint8_t *l4 = bench_ip4_tcp(f, l4len, src, dst, sport, dport, 1000, (flags & 0x10) ? 5001 : 0, flags, 65535, 20);
    for (uint16_t i = 54; i < len; i++)
        f[i] = (uint8_t)('0' + (i - 54) % 10);
    st16(l4 + 16, vgw_l4_csum_v4(src, dst, VGW_PROTO_TCP, l4, l4len));
}

/* The IPv6 twin of bench_tcp_frame (len >= 74; addresses 16 bytes each). */
static inline void bench_tcp_frame6(uint8_t *f, uint16_t len, const uint8_t *src, const uint8_t *dst, uint16_t sport,
                                    uint16_t dport, uint8_t flags)
{
    uint16_t l4len = (uint16_t)(len - 54);
    memset(f, 0, len);
    f[12] = 0x86, f[13] = 0xdd;
    uint8_t *l3 = f + 14, *l4 = l3 + 40;
    l3[0] = 0x60;
    st16(l3 + 4, h2n16(l4len));
    l3[6] = VGW_PROTO_TCP;
    l3[7] = 64;
    memcpy(l3 + 8, src, 16);
    memcpy(l3 + 24, dst, 16);
    st16(l4, sport);
    st16(l4 + 2, dport);
    st32(l4 + 4, h2n32(1000));
    st32(l4 + 8, h2n32((flags & 0x10) ? 5001 : 0));
    l4[12] = 5 << 4;
    l4[13] = flags;
    st16(l4 + 14, h2n16(65535));
    for (uint16_t i = 74; i < len; i++)
        f[i] = (uint8_t)('0' + (i - 74) % 10);
    st16(l4 + 16, vgw_l4_csum_v6(src, dst, VGW_PROTO_TCP, l4, l4len));
}

#endif
