/* SPDX-License-Identifier: Apache-2.0
 * Applying configuration (apply.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apply.h"
#include "neigh.h"
#include "protect.h"
#include "vbuf.h"

int fwd_apply_init(fwd_t *f)
{
    f->cfg = vgw_cfg_new();
    if (!f->cfg)
        return -1;
    vgw_cfg_cost(f->cfg, &(vgw_cost_params_t){.workers = f->nworkers, .conn_capacity = f->conn_capacity}, &f->cost);
    return 0;
}

void fwd_apply_fini(fwd_t *f)
{
    vgw_cfg_free(f->cfg);
    f->cfg = NULL;
}

static double mib(uint64_t bytes)
{
    return (double)bytes / 1048576.0;
}

static int check_budget(const fwd_t *f, const vgw_cfg_t *cfg, vgw_cost_t *cost, char *err, size_t errlen)
{
    vgw_cfg_cost(cfg, &(vgw_cost_params_t){.workers = f->nworkers, .conn_capacity = f->conn_capacity}, cost);
    if (!f->memory_budget || cost->total <= f->memory_budget)
        return 0;
    snprintf(err, errlen,
             "memory budget: this configuration needs %.1f MiB (scheduler tables %.1f MiB for %u services, "
             "connection tables %.1f MiB, service structures %.1f MiB, base %.1f MiB, transient %.1f MiB), more "
             "than the memory-budget of %.1f MiB",
             mib(cost->total), mib(cost->sched_tables), cfg->nservices, mib(cost->conn_tables), mib(cost->services),
             mib(cost->base), mib(cost->transient), mib(f->memory_budget));
    return -1;
}

/* The core takes IPv6 services; this forwarder cannot serve them yet: it resolves next hops with
 * ARP only (neigh.c), and its service counter map (svcmap.c) and gratuitous announcements key on
 * IPv4 addresses. Checked first, before anything reads a VIP, so such a configuration changes
 * nothing. A service's LIPs and backends have its VIP's family (the core checks that). */
static int refuse_ipv6(const vgw_cfg_t *cfg, char *err, size_t errlen)
{
    const vgw_cfg_service_t *s = vgw_cfg_first_of_af(cfg, VGW_AF_INET6);
    if (s)
        snprintf(err, errlen, "service %s: IPv6 services need neighbour discovery, which this vgw-fwd does not have yet",
                 s->name);
    return s ? -1 : 0;
}

static int ready(fwd_t *f, char *err, size_t errlen)
{
    if (svcmap_ready(f) == 0)
        return 0;
    snprintf(err, errlen, "busy: previous generations not yet released by the workers, retry");
    return -1;
}

/* Publishes cfg through the core. Under g_ctl_lock: the core frees the generation it replaces
 * (when no worker holds it), and the telemetry thread reads per-service counters through the
 * core (vgw_worker_svc_counters looks at the current generation) only under that lock too. */
static int dp_apply(fwd_t *f, const vgw_cfg_t *cfg, char *err, size_t errlen)
{
    pthread_mutex_lock(&g_ctl_lock);
    int rc = vgw_dp_apply(f->dp, cfg, err, errlen);
    pthread_mutex_unlock(&g_ctl_lock);
    return rc;
}

/* The forwarder's own tables follow a published generation. */
static void follow(fwd_t *f, unsigned changes, const vgw_cost_t *cost)
{
    f->cost = *cost;
    if ((changes & VGW_CFG_CHANGED_SERVICES) && svcmap_sync(f, f->cfg) != 0)
        fprintf(stderr, "vgw-fwd: out of memory for service counter slots; new services are not counted yet\n");
    prot_sync(f); /* every generation: a service removed and added again may have a new uid */
    if (changes & VGW_CFG_CHANGED_ADDRS)
        neigh_announce(f, false);
}

int fwd_apply_document(fwd_t *f, const char *text, size_t len, char *err, size_t errlen)
{
    vgw_cfg_t *cfg = NULL;
    vgw_cost_t cost;
    if (vgw_cfg_parse(text, len, &cfg, err, errlen) != 0)
        return -1;
    if (refuse_ipv6(cfg, err, errlen) || check_budget(f, cfg, &cost, err, errlen) || ready(f, err, errlen) ||
        dp_apply(f, cfg, err, errlen) != 0) {
        vgw_cfg_free(cfg);
        return -1;
    }
    vgw_cfg_free(f->cfg);
    f->cfg = cfg;
    f->ctl[CTL_CNT_APPLIES]++;
    follow(f, VGW_CFG_CHANGED_SERVICES | VGW_CFG_CHANGED_ADDRS, &cost);
    return 0;
}

int fwd_apply_delta(fwd_t *f, const char *text, size_t len, char *err, size_t errlen)
{
    vgw_cfg_txn_t *txn;
    vgw_cost_t cost;
    if (vgw_cfg_delta_begin(f->cfg, text, len, &txn, err, errlen) != 0)
        return -1;
    if (refuse_ipv6(f->cfg, err, errlen) || check_budget(f, f->cfg, &cost, err, errlen) || ready(f, err, errlen)) {
        vgw_cfg_txn_rollback(txn);
        return -1;
    }
    char derr[256];
    if (dp_apply(f, f->cfg, derr, sizeof derr) != 0) {
        vgw_cfg_txn_rollback(txn);
        snprintf(err, errlen, "delta rejected: %s", derr);
        return -1;
    }
    unsigned changes = vgw_cfg_txn_changes(txn);
    vgw_cfg_txn_commit(txn);
    f->ctl[CTL_CNT_DELTAS]++;
    follow(f, changes, &cost);
    return 0;
}

int fwd_apply_file(fwd_t *f, const char *path)
{
    FILE *fp = fopen(path, "r");
    if (!fp)
        return fprintf(stderr, "vgw-fwd: cannot open %s: %s\n", path, strerror(errno)), -1;
    struct vbuf b = {0};
    char err[512];
    int rc = vb_read_file(&b, fp) != 0
                 ? (snprintf(err, sizeof err, "%s", b.oom ? "out of memory" : "read error"), -1)
                 : fwd_apply_document(f, b.p ? b.p : "", b.len, err, sizeof err);
    if (rc)
        fprintf(stderr, "vgw-fwd: %s: %s\n", path, err);
    vb_free(&b);
    return rc;
}
