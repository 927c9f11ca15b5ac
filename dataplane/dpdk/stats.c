/* SPDX-License-Identifier: Apache-2.0
 * Counter names and the STATS reply (stats.h). */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <rte_ethdev.h>

#include "connstate.h"
#include "protect.h"
#include "stats.h"
#include "sync.h"

const char *const fwd_counter_names[FWD_CNT_MAX] = {
#define FWD_X_(e, s) [FWD_CNT_##e] = s,
    FWD_COUNTERS(FWD_X_)
#undef FWD_X_
};
const char *const ctl_counter_names[CTL_CNT_MAX] = {
#define FWD_X_(e, s) [CTL_CNT_##e] = s,
    CTL_COUNTERS(FWD_X_)
#undef FWD_X_
};
const char *const svc_counter_names[SVC_CNT_MAX] = {
#define FWD_X_(e, s) [SVC_CNT_##e] = s,
    SVC_COUNTERS(FWD_X_)
#undef FWD_X_
};

static void add_snapshot(vgw_counters_t *core, uint64_t *fwd, port_stats_t *port, const worker_snapshot_t *s)
{
    for (unsigned i = 0; i < VGW_CNT_MAX; i++)
        core->v[i] += s->core.v[i];
    for (unsigned i = 0; i < FWD_CNT_MAX; i++)
        fwd[i] += s->fwd[i];
    for (unsigned r = 0; r < FWD_MAX_PORTS; r++) {
        port[r].rx_pkts += s->port[r].rx_pkts, port[r].rx_bytes += s->port[r].rx_bytes;
        port[r].tx_pkts += s->port[r].tx_pkts, port[r].tx_bytes += s->port[r].tx_bytes;
        port[r].tx_drops += s->port[r].tx_drops;
    }
}

void stats_totals(const fwd_t *f, vgw_counters_t *core, uint64_t *fwd)
{
    memset(core, 0, sizeof *core);
    memset(fwd, 0, sizeof(uint64_t) * FWD_CNT_MAX);
    port_stats_t port[FWD_MAX_PORTS] = {0};
    worker_snapshot_t s;
    for (uint32_t w = 0; w < f->nworkers; w++) {
        fwd_read_snapshot(&f->workers[w], &s, NULL);
        add_snapshot(core, fwd, port, &s);
    }
}

void stats_port(const fwd_t *f, uint32_t role, port_stats_t *ps)
{
    vgw_counters_t core = {0};
    uint64_t fwd[FWD_CNT_MAX] = {0};
    port_stats_t port[FWD_MAX_PORTS] = {0};
    worker_snapshot_t s;
    for (uint32_t w = 0; w < f->nworkers; w++) {
        fwd_read_snapshot(&f->workers[w], &s, NULL);
        add_snapshot(&core, fwd, port, &s);
    }
    *ps = port[role];
}

/* Every worker's snapshot read once, and the sums: each section of a STATS reply comes from this
 * one reading, so the sections agree with each other. Read section by section, a worker could
 * publish in between, and a service's active connections read more than the node's. */
typedef struct stats_view {
    worker_snapshot_t *worker; /* f->nworkers */
    vgw_counters_t core;
    uint64_t fwd[FWD_CNT_MAX];
    port_stats_t port[FWD_MAX_PORTS];
    uint64_t *svc; /* FWD_MAX_SVC_SLOTS * SVC_CNT_MAX, slot baselines subtracted */
} stats_view_t;

static void view_free(stats_view_t *v)
{
    free(v->worker);
    free(v->svc);
}

/* -1 when out of memory (nothing to free then). */
static int view_read(fwd_t *f, stats_view_t *v)
{
    const size_t nsvc = (size_t)FWD_MAX_SVC_SLOTS * SVC_CNT_MAX;
    memset(v, 0, sizeof *v);
    v->worker = calloc(f->nworkers ? f->nworkers : 1u, sizeof *v->worker);
    v->svc = calloc(nsvc, sizeof(uint64_t));
    uint64_t *one = malloc(sizeof(uint64_t) * nsvc);
    if (!v->worker || !v->svc || !one) {
        free(one);
        view_free(v);
        return -1;
    }
    for (uint32_t w = 0; w < f->nworkers; w++) {
        fwd_read_snapshot(&f->workers[w], &v->worker[w], one);
        add_snapshot(&v->core, v->fwd, v->port, &v->worker[w]);
        for (size_t i = 0; i < nsvc; i++)
            v->svc[i] += one[i];
    }
    free(one);
    svcmap_rebase(f, v->svc);
    return 0;
}

