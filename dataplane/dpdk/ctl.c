/* SPDX-License-Identifier: Apache-2.0
 * vgw-fwd control socket (docs/forwarder.md): a Unix stream socket, mode 0600, carrying framed,
 * versioned, length-bounded requests. Served on the control thread only; nothing a client sends
 * can stop forwarding: every request is validated completely before anything changes, and a
 * config change is published as one generation by the core's atomic swap. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <rte_ethdev.h>

#include "fwd.h"

#define CTL_MAGIC "VGWC"
#define CTL_VERSION 1u
#define CTL_HDR 16u
#define CTL_MAX_CLIENTS 16
#define CTL_IDLE_MS 60000u
#define CTL_MAX_SMALL 4096u
#define CTL_MAX_DELTA (4u << 20)
#define CTL_MAX_BUFFERED (128ull << 20) /* payload bytes buffered over all clients */
#define CTL_FRAMES_PER_POLL 16          /* per client, so one client cannot starve the slow path */

enum ctl_type {
    CTL_HELLO = 1,  /* -> JSON: protocol, pid, start time, generation, workers */
    CTL_APPLY = 2,  /* full "vgw-config 1" document -> "generation N" */
    CTL_DELTA = 3,  /* "vgw-delta 1" document -> "generation N" */
    CTL_STATS = 4,  /* -> JSON counters */
    CTL_CONFIG = 5, /* -> the applied document, canonical form */
    CTL_NEIGH = 6,  /* -> JSON neighbour table */
};
#define CTL_REPLY 0x80u
#define CTL_F_ERROR 0x0001u

pthread_mutex_t g_ctl_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- buffers ------------------------------------------------------------------------------- */

