/* SPDX-License-Identifier: Apache-2.0
 * Per-service counter slots (svcmap.h). */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fwd.h"

static uint32_t key_hash(uint32_t vip, uint16_t port, uint8_t proto)
{
    return (uint32_t)((((uint64_t)vip * 0x9e3779b97f4a7c15ULL) ^ ((uint64_t)port << 8 | proto) * 0xc2b2ae3d27d4eb4fULL) >>
                      32);
}

uint32_t svcmap_lookup(const svcmap_t *m, uint32_t vip, uint16_t port, uint8_t proto)
{
    if (!m || !m->tab)
        return UINT32_MAX;
    uint32_t h = key_hash(vip, port, proto);
    for (uint32_t i = 0; i <= m->mask; i++) {
        const svc_key_slot_t *s = &m->tab[(h + i) & m->mask];
        if (!s->used)
            return UINT32_MAX;
        if (s->vip == vip && s->port == port && s->proto == proto)
            return s->slot;
    }
    return UINT32_MAX;
}

int svcmap_init(fwd_t *f)
{
    svcmap_ctl_t *c = &f->svc;
    atomic_init(&c->cur, NULL);
    atomic_init(&c->cur_gen, 0);
    c->base = calloc((size_t)FWD_MAX_SVC_SLOTS * SVC_CNT_MAX, sizeof(uint64_t));
    return c->base ? 0 : -1;
}

static void map_free(svcmap_t *m)
{
    if (m) {
        free(m->tab);
        free(m);
    }
}

void svcmap_fini(fwd_t *f)
{
    svcmap_ctl_t *c = &f->svc;
    map_free(atomic_exchange(&c->cur, NULL));
    for (uint32_t i = 0; i < c->nretired; i++)
        map_free(c->retired[i]);
    c->nretired = 0;
    free(c->base);
    c->base = NULL;
}

void svcmap_reclaim(fwd_t *f)
{
    svcmap_ctl_t *c = &f->svc;
    uint64_t min = UINT64_MAX;
    for (uint32_t w = 0; w < f->nworkers; w++) {
        uint64_t g = atomic_load(&f->workers[w].svcmap_gen);
        if (g < min)
            min = g;
    }
    uint32_t k = 0;
    for (uint32_t i = 0; i < c->nretired; i++) {
        if (c->retired[i]->generation < min)
            map_free(c->retired[i]);
        else
            c->retired[k++] = c->retired[i];
    }
    c->nretired = k;
}

int svcmap_ready(fwd_t *f)
{
    if (f->svc.nretired < SVCMAP_RETIRED_MAX)
        return 0;
    svcmap_reclaim(f);
    return f->svc.nretired < SVCMAP_RETIRED_MAX ? 0 : -1;
}

void svcmap_totals(fwd_t *f, uint64_t *out)
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
    svcmap_rebase(f, out);
}

void svcmap_rebase(const fwd_t *f, uint64_t *sums)
{
    if (!f->svc.base)
        return;
    for (size_t i = 0; i < (size_t)FWD_MAX_SVC_SLOTS * SVC_CNT_MAX; i++)
        if (i % SVC_CNT_MAX != SVC_CNT_ACTIVE)
            sums[i] -= f->svc.base[i] <= sums[i] ? f->svc.base[i] : sums[i];
}

/* A slot for a new service: a never-used one, else the longest-free one whose connections are
 * gone (its active gauge reads 0), else the longest-free one. */
static uint32_t alloc_slot(svcmap_ctl_t *c, const uint64_t *raw)
{
    if (c->next_fresh < FWD_MAX_SVC_SLOTS)
        return c->next_fresh++;
    for (uint32_t tries = 0; tries < c->fifo_len; tries++) {
        uint32_t s = c->fifo[c->fifo_head];
        c->fifo_head = (c->fifo_head + 1) % FWD_MAX_SVC_SLOTS;
        if (!raw || raw[(size_t)s * SVC_CNT_MAX + SVC_CNT_ACTIVE] == 0) {
            c->fifo_len--;
            return s;
        }
        c->fifo[(c->fifo_head + c->fifo_len - 1) % FWD_MAX_SVC_SLOTS] = s; /* back of the line */
    }
    if (!c->fifo_len)
        return UINT32_MAX;
    uint32_t s = c->fifo[c->fifo_head];
    c->fifo_head = (c->fifo_head + 1) % FWD_MAX_SVC_SLOTS;
    c->fifo_len--;
    return s;
}