void stats_rss(stats_rss_t *out)
{
    memset(out, 0, sizeof *out);
    FILE *fp = fopen("/proc/self/status", "r");
    if (!fp)
        return;
    char line[256];
    unsigned long long kb;
    while (fgets(line, sizeof line, fp)) {
        if (sscanf(line, "RssAnon: %llu kB", &kb) == 1)
            out->anon = kb * 1024;
        else if (sscanf(line, "RssFile: %llu kB", &kb) == 1)
            out->file = kb * 1024;
        else if (sscanf(line, "RssShmem: %llu kB", &kb) == 1)
            out->shmem = kb * 1024;
    }
    fclose(fp);
}

static const char *ip4(uint32_t a, char *buf)
{
    inet_ntop(AF_INET, &a, buf, INET_ADDRSTRLEN);
    return buf;
}

static void counters_json(const fwd_t *f, const stats_view_t *v, struct vbuf *b)
{
    vb_printf(b, "\"counters\":{");
    bool first = true;
    for (unsigned i = 0; i < VGW_CNT_MAX; i++) {
        const char *n = vgw_counter_name(i);
        if (!n || !strcmp(n, "drop_none"))
            continue;
        vb_printf(b, "%s\"%s\":%llu", first ? "" : ",", n, (unsigned long long)v->core.v[i]);
        first = false;
    }
    for (unsigned i = 0; i < FWD_CNT_MAX; i++)
        vb_printf(b, ",\"fwd_%s\":%llu", fwd_counter_names[i], (unsigned long long)v->fwd[i]);
    for (unsigned i = 0; i < CTL_CNT_MAX; i++)
        vb_printf(b, ",\"ctl_%s\":%llu", ctl_counter_names[i], (unsigned long long)f->ctl[i]);
    vb_printf(b, "}");
}

static void memory_json(const fwd_t *f, struct vbuf *b)
{
    const vgw_cost_t *c = &f->cost;
    stats_rss_t rss;
    stats_rss(&rss);
    vb_printf(b, "\"memory\":{\"budget_bytes\":%llu,\"rss_anon_bytes\":%llu,\"rss_file_bytes\":%llu,"
                 "\"rss_shmem_bytes\":%llu,\"cost_bytes\":{\"base\":%llu,"
                 "\"conn_tables\":%llu,\"services\":%llu,\"sched_tables\":%llu,\"transient\":%llu,\"total\":%llu}}",
              (unsigned long long)f->memory_budget, (unsigned long long)rss.anon, (unsigned long long)rss.file,
              (unsigned long long)rss.shmem, (unsigned long long)c->base,
              (unsigned long long)c->conn_tables, (unsigned long long)c->services, (unsigned long long)c->sched_tables,
              (unsigned long long)c->transient, (unsigned long long)c->total);
}

/* A service's backends, in configuration order: every one of them (VGW_MAX_BACKENDS in all bounds
 * the section), read through a fixed buffer a page at a time. */
static void backends_json(const fwd_t *f, const svc_key_slot_t *ks, struct vbuf *b)
{
    enum { PAGE = 256 };
    vgw_backend_counters_t page[PAGE];
    char a[INET_ADDRSTRLEN];
    uint32_t uid = vgw_dp_svc_uid(f->dp, ks->proto, ks->vip, ntohs(ks->port));
    vb_printf(b, ",\"backends\":[");
    uint32_t total = vgw_dp_backend_counters(f->dp, uid, 0, page, PAGE);
    for (uint32_t first = 0; first < total; first += PAGE) {
        if (first)
            vgw_dp_backend_counters(f->dp, uid, first, page, PAGE);
        for (uint32_t i = 0; i < PAGE && first + i < total; i++)
            vb_printf(b, "%s{\"address\":\"%s\",\"port\":%u,\"conn_active\":%llu,\"conn_new\":%llu}",
                      first + i ? "," : "", ip4(page[i].addr, a), page[i].port,
                      (unsigned long long)page[i].conn_active, (unsigned long long)page[i].conn_new);
    }
    vb_printf(b, "]");
}