void vb_put(struct vbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 1024;
        while (nc < b->len + n + 1)
            nc *= 2;
        char *p = realloc(b->p, nc);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p, b->cap = nc;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

void vb_printf(struct vbuf *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof tmp) {
        vb_put(b, tmp, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->oom = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    vb_put(b, big, (size_t)n);
    free(big);
}

void vb_free(struct vbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

static const char *ip4(uint32_t a, char *buf)
{
    inet_ntop(AF_INET, &a, buf, INET_ADDRSTRLEN);
    return buf;
}

/* ---- config model: clone, serialize ------------------------------------------------------- */

static const char *sched_name(uint8_t s)
{
    return s == VGW_SCHED_WRR ? "wrr" : s == VGW_SCHED_WLC ? "wlc" : "maglev";
}
static const char *be_state_name(uint8_t s)
{
    return s == VGW_BE_DRAINING ? "draining" : s == VGW_BE_DISABLED ? "disabled" : "active";
}

static void cfg_serialize(const vgw_cfg_t *c, uint64_t generation, struct vbuf *b)
{
    char a[INET_ADDRSTRLEN];
    vb_printf(b, "vgw-config 1\ngeneration %llu\n", (unsigned long long)generation);
    for (unsigned s = 0; s < VGW_STATE_MAX; s++)
        if (vgw_state_name(s) && c->timeout_s[s])
            vb_printf(b, "timeout %s %u\n", vgw_state_name(s), c->timeout_s[s]);
    for (uint32_t i = 0; i < c->nservices; i++) {
        const vgw_cfg_service_t *s = &c->services[i];
        vb_printf(b, "service %s %s %s %u %s", s->name, s->proto == VGW_PROTO_UDP ? "udp" : "tcp", ip4(s->vip.v4, a),
                  s->port, sched_name(s->sched));
        if (s->sched == VGW_SCHED_MAGLEV && s->maglev_m && s->maglev_m != VGW_MAGLEV_DEFAULT_M)
            vb_printf(b, " table=%u", s->maglev_m);
        if (s->flags & VGW_SVC_F_TOA)
            vb_printf(b, " toa=on");
        for (unsigned t = 0; t < VGW_STATE_MAX; t++)
            if (s->timeout_s[t] && vgw_state_name(t))
                vb_printf(b, " timeout.%s=%u", vgw_state_name(t), s->timeout_s[t]);
        vb_printf(b, "\n");
        for (uint32_t l = 0; l < s->nlips; l++)
            vb_printf(b, "lip %s %s\n", s->name, ip4(s->lips[l].v4, a));
        for (uint32_t k = 0; k < s->nbackends; k++) {
            const vgw_cfg_backend_t *be = &s->backends[k];
            vb_printf(b, "backend %s %s %u %u %s\n", s->name, ip4(be->addr.v4, a), be->port, be->weight,
                      be_state_name(be->state));
        }
    }
    vb_printf(b, "end\n");
}

static void cfg_free_service(vgw_cfg_service_t *s)
{
    free(s->backends);
    free(s->lips);
    s->backends = NULL, s->lips = NULL;
}

static vgw_cfg_t *cfg_clone(const vgw_cfg_t *c)
{
    vgw_cfg_t *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    *n = *c;
    n->services = NULL, n->nservices = 0, n->services_cap = 0;
    if (c->nservices) {
        n->services = calloc(c->nservices, sizeof *n->services);
        if (!n->services) {
            free(n);
            return NULL;
        }
        n->services_cap = c->nservices;
    }
    for (uint32_t i = 0; i < c->nservices; i++) {
        vgw_cfg_service_t *d = &n->services[i];
        const vgw_cfg_service_t *s = &c->services[i];
        *d = *s;
        d->backends = NULL, d->lips = NULL;
        d->backends_cap = s->nbackends, d->lips_cap = s->nlips;
        if (s->nbackends && !(d->backends = malloc(sizeof *d->backends * s->nbackends)))
            goto fail;
        if (s->nlips && !(d->lips = malloc(sizeof *d->lips * s->nlips))) {
            free(d->backends);
            goto fail;
        }
        if (s->nbackends)
            memcpy(d->backends, s->backends, sizeof *d->backends * s->nbackends);
        if (s->nlips)
            memcpy(d->lips, s->lips, sizeof *d->lips * s->nlips);
        n->nservices++;
    }
    return n;
fail:
    vgw_cfg_free(n);
    return NULL;
}

static vgw_cfg_t *cfg_empty(void)
{
    /* The parser fills document defaults: use it for the empty state too. */
    static const char doc[] = "vgw-config 1\ngeneration 1\nend\n";
    vgw_cfg_t *c = NULL;
    char err[128];
    if (vgw_cfg_parse(doc, sizeof doc - 1, &c, err, sizeof err) != 0)
        return NULL;
    c->generation = 0;
    return c;
}

/* ---- apply ---------------------------------------------------------------------------------- */

static uint32_t svc_hash(uint32_t vip, uint16_t port, uint8_t proto)
{
    return (uint32_t)((((uint64_t)vip * 0x9e3779b97f4a7c15ULL) ^ ((uint64_t)port << 8 | proto) * 0xc2b2ae3d27d4eb4fULL) >>
                      32);
}

void fwd_svc_totals(fwd_t *f, uint64_t *out)
{
    static worker_snapshot_t snap;
    size_t n = (size_t)FWD_MAX_SVC_SLOTS * SVC_CNT_MAX;
    uint64_t *tmp = malloc(sizeof(uint64_t) * n);
    memset(out, 0, sizeof(uint64_t) * n);
    if (!tmp)
        return;
    for (uint32_t w = 0; w < f->nworkers; w++) {
        fwd_read_snapshot(&f->workers[w], &snap, tmp);
        for (size_t i = 0; i < n; i++)
            out[i] += tmp[i];
    }
    free(tmp);
    if (f->svc_base)
        for (size_t i = 0; i < n; i++)
            if (i % SVC_CNT_MAX != SVC_CNT_ACTIVE)
                out[i] -= f->svc_base[i] <= out[i] ? f->svc_base[i] : out[i];
}

void svcmap_reclaim(fwd_t *f)
{
    uint64_t min = UINT64_MAX;
    for (uint32_t w = 0; w < f->nworkers; w++) {
        uint64_t g = atomic_load(&f->workers[w].svcmap_gen);
        if (g < min)
            min = g;
    }
    uint32_t k = 0;
    for (uint32_t i = 0; i < f->nretired; i++) {
        svcmap_t *m = f->svcmap_retired[i];
        if (m->generation < min) {
            free(m->tab);
            free(m);
        } else {
            f->svcmap_retired[k++] = m;
        }
    }
    f->nretired = k;
}

/* Applies a parsed, validated config (takes ownership of cfg on success). */
int fwd_apply_cfg(fwd_t *f, vgw_cfg_t *cfg, char *err, size_t errlen)
{
    if (f->nretired >= RTE_DIM(f->svcmap_retired)) {
        svcmap_reclaim(f);
        if (f->nretired >= RTE_DIM(f->svcmap_retired)) {
            snprintf(err, errlen, "busy: previous generations not yet released by the workers, retry");
            return -1;
        }
    }
    /* Build everything that can fail before publishing anything. */
    uint32_t size = 16;
    while (size < cfg->nservices * 2)
        size *= 2;
    svcmap_t *m = calloc(1, sizeof *m);
    svc_key_slot_t *tab = calloc(size, sizeof *tab);
    uint32_t *vips = malloc(sizeof(uint32_t) * (cfg->nservices + 1));
    uint32_t nl = 0;
    for (uint32_t i = 0; i < cfg->nservices; i++)
        nl += cfg->services[i].nlips;
    uint32_t *lips = malloc(sizeof(uint32_t) * (nl + 1));
    uint32_t *slots = malloc(sizeof(uint32_t) * (cfg->nservices + 1));
    if (!m || !tab || !vips || !lips || !slots) {
        free(m), free(tab), free(vips), free(lips), free(slots);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* Stable counter slots by (proto, VIP, port): keep existing ones, allocate new ones. */
    bool keep[FWD_MAX_SVC_SLOTS];
    memset(keep, 0, sizeof keep);
    uint32_t need_new = 0;
    for (uint32_t i = 0; i < cfg->nservices; i++) {
        const vgw_cfg_service_t *s = &cfg->services[i];
        slots[i] = UINT32_MAX;
        for (uint32_t k = 0; k < FWD_MAX_SVC_SLOTS; k++) {
            const svc_key_slot_t *ks = &f->svc_keys[k];
            if (ks->used && ks->vip == s->vip.v4 && ks->port == htons(s->port) && ks->proto == s->proto) {
                slots[i] = k;
                keep[k] = true;
                break;
            }
        }
        if (slots[i] == UINT32_MAX)
            need_new++;
    }
    if (vgw_dp_apply(f->dp, cfg, err, errlen) != 0) {
        free(m), free(tab), free(vips), free(lips), free(slots);
        return -1;
    }
    pthread_mutex_lock(&g_ctl_lock);
    uint64_t *totals = NULL;
    if (need_new) {
        /* counters of every slot as they are now (without baselines): new slots start from them,
         * and a slot whose previous service still has connections is not reused yet */
        totals = malloc(sizeof(uint64_t) * FWD_MAX_SVC_SLOTS * SVC_CNT_MAX);
        uint64_t *saved = f->svc_base;
        f->svc_base = NULL;
        if (totals)
            fwd_svc_totals(f, totals);
        f->svc_base = saved;
    }
    for (uint32_t k = 0; k < FWD_MAX_SVC_SLOTS; k++)
        if (f->svc_keys[k].used && !keep[k]) {
            f->svc_keys[k].used = 0;
            f->svc_names[k][0] = 0;
        }
    nl = 0;
    for (uint32_t i = 0; i < cfg->nservices; i++) {
        const vgw_cfg_service_t *s = &cfg->services[i];
        if (slots[i] == UINT32_MAX) {
            for (int pass = 0; pass < 2 && slots[i] == UINT32_MAX; pass++)
                for (uint32_t k = 0; k < FWD_MAX_SVC_SLOTS; k++)
                    if (!f->svc_keys[k].used && !keep[k] &&
                        (pass == 1 || !totals || totals[(size_t)k * SVC_CNT_MAX + SVC_CNT_ACTIVE] == 0)) {
                        slots[i] = k;
                        keep[k] = true;
                        break;
                    }
            /* new slot: remember the counters it starts from */
            if (totals && f->svc_base) {
                memcpy(&f->svc_base[(size_t)slots[i] * SVC_CNT_MAX], &totals[(size_t)slots[i] * SVC_CNT_MAX],
                       sizeof(uint64_t) * SVC_CNT_MAX);
                f->svc_base[(size_t)slots[i] * SVC_CNT_MAX + SVC_CNT_ACTIVE] = 0;
            }
        }
        uint32_t k = slots[i];
        f->svc_keys[k] = (svc_key_slot_t){.vip = s->vip.v4, .port = htons(s->port), .proto = s->proto, .used = 1, .slot = k};
        snprintf(f->svc_names[k], sizeof f->svc_names[k], "%s", s->name);
        uint32_t h = svc_hash(s->vip.v4, htons(s->port), s->proto);
        for (uint32_t j = 0;; j++) {
            svc_key_slot_t *t = &tab[(h + j) & (size - 1)];
            if (!t->used) {
                *t = f->svc_keys[k];
                break;
            }
        }
        vips[i] = s->vip.v4;
        for (uint32_t l = 0; l < s->nlips; l++)
            lips[nl++] = s->lips[l].v4;
    }
    free(totals);
    m->generation = cfg->generation;
    m->mask = size - 1;
    m->tab = tab;
    svcmap_t *old = atomic_exchange(&f->svcmap, m);
    atomic_store(&f->svcmap_cur, cfg->generation);
    if (old)
        f->svcmap_retired[f->nretired++] = old;
    /* dedupe VIPs (several services share one) */
    uint32_t nv = cfg->nservices;
    neigh_set_local(f, vips, nv, lips, nl);
    vgw_cfg_free(f->cfg);
    f->cfg = cfg;
    pthread_mutex_unlock(&g_ctl_lock);
    free(slots);
    f->ctl[CTL_CNT_APPLIES]++;
    neigh_garp_all(f);
    return 0;
}

static int apply_text(fwd_t *f, const char *text, size_t len, char *err, size_t errlen)
{
    vgw_cfg_t *cfg = NULL;
    if (vgw_cfg_parse(text, len, &cfg, err, errlen) != 0)
        return -1;
    if (fwd_apply_cfg(f, cfg, err, errlen) != 0) {
        vgw_cfg_free(cfg);
        return -1;
    }
    return 0;
}

/* ---- deltas --------------------------------------------------------------------------------- */

static int strict_ipv4(const char *s, uint32_t *out)
{
    unsigned parts = 0, v = 0, digits = 0;
    uint8_t b[4];
    for (const char *p = s;; p++) {
        if (*p >= '0' && *p <= '9') {
            if (digits && v == 0)
                return -1; /* leading zero */
            v = v * 10 + (unsigned)(*p - '0');
            if (v > 255 || ++digits > 3)
                return -1;
        } else if (*p == '.' || *p == 0) {
            if (!digits || parts >= 4)
                return -1;
            b[parts++] = (uint8_t)v;
            v = 0, digits = 0;
            if (*p == 0)
                break;
        } else {
            return -1;
        }
    }
    if (parts != 4)
        return -1;
    memcpy(out, b, 4);
    return 0;
}

static int strict_uint(const char *s, unsigned long max, unsigned long *out)
{
    if (!*s || (s[0] == '0' && s[1]) || strlen(s) > 10)
        return -1;
    unsigned long v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (unsigned long)(*p - '0');
    }
    if (v > max)
        return -1;
    *out = v;
    return 0;
}

static int be_state_parse(const char *s)
{
    if (!strcmp(s, "active"))
        return VGW_BE_ACTIVE;
    if (!strcmp(s, "draining"))
        return VGW_BE_DRAINING;
    if (!strcmp(s, "disabled"))
        return VGW_BE_DISABLED;
    return -1;
}

static vgw_cfg_service_t *find_svc(vgw_cfg_t *c, const char *name)
{
    for (uint32_t i = 0; i < c->nservices; i++)
        if (!strcmp(c->services[i].name, name))
            return &c->services[i];
    return NULL;
}

static vgw_cfg_backend_t *find_be(vgw_cfg_service_t *s, uint32_t addr, uint16_t port)
{
    for (uint32_t i = 0; i < s->nbackends; i++)
        if (s->backends[i].addr.v4 == addr && s->backends[i].port == port)
            return &s->backends[i];
    return NULL;
}

static int grow(void **arr, uint32_t *cap, uint32_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    uint32_t nc = *cap ? *cap * 2 : 8;
    while (nc < need)
        nc *= 2;
    void *p = realloc(*arr, (size_t)nc * elem);
    if (!p)
        return -1;
    *arr = p, *cap = nc;
    return 0;
}

#define DFAIL(...)                                                                                 \
    do {                                                                                           \
        snprintf(err, errlen, "line %u: ", lineno);                                                \
        size_t _l = strlen(err);                                                                   \
        snprintf(err + _l, errlen - _l, __VA_ARGS__);                                              \
        goto fail;                                                                                 \
    } while (0)

/* One delta op on the clone c. tok[] are the line's tokens. */
static int delta_op(vgw_cfg_t *c, char **t, int n, unsigned lineno, char *err, size_t errlen)
{
    uint32_t addr;
    unsigned long port, weight;
    vgw_cfg_service_t *s;
    if (n >= 2 && !strcmp(t[0], "backend")) {
        if (n < 5)
            DFAIL("backend: expected <op> <service> <addr> <port> ...");
        if (!(s = find_svc(c, t[2])))
            DFAIL("no service '%s'", t[2]);
        if (strict_ipv4(t[3], &addr) || strict_uint(t[4], 65535, &port) || port == 0)
            DFAIL("bad backend address or port '%s %s'", t[3], t[4]);
        vgw_cfg_backend_t *be = find_be(s, addr, (uint16_t)port);
        if (!strcmp(t[1], "add")) {
            int st;
            if (n != 7 || strict_uint(t[5], 65535, &weight) || (st = be_state_parse(t[6])) < 0)
                DFAIL("backend add: expected <service> <addr> <port> <weight 0-65535> <active|draining|disabled>");
            if (be)
                DFAIL("backend %s:%s already in service %s", t[3], t[4], s->name);
            if (grow((void **)&s->backends, &s->backends_cap, s->nbackends + 1, sizeof *s->backends))
                DFAIL("out of memory");
            vgw_cfg_backend_t *nb = &s->backends[s->nbackends++];
            memset(nb, 0, sizeof *nb);
            nb->addr.v4 = addr, nb->port = (uint16_t)port, nb->weight = (uint16_t)weight, nb->af = VGW_AF_INET;
            nb->state = (uint8_t)st;
        } else if (!strcmp(t[1], "remove")) {
            if (n != 5)
                DFAIL("backend remove: expected <service> <addr> <port>");
            if (!be)
                DFAIL("no backend %s:%s in service %s", t[3], t[4], s->name);
            uint32_t idx = (uint32_t)(be - s->backends);
            memmove(be, be + 1, sizeof *be * (s->nbackends - idx - 1));
            s->nbackends--;
        } else if (!strcmp(t[1], "weight")) {
            if (n != 6 || strict_uint(t[5], 65535, &weight))
                DFAIL("backend weight: expected <service> <addr> <port> <weight 0-65535>");
            if (!be)
                DFAIL("no backend %s:%s in service %s", t[3], t[4], s->name);
            be->weight = (uint16_t)weight;
        } else if (!strcmp(t[1], "state")) {
            int st;
            if (n != 6 || (st = be_state_parse(t[5])) < 0)
                DFAIL("backend state: expected <service> <addr> <port> <active|draining|disabled>");
            if (!be)
                DFAIL("no backend %s:%s in service %s", t[3], t[4], s->name);
            be->state = (uint8_t)st;
        } else {
            DFAIL("backend: unknown operation '%s'", t[1]);
        }
        return 0;
    }
    if (n >= 2 && !strcmp(t[0], "lip")) {
        if (n != 4 || strict_ipv4(t[3], &addr))
            DFAIL("lip: expected <add|remove> <service> <addr>");
        if (!(s = find_svc(c, t[2])))
            DFAIL("no service '%s'", t[2]);
        uint32_t i;
        for (i = 0; i < s->nlips && s->lips[i].v4 != addr; i++)
            ;
        if (!strcmp(t[1], "add")) {
            if (i < s->nlips)
                DFAIL("lip %s already in service %s", t[3], s->name);
            if (grow((void **)&s->lips, &s->lips_cap, s->nlips + 1, sizeof *s->lips))
                DFAIL("out of memory");
            memset(&s->lips[s->nlips], 0, sizeof *s->lips);
            s->lips[s->nlips++].v4 = addr;
        } else if (!strcmp(t[1], "remove")) {
            if (i == s->nlips)
                DFAIL("no lip %s in service %s", t[3], s->name);
            memmove(&s->lips[i], &s->lips[i + 1], sizeof *s->lips * (s->nlips - i - 1));
            s->nlips--;
        } else {
            DFAIL("lip: unknown operation '%s'", t[1]);
        }
        return 0;
    }
    if (n >= 3 && !strcmp(t[0], "service")) {
        if (!strcmp(t[1], "remove")) {
            if (n != 3)
                DFAIL("service remove: expected <service>");
            if (!(s = find_svc(c, t[2])))
                DFAIL("no service '%s'", t[2]);
            uint32_t idx = (uint32_t)(s - c->services);
            cfg_free_service(s);
            memmove(s, s + 1, sizeof *s * (c->nservices - idx - 1));
            c->nservices--;
            return 0;
        }
        if (!strcmp(t[1], "add")) {
            if (find_svc(c, t[2]))
                DFAIL("service %s already exists", t[2]);
            /* Let the real parser validate the service line: wrap it in a one-service document
             * with a placeholder LIP, then keep the service without it. */
            char doc[VGW_CFG_MAX_LINE * 2 + 128];
            int o = snprintf(doc, sizeof doc, "vgw-config 1\ngeneration 1\nservice");
            for (int i = 2; i < n && o < (int)sizeof doc; i++)
                o += snprintf(doc + o, sizeof doc - (size_t)o, " %s", t[i]);
            const char *ph = strcmp(t[4], "198.18.255.254") ? "198.18.255.254" : "198.18.255.253";
            if (o < (int)sizeof doc)
                o += snprintf(doc + o, sizeof doc - (size_t)o, "\nlip %s %s\nend\n", t[2], ph);
            if (o >= (int)sizeof doc)
                DFAIL("service add: line too long");
            vgw_cfg_t *one = NULL;
            char perr[256];
            if (vgw_cfg_parse(doc, (size_t)o, &one, perr, sizeof perr) != 0) {
                const char *reason = strchr(perr, ':') ? strchr(perr, ':') + 2 : perr;
                DFAIL("service add: %s", reason);
            }
            if (grow((void **)&c->services, &c->services_cap, c->nservices + 1, sizeof *c->services)) {
                vgw_cfg_free(one);
                DFAIL("out of memory");
            }
            vgw_cfg_service_t *ns = &c->services[c->nservices++];
            *ns = one->services[0];
            ns->nlips = 0; /* drop the placeholder; "lip add" lines follow */
            one->services[0].backends = NULL, one->services[0].lips = NULL;
            one->nservices = 0;
            vgw_cfg_free(one);
            return 0;
        }
        DFAIL("service: unknown operation '%s'", t[1]);
    }
    DFAIL("unknown directive '%s'", n ? t[0] : "");
fail:
    return -1;
}

static int apply_delta(fwd_t *f, char *text, size_t len, char *err, size_t errlen)
{
    unsigned lineno = 0;
    vgw_cfg_t *c = NULL;
    uint64_t gen = 0;
    bool header = false, ended = false;
    if (memchr(text, 0, len))
        return snprintf(err, errlen, "delta: NUL byte in document"), -1;
    c = cfg_clone(f->cfg);
    if (!c)
        return snprintf(err, errlen, "out of memory"), -1;
    char *save = NULL;
    text[len] = 0;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        size_t ll = strlen(line);
        if (ll && line[ll - 1] == '\r')
            line[--ll] = 0;
        if (ll > VGW_CFG_MAX_LINE)
            DFAIL("line too long");
        for (size_t i = 0; i < ll; i++)
            if ((unsigned char)line[i] < 0x20 && line[i] != '\t')
                DFAIL("control character");
            else if ((unsigned char)line[i] > 0x7e)
                DFAIL("non-ASCII byte");
        char *hash = strchr(line, '#');
        if (hash)
            *hash = 0;
        char *t[16];
        int n = 0;
        char *tsave = NULL;
        for (char *tok = strtok_r(line, " \t", &tsave); tok; tok = strtok_r(NULL, " \t", &tsave)) {
            if (n == 16)
                DFAIL("too many tokens");
            t[n++] = tok;
        }
        if (!n)
            continue;
        if (ended)
            DFAIL("content after 'end'");
        if (!header) {
            if (n != 2 || strcmp(t[0], "vgw-delta") || strcmp(t[1], "1"))
                DFAIL("expected header 'vgw-delta 1'");
            header = true;
            continue;
        }
        if (!gen) {
            unsigned long long g;
            char *e;
            if (n != 2 || strcmp(t[0], "generation"))
                DFAIL("expected 'generation <n>'");
            errno = 0;
            g = strtoull(t[1], &e, 10);
            if (*e || errno || !g || t[1][0] == '0' || t[1][0] == '-' || t[1][0] == '+')
                DFAIL("bad generation");
            if (g <= vgw_dp_generation(f->dp))
                DFAIL("generation %llu is not newer than the applied %llu", g,
                      (unsigned long long)vgw_dp_generation(f->dp));
            gen = g;
            continue;
        }
        if (n == 1 && !strcmp(t[0], "end")) {
            ended = true;
            continue;
        }
        if (delta_op(c, t, n, lineno, err, errlen) != 0)
            goto fail;
    }
    if (!header || !gen || !ended) {
        snprintf(err, errlen, "delta: truncated (needs 'vgw-delta 1', 'generation <n>', operations, 'end')");
        goto fail;
    }
    struct vbuf b = {0};
    cfg_serialize(c, gen, &b);
    vgw_cfg_free(c);
    c = NULL;
    if (b.oom) {
        vb_free(&b);
        return snprintf(err, errlen, "out of memory"), -1;
    }
    char perr[256];
    int rc = apply_text(f, b.p, b.len, perr, sizeof perr);
    vb_free(&b);
    if (rc) {
        /* the line number refers to the merged document: only the reason is meaningful */
        const char *reason = strchr(perr, ':') && !strncmp(perr, "line ", 5) ? strchr(perr, ':') + 2 : perr;
        snprintf(err, errlen, "delta rejected: %s", reason);
        return -1;
    }
    f->ctl[CTL_CNT_DELTAS]++;
    return 0;
fail:
    vgw_cfg_free(c);
    return -1;
}

/* ---- stats ---------------------------------------------------------------------------------- */

static void json_counter_block(struct vbuf *b, fwd_t *f)
{
    vgw_counters_t core;
    uint64_t fwd[FWD_CNT_MAX];
    memset(&core, 0, sizeof core);
    memset(fwd, 0, sizeof fwd);
    worker_snapshot_t s;
    for (uint32_t w = 0; w < f->nworkers; w++) {
        fwd_read_snapshot(&f->workers[w], &s, NULL);
        for (unsigned i = 0; i < VGW_CNT_MAX; i++)
            core.v[i] += s.core.v[i];
        for (unsigned i = 0; i < FWD_CNT_MAX; i++)
            fwd[i] += s.fwd[i];
    }
    static const char *fnames[] = {
#define FWD_X_(e, s) s,
        FWD_COUNTERS(FWD_X_)
#undef FWD_X_
    };
    static const char *cnames[] = {
#define FWD_X_(e, s) s,
        CTL_COUNTERS(FWD_X_)
#undef FWD_X_
    };
    vb_printf(b, "\"counters\":{");
    bool first = true;
    for (unsigned i = 0; i < VGW_CNT_MAX; i++) {
        const char *n = vgw_counter_name(i);
        if (!n || !strcmp(n, "drop_none"))
            continue;
        vb_printf(b, "%s\"%s\":%llu", first ? "" : ",", n, (unsigned long long)core.v[i]);
        first = false;
    }
    for (unsigned i = 0; i < FWD_CNT_MAX; i++)
        vb_printf(b, ",\"fwd_%s\":%llu", fnames[i], (unsigned long long)fwd[i]);
    for (unsigned i = 0; i < CTL_CNT_MAX; i++)
        vb_printf(b, ",\"ctl_%s\":%llu", cnames[i], (unsigned long long)f->ctl[i]);
    vb_printf(b, "}");
}

void fwd_stats_json(fwd_t *f, struct vbuf *b)
{
    char a[INET_ADDRSTRLEN];
    vb_printf(b, "{\"protocol\":%u,\"pid\":%d,\"start_unix_ns\":%llu,\"uptime_ms\":%llu,\"generation\":%llu,"
                 "\"workers\":%u,\"mode\":\"%s\",",
              CTL_VERSION, (int)getpid(), (unsigned long long)f->start_unix_ns,
              (unsigned long long)fwd_now_ms(), (unsigned long long)vgw_dp_generation(f->dp), f->nworkers,
              f->single_arm ? "single-arm" : "dual-arm");
    json_counter_block(b, f);
    vb_printf(b, ",\"ports\":{");
    worker_snapshot_t s;
    for (uint32_t r = 0; r < (f->single_arm ? 1u : 2u); r++) {
        port_stats_t ps = {0};
        for (uint32_t w = 0; w < f->nworkers; w++) {
            fwd_read_snapshot(&f->workers[w], &s, NULL);
            ps.rx_pkts += s.port[r].rx_pkts, ps.rx_bytes += s.port[r].rx_bytes;
            ps.tx_pkts += s.port[r].tx_pkts, ps.tx_bytes += s.port[r].tx_bytes, ps.tx_drops += s.port[r].tx_drops;
        }
        struct rte_eth_stats es;
        memset(&es, 0, sizeof es);
        rte_eth_stats_get(f->port[r].port_id, &es);
        vb_printf(b, "%s\"%s\":{\"device\":\"%s\",\"ip\":\"%s\",\"rx_packets\":%llu,\"rx_bytes\":%llu,"
                     "\"tx_packets\":%llu,\"tx_bytes\":%llu,\"tx_dropped\":%llu,\"nic_rx_missed\":%llu,"
                     "\"nic_rx_errors\":%llu,\"nic_tx_errors\":%llu,\"nic_rx_nombuf\":%llu}",
                  r ? "," : "", r == VGW_PORT_EXT ? "ext" : "int", f->port[r].name, ip4(f->port[r].ip, a),
                  (unsigned long long)ps.rx_pkts, (unsigned long long)ps.rx_bytes, (unsigned long long)ps.tx_pkts,
                  (unsigned long long)ps.tx_bytes, (unsigned long long)ps.tx_drops, (unsigned long long)es.imissed,
                  (unsigned long long)es.ierrors, (unsigned long long)es.oerrors, (unsigned long long)es.rx_nombuf);
    }
    vb_printf(b, "},\"services\":{");
    uint64_t *tot = malloc(sizeof(uint64_t) * FWD_MAX_SVC_SLOTS * SVC_CNT_MAX);
    if (tot)
        fwd_svc_totals(f, tot);
    static const char *snames[] = {
#define FWD_X_(e, s) s,
        SVC_COUNTERS(FWD_X_)
#undef FWD_X_
    };
    bool first = true;
    for (uint32_t k = 0; k < FWD_MAX_SVC_SLOTS && tot; k++) {
        if (!f->svc_keys[k].used)
            continue;
        const svc_key_slot_t *ks = &f->svc_keys[k];
        vb_printf(b, "%s\"%s\":{\"vip\":\"%s\",\"port\":%u,\"proto\":\"%s\"", first ? "" : ",", f->svc_names[k],
                  ip4(ks->vip, a), ntohs(ks->port), ks->proto == VGW_PROTO_UDP ? "udp" : "tcp");
        for (unsigned c = 0; c < SVC_CNT_MAX; c++)
            vb_printf(b, ",\"%s\":%llu", snames[c], (unsigned long long)tot[(size_t)k * SVC_CNT_MAX + c]);
        vb_printf(b, "}");
        first = false;
    }
    free(tot);
    vb_printf(b, "},\"per_worker\":[");
    for (uint32_t w = 0; w < f->nworkers; w++) {
        fwd_read_snapshot(&f->workers[w], &s, NULL);
        vb_printf(b, "%s{\"id\":%u,\"lcore\":%u,\"conn_active\":%u,\"rx_packets\":%llu,\"busy_polls\":%llu,"
                     "\"idle_polls\":%llu,\"sleeps\":%llu}",
                  w ? "," : "", w, f->workers[w].lcore, s.conns, (unsigned long long)s.fwd[FWD_CNT_RX_PKTS],
                  (unsigned long long)s.busy_polls, (unsigned long long)s.idle_polls, (unsigned long long)s.sleeps);
    }
    vb_printf(b, "]}");
}

/* ---- the socket ------------------------------------------------------------------------------ */

typedef struct ctl_client {
    int fd;
    uint8_t hdr[CTL_HDR];
    uint32_t hgot;
    char *buf;
    uint32_t need, got;
    uint8_t type;
    uint32_t id;
    uint64_t last_ms;
} ctl_client_t;

static int g_listen = -1;
static ctl_client_t g_clients[CTL_MAX_CLIENTS];
static uint64_t g_buffered; /* bytes of payload buffers allocated */

static void client_free_buf(ctl_client_t *c)
{
    if (c->buf) {
        g_buffered -= (uint64_t)c->need + 1;
        free(c->buf);
        c->buf = NULL;
    }
}

static void client_close(ctl_client_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    client_free_buf(c);
    memset(c, 0, sizeof *c);
    c->fd = -1;
}

static int write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1; /* includes the SO_SNDTIMEO timeout */
        }
        b += w, n -= (size_t)w;
    }
    return 0;
}

