/* SPDX-License-Identifier: Apache-2.0
 * Parser for the "vgw-config 1" text format. Hostile input is expected (control socket, fuzzer):
 * every token is length- and range-checked, nothing is applied unless the whole document is
 * valid, and the document must end with "end" so a truncated transfer is never taken as real. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

static const char *const state_names[VGW_STATE_MAX] = {
    [VGW_TCP_NONE] = "tcp_none",
    [VGW_TCP_ESTABLISHED] = "tcp_established",
    [VGW_TCP_SYN_SENT] = "tcp_syn_sent",
    [VGW_TCP_SYN_RECV] = "tcp_syn_recv",
    [VGW_TCP_FIN_WAIT] = "tcp_fin_wait",
    [VGW_TCP_TIME_WAIT] = "tcp_time_wait",
    [VGW_TCP_CLOSE] = "tcp_close",
    [VGW_TCP_CLOSE_WAIT] = "tcp_close_wait",
    [VGW_TCP_LAST_ACK] = "tcp_last_ack",
    [VGW_TCP_LISTEN] = "tcp_listen",
    [VGW_TCP_SYNACK] = "tcp_synack",
    [VGW_UDP_NORMAL] = "udp",
};

/* DPVS defaults (seconds), so operators moving from DPVS see the same behaviour. */
static const uint32_t default_timeouts[VGW_STATE_MAX] = {
    [VGW_TCP_NONE] = 2,       [VGW_TCP_ESTABLISHED] = 90, [VGW_TCP_SYN_SENT] = 3,
    [VGW_TCP_SYN_RECV] = 30,  [VGW_TCP_FIN_WAIT] = 7,     [VGW_TCP_TIME_WAIT] = 7,
    [VGW_TCP_CLOSE] = 3,      [VGW_TCP_CLOSE_WAIT] = 7,   [VGW_TCP_LAST_ACK] = 7,
    [VGW_TCP_LISTEN] = 120,   [VGW_TCP_SYNACK] = 30,      [VGW_UDP_NORMAL] = 300,
};

uint32_t vgw_default_timeout_s(unsigned state)
{
    return state < VGW_STATE_MAX ? default_timeouts[state] : 0;
}

const char *vgw_state_name(unsigned state)
{
    return state < VGW_STATE_MAX ? state_names[state] : NULL;
}

static int state_by_name(const char *s)
{
    for (unsigned i = 0; i < VGW_STATE_MAX; i++)
        if (strcmp(s, state_names[i]) == 0)
            return (int)i;
    return -1;
}

int vgw_is_prime(uint32_t n)
{
    if (n < 2)
        return 0;
    if (n % 2 == 0)
        return n == 2;
    for (uint32_t d = 3; (uint64_t)d * d <= n; d += 2)
        if (n % d == 0)
            return 0;
    return 1;
}

typedef struct parser {
    char *err;
    size_t errlen;
    unsigned line;
} parser_t;

