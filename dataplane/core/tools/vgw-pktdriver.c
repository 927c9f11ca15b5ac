/* SPDX-License-Identifier: Apache-2.0
 * vgw-pktdriver: runs packets through the real engine for the golden-packet tests.
 *
 * Line protocol on stdin, one JSON reply line per command on stdout (flushed, so a test can
 * drive a conversation: learn the LIP port from the SYN, then build the SYN-ACK):
 *   init <nworkers> <conn_capacity> [mtu] [headroom] [tailroom] [worker flags]   (re)create dp + workers
 *   config <nlines>                                  next nlines are a vgw-config document
 *   now <ms>                                         clock for following packets
 *   pkt <worker> <hex> [flags]                       process one frame
 *   burst <worker> <hex> <hex> ...                   process frames as one burst
 *   housekeep <worker> <budget>
 *   counters <worker>
 *   conn <worker> <tcp|udp> <cip> <cport> <vip> <vport>
 *   svc <worker> <tcp|udp> <vip> <port>              per-service protection counters
 *   lips <worker>                                    LIP port exhaustion counts
 *   quit
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vgw/engine.h"

#define MAX_LINE (1u << 20)
#define HEADROOM_DEFAULT 128u
#define BUF_SIZE 4096u

static vgw_dp_t *dp;
static vgw_worker_t *workers[VGW_MAX_WORKERS];
static uint32_t nworkers;
static uint64_t now_ms = 1000;
static uint32_t headroom = HEADROOM_DEFAULT;
static uint32_t tailroom_max = BUF_SIZE; /* cap on the tailroom offered to the core */

static void teardown(void)
{
    for (uint32_t i = 0; i < nworkers; i++)
        vgw_worker_destroy(workers[i]);
    nworkers = 0;
    vgw_dp_destroy(dp);
    dp = NULL;
}

static int setup(uint32_t nw, uint32_t cap, uint32_t mtu, uint16_t wflags)
{
    teardown();
    vgw_dp_params_t dpp = {.nworkers = nw};
    dp = vgw_dp_create(&dpp);
    if (!dp)
        return -1;
    for (uint32_t i = 0; i < nw; i++) {
        vgw_worker_params_t wp = {.id = i, .conn_capacity = cap, .mtu = (uint16_t)mtu, .flags = wflags,
                                  .hash_seed = 0x1234 + i};
        workers[i] = vgw_worker_create(dp, &wp);
        if (!workers[i])
            return -1;
        nworkers = i + 1;
    }
    return 0;
}

static int unhex(const char *s, uint8_t *out, size_t cap, size_t *len)
{
    size_t n = strlen(s);
    if (n % 2 || n / 2 > cap)
        return -1;
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1)
            return -1;
        out[i] = (uint8_t)v;
    }
    *len = n / 2;
    return 0;
}

static const char *action_name(uint8_t a)
{
    switch (a) {
    case VGW_ACT_DROP:
        return "drop";
    case VGW_ACT_FORWARD:
        return "forward";
    case VGW_ACT_HANDOFF:
        return "handoff";
    case VGW_ACT_LOCAL:
        return "local";
    default:
        return "?";
    }
}

static void print_verdict(const vgw_pkt_t *p, const vgw_verdict_t *v)
{
    char nh[INET6_ADDRSTRLEN] = "";
    inet_ntop(v->af == VGW_AF_INET6 ? AF_INET6 : AF_INET, &v->nexthop, nh, sizeof nh);
    printf("{\"action\":\"%s\"", action_name(v->action));
    if (v->action == VGW_ACT_DROP)
        printf(",\"reason\":\"%s\"", vgw_drop_reason_name(v->arg));
    if (v->action == VGW_ACT_HANDOFF)
        printf(",\"worker\":%u", v->arg);
    if (v->action == VGW_ACT_FORWARD)
        printf(",\"port\":\"%s\",\"nexthop\":\"%s\"", v->port == VGW_PORT_INT ? "int" : "ext", nh);
    printf(",\"hex\":\"");
    for (uint32_t i = 0; i < p->len; i++)
        printf("%02x", p->data[i]);
    printf("\"}");
}

