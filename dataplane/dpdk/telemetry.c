/* SPDX-License-Identifier: Apache-2.0
 * vgw-fwd telemetry: /vgw/... commands on DPDK's telemetry socket, readable with
 * `dpdk-telemetry.py -f <file-prefix>`. Callbacks run on DPDK's telemetry thread and read the
 * snapshots workers publish (never their live counters), except the flood-protection counters
 * (protect.c), read through the core under g_ctl_lock, which the control thread also holds while
 * the core publishes and frees generations (apply.c). */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <rte_ethdev.h>
#include <rte_telemetry.h>
#include <rte_version.h>

#include "fwd.h"
#include "protect.h"
#include "stats.h"
#include "telemetry.h"

#if RTE_VERSION >= RTE_VERSION_NUM(23, 3, 0, 0)
#define TEL_U64(d, k, v) rte_tel_data_add_dict_uint((d), (k), (v))
#else
#define TEL_U64(d, k, v) rte_tel_data_add_dict_u64((d), (k), (v))
#endif

static void totals(vgw_counters_t *core, uint64_t *fwd)
{
    stats_totals(&g_fwd, core, fwd);
}

static int tel_info(const char *cmd, const char *params, struct rte_tel_data *d)
{
    (void)cmd, (void)params;
    rte_tel_data_start_dict(d);
    TEL_U64(d, "pid", (uint64_t)getpid());
    TEL_U64(d, "start_unix_ns", g_fwd.start_unix_ns);
    TEL_U64(d, "uptime_ms", fwd_now_ms());
    TEL_U64(d, "generation", vgw_dp_generation(g_fwd.dp));
    TEL_U64(d, "workers", g_fwd.nworkers);
    rte_tel_data_add_dict_string(d, "mode", g_fwd.single_arm ? "single-arm" : "dual-arm");
    rte_tel_data_add_dict_string(d, "socket", g_fwd.socket_path);
    return 0;
}

static int tel_stats(const char *cmd, const char *params, struct rte_tel_data *d)
{
    (void)cmd, (void)params;
    vgw_counters_t core;
    uint64_t fwd[FWD_CNT_MAX];
    totals(&core, fwd);
    rte_tel_data_start_dict(d);
    for (unsigned i = 0; i < VGW_CNT_EVENTS_MAX; i++)
        TEL_U64(d, vgw_counter_name(i), core.v[i]);
    for (unsigned i = 0; i < FWD_CNT_MAX; i++)
        TEL_U64(d, fwd_counter_names[i], fwd[i]);
    for (unsigned i = 0; i < CTL_CNT_MAX; i++)
        TEL_U64(d, ctl_counter_names[i], g_fwd.ctl[i]);
    return 0;
}

static int tel_drops(const char *cmd, const char *params, struct rte_tel_data *d)
{
    (void)cmd, (void)params;
    vgw_counters_t core;
    uint64_t fwd[FWD_CNT_MAX];
    totals(&core, fwd);
    rte_tel_data_start_dict(d);
    for (unsigned r = 1; r < VGW_DROP_MAX; r++)
        TEL_U64(d, vgw_counter_name(VGW_CNT_DROP_BASE + r), core.v[VGW_CNT_DROP_BASE + r]);
    for (unsigned i = 0; i < FWD_CNT_MAX; i++)
        if (!strncmp(fwd_counter_names[i], "drop_", 5))
            TEL_U64(d, fwd_counter_names[i], fwd[i]);
    for (unsigned i = 0; i < CTL_CNT_MAX; i++)
        if (!strncmp(ctl_counter_names[i], "drop_", 5))
            TEL_U64(d, ctl_counter_names[i], g_fwd.ctl[i]);
    return 0;
}