__attribute__((format(printf, 2, 3))) static int fail(parser_t *p, const char *fmt, ...)
{
    if (p->err && p->errlen) {
        int n = snprintf(p->err, p->errlen, "line %u: ", p->line);
        if (n >= 0 && (size_t)n < p->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return -1;
}

/* Strict unsigned decimal: digits only, no sign, no leading zeros beyond "0", bounded. */
static int parse_u64(const char *s, uint64_t max, uint64_t *out)
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

/* Dotted quad, exactly four decimal octets; returns network order. */
static int parse_ipv4(const char *s, uint32_t *out)
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

/* A usable unicast address: not 0/8, 127/8, multicast, class E or broadcast. */
static int ipv4_unicast(uint32_t a_net)
{
    uint32_t a = n2h32(a_net);
    uint32_t top = a >> 24;
    return top != 0 && top != 127 && top < 224;
}

static int valid_name(const char *s)
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

static vgw_cfg_service_t *find_service(vgw_cfg_t *cfg, const char *name)
{
    for (uint32_t i = 0; i < cfg->nservices; i++)
        if (strcmp(cfg->services[i].name, name) == 0)
            return &cfg->services[i];
    return NULL;
}

static int grow(void **arr, uint32_t *cap, uint32_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    uint32_t ncap = *cap ? *cap * 2 : 8;
    while (ncap < need)
        ncap *= 2;
    void *n = realloc(*arr, (size_t)ncap * elem);
    if (!n)
        return -1;
    *arr = n;
    *cap = ncap;
    return 0;
}

void vgw_cfg_free(vgw_cfg_t *cfg)
{
    if (!cfg)
        return;
    for (uint32_t i = 0; i < cfg->nservices; i++) {
        free(cfg->services[i].backends);
        free(cfg->services[i].lips);
    }
    free(cfg->services);
    free(cfg);
}

#define MAX_TOKENS 16

static int tokenize(char *line, char **tok)
{
    int n = 0;
    char *s = line;
    while (*s) {
        while (*s == ' ' || *s == '\t')
            *s++ = 0;
        if (!*s)
            break;
        if (n == MAX_TOKENS)
            return -1;
        tok[n++] = s;
        while (*s && *s != ' ' && *s != '\t')
            s++;
    }
    return n;
}

static int parse_service(parser_t *p, vgw_cfg_t *cfg, char **t, int n)
{
    /* service <name> <tcp|udp> <vip> <port> <maglev|wrr|wlc> [key=value ...] */
    if (n < 6)
        return fail(p, "service: expected <name> <proto> <vip> <port> <sched> [options]");
    if (!valid_name(t[1]))
        return fail(p, "service: bad name");
    if (find_service(cfg, t[1]))
        return fail(p, "service %s: duplicate", t[1]);
    if (cfg->nservices >= VGW_MAX_SERVICES)
        return fail(p, "too many services (max %u)", VGW_MAX_SERVICES);
    vgw_cfg_service_t s;
    memset(&s, 0, sizeof s);
    snprintf(s.name, sizeof s.name, "%s", t[1]);
    s.af = VGW_AF_INET;
    if (strcmp(t[2], "tcp") == 0)
        s.proto = VGW_PROTO_TCP;
    else if (strcmp(t[2], "udp") == 0)
        s.proto = VGW_PROTO_UDP;
    else
        return fail(p, "service %s: protocol must be tcp or udp", s.name);
    if (parse_ipv4(t[3], &s.vip.v4) || !ipv4_unicast(s.vip.v4))
        return fail(p, "service %s: bad VIP '%s'", s.name, t[3]);
    uint64_t v;
    if (parse_u64(t[4], 65535, &v) || v == 0)
        return fail(p, "service %s: bad port", s.name);
    s.port = (uint16_t)v;
    if (strcmp(t[5], "maglev") == 0)
        s.sched = VGW_SCHED_MAGLEV;
    else if (strcmp(t[5], "wrr") == 0)
        s.sched = VGW_SCHED_WRR;
    else if (strcmp(t[5], "wlc") == 0)
        s.sched = VGW_SCHED_WLC;
    else
        return fail(p, "service %s: scheduler must be maglev, wrr or wlc", s.name);
    s.maglev_m = VGW_MAGLEV_DEFAULT_M;
    for (int i = 6; i < n; i++) {
        char *eq = strchr(t[i], '=');
        if (!eq)
            return fail(p, "service %s: option '%s' is not key=value", s.name, t[i]);
        *eq = 0;
        const char *key = t[i], *val = eq + 1;
        if (strcmp(key, "table") == 0) {
            if (parse_u64(val, VGW_MAGLEV_MAX_M, &v) || !vgw_is_prime((uint32_t)v) || v < 7)
                return fail(p, "service %s: table must be a prime in [7, %u]", s.name, VGW_MAGLEV_MAX_M);
            s.maglev_m = (uint32_t)v;
        } else if (strcmp(key, "toa") == 0) {
            if (strcmp(val, "on") == 0)
                s.flags |= VGW_SVC_F_TOA;
            else if (strcmp(val, "off") != 0)
                return fail(p, "service %s: toa must be on or off", s.name);
        } else if (strncmp(key, "timeout.", 8) == 0) {
            int st = state_by_name(key + 8);
            if (st < 0)
                return fail(p, "service %s: unknown timeout state '%s'", s.name, key + 8);
            if (parse_u64(val, VGW_MAX_TIMEOUT_S, &v) || v == 0)
                return fail(p, "service %s: timeout must be 1..%u s", s.name, VGW_MAX_TIMEOUT_S);
            s.timeout_s[st] = (uint32_t)v;
        } else {
            return fail(p, "service %s: unknown option '%s'", s.name, key);
        }
    }
    if (s.proto == VGW_PROTO_UDP && (s.flags & VGW_SVC_F_TOA))
        return fail(p, "service %s: toa is TCP only", s.name);
    for (uint32_t i = 0; i < cfg->nservices; i++) {
        const vgw_cfg_service_t *o = &cfg->services[i];
        if (o->vip.v4 == s.vip.v4 && o->port == s.port && o->proto == s.proto)
            return fail(p, "service %s: same VIP, port and protocol as %s", s.name, o->name);
    }
    if (grow((void **)&cfg->services, &cfg->services_cap, cfg->nservices + 1, sizeof s))
        return fail(p, "out of memory");
    cfg->services[cfg->nservices++] = s;
    return 0;
}

static int parse_backend(parser_t *p, vgw_cfg_t *cfg, char **t, int n)
{
    /* backend <service> <ip> <port> <weight> <active|draining|disabled> */
    if (n != 6)
        return fail(p, "backend: expected <service> <ip> <port> <weight> <state>");
    vgw_cfg_service_t *s = find_service(cfg, t[1]);
    if (!s)
        return fail(p, "backend: unknown service '%s' (declare it first)", t[1]);
    vgw_cfg_backend_t b;
    memset(&b, 0, sizeof b);
    b.af = VGW_AF_INET;
    if (parse_ipv4(t[2], &b.addr.v4) || !ipv4_unicast(b.addr.v4))
        return fail(p, "backend: bad address '%s'", t[2]);
    uint64_t v;
    if (parse_u64(t[3], 65535, &v) || v == 0)
        return fail(p, "backend: bad port");
    b.port = (uint16_t)v;
    if (parse_u64(t[4], 65535, &v))
        return fail(p, "backend: weight must be 0..65535");
    b.weight = (uint16_t)v;
    if (strcmp(t[5], "active") == 0)
        b.state = VGW_BE_ACTIVE;
    else if (strcmp(t[5], "draining") == 0)
        b.state = VGW_BE_DRAINING;
    else if (strcmp(t[5], "disabled") == 0)
        b.state = VGW_BE_DISABLED;
    else
        return fail(p, "backend: state must be active, draining or disabled");
    for (uint32_t i = 0; i < s->nbackends; i++)
        if (s->backends[i].addr.v4 == b.addr.v4 && s->backends[i].port == b.port)
            return fail(p, "backend: duplicate %s:%s in %s", t[2], t[3], s->name);
    if (s->nbackends >= VGW_MAX_BACKENDS_PER_SVC)
        return fail(p, "backend: too many backends in %s", s->name);
    uint32_t total = 0;
    for (uint32_t i = 0; i < cfg->nservices; i++)
        total += cfg->services[i].nbackends;
    if (total >= VGW_MAX_BACKENDS)
        return fail(p, "backend: too many backends (max %u)", VGW_MAX_BACKENDS);
    if (grow((void **)&s->backends, &s->backends_cap, s->nbackends + 1, sizeof b))
        return fail(p, "out of memory");
    s->backends[s->nbackends++] = b;
    return 0;
}

static int parse_lip(parser_t *p, vgw_cfg_t *cfg, char **t, int n)
{
    if (n != 3)
        return fail(p, "lip: expected <service> <ip>");
    vgw_cfg_service_t *s = find_service(cfg, t[1]);
    if (!s)
        return fail(p, "lip: unknown service '%s' (declare it first)", t[1]);
    vgw_addr_t a;
    memset(&a, 0, sizeof a);
    if (parse_ipv4(t[2], &a.v4) || !ipv4_unicast(a.v4))
        return fail(p, "lip: bad address '%s'", t[2]);
    for (uint32_t i = 0; i < s->nlips; i++)
        if (s->lips[i].v4 == a.v4)
            return fail(p, "lip: duplicate %s in %s", t[2], s->name);
    if (s->nlips >= VGW_MAX_LIPS_PER_SVC)
        return fail(p, "lip: too many LIPs in %s (max %u)", s->name, VGW_MAX_LIPS_PER_SVC);
    if (grow((void **)&s->lips, &s->lips_cap, s->nlips + 1, sizeof a))
        return fail(p, "out of memory");
    s->lips[s->nlips++] = a;
    return 0;
}

static int validate_document(parser_t *p, vgw_cfg_t *cfg)
{
    /* A LIP that is also a VIP would make a reply indistinguishable from a new client packet. */
    for (uint32_t i = 0; i < cfg->nservices; i++) {
        const vgw_cfg_service_t *s = &cfg->services[i];
        if (s->nlips == 0)
            return fail(p, "service %s: needs at least one lip", s->name);
        for (uint32_t j = 0; j < s->nlips; j++)
            for (uint32_t k = 0; k < cfg->nservices; k++)
                if (cfg->services[k].vip.v4 == s->lips[j].v4)
                    return fail(p, "service %s: lip is also the VIP of %s", s->name,
                                cfg->services[k].name);
    }
    return 0;
}

int vgw_cfg_parse(const char *text, size_t len, vgw_cfg_t **out, char *err, size_t errlen)
{
    parser_t p = {.err = err, .errlen = errlen, .line = 0};
    *out = NULL;
    if (err && errlen)
        err[0] = 0;
    if (!text || len > VGW_CFG_MAX_BYTES)
        return fail(&p, "document too large (max %u bytes)", VGW_CFG_MAX_BYTES);
    vgw_cfg_t *cfg = calloc(1, sizeof *cfg);
    if (!cfg)
        return fail(&p, "out of memory");
    cfg->version = VGW_CFG_VERSION;
    for (unsigned i = 0; i < VGW_STATE_MAX; i++)
        cfg->timeout_s[i] = default_timeouts[i];

    char line[VGW_CFG_MAX_LINE + 1];
    size_t pos = 0;
    int seen_header = 0, seen_gen = 0, seen_end = 0;
    while (pos < len) {
        p.line++;
        size_t start = pos;
        while (pos < len && text[pos] != '\n')
            pos++;
        size_t llen = pos - start;
        if (pos < len)
            pos++; /* newline */
        if (llen && text[start + llen - 1] == '\r')
            llen--;
        if (llen > VGW_CFG_MAX_LINE) {
            fail(&p, "line longer than %u bytes", VGW_CFG_MAX_LINE);
            goto bad;
        }
        memcpy(line, text + start, llen);
        line[llen] = 0;
        if (memchr(line, 0, llen)) {
            fail(&p, "NUL byte");
            goto bad;
        }
        for (size_t i = 0; i < llen; i++) {
            unsigned char c = (unsigned char)line[i];
            if ((c < 0x20 && c != '\t') || c > 0x7e) {
                fail(&p, "non-printable byte 0x%02x", c);
                goto bad;
            }
        }
        char *hash = strchr(line, '#');
        if (hash)
            *hash = 0;
        char *t[MAX_TOKENS];
        int n = tokenize(line, t);
        if (n < 0) {
            fail(&p, "too many tokens");
            goto bad;
        }
        if (n == 0)
            continue;
        if (seen_end) {
            fail(&p, "content after 'end'");
            goto bad;
        }
        if (!seen_header) {
            uint64_t v;
            if (n != 2 || strcmp(t[0], "vgw-config") != 0 || parse_u64(t[1], 1000, &v)) {
                fail(&p, "expected header 'vgw-config %u'", VGW_CFG_VERSION);
                goto bad;
            }
            if (v != VGW_CFG_VERSION) {
                fail(&p, "unsupported format version %llu (this build reads %u)", (unsigned long long)v,
                     VGW_CFG_VERSION);
                goto bad;
            }
            seen_header = 1;
            continue;
        }
        int rc = 0;
        if (strcmp(t[0], "generation") == 0) {
            uint64_t v;
            if (n != 2 || seen_gen || parse_u64(t[1], UINT64_MAX, &v) || v == 0) {
                rc = fail(&p, "generation: expected one positive integer, once");
            } else {
                cfg->generation = v;
                seen_gen = 1;
            }
        } else if (strcmp(t[0], "timeout") == 0) {
            uint64_t v;
            int st = n == 3 ? state_by_name(t[1]) : -1;
            if (st < 0 || parse_u64(t[2], VGW_MAX_TIMEOUT_S, &v) || v == 0)
                rc = fail(&p, "timeout: expected <state> <1..%u seconds>", VGW_MAX_TIMEOUT_S);
            else
                cfg->timeout_s[st] = (uint32_t)v;
        } else if (strcmp(t[0], "service") == 0) {
            rc = parse_service(&p, cfg, t, n);
        } else if (strcmp(t[0], "backend") == 0) {
            rc = parse_backend(&p, cfg, t, n);
        } else if (strcmp(t[0], "lip") == 0) {
            rc = parse_lip(&p, cfg, t, n);
        } else if (strcmp(t[0], "end") == 0 && n == 1) {
            seen_end = 1;
        } else {
            rc = fail(&p, "unknown directive '%s'", t[0]);
        }
        if (rc)
            goto bad;
    }
    if (!seen_header) {
        fail(&p, "empty document");
        goto bad;
    }
    if (!seen_gen) {
        fail(&p, "missing 'generation'");
        goto bad;
    }
    if (!seen_end) {
        fail(&p, "missing 'end' (truncated document?)");
        goto bad;
    }
    if (validate_document(&p, cfg))
        goto bad;
    *out = cfg;
    return 0;
bad:
    vgw_cfg_free(cfg);
    return -1;
}