static void cmd_burst(char *args, int single)
{
    static uint8_t bufs[VGW_BURST_MAX][BUF_SIZE];
    vgw_pkt_t pkts[VGW_BURST_MAX];
    vgw_verdict_t out[VGW_BURST_MAX];
    char *save = NULL;
    char *tok = strtok_r(args, " ", &save);
    uint32_t wid = tok ? (uint32_t)strtoul(tok, NULL, 10) : 0;
    if (wid >= nworkers) {
        printf("{\"error\":\"bad worker\"}\n");
        return;
    }
    uint32_t n = 0;
    uint16_t flags = 0;
    while ((tok = strtok_r(NULL, " ", &save)) && n < VGW_BURST_MAX) {
        if (single && n == 1) {
            flags = (uint16_t)strtoul(tok, NULL, 0);
            break;
        }
        size_t len;
        if (unhex(tok, bufs[n] + headroom, BUF_SIZE - headroom, &len)) {
            printf("{\"error\":\"bad hex\"}\n");
            return;
        }
        pkts[n] = (vgw_pkt_t){.data = bufs[n] + headroom, .len = (uint16_t)len, .headroom = (uint16_t)headroom,
                              .tailroom = (uint16_t)(BUF_SIZE - headroom - len < tailroom_max ? BUF_SIZE - headroom - len
                                                                                      : tailroom_max)};
        n++;
    }
    for (uint32_t i = 0; i < n; i++)
        pkts[i].flags = flags;
    vgw_worker_process(workers[wid], pkts, out, n, now_ms);
    if (single) {
        print_verdict(&pkts[0], &out[0]);
        printf("\n");
        return;
    }
    printf("[");
    for (uint32_t i = 0; i < n; i++) {
        if (i)
            printf(",");
        print_verdict(&pkts[i], &out[i]);
    }
    printf("]\n");
}

static void cmd_counters(uint32_t wid)
{
    vgw_counters_t c;
    vgw_worker_counters(workers[wid], &c);
    printf("{");
    for (unsigned i = 0; i < VGW_CNT_MAX; i++)
        printf("%s\"%s\":%llu", i ? "," : "", vgw_counter_name(i), (unsigned long long)c.v[i]);
    printf("}\n");
}

static void cmd_conn(char *args)
{
    char proto[8], cip[64], vip[64];
    unsigned wid, cport, vport;
    if (sscanf(args, "%u %7s %63s %u %63s %u", &wid, proto, cip, &cport, vip, &vport) != 6 || wid >= nworkers) {
        printf("{\"error\":\"usage\"}\n");
        return;
    }
    vgw_addr_t c, v;
    memset(&c, 0, sizeof c), memset(&v, 0, sizeof v);
    int family = strchr(cip, ':') ? AF_INET6 : AF_INET;
    if (inet_pton(family, cip, &c) != 1 || inet_pton(family, vip, &v) != 1) {
        printf("{\"error\":\"usage\"}\n");
        return;
    }
    vgw_conn_info_t info;
    uint8_t pr = strcmp(proto, "udp") == 0 ? VGW_PROTO_UDP : VGW_PROTO_TCP;
    uint8_t af = family == AF_INET6 ? VGW_AF_INET6 : VGW_AF_INET;
    if (vgw_worker_conn_find_af(workers[wid], af, pr, &c, (uint16_t)cport, &v, (uint16_t)vport, now_ms, &info)) {
        printf("{\"found\":false}\n");
        return;
    }
    char l[INET6_ADDRSTRLEN], r[INET6_ADDRSTRLEN];
    inet_ntop(family, &info.lip, l, sizeof l);
    inet_ntop(family, &info.rip, r, sizeof r);
    printf("{\"found\":true,\"state\":\"%s\",\"lip\":\"%s\",\"lport\":%u,\"rip\":\"%s\",\"rport\":%u,"
           "\"expires_in_ms\":%u}\n",
           vgw_state_name(info.state), l, info.lport, r, info.rport, info.expires_in_ms);
}

static void cmd_svc(char *args)
{
    char proto[8], vip[64];
    unsigned wid, port;
    vgw_addr_t v;
    int family = strchr(args, ':') ? AF_INET6 : AF_INET;
    if (sscanf(args, "%u %7s %63s %u", &wid, proto, vip, &port) != 4 || wid >= nworkers ||
        inet_pton(family, vip, &v) != 1) {
        printf("{\"error\":\"usage\"}\n");
        return;
    }
    uint8_t pr = strcmp(proto, "udp") == 0 ? VGW_PROTO_UDP : VGW_PROTO_TCP;
    uint32_t uid = family == AF_INET6 ? vgw_dp_svc_uid6(dp, pr, v.v6, (uint16_t)port)
                                      : vgw_dp_svc_uid(dp, pr, v.v4, (uint16_t)port);
    if (uid == UINT32_MAX) {
        printf("{\"error\":\"no such service\"}\n");
        return;
    }
    vgw_svc_counters_t c;
    vgw_worker_svc_counters(workers[wid], uid, &c);
    printf("{");
    for (unsigned i = 0; i < VGW_SCNT_MAX; i++)
        printf("%s\"%s\":%llu", i ? "," : "", vgw_svc_counter_name(i), (unsigned long long)c.v[i]);
    printf("}\n");
}

