/* SPDX-License-Identifier: Apache-2.0
 * The configuration object (vgw/config.h): indexes, primitive edits with an undo journal, the
 * "vgw-config 1" document parser and the canonical serialiser. The delta grammar is in delta.c
 * and uses the same primitives, so a rule is checked in exactly one place whichever way the
 * change arrives. */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "cfgint.h"
#include "internal.h"
#include "text.h"

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

const char *vgw_addr_str(uint8_t af, const vgw_addr_t *a, char *buf, size_t len)
{
    if (af == VGW_AF_INET6) {
        /* RFC 5952 form (lower case, longest run of two or more zero groups as "::"), which
         * vgw_parse_addr reads back to the same bytes. */
        char t[INET6_ADDRSTRLEN];
        snprintf(buf, len, "%s", inet_ntop(AF_INET6, a->v6, t, sizeof t) ? t : "?");
        return buf;
    }
    const uint8_t *b = (const uint8_t *)&a->v4;
    snprintf(buf, len, "%u.%u.%u.%u", b[0], b[1], b[2], b[3]);
    return buf;
}

const char *vgw_endpoint_str(uint8_t af, const vgw_addr_t *a, uint16_t port, char *buf, size_t len)
{
    char t[VGW_ADDR_STR_MAX];
    vgw_addr_str(af, a, t, sizeof t);
    snprintf(buf, len, af == VGW_AF_INET6 ? "[%s]:%u" : "%s:%u", t, port);
    return buf;
}

const char *vgw_af_name(uint8_t af)
{
    return af == VGW_AF_INET6 ? "IPv6" : "IPv4";
}

#define FAIL(...) (snprintf(reason, rlen, __VA_ARGS__), -1)

/* ---- configuration -------------------------------------------------------------------------- */

vgw_cfg_t *vgw_cfg_new(void)
{
    vgw_cfg_t *cfg = calloc(1, sizeof *cfg);
    if (!cfg)
        return NULL;
    cfg->index = calloc(1, sizeof *cfg->index);
    if (!cfg->index) {
        free(cfg);
        return NULL;
    }
    cfg->version = VGW_CFG_VERSION;
    for (unsigned i = 0; i < VGW_STATE_MAX; i++)
        cfg->timeout_s[i] = default_timeouts[i];
    return cfg;
}

void vgw_cfg_free(vgw_cfg_t *cfg)
{
    if (!cfg)
        return;
    for (uint32_t i = 0; i < cfg->nservices; i++)
        vgw_cfg_svc_free(cfg->services[i]);
    free(cfg->services);
    if (cfg->index) {
        vgw_vset_fini(&cfg->index->by_name);
        vgw_vset_fini(&cfg->index->by_key);
        vgw_amap_fini(&cfg->index->vips);
        vgw_amap_fini(&cfg->index->lips);
        free(cfg->index);
    }
    free(cfg);
}

/* ---- token parsers --------------------------------------------------------------------------- */

static const char *const synproxy_names[] = {
    [VGW_SYNPROXY_OFF] = "off",
    [VGW_SYNPROXY_ON] = "on",
    [VGW_SYNPROXY_AUTO] = "auto",
};

static const char *synproxy_name(unsigned mode)
{
    return mode < sizeof synproxy_names / sizeof synproxy_names[0] ? synproxy_names[mode] : "?";
}

static int key_is(const char *tok, size_t klen, const char *key)
{
    return strlen(key) == klen && strncmp(tok, key, klen) == 0;
}

#define PROTECT_GAVE_HALFOPEN 0x1u
#define PROTECT_GAVE_SYN_RATE 0x2u

/* One flood-protection option of a service line: key (the klen bytes of tok) = val. Returns 0
 * when it is one and valid, -1 (reason set) when it is one and invalid, 1 when the key is not a
 * protection option. *gave collects the auto thresholds given (PROTECT_GAVE_*): TCP only. */