static int tel_ports(const char *cmd, const char *params, struct rte_tel_data *d)
{
    (void)cmd, (void)params;
    rte_tel_data_start_dict(d);
    for (uint32_t r = 0; r < (g_fwd.single_arm ? 1u : 2u); r++) {
        port_stats_t ps;
        stats_port(&g_fwd, r, &ps);
        struct rte_eth_stats es;
        memset(&es, 0, sizeof es);
        rte_eth_stats_get(g_fwd.port[r].port_id, &es);
        struct rte_tel_data *c = rte_tel_data_alloc();
        if (!c)
            return -1;
        rte_tel_data_start_dict(c);
        TEL_U64(c, "port_id", g_fwd.port[r].port_id);
        TEL_U64(c, "rx_packets", ps.rx_pkts);
        TEL_U64(c, "rx_bytes", ps.rx_bytes);
        TEL_U64(c, "tx_packets", ps.tx_pkts);
        TEL_U64(c, "tx_bytes", ps.tx_bytes);
        TEL_U64(c, "tx_dropped", ps.tx_drops);
        TEL_U64(c, "nic_rx_missed", es.imissed);
        TEL_U64(c, "nic_rx_errors", es.ierrors);
        TEL_U64(c, "nic_tx_errors", es.oerrors);
        TEL_U64(c, "nic_rx_nombuf", es.rx_nombuf);
        rte_tel_data_add_dict_container(d, r == VGW_PORT_EXT ? "ext" : "int", c, 0);
    }
    return 0;
}

static int tel_workers(const char *cmd, const char *params, struct rte_tel_data *d)
{
    (void)cmd, (void)params;
    rte_tel_data_start_dict(d);
    worker_snapshot_t s;
    for (uint32_t w = 0; w < g_fwd.nworkers && w < 200; w++) {
        fwd_read_snapshot(&g_fwd.workers[w], &s, NULL);
        struct rte_tel_data *c = rte_tel_data_alloc();
        if (!c)
            return -1;
        rte_tel_data_start_dict(c);
        TEL_U64(c, "lcore", g_fwd.workers[w].lcore);
        TEL_U64(c, "conn_active", s.conns);
        TEL_U64(c, "conn_halfopen", s.core.v[VGW_CNT_CONN_HALFOPEN]);
        TEL_U64(c, "rx_packets", s.fwd[FWD_CNT_RX_PKTS]);
        TEL_U64(c, "handoff_sent", s.fwd[FWD_CNT_HANDOFF_OUT]);
        TEL_U64(c, "handoff_received", s.fwd[FWD_CNT_HANDOFF_IN]);
        TEL_U64(c, "busy_polls", s.busy_polls);
        TEL_U64(c, "idle_polls", s.idle_polls);
        TEL_U64(c, "sleeps", s.sleeps);
        char name[16];
        snprintf(name, sizeof name, "worker%u", w);
        rte_tel_data_add_dict_container(d, name, c, 0);
    }
    return 0;
}

/* /vgw/services: names of the services; /vgw/service,<name>: one service's counters. */
static int tel_services(const char *cmd, const char *params, struct rte_tel_data *d)
{
    (void)cmd, (void)params;
    rte_tel_data_start_array(d, RTE_TEL_STRING_VAL);
    pthread_mutex_lock(&g_ctl_lock);
    for (uint32_t k = 0; k < FWD_MAX_SVC_SLOTS; k++)
        if (g_fwd.svc.keys[k].used)
            rte_tel_data_add_array_string(d, g_fwd.svc.names[k]);
    pthread_mutex_unlock(&g_ctl_lock);
    return 0;
}

static int tel_service(const char *cmd, const char *params, struct rte_tel_data *d)
{
    (void)cmd;
    if (!params || !*params)
        return -1;
    uint64_t *tot = malloc(sizeof(uint64_t) * FWD_MAX_SVC_SLOTS * SVC_CNT_MAX);
    if (!tot)
        return -1;
    int rc = -1;
    pthread_mutex_lock(&g_ctl_lock);
    for (uint32_t k = 0; k < FWD_MAX_SVC_SLOTS; k++) {
        if (!g_fwd.svc.keys[k].used || strcmp(g_fwd.svc.names[k], params))
            continue;
        svcmap_totals(&g_fwd, tot);
        char a[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &g_fwd.svc.keys[k].vip, a, sizeof a);
        rte_tel_data_start_dict(d);
        rte_tel_data_add_dict_string(d, "name", g_fwd.svc.names[k]);
        rte_tel_data_add_dict_string(d, "vip", a);
        TEL_U64(d, "port", ntohs(g_fwd.svc.keys[k].port));
        rte_tel_data_add_dict_string(d, "proto", g_fwd.svc.keys[k].proto == VGW_PROTO_UDP ? "udp" : "tcp");
        for (unsigned c = 0; c < SVC_CNT_MAX; c++)
            TEL_U64(d, svc_counter_names[c], tot[(size_t)k * SVC_CNT_MAX + c]);
        uint64_t pv[VGW_SCNT_MAX];
        prot_service(&g_fwd, k, pv);
        for (unsigned c = 0; c < VGW_SCNT_MAX; c++)
            TEL_U64(d, vgw_svc_counter_name(c), pv[c]);
        rc = 0;
        break;
    }
    pthread_mutex_unlock(&g_ctl_lock);
    free(tot);
    return rc;
}