static void cmd_lips(unsigned wid)
{
    vgw_lip_count_t out[VGW_LIP_TRACK_MAX];
    uint32_t n = wid < nworkers ? vgw_worker_lip_exhaustion(workers[wid], out, VGW_LIP_TRACK_MAX) : 0;
    printf("{");
    for (uint32_t i = 0; i < n && i < VGW_LIP_TRACK_MAX; i++) {
        char a[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &out[i].lip, a, sizeof a);
        printf("%s\"%s\":%llu", i ? "," : "", a, (unsigned long long)out[i].exhausted);
    }
    printf("}\n");
}

int main(void)
{
    char *line = malloc(MAX_LINE);
    if (!line || setup(1, 4096, 1500, 0))
        return 1;
    while (fgets(line, (int)MAX_LINE, stdin)) {
        line[strcspn(line, "\r\n")] = 0;
        char *sp = strchr(line, ' ');
        char *args = sp ? sp + 1 : line + strlen(line);
        if (sp)
            *sp = 0;
        if (strcmp(line, "init") == 0) {
            unsigned nw = 1, cap = 4096, mtu = 1500, hr = HEADROOM_DEFAULT, tr = BUF_SIZE, wf = 0;
            sscanf(args, "%u %u %u %u %u %u", &nw, &cap, &mtu, &hr, &tr, &wf);
            headroom = hr < BUF_SIZE / 2 ? hr : HEADROOM_DEFAULT;
            tailroom_max = tr;
            printf(setup(nw, cap, mtu, (uint16_t)wf) ? "{\"error\":\"init\"}\n" : "{\"ok\":true}\n");
        } else if (strcmp(line, "config") == 0) {
            unsigned nl = (unsigned)strtoul(args, NULL, 10);
            size_t cap = 1 << 20, len = 0;
            char *doc = malloc(cap);
            char *l2 = malloc(MAX_LINE);
            for (unsigned i = 0; i < nl && doc && l2 && fgets(l2, (int)MAX_LINE, stdin); i++) {
                size_t n = strlen(l2);
                if (len + n < cap) {
                    memcpy(doc + len, l2, n);
                    len += n;
                }
            }
            char err[256];
            if (doc && vgw_dp_apply_text(dp, doc, len, err, sizeof err) == 0)
                printf("{\"ok\":true,\"generation\":%llu}\n", (unsigned long long)vgw_dp_generation(dp));
            else
                printf("{\"ok\":false,\"error\":\"%s\"}\n", doc ? err : "oom");
            free(doc);
            free(l2);
        } else if (strcmp(line, "now") == 0) {
            now_ms = strtoull(args, NULL, 10);
            printf("{\"ok\":true}\n");
        } else if (strcmp(line, "pkt") == 0) {
            cmd_burst(args, 1);
        } else if (strcmp(line, "burst") == 0) {
            cmd_burst(args, 0);
        } else if (strcmp(line, "housekeep") == 0) {
            unsigned wid = 0, budget = 0;
            sscanf(args, "%u %u", &wid, &budget);
            if (wid < nworkers)
                printf("{\"removed\":%u}\n", vgw_worker_housekeep(workers[wid], now_ms, budget));
            else
                printf("{\"error\":\"bad worker\"}\n");
        } else if (strcmp(line, "counters") == 0) {
            unsigned wid = (unsigned)strtoul(args, NULL, 10);
            if (wid < nworkers)
                cmd_counters(wid);
            else
                printf("{\"error\":\"bad worker\"}\n");
        } else if (strcmp(line, "conn") == 0) {
            cmd_conn(args);
        } else if (strcmp(line, "svc") == 0) {
            cmd_svc(args);
        } else if (strcmp(line, "lips") == 0) {
            cmd_lips((unsigned)strtoul(args, NULL, 10));
        } else if (strcmp(line, "quit") == 0) {
            break;
        } else {
            printf("{\"error\":\"unknown command\"}\n");
        }
        fflush(stdout);
    }
    teardown();
    free(line);
    return 0;
}