static int parse_protect(vgw_cfg_service_t *s, const char *tok, size_t klen, const char *val, unsigned *gave,
                         char *reason, size_t rlen)
{
    vgw_cfg_protect_t *p = &s->protect;
    if (key_is(tok, klen, "syn_proxy")) {
        for (unsigned m = 0; m < sizeof synproxy_names / sizeof synproxy_names[0]; m++)
            if (strcmp(val, synproxy_names[m]) == 0) {
                p->syn_proxy = (uint8_t)m;
                return 0;
            }
        return FAIL("service %s: syn_proxy must be off, on or auto (got '%.16s')", s->name, val);
    }
    if (key_is(tok, klen, "rst_unknown")) {
        if (strcmp(val, "on") != 0 && strcmp(val, "off") != 0)
            return FAIL("service %s: rst_unknown must be on or off (got '%.16s')", s->name, val);
        p->rst_unknown = strcmp(val, "on") == 0;
        return 0;
    }
    /* The thresholds of auto mode are positive; the caps take 0 = unlimited. */
    const struct {
        const char *key;
        uint32_t *dst;
        uint32_t min;
        unsigned gave;
    } nums[] = {
        {"syn_proxy_halfopen", &p->auto_halfopen, 1, PROTECT_GAVE_HALFOPEN},
        {"syn_proxy_syn_rate", &p->auto_syn_rate, 1, PROTECT_GAVE_SYN_RATE},
        {"conn_rate", &p->conn_rate, 0, 0},
        {"conn_rate_src24", &p->conn_rate_src24, 0, 0},
    };
    for (unsigned k = 0; k < sizeof nums / sizeof nums[0]; k++) {
        uint64_t v;
        if (!key_is(tok, klen, nums[k].key))
            continue;
        if (vgw_parse_u64(val, VGW_MAX_RATE, &v) || v < nums[k].min)
            return FAIL("service %s: %s must be %u..%u (got '%.16s')", s->name, nums[k].key, nums[k].min,
                        VGW_MAX_RATE, val);
        *nums[k].dst = (uint32_t)v;
        *gave |= nums[k].gave;
        return 0;
    }
    return 1;
}

int vgw_cfg_parse_service(char **t, int n, vgw_cfg_service_t *s, char *reason, size_t rlen)
{
    /* <name> <tcp|udp> <vip> <port> <maglev|wrr|wlc> [key=value ...] */
    if (n < 5)
        return FAIL("service: expected <name> <tcp|udp> <vip> <port> <maglev|wrr|wlc> [options]");
    if (!vgw_valid_name(t[0]))
        return FAIL("service: bad name '%.64s' (1-%u of A-Z a-z 0-9 _ - . : /)", t[0], VGW_CFG_MAX_NAME);
    snprintf(s->name, sizeof s->name, "%s", t[0]);
    if (strcmp(t[1], "tcp") == 0)
        s->proto = VGW_PROTO_TCP;
    else if (strcmp(t[1], "udp") == 0)
        s->proto = VGW_PROTO_UDP;
    else
        return FAIL("service %s: protocol must be tcp or udp", s->name);
    if (vgw_parse_addr(t[2], &s->af, &s->vip) || !vgw_addr_unicast(s->af, &s->vip))
        return FAIL("service %s: bad VIP '%.64s'", s->name, t[2]);
    uint64_t v;
    if (vgw_parse_u64(t[3], 65535, &v) || v == 0)
        return FAIL("service %s: bad port '%.16s' (1-65535)", s->name, t[3]);
    s->port = (uint16_t)v;
    if (strcmp(t[4], "maglev") == 0)
        s->sched = VGW_SCHED_MAGLEV;
    else if (strcmp(t[4], "wrr") == 0)
        s->sched = VGW_SCHED_WRR;
    else if (strcmp(t[4], "wlc") == 0)
        s->sched = VGW_SCHED_WLC;
    else
        return FAIL("service %s: scheduler must be maglev, wrr or wlc", s->name);
    s->maglev_m = VGW_MAGLEV_DEFAULT_M;
    /* s comes from vgw_cfg_svc_alloc: flags and protect hold their defaults until an option
     * says otherwise. */
    unsigned thresholds_given = 0;
    int rc;
    for (int i = 5; i < n; i++) {
        const char *eq = strchr(t[i], '=');
        if (!eq)
            return FAIL("service %s: option '%.64s' is not key=value", s->name, t[i]);
        size_t klen = (size_t)(eq - t[i]);
        const char *val = eq + 1;
        if (klen == 5 && strncmp(t[i], "table", 5) == 0) {
            if (vgw_parse_u64(val, VGW_MAGLEV_MAX_M, &v) || v < 7 || !vgw_is_prime((uint32_t)v))
                return FAIL("service %s: table must be a prime in [7, %u]", s->name, VGW_MAGLEV_MAX_M);
            s->maglev_m = (uint32_t)v;
        } else if (klen == 3 && strncmp(t[i], "toa", 3) == 0) {
            if (strcmp(val, "on") == 0)
                s->flags |= VGW_SVC_F_TOA;
            else if (strcmp(val, "off") == 0)
                s->flags &= (uint8_t)~VGW_SVC_F_TOA;
            else
                return FAIL("service %s: toa must be on or off", s->name);
        } else if (klen > 8 && strncmp(t[i], "timeout.", 8) == 0) {
            char st_name[32];
            snprintf(st_name, sizeof st_name, "%.*s", (int)(klen - 8), t[i] + 8);
            int st = klen - 8 < sizeof st_name ? vgw_state_by_name(st_name) : -1;
            if (st < 0)
                return FAIL("service %s: unknown timeout state '%.32s'", s->name, st_name);
            if (vgw_parse_u64(val, VGW_MAX_TIMEOUT_S, &v) || v == 0)
                return FAIL("service %s: timeout must be 1..%u s", s->name, VGW_MAX_TIMEOUT_S);
            s->timeout_s[st] = (uint32_t)v;
        } else if ((rc = parse_protect(s, t[i], klen, val, &thresholds_given, reason, rlen)) != 0) {
            if (rc < 0)
                return -1;
            return FAIL("service %s: unknown option '%.*s'", s->name, (int)(klen > 64 ? 64 : klen), t[i]);
        }
    }
    if (s->proto == VGW_PROTO_UDP && (s->flags & VGW_SVC_F_TOA))
        return FAIL("service %s: toa is TCP only", s->name);
    if (s->proto == VGW_PROTO_UDP && s->protect.syn_proxy != VGW_SYNPROXY_OFF)
        return FAIL("service %s: syn_proxy is TCP only (a udp service takes syn_proxy=off)", s->name);
    if (s->proto == VGW_PROTO_UDP && thresholds_given)
        return FAIL("service %s: %s is TCP only", s->name,
                    (thresholds_given & PROTECT_GAVE_HALFOPEN) ? "syn_proxy_halfopen" : "syn_proxy_syn_rate");
    if (s->proto == VGW_PROTO_UDP && s->protect.rst_unknown)
        return FAIL("service %s: rst_unknown is TCP only (a udp service takes rst_unknown=off)", s->name);
    /* The SYN proxy's cookies and the RSTs it and rst_unknown build are IPv4 packets for now.
     * conn_rate and conn_rate_src24 apply (the latter per client /64). */
    if (s->af == VGW_AF_INET6 && s->protect.syn_proxy != VGW_SYNPROXY_OFF)
        return FAIL("service %s: syn_proxy is IPv4 only for now (an IPv6 service takes syn_proxy=off)", s->name);
    if (s->af == VGW_AF_INET6 && s->protect.rst_unknown)
        return FAIL("service %s: rst_unknown is IPv4 only for now (an IPv6 service takes rst_unknown=off)", s->name);
    return 0;
}