/* /vgw/lips: how often a new connection found no free port, per LIP (only LIPs where that
 * happened, by address; the most exhausted ones when there are more than a telemetry dictionary
 * holds). {"lip0": {"lip": "198.18.0.100", "lport_exhausted": N}, ...}: telemetry keys cannot hold
 * the dots of an address, and DPDK 22.11 arrays cannot hold dictionaries. */
static int cmp_exhausted(const void *a, const void *b)
{
    uint64_t x = ((const vgw_lip_count_t *)a)->exhausted, y = ((const vgw_lip_count_t *)b)->exhausted;
    return x > y ? -1 : x < y;
}

static int tel_lips(const char *cmd, const char *params, struct rte_tel_data *d)
{
    (void)cmd, (void)params;
    vgw_lip_count_t *lc = malloc(sizeof *lc * PROT_LIP_TABLE);
    if (!lc)
        return -1;
    pthread_mutex_lock(&g_ctl_lock);
    uint32_t n = prot_lips(&g_fwd, lc, PROT_LIP_TABLE);
    pthread_mutex_unlock(&g_ctl_lock);
    if (n > RTE_TEL_MAX_DICT_ENTRIES) {
        qsort(lc, n, sizeof *lc, cmp_exhausted);
        n = RTE_TEL_MAX_DICT_ENTRIES;
    }
    rte_tel_data_start_dict(d);
    int rc = 0;
    for (uint32_t i = 0; i < n; i++) {
        char a[INET_ADDRSTRLEN], name[16];
        inet_ntop(AF_INET, &lc[i].lip, a, sizeof a);
        snprintf(name, sizeof name, "lip%u", i);
        struct rte_tel_data *c = rte_tel_data_alloc();
        if (!c) {
            rc = -1;
            break;
        }
        rte_tel_data_start_dict(c);
        rte_tel_data_add_dict_string(c, "lip", a);
        TEL_U64(c, "lport_exhausted", lc[i].exhausted);
        rte_tel_data_add_dict_container(d, name, c, 0);
    }
    free(lc);
    return rc;
}

int fwd_telemetry_register(void)
{
    int rc = 0;
    rc |= rte_telemetry_register_cmd("/vgw/info", tel_info, "vgw-fwd: pid, start time, generation, workers, mode");
    rc |= rte_telemetry_register_cmd("/vgw/stats", tel_stats, "vgw-fwd: forwarding counters summed over workers");
    rc |= rte_telemetry_register_cmd("/vgw/drops", tel_drops, "vgw-fwd: dropped packets by reason");
    rc |= rte_telemetry_register_cmd("/vgw/ports", tel_ports, "vgw-fwd: per-port counters (ext, int)");
    rc |= rte_telemetry_register_cmd("/vgw/workers", tel_workers, "vgw-fwd: per-worker counters and idle polls");
    rc |= rte_telemetry_register_cmd("/vgw/services", tel_services, "vgw-fwd: names of the configured services");
    rc |= rte_telemetry_register_cmd("/vgw/service", tel_service,
                                     "vgw-fwd: one service's packets, bytes, connections, flood protection. "
                                     "Parameter: name");
    rc |= rte_telemetry_register_cmd("/vgw/lips", tel_lips,
                                     "vgw-fwd: per LIP, new connections that found no free port");
    return rc;
}
