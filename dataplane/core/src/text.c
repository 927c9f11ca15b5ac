/* SPDX-License-Identifier: Apache-2.0
 * Tokenizer and token parsers shared by the config and delta grammars (text.h). */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"
#include "text.h"

void vgw_lines_init(vgw_lines_t *l, const char *text, size_t len)
{
    l->text = text;
    l->len = text ? len : 0;
    l->pos = 0;
    l->lineno = 0;
    l->buf[0] = 0;
}

int vgw_text_fail(char *err, size_t errlen, unsigned lineno, const char *fmt, ...)
{
    if (!err || !errlen)
        return -1;
    int n = lineno ? snprintf(err, errlen, "line %u: ", lineno) : 0;
    if (n >= 0 && (size_t)n < errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int tokenize(char *line, char **tok)
{
    int n = 0;
    char *s = line;
    while (*s) {
        while (*s == ' ' || *s == '\t')
            *s++ = 0;
        if (!*s)
            break;
        if (n == VGW_TEXT_MAX_TOKENS)
            return -1;
        tok[n++] = s;
        while (*s && *s != ' ' && *s != '\t')
            s++;
    }
    return n;
}

int vgw_lines_next(vgw_lines_t *l, char **tok, char *err, size_t errlen)
{
    while (l->pos < l->len) {
        l->lineno++;
        size_t start = l->pos;
        const char *nl = memchr(l->text + start, '\n', l->len - start);
        size_t end = nl ? (size_t)(nl - l->text) : l->len;
        l->pos = nl ? end + 1 : l->len;
        size_t llen = end - start;
        if (llen && l->text[start + llen - 1] == '\r')
            llen--;
        if (llen > VGW_CFG_MAX_LINE)
            return vgw_text_fail(err, errlen, l->lineno, "line longer than %u bytes", VGW_CFG_MAX_LINE);
        for (size_t i = 0; i < llen; i++) {
            unsigned char c = (unsigned char)l->text[start + i];
            if (c == 0)
                return vgw_text_fail(err, errlen, l->lineno, "NUL byte");
            if ((c < 0x20 && c != '\t') || c > 0x7e)
                return vgw_text_fail(err, errlen, l->lineno, "non-printable byte 0x%02x", c);
        }
        memcpy(l->buf, l->text + start, llen);
        l->buf[llen] = 0;
        char *hash = strchr(l->buf, '#');
        if (hash)
            *hash = 0;
        int n = tokenize(l->buf, tok);
        if (n < 0)
            return vgw_text_fail(err, errlen, l->lineno, "too many tokens (max %u)", VGW_TEXT_MAX_TOKENS);
        if (n > 0)
            return n;
    }
    return 0;
}

int vgw_parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    if (!*s || strlen(s) > 20)
        return -1;
    if (s[0] == '0' && s[1])
        return -1;
    uint64_t v = 0;
    for (const char *c = s; *c; c++) {
        if (*c < '0' || *c > '9')
            return -1;
        uint64_t d = (uint64_t)(*c - '0');
        if (v > (max - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

int vgw_parse_ipv4(const char *s, uint32_t *out)
{
    uint8_t b[4];
    const char *c = s;
    for (int i = 0; i < 4; i++) {
        unsigned v = 0, nd = 0;
        while (*c >= '0' && *c <= '9') {
            v = v * 10 + (unsigned)(*c - '0');
            if (++nd > 3 || v > 255)
                return -1;
            c++;
        }
        if (nd == 0 || (nd > 1 && c[-(int)nd] == '0'))
            return -1;
        b[i] = (uint8_t)v;
        if (i < 3) {
            if (*c != '.')
                return -1;
            c++;
        }
    }
    if (*c)
        return -1;
    memcpy(out, b, 4);
    return 0;
}

int vgw_ipv4_unicast(uint32_t a_net)
{
    uint32_t top = n2h32(a_net) >> 24;
    return top != 0 && top != 127 && top < 224;
}

/* Longest IPv6 text: eight groups of four and seven colons is 39; with an embedded dotted quad
 * ("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255") 45, INET6_ADDRSTRLEN - 1. */
#define V6_TEXT_MAX 45u

int vgw_parse_addr(const char *s, uint8_t *af, vgw_addr_t *out)
{
    memset(out, 0, sizeof *out);
    if (!strchr(s, ':')) {
        *af = VGW_AF_INET;
        return vgw_parse_ipv4(s, &out->v4);
    }
    /* Hex digits, ':' and '.' only (no zone id, no brackets, no prefix length); inet_pton checks
     * the rest (group sizes, one "::", an embedded dotted quad only at the end). */
    size_t n = strnlen(s, V6_TEXT_MAX + 1);
    if (n > V6_TEXT_MAX || strspn(s, "0123456789abcdefABCDEF:.") != n)
        return -1;
    *af = VGW_AF_INET6;
    return inet_pton(AF_INET6, s, out->v6) == 1 ? 0 : -1;
}

int vgw_addr_unicast(uint8_t af, const vgw_addr_t *a)
{
    return af == VGW_AF_INET ? vgw_ipv4_unicast(a->v4) : af == VGW_AF_INET6 ? vgw_ipv6_unicast(a->v6) : 0;
}

int vgw_valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > VGW_CFG_MAX_NAME)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-' || c == '.' || c == ':' || c == '/'))
            return 0;
    }
    return 1;
}

int vgw_state_by_name(const char *s)
{
    for (unsigned i = 0; i < VGW_STATE_MAX; i++)
        if (strcmp(s, vgw_state_name(i)) == 0)
            return (int)i;
    return -1;
}

static const char *const be_states[] = {
    [VGW_BE_ACTIVE] = "active",
    [VGW_BE_DRAINING] = "draining",
    [VGW_BE_DISABLED] = "disabled",
};

int vgw_be_state_by_name(const char *s)
{
    for (unsigned i = 0; i < sizeof be_states / sizeof be_states[0]; i++)
        if (strcmp(s, be_states[i]) == 0)
            return (int)i;
    return -1;
}

const char *vgw_be_state_name(unsigned state)
{
    return state < sizeof be_states / sizeof be_states[0] ? be_states[state] : "?";
}

const char *vgw_sched_name(unsigned sched)
{
    return sched == VGW_SCHED_WRR ? "wrr" : sched == VGW_SCHED_WLC ? "wlc" : "maglev";
}