int vgw_cfg_parse_be_addr(const char *addr, const char *port, vgw_cfg_backend_t *b, char *reason, size_t rlen)
{
    memset(b, 0, sizeof *b);
    if (vgw_parse_addr(addr, &b->af, &b->addr) || !vgw_addr_unicast(b->af, &b->addr))
        return FAIL("backend: bad address '%.64s'", addr);
    uint64_t v;
    if (vgw_parse_u64(port, 65535, &v) || v == 0)
        return FAIL("backend: bad port '%.16s' (1-65535)", port);
    b->port = (uint16_t)v;
    return 0;
}

/* ---- the document parser --------------------------------------------------------------------- */

static int doc_service(vgw_cfg_t *cfg, char **t, int n, char *reason, size_t rlen)
{
    vgw_cfg_service_t *s = vgw_cfg_svc_alloc();
    if (!s)
        return FAIL("out of memory");
    if (vgw_cfg_parse_service(t + 1, n - 1, s, reason, rlen) || vgw_cfg_svc_add(cfg, s, NULL, reason, rlen)) {
        vgw_cfg_svc_free(s);
        return -1;
    }
    return 0;
}

static vgw_cfg_service_t *declared(vgw_cfg_t *cfg, const char *what, const char *name, char *reason, size_t rlen)
{
    vgw_cfg_service_t *s = vgw_cfg_lookup(cfg, name);
    if (!s)
        snprintf(reason, rlen, "%s: unknown service '%.64s' (declare it first)", what, name);
    return s;
}

