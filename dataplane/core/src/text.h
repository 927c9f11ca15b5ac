/* SPDX-License-Identifier: Apache-2.0
 * Line-based text input shared by the "vgw-config 1" and "vgw-delta 1" parsers: one tokenizer
 * and one set of number, address and name parsers, so both grammars accept exactly the same
 * tokens. Every input is hostile (control socket, fuzzer): lines, tokens and bytes are bounded. */
#ifndef VGW_TEXT_H
#define VGW_TEXT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "vgw/config.h"

#define VGW_TEXT_MAX_TOKENS 32

typedef struct vgw_lines {
    const char *text;
    size_t len, pos;
    unsigned lineno; /* of the line last returned */
    char buf[VGW_CFG_MAX_LINE + 1];
} vgw_lines_t;

void vgw_lines_init(vgw_lines_t *l, const char *text, size_t len);

/* Tokens of the next line that has any (comments after '#' and blank lines are skipped).
 * Returns the number of tokens, 0 at the end of the input, or -1 for a bad line (too long,
 * NUL or non-printable byte, too many tokens) with err set to "line N: reason". Tokens point
 * into l->buf and live until the next call. */
int vgw_lines_next(vgw_lines_t *l, char **tok, char *err, size_t errlen);

/* "line N: " + the formatted reason into err. Always returns -1. */
int vgw_text_fail(char *err, size_t errlen, unsigned lineno, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Strict unsigned decimal: digits only, no sign, no leading zeros beyond "0", at most max. */
int vgw_parse_u64(const char *s, uint64_t max, uint64_t *out);
/* Dotted quad, exactly four decimal octets without leading zeros; network order. */
int vgw_parse_ipv4(const char *s, uint32_t *out);
/* A usable unicast address: not 0/8, 127/8, multicast, class E or broadcast. */
int vgw_ipv4_unicast(uint32_t a_net);
/* An address of either family: a dotted quad (strictly, as vgw_parse_ipv4) gives VGW_AF_INET in
 * out->v4, anything with a ':' is IPv6 text (RFC 4291 section 2.2, at most 45 characters, no zone
 * id "%eth0") and gives VGW_AF_INET6 in out->v6. Network order; the rest of *out is zero. Returns
 * 0, or -1 (*af and *out unspecified). Says nothing about usability: see vgw_addr_unicast. */
int vgw_parse_addr(const char *s, uint8_t *af, vgw_addr_t *out);
/* A usable unicast IPv6 address: not :: (unspecified), ::1 (loopback), ff00::/8 (multicast),
 * fe80::/10 (link-local), ::ffff:0:0/96 (IPv4-mapped) or ::/96 (IPv4-compatible). */
static inline int vgw_ipv6_unicast(const uint8_t a[16])
{
    static const uint8_t zero12[12];
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (a[0] == 0xff) /* ff00::/8, multicast */
        return 0;
    if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) /* fe80::/10, link-local */
        return 0;
    if (memcmp(a, mapped, 12) == 0) /* ::ffff:0:0/96, IPv4-mapped */
        return 0;
    return memcmp(a, zero12, 12) != 0; /* ::/96: IPv4-compatible, :: and ::1 among them */
}
/* vgw_ipv4_unicast or vgw_ipv6_unicast by family; 0 for an unknown family. */
int vgw_addr_unicast(uint8_t af, const vgw_addr_t *a);
/* 1..VGW_CFG_MAX_NAME of [A-Za-z0-9_.:/-]. */
int vgw_valid_name(const char *s);
/* "tcp_established" -> VGW_TCP_ESTABLISHED, ...; -1 if unknown. */
int vgw_state_by_name(const char *s);
/* active | draining | disabled -> enum vgw_backend_state; -1 if unknown. */
int vgw_be_state_by_name(const char *s);
const char *vgw_be_state_name(unsigned state);
const char *vgw_sched_name(unsigned sched);

#endif
