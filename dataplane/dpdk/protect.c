/* SPDX-License-Identifier: Apache-2.0
 * Flood-protection totals per service and per LIP (protect.h). */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "protect.h"

int prot_init(prot_ctl_t *p)
{
    memset(p, 0, sizeof *p);
    p->svc = calloc(FWD_MAX_SVC_SLOTS, sizeof *p->svc);
    p->lips = calloc(PROT_LIP_TABLE, sizeof *p->lips);
    p->buf = calloc(VGW_LIP_TRACK_MAX, sizeof *p->buf);
    return p->svc && p->lips && p->buf ? 0 : -1;
}

void prot_fini(prot_ctl_t *p)
{
    pthread_mutex_lock(&g_ctl_lock); /* the telemetry thread may still ask */
    free(p->svc);
    free(p->lips);
    free(p->buf);
    memset(p, 0, sizeof *p);
    pthread_mutex_unlock(&g_ctl_lock);
}

/* One uid's counters summed over workers; the gauge counts the workers where it is set. */
static void uid_sums(const fwd_t *f, uint32_t uid, uint64_t *raw)
{
    memset(raw, 0, sizeof(uint64_t) * VGW_SCNT_MAX);
    if (uid == UINT32_MAX)
        return;
    vgw_svc_counters_t c;
    for (uint32_t w = 0; w < f->nworkers; w++) {
        if (!f->workers[w].w)
            continue;
        vgw_worker_svc_counters(f->workers[w].w, uid, &c);
        for (unsigned i = 0; i < VGW_SCNT_MAX; i++)
            raw[i] += i == VGW_SCNT_SYNPROXY_ACTIVE ? (c.v[i] != 0) : c.v[i];
    }
}

/* Counters go forward by what the sum grew since the last read; a sum below the last one was
 * cleared in between, and everything in it is new. */
static void fold(uint64_t *total, uint64_t *last, const uint64_t *raw)
{
    for (unsigned i = 0; i < VGW_SCNT_MAX; i++) {
        if (i == VGW_SCNT_SYNPROXY_ACTIVE)
            total[i] = raw[i];
        else
            total[i] += raw[i] >= last[i] ? raw[i] - last[i] : raw[i];
        last[i] = raw[i];
    }
}

void prot_sync(fwd_t *f)
{
    prot_ctl_t *p = &f->prot;
    if (!p->svc)
        return;
    uint64_t raw[VGW_SCNT_MAX];
    pthread_mutex_lock(&g_ctl_lock);
    for (uint32_t k = 0; k < FWD_MAX_SVC_SLOTS; k++) {
        const svc_key_slot_t *ks = &f->svc.keys[k];
        svc_prot_t *s = &p->svc[k];
        if (!ks->used) {
            if (s->bound) /* written only when set: untouched slots cost no resident memory */
                s->bound = 0;
            continue;
        }
        uint32_t uid = vgw_dp_svc_uid(f->dp, ks->proto, ks->vip, ntohs(ks->port));
        bool same = s->bound && s->vip == ks->vip && s->port == ks->port && s->proto == ks->proto &&
                    !strcmp(s->name, f->svc.names[k]);
        if (same && uid == s->uid)
            continue;
        if (same) {
            /* the same service under a new uid: keep what the old one counted */
            uid_sums(f, s->uid, raw);
            fold(s->total, s->last, raw);
        } else {
            memset(s->total, 0, sizeof s->total);
            s->vip = ks->vip, s->port = ks->port, s->proto = ks->proto;
            memcpy(s->name, f->svc.names[k], sizeof s->name);
            s->bound = 1;
        }
        /* from here on, only what the new uid counts from now */
        s->uid = uid;
        uid_sums(f, uid, s->last);
        s->total[VGW_SCNT_SYNPROXY_ACTIVE] = s->last[VGW_SCNT_SYNPROXY_ACTIVE];
    }
    pthread_mutex_unlock(&g_ctl_lock);
}

void prot_service(fwd_t *f, uint32_t slot, uint64_t *out)
{
    prot_ctl_t *p = &f->prot;
    memset(out, 0, sizeof(uint64_t) * VGW_SCNT_MAX);
    if (!p->svc || slot >= FWD_MAX_SVC_SLOTS || !p->svc[slot].bound)
        return;
    svc_prot_t *s = &p->svc[slot];
    uint64_t raw[VGW_SCNT_MAX];
    uid_sums(f, s->uid, raw);
    fold(s->total, s->last, raw);
    memcpy(out, s->total, sizeof s->total);
}

static uint32_t lip_hash(uint32_t lip)
{
    return (uint32_t)(((uint64_t)lip * 0x9e3779b97f4a7c15ULL) >> 32);
}

static lip_total_t *lip_slot(prot_ctl_t *p, uint32_t lip)
{
    uint32_t mask = PROT_LIP_TABLE - 1;
    for (uint32_t i = 0, h = lip_hash(lip); i < PROT_LIP_TABLE; i++) {
        lip_total_t *e = &p->lips[(h + i) & mask];
        if (e->lip == lip)
            return e;
        if (!e->lip) {
            if (p->nlips >= PROT_LIP_TABLE * 3 / 4) /* keep probes short: full */
                return NULL;
            e->lip = lip;
            p->nlips++;
            return e;
        }
    }
    return NULL;
}

static int cmp_lip(const void *a, const void *b)
{
    uint32_t x = ntohl(((const vgw_lip_count_t *)a)->lip), y = ntohl(((const vgw_lip_count_t *)b)->lip);
    return x < y ? -1 : x > y;
}

uint32_t prot_lips(fwd_t *f, vgw_lip_count_t *out, uint32_t max)
{
    prot_ctl_t *p = &f->prot;
    if (!p->lips)
        return 0;
    for (uint32_t i = 0; i < PROT_LIP_TABLE; i++)
        p->lips[i].cur = 0;
    for (uint32_t w = 0; w < f->nworkers; w++) {
        if (!f->workers[w].w)
            continue;
        uint32_t n = vgw_worker_lip_exhaustion(f->workers[w].w, p->buf, VGW_LIP_TRACK_MAX);
        if (n > VGW_LIP_TRACK_MAX)
            n = VGW_LIP_TRACK_MAX;
        for (uint32_t i = 0; i < n; i++) {
            if (!p->buf[i].lip || !p->buf[i].exhausted)
                continue;
            lip_total_t *e = lip_slot(p, p->buf[i].lip);
            if (e)
                e->cur += p->buf[i].exhausted;
        }
    }
    uint32_t n = 0;
    for (uint32_t i = 0; i < PROT_LIP_TABLE; i++) {
        lip_total_t *e = &p->lips[i];
        if (!e->lip)
            continue;
        e->total += e->cur >= e->last ? e->cur - e->last : e->cur;
        e->last = e->cur;
        if (e->total && n < max)
            out[n++] = (vgw_lip_count_t){.lip = e->lip, .exhausted = e->total};
    }
    qsort(out, n, sizeof *out, cmp_lip);
    return n;
}