static int reply(ctl_client_t *c, uint8_t type, uint32_t id, bool error, const char *payload, size_t len)
{
    uint8_t h[CTL_HDR];
    memcpy(h, CTL_MAGIC, 4);
    h[4] = CTL_VERSION;
    h[5] = (uint8_t)(type | CTL_REPLY);
    uint16_t fl = htons(error ? CTL_F_ERROR : 0);
    memcpy(h + 6, &fl, 2);
    uint32_t l = htonl((uint32_t)len), i = htonl(id);
    memcpy(h + 8, &l, 4);
    memcpy(h + 12, &i, 4);
    if (write_all(c->fd, h, sizeof h) || (len && write_all(c->fd, payload, len)))
        return -1;
    return 0;
}

static int reply_err(fwd_t *f, ctl_client_t *c, uint8_t type, uint32_t id, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int reply_err(fwd_t *f, ctl_client_t *c, uint8_t type, uint32_t id, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    f->ctl[CTL_CNT_CTL_ERRORS]++;
    return reply(c, type, id, true, msg, strlen(msg));
}

static void handle_request(fwd_t *f, ctl_client_t *c)
{
    char err[512];
    struct vbuf b = {0};
    f->ctl[CTL_CNT_CTL_FRAMES]++;
    switch (c->type) {
    case CTL_HELLO:
        vb_printf(&b, "{\"protocol\":%u,\"pid\":%d,\"start_unix_ns\":%llu,\"generation\":%llu,\"workers\":%u}",
                  CTL_VERSION, (int)getpid(), (unsigned long long)f->start_unix_ns,
                  (unsigned long long)vgw_dp_generation(f->dp), f->nworkers);
        break;
    case CTL_APPLY:
        if (apply_text(f, c->buf, c->got, err, sizeof err) != 0) {
            reply_err(f, c, c->type, c->id, "%s", err);
            return;
        }
        vb_printf(&b, "generation %llu", (unsigned long long)vgw_dp_generation(f->dp));
        break;
    case CTL_DELTA:
        if (apply_delta(f, c->buf, c->got, err, sizeof err) != 0) {
            reply_err(f, c, c->type, c->id, "%s", err);
            return;
        }
        vb_printf(&b, "generation %llu", (unsigned long long)vgw_dp_generation(f->dp));
        break;
    case CTL_STATS:
        pthread_mutex_lock(&g_ctl_lock);
        fwd_stats_json(f, &b);
        pthread_mutex_unlock(&g_ctl_lock);
        break;
    case CTL_CONFIG:
        cfg_serialize(f->cfg, f->cfg->generation, &b);
        break;
    case CTL_NEIGH:
        neigh_dump_json(f, &b);
        break;
    default:
        break;
    }
    if (b.oom)
        reply_err(f, c, c->type, c->id, "out of memory");
    else
        reply(c, c->type, c->id, false, b.p ? b.p : "", b.len);
    vb_free(&b);
}

/* Reads what is available; returns -1 when the client must be closed. */
static int client_read(fwd_t *f, ctl_client_t *c)
{
    for (int frames = 0; frames < CTL_FRAMES_PER_POLL;) {
        if (c->hgot < CTL_HDR) {
            ssize_t r = recv(c->fd, c->hdr + c->hgot, CTL_HDR - c->hgot, MSG_DONTWAIT);
            if (r == 0)
                return -1;
            if (r < 0)
                return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
            c->hgot += (uint32_t)r;
            if (c->hgot < CTL_HDR)
                continue;
            uint32_t len, id;
            memcpy(&len, c->hdr + 8, 4);
            memcpy(&id, c->hdr + 12, 4);
            len = ntohl(len), id = ntohl(id);
            c->type = c->hdr[5];
            c->id = id;
            if (memcmp(c->hdr, CTL_MAGIC, 4)) {
                reply_err(f, c, 0, id, "bad magic: expected \"VGWC\" frames (docs/forwarder.md)");
                return -1;
            }
            if (c->hdr[4] != CTL_VERSION) {
                reply_err(f, c, c->type, id, "unsupported protocol version %u (this forwarder speaks %u)", c->hdr[4],
                          CTL_VERSION);
                return -1;
            }
            uint32_t max = c->type == CTL_APPLY ? VGW_CFG_MAX_BYTES
                           : c->type == CTL_DELTA ? CTL_MAX_DELTA
                                                  : CTL_MAX_SMALL;
            if (c->type < CTL_HELLO || c->type > CTL_NEIGH) {
                reply_err(f, c, c->type, id, "unknown request type %u", c->type);
                return -1;
            }
            if (len > max) {
                reply_err(f, c, c->type, id, "frame too large: %u bytes (max %u for this request)", len, max);
                return -1;
            }
            if (g_buffered + len + 1 > CTL_MAX_BUFFERED) {
                reply_err(f, c, c->type, id, "busy: too much request data in flight, retry");
                return -1;
            }
            c->need = len, c->got = 0;
            c->buf = malloc((size_t)len + 1);
            if (c->buf)
                g_buffered += (uint64_t)len + 1;
            if (!c->buf) {
                reply_err(f, c, c->type, id, "out of memory");
                return -1;
            }
        }
        if (c->got < c->need) {
            ssize_t r = recv(c->fd, c->buf + c->got, c->need - c->got, MSG_DONTWAIT);
            if (r == 0)
                return -1;
            if (r < 0)
                return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
            c->got += (uint32_t)r;
            if (c->got < c->need)
                continue;
        }
        c->buf[c->got] = 0;
        handle_request(f, c);
        client_free_buf(c);
        c->hgot = 0, c->need = c->got = 0;
        frames++;
    }
    return 0; /* more may be pending: poll() reports the socket readable again */
}

int ctl_open(fwd_t *f)
{
    for (int i = 0; i < CTL_MAX_CLIENTS; i++)
        g_clients[i].fd = -1;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(f->socket_path) >= sizeof sa.sun_path) {
        fprintf(stderr, "vgw-fwd: socket path too long\n");
        return -1;
    }
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", f->socket_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    /* A live forwarder already on this path? Refuse rather than steal its socket. */
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
        fprintf(stderr, "vgw-fwd: %s is in use by a running forwarder\n", f->socket_path);
        close(fd);
        return -1;
    }
    close(fd);
    struct stat st;
    if (lstat(f->socket_path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            fprintf(stderr, "vgw-fwd: %s exists and is not a socket\n", f->socket_path);
            return -1;
        }
        unlink(f->socket_path); /* stale, from a forwarder that died */
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    mode_t old = umask(0177);
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
    umask(old);
    if (rc || chmod(f->socket_path, 0600) || listen(fd, 16)) {
        fprintf(stderr, "vgw-fwd: control socket %s: %s\n", f->socket_path, strerror(errno));
        close(fd);
        return -1;
    }
    g_listen = fd;
    if (!f->cfg)
        f->cfg = cfg_empty();
    if (!f->svc_base)
        f->svc_base = calloc((size_t)FWD_MAX_SVC_SLOTS * SVC_CNT_MAX, sizeof(uint64_t));
    return f->cfg && f->svc_base ? 0 : -1;
}