static svcmap_t *map_build(const svcmap_ctl_t *c, uint64_t generation)
{
    uint32_t size = 16;
    while (size < c->nused * 2)
        size *= 2;
    svcmap_t *m = calloc(1, sizeof *m);
    if (!m || !(m->tab = calloc(size, sizeof *m->tab))) {
        free(m);
        return NULL;
    }
    m->generation = generation;
    m->mask = size - 1;
    for (uint32_t k = 0; k < FWD_MAX_SVC_SLOTS; k++) {
        const svc_key_slot_t *ks = &c->keys[k];
        if (!ks->used)
            continue;
        uint32_t h = key_hash(ks->vip, ks->port, ks->proto);
        uint32_t j = 0;
        while (m->tab[(h + j) & m->mask].used)
            j++;
        m->tab[(h + j) & m->mask] = *ks;
    }
    return m;
}

int svcmap_sync(fwd_t *f, const vgw_cfg_t *cfg)
{
    svcmap_ctl_t *c = &f->svc;
    const svcmap_t *cur = atomic_load(&c->cur);
    uint32_t seq = ++c->seq, kept = 0, need = 0;
    pthread_mutex_lock(&g_ctl_lock);
    for (uint32_t i = 0; i < cfg->nservices; i++) {
        const vgw_cfg_service_t *s = cfg->services[i];
        uint32_t slot = svcmap_lookup(cur, s->vip.v4, htons(s->port), s->proto);
        if (slot == UINT32_MAX) {
            need++;
            continue;
        }
        c->stamp[slot] = seq;
        kept++;
        if (strcmp(c->names[slot], s->name) != 0)
            snprintf(c->names[slot], sizeof c->names[slot], "%s", s->name);
    }
    if (!need && kept == c->nused) {
        pthread_mutex_unlock(&g_ctl_lock);
        return 0;
    }
    for (uint32_t k = 0; k < FWD_MAX_SVC_SLOTS; k++) {
        if (!c->keys[k].used || c->stamp[k] == seq)
            continue;
        c->keys[k].used = 0;
        c->names[k][0] = 0;
        c->nused--;
        c->fifo[(c->fifo_head + c->fifo_len) % FWD_MAX_SVC_SLOTS] = k;
        c->fifo_len++;
    }
    uint64_t *raw = NULL;
    if (need) {
        /* Counters as they are (without baselines): a new slot starts from them, and a slot
         * whose previous service still has connections waits. */
        raw = malloc(sizeof(uint64_t) * FWD_MAX_SVC_SLOTS * SVC_CNT_MAX);
        uint64_t *saved = c->base;
        c->base = NULL;
        if (raw)
            svcmap_totals(f, raw);
        c->base = saved;
    }
    int rc = 0;
    for (uint32_t i = 0; i < cfg->nservices && need; i++) {
        const vgw_cfg_service_t *s = cfg->services[i];
        uint16_t port = htons(s->port);
        if (svcmap_lookup(cur, s->vip.v4, port, s->proto) != UINT32_MAX)
            continue; /* kept above */
        uint32_t k = alloc_slot(c, raw);
        if (k == UINT32_MAX) {
            rc = -1;
            break;
        }
        c->keys[k] = (svc_key_slot_t){.vip = s->vip.v4, .port = port, .proto = s->proto, .used = 1, .slot = k};
        c->stamp[k] = seq;
        c->nused++;
        snprintf(c->names[k], sizeof c->names[k], "%s", s->name);
        if (raw)
            memcpy(&c->base[(size_t)k * SVC_CNT_MAX], &raw[(size_t)k * SVC_CNT_MAX], sizeof(uint64_t) * SVC_CNT_MAX);
        c->base[(size_t)k * SVC_CNT_MAX + SVC_CNT_ACTIVE] = 0;
        need--;
    }
    free(raw);
    svcmap_t *m = map_build(c, ++c->next_gen);
    pthread_mutex_unlock(&g_ctl_lock);
    if (!m)
        return -1;
    svcmap_t *old = atomic_exchange(&c->cur, m);
    atomic_store(&c->cur_gen, m->generation);
    if (old)
        c->retired[c->nretired++] = old;
    return rc;
}