static int doc_backend(vgw_cfg_t *cfg, char **t, int n, char *reason, size_t rlen)
{
    /* backend <service> <ip> <port> <weight> <active|draining|disabled> */
    if (n != 6)
        return FAIL("backend: expected <service> <ip> <port> <weight> <state>");
    vgw_cfg_service_t *s = declared(cfg, "backend", t[1], reason, rlen);
    vgw_cfg_backend_t b;
    uint64_t w;
    int st;
    if (!s || vgw_cfg_parse_be_addr(t[2], t[3], &b, reason, rlen))
        return -1;
    if (vgw_parse_u64(t[4], 65535, &w))
        return FAIL("backend: weight must be 0..65535");
    if ((st = vgw_be_state_by_name(t[5])) < 0)
        return FAIL("backend: state must be active, draining or disabled");
    b.weight = (uint16_t)w;
    b.state = (uint8_t)st;
    return vgw_cfg_be_add(cfg, s, &b, NULL, reason, rlen);
}

static int doc_lip(vgw_cfg_t *cfg, char **t, int n, char *reason, size_t rlen)
{
    if (n != 3)
        return FAIL("lip: expected <service> <ip>");
    vgw_cfg_service_t *s = declared(cfg, "lip", t[1], reason, rlen);
    if (!s)
        return -1;
    vgw_addr_t a;
    uint8_t af;
    if (vgw_parse_addr(t[2], &af, &a) || !vgw_addr_unicast(af, &a))
        return FAIL("lip: bad address '%.64s'", t[2]);
    return vgw_cfg_lip_add(cfg, s, af, &a, NULL, reason, rlen);
}

int vgw_cfg_parse(const char *text, size_t len, vgw_cfg_t **out, char *err, size_t errlen)
{
    *out = NULL;
    if (err && errlen)
        err[0] = 0;
    if (!text || len > VGW_CFG_MAX_BYTES)
        return vgw_text_fail(err, errlen, 0, "document too large (max %u bytes)", VGW_CFG_MAX_BYTES);
    vgw_cfg_t *cfg = vgw_cfg_new();
    vgw_lines_t *l = malloc(sizeof *l);
    if (!cfg || !l) {
        vgw_cfg_free(cfg);
        free(l);
        return vgw_text_fail(err, errlen, 0, "out of memory");
    }
    vgw_lines_init(l, text, len);
    char reason[256];
    char *t[VGW_TEXT_MAX_TOKENS];
    int n, seen_header = 0, seen_gen = 0, seen_end = 0, rc = 0;
    while (rc == 0 && (n = vgw_lines_next(l, t, err, errlen)) != 0) {
        reason[0] = 0;
        if (n < 0) {
            rc = -1;
            break;
        }
        uint64_t v = 0;
        if (seen_end) {
            rc = vgw_text_fail(err, errlen, l->lineno, "content after 'end'");
        } else if (!seen_header) {
            if (n != 2 || strcmp(t[0], "vgw-config") != 0 || vgw_parse_u64(t[1], 1000, &v))
                rc = vgw_text_fail(err, errlen, l->lineno, "expected header 'vgw-config %u'", VGW_CFG_VERSION);
            else if (v != VGW_CFG_VERSION)
                rc = vgw_text_fail(err, errlen, l->lineno, "unsupported format version %llu (this build reads %u)",
                                   (unsigned long long)v, VGW_CFG_VERSION);
            seen_header = 1;
        } else if (strcmp(t[0], "generation") == 0) {
            if (n != 2 || seen_gen || vgw_parse_u64(t[1], UINT64_MAX, &v) || v == 0)
                rc = vgw_text_fail(err, errlen, l->lineno, "generation: expected one positive integer, once");
            cfg->generation = v;
            seen_gen = 1;
        } else if (strcmp(t[0], "timeout") == 0) {
            int st = n == 3 ? vgw_state_by_name(t[1]) : -1;
            if (st < 0 || vgw_parse_u64(t[2], VGW_MAX_TIMEOUT_S, &v) || v == 0)
                rc = vgw_text_fail(err, errlen, l->lineno, "timeout: expected <state> <1..%u seconds>",
                                   VGW_MAX_TIMEOUT_S);
            else
                cfg->timeout_s[st] = (uint32_t)v;
        } else if (strcmp(t[0], "service") == 0) {
            rc = doc_service(cfg, t, n, reason, sizeof reason);
        } else if (strcmp(t[0], "backend") == 0) {
            rc = doc_backend(cfg, t, n, reason, sizeof reason);
        } else if (strcmp(t[0], "lip") == 0) {
            rc = doc_lip(cfg, t, n, reason, sizeof reason);
        } else if (strcmp(t[0], "end") == 0 && n == 1) {
            seen_end = 1;
        } else {
            rc = vgw_text_fail(err, errlen, l->lineno, "unknown directive '%.64s'", t[0]);
        }
        if (rc && reason[0])
            vgw_text_fail(err, errlen, l->lineno, "%s", reason);
    }
    if (rc == 0) {
        if (!seen_header)
            rc = vgw_text_fail(err, errlen, l->lineno, "empty document");
        else if (!seen_gen)
            rc = vgw_text_fail(err, errlen, l->lineno, "missing 'generation'");
        else if (!seen_end)
            rc = vgw_text_fail(err, errlen, l->lineno, "missing 'end' (truncated document?)");
        for (uint32_t i = 0; rc == 0 && i < cfg->nservices; i++)
            if (cfg->services[i]->nlips == 0)
                rc = vgw_text_fail(err, errlen, l->lineno, "service %s: needs at least one lip",
                                   cfg->services[i]->name);
    }
    free(l);
    if (rc) {
        vgw_cfg_free(cfg);
        return -1;
    }
    *out = cfg;
    return 0;
}