void ctl_poll(fwd_t *f, int timeout_ms)
{
    struct pollfd pf[CTL_MAX_CLIENTS + 1];
    int idx[CTL_MAX_CLIENTS + 1];
    int n = 0;
    pf[n].fd = g_listen, pf[n].events = POLLIN, idx[n++] = -1;
    for (int i = 0; i < CTL_MAX_CLIENTS; i++)
        if (g_clients[i].fd >= 0)
            pf[n].fd = g_clients[i].fd, pf[n].events = POLLIN, idx[n++] = i;
    int r = poll(pf, (nfds_t)n, timeout_ms);
    uint64_t now = fwd_now_ms();
    if (r > 0) {
        for (int k = 0; k < n; k++) {
            if (!pf[k].revents)
                continue;
            if (idx[k] < 0) {
                int cfd = accept4(g_listen, NULL, NULL, SOCK_CLOEXEC);
                if (cfd < 0)
                    continue;
                int slot = -1;
                for (int i = 0; i < CTL_MAX_CLIENTS; i++)
                    if (g_clients[i].fd < 0) {
                        slot = i;
                        break;
                    }
                if (slot < 0) {
                    close(cfd); /* too many clients */
                    continue;
                }
                struct timeval tv = {.tv_sec = 2, .tv_usec = 0};
                setsockopt(cfd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
                g_clients[slot].fd = cfd;
                g_clients[slot].last_ms = now;
                continue;
            }
            ctl_client_t *c = &g_clients[idx[k]];
            c->last_ms = now;
            if (client_read(f, c) != 0)
                client_close(c);
        }
    }
    for (int i = 0; i < CTL_MAX_CLIENTS; i++)
        if (g_clients[i].fd >= 0 && now - g_clients[i].last_ms > CTL_IDLE_MS)
            client_close(&g_clients[i]);
}

void ctl_close(fwd_t *f)
{
    for (int i = 0; i < CTL_MAX_CLIENTS; i++)
        if (g_clients[i].fd >= 0)
            client_close(&g_clients[i]);
    if (g_listen >= 0) {
        close(g_listen);
        g_listen = -1;
        unlink(f->socket_path);
    }
    vgw_cfg_free(f->cfg);
    f->cfg = NULL;
    free(f->svc_base);
    f->svc_base = NULL;
}
