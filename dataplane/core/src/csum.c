/* SPDX-License-Identifier: Apache-2.0 */
#include "internal.h"

uint32_t vgw_csum_partial(const void *buf, size_t len, uint32_t sum)
{
    const uint8_t *p = buf;
    /* 64-bit accumulator over 32-bit loads: carries pile up in the high half and are folded once,
     * which is what makes full-payload verification affordable for small packets. */
    uint64_t acc = sum;
    while (len >= 8) {
        acc += ld32(p);
        acc += ld32(p + 4);
        p += 8;
        len -= 8;
    }
    if (len >= 4) {
        acc += ld32(p);
        p += 4;
        len -= 4;
    }
    if (len >= 2) {
        acc += ld16(p);
        p += 2;
        len -= 2;
    }
    if (len) {
        /* The odd byte is the high-order byte of a word padded with zero, in memory order. */
        uint8_t tail[2] = {p[0], 0};
        acc += ld16(tail);
    }
    acc = (acc & 0xffffffffu) + (acc >> 32);
    acc = (acc & 0xffffffffu) + (acc >> 32);
    return vgw_csum_fold((uint32_t)acc) ;
}

uint16_t vgw_l4_csum_v4(uint32_t saddr, uint32_t daddr, uint8_t proto, const void *l4, uint16_t l4len)
{
    uint8_t ph[12];
    st32(ph, saddr);
    st32(ph + 4, daddr);
    ph[8] = 0;
    ph[9] = proto;
    st16(ph + 10, h2n16(l4len));
    uint32_t s = vgw_csum_partial(ph, sizeof ph, 0);
    s = vgw_csum_partial(l4, l4len, s);
    return (uint16_t)~vgw_csum_fold(s);
}