void stats_json(fwd_t *f, struct vbuf *b)
{
    char a[INET_ADDRSTRLEN];
    stats_view_t v;
    if (view_read(f, &v) < 0) {
        b->oom = true;
        return;
    }
    vb_printf(b, "{\"protocol\":1,\"pid\":%d,\"start_unix_ns\":%llu,\"uptime_ms\":%llu,\"generation\":%llu,"
                 "\"workers\":%u,\"mode\":\"%s\",\"steer_clients\":%s,\"syn_cookie_key\":\"%s\",",
              (int)getpid(), (unsigned long long)f->start_unix_ns, (unsigned long long)fwd_now_ms(),
              (unsigned long long)vgw_dp_generation(f->dp), f->nworkers, f->single_arm ? "single-arm" : "dual-arm",
              f->steering ? "true" : "false", f->cookie_key_file[0] ? "file" : "random");
    counters_json(f, &v, b);
    vb_printf(b, ",");
    memory_json(f, b);
    vb_printf(b, ",");
    connstate_json(b); /* connstate.c: were the tables re-attached, how many connections came back */
    vb_printf(b, ",");
    sync_json(b, fwd_now_ms()); /* sync.c: connection sync, its peers, takeovers */
    vb_printf(b, ",\"ports\":{");
    for (uint32_t r = 0; r < (f->single_arm ? 1u : 2u); r++) {
        const port_stats_t ps = v.port[r];
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
    bool first = true;
    for (uint32_t k = 0; k < FWD_MAX_SVC_SLOTS; k++) {
        const svc_key_slot_t *ks = &f->svc.keys[k];
        if (!ks->used)
            continue;
        vb_printf(b, "%s\"%s\":{\"vip\":\"%s\",\"port\":%u,\"proto\":\"%s\"", first ? "" : ",", f->svc.names[k],
                  ip4(ks->vip, a), ntohs(ks->port), ks->proto == VGW_PROTO_UDP ? "udp" : "tcp");
        for (unsigned c = 0; c < SVC_CNT_MAX; c++)
            vb_printf(b, ",\"%s\":%llu", svc_counter_names[c], (unsigned long long)v.svc[(size_t)k * SVC_CNT_MAX + c]);
        uint64_t pv[VGW_SCNT_MAX];
        prot_service(f, k, pv);
        for (unsigned c = 0; c < VGW_SCNT_MAX; c++)
            vb_printf(b, ",\"%s\":%llu", vgw_svc_counter_name(c), (unsigned long long)pv[c]);
        backends_json(f, ks, b);
        vb_printf(b, "}");
        first = false;
    }
    vb_printf(b, "},\"lips\":{");
    vgw_lip_count_t *lc = malloc(sizeof *lc * PROT_LIP_TABLE);
    uint32_t nl = lc ? prot_lips(f, lc, PROT_LIP_TABLE) : 0;
    for (uint32_t i = 0; i < nl; i++)
        vb_printf(b, "%s\"%s\":{\"lport_exhausted\":%llu}", i ? "," : "", ip4(lc[i].lip, a),
                  (unsigned long long)lc[i].exhausted);
    if (!lc)
        b->oom = true;
    free(lc);
    vb_printf(b, "},\"per_worker\":[");
    for (uint32_t w = 0; w < f->nworkers; w++) {
        const worker_snapshot_t *s = &v.worker[w];
        vb_printf(b, "%s{\"id\":%u,\"lcore\":%u,\"conn_active\":%u,\"conn_halfopen\":%llu,\"rx_packets\":%llu,"
                     "\"busy_polls\":%llu,\"idle_polls\":%llu,\"sleeps\":%llu}",
                  w ? "," : "", w, f->workers[w].lcore, s->conns, (unsigned long long)s->core.v[VGW_CNT_CONN_HALFOPEN],
                  (unsigned long long)s->fwd[FWD_CNT_RX_PKTS],
                  (unsigned long long)s->busy_polls, (unsigned long long)s->idle_polls, (unsigned long long)s->sleeps);
    }
    vb_printf(b, "]}");
    view_free(&v);
}