/* ---- serialiser ------------------------------------------------------------------------------ */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf_t;

__attribute__((format(printf, 2, 3))) static void sb_printf(sbuf_t *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t nc = b->cap ? b->cap * 2 : 4096;
        while (nc < b->len + (size_t)n + 1)
            nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np, b->cap = nc;
    }
}

char *vgw_cfg_serialize(const vgw_cfg_t *c, size_t *len)
{
    char a[VGW_ADDR_STR_MAX];
    sbuf_t b = {0};
    sb_printf(&b, "vgw-config 1\ngeneration %llu\n", (unsigned long long)c->generation);
    for (unsigned s = 0; s < VGW_STATE_MAX; s++)
        if (c->timeout_s[s])
            sb_printf(&b, "timeout %s %u\n", vgw_state_name(s), c->timeout_s[s]);
    for (uint32_t i = 0; i < c->nservices; i++) {
        const vgw_cfg_service_t *s = c->services[i];
        sb_printf(&b, "service %s %s %s %u %s", s->name, s->proto == VGW_PROTO_UDP ? "udp" : "tcp",
                  vgw_addr_str(s->af, &s->vip, a, sizeof a), s->port, vgw_sched_name(s->sched));
        if (s->sched == VGW_SCHED_MAGLEV && s->maglev_m != VGW_MAGLEV_DEFAULT_M)
            sb_printf(&b, " table=%u", s->maglev_m);
        if (s->flags & VGW_SVC_F_TOA)
            sb_printf(&b, " toa=on");
        /* Protection options only where they differ from a bare service line's defaults, so
         * documents without them serialise as before. */
        const vgw_cfg_protect_t *p = &s->protect;
        if (p->syn_proxy != VGW_SYNPROXY_OFF)
            sb_printf(&b, " syn_proxy=%s", synproxy_name(p->syn_proxy));
        if (p->auto_halfopen != VGW_AUTO_HALFOPEN_DEFAULT)
            sb_printf(&b, " syn_proxy_halfopen=%u", p->auto_halfopen);
        if (p->auto_syn_rate != VGW_AUTO_SYN_RATE_DEFAULT)
            sb_printf(&b, " syn_proxy_syn_rate=%u", p->auto_syn_rate);
        if (p->conn_rate)
            sb_printf(&b, " conn_rate=%u", p->conn_rate);
        if (p->conn_rate_src24)
            sb_printf(&b, " conn_rate_src24=%u", p->conn_rate_src24);
        if (p->rst_unknown)
            sb_printf(&b, " rst_unknown=on");
        for (unsigned t = 0; t < VGW_STATE_MAX; t++)
            if (s->timeout_s[t])
                sb_printf(&b, " timeout.%s=%u", vgw_state_name(t), s->timeout_s[t]);
        sb_printf(&b, "\n");
        for (uint32_t k = 0; k < s->nlips; k++)
            sb_printf(&b, "lip %s %s\n", s->name, vgw_addr_str(s->af, &s->lips[k], a, sizeof a));
        for (uint32_t k = 0; k < s->nbackends; k++) {
            const vgw_cfg_backend_t *be = &s->backends[k];
            sb_printf(&b, "backend %s %s %u %u %s\n", s->name, vgw_addr_str(be->af, &be->addr, a, sizeof a), be->port,
                      be->weight, vgw_be_state_name(be->state));
        }
    }
    sb_printf(&b, "end\n");
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    if (len)
        *len = b.len;
    return b.p;
}
