/* SPDX-License-Identifier: Apache-2.0
 * vgw-synflood-bench: the forwarder's core under a spoofed SYN flood, in memory, on one core.
 *
 * Time is simulated in 1 ms steps. Each step feeds rate x 1000 spoofed SYNs (random sources in
 * 198.18.0.0/15, random ports and ISNs, valid checksums, checked in software) and the packets of
 * legitimate clients that are due: a client sends its SYN, answers what the forwarder sends it
 * one millisecond later, and its server does the same; a handshake counts as completed when the
 * server has received the client's final ACK. Nothing is retransmitted: one lost packet fails the
 * handshake. Only the time spent inside vgw_worker_process is measured (building packets is not),
 * (bursts interrupted by the OS, over twice the median per-packet time, count at twice the
 * median: the machine is shared), and it gives the core's capacity: if the offered rate exceeds it, a NIC would drop the excess
 * at random, so every packet survives with q = min(1, capacity / offered) and a three-packet
 * handshake with q^3; "legit_success" is the simulated success times q^3.
 *
 * Cases: flood at 1, 5 and 10 Mpps with the proxy on and off; the cost of one connection's
 * handshake through the proxy and without it; established traffic (with timestamps) through
 * proxied and plain connections. Output: JSON lines, then a table.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "benchutil.h"
#include "internal.h"
#include "benchpkt.h"

#define BURST 32u
#define VIP 0xc000020au /* 192.0.2.10 */
#define LEGIT_PER_MS 10u
#define MAXQ 4096u

/* A TCP frame with the timestamp option (as Linux sends) and valid checksums; returns its length. */
static uint32_t tcp_frame(uint8_t *f, uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport, uint32_t seq,
                          uint32_t ack, uint8_t flags, uint32_t tsval, uint32_t tsecr, uint32_t payload)
{
    uint32_t optlen = 12, l4len = 20 + optlen + payload, len = 14 + 20 + l4len;
    uint8_t *l4 =
        bench_ip4_tcp(f, (uint16_t)l4len, src, dst, sport, dport, seq, ack, flags, 502, (uint8_t)(20 + optlen));
    uint8_t *o = l4 + 20;
    o[0] = 1, o[1] = 1, o[2] = 8, o[3] = 10;
    st32(o + 4, h2n32(tsval));
    st32(o + 8, h2n32(tsecr));
    st16(l4 + 16, vgw_l4_csum_v4(src, dst, VGW_PROTO_TCP, l4, (uint16_t)l4len));
    return len;
}

typedef struct env {
    vgw_dp_t *dp;
    vgw_worker_t *w;
    uint8_t *bufs;
    vgw_pkt_t pkts[BURST];
    vgw_verdict_t out[BURST];
    int16_t tag[BURST]; /* legitimate packet: its queue entry; -1 = flood */
    double engine_ns;
    uint64_t engine_pkts;
    double *burst_ns; /* per burst and packet, for engine_ns_per_pkt */
    uint32_t nbursts, cap_bursts;
} env_t;

static void env_init(env_t *e, const char *proxy, uint32_t capacity)
{
    memset(e, 0, sizeof *e);
    vgw_dp_params_t dpp = {.nworkers = 1};
    e->dp = vgw_dp_create(&dpp);
    char cfg[8192];
    size_t n = (size_t)snprintf(cfg, sizeof cfg, "vgw-config 1\ngeneration 1\nservice web tcp 192.0.2.10 80 maglev "
                                                 "toa=on syn_proxy=%s\n", proxy);
    for (uint32_t i = 0; i < 4; i++)
        n += (size_t)snprintf(cfg + n, sizeof cfg - n, "lip web 198.18.0.%u\n", i + 1);
    for (uint32_t i = 0; i < 100; i++)
        n += (size_t)snprintf(cfg + n, sizeof cfg - n, "backend web 10.0.%u.%u 8080 1 active\n", i / 250, i % 250 + 1);
    snprintf(cfg + n, sizeof cfg - n, "end\n");
    char err[256];
    if (!e->dp || vgw_dp_apply_text(e->dp, cfg, strlen(cfg), err, sizeof err)) {
        fprintf(stderr, "config: %s\n", err);
        exit(1);
    }
    vgw_worker_params_t wp = {.id = 0, .conn_capacity = capacity, .mtu = 1500, .hash_seed = 11};
    e->w = vgw_worker_create(e->dp, &wp);
    e->bufs = aligned_alloc(64, (size_t)BURST * SLOT);
    if (!e->w || !e->bufs) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
}

static void env_fini(env_t *e)
{
    free(e->burst_ns);
    vgw_worker_destroy(e->w);
    vgw_dp_destroy(e->dp);
    free(e->bufs);
}

/* ---- legitimate clients ------------------------------------------------------------------------- */

enum { L_SYN, L_CACK, L_RS_SYNACK };

typedef struct legit {
    uint32_t cip, rip, lip, ack;
    uint16_t cport, lport;
    uint32_t due;
    uint8_t step, active;
} legit_t;

typedef struct sim {
    legit_t q[MAXQ];
    uint32_t next;
    uint64_t started, completed, failed;
} sim_t;

#define CISN 1000u

static uint32_t legit_frame(const legit_t *l, uint8_t *f)
{
    if (l->step == L_SYN)
        return tcp_frame(f, l->cip, h2n32(VIP), l->cport, h2n16(80), CISN, 0, 0x02, 100, 0, 0);
    if (l->step == L_CACK)
        return tcp_frame(f, l->cip, h2n32(VIP), l->cport, h2n16(80), CISN + 1, l->ack, 0x10, 101, 0, 0);
    return tcp_frame(f, l->rip, l->lip, h2n16(8080), l->lport, 7000000, CISN + 1, 0x12, 5000, 100, 0);
}

/* What the forwarder did with a legitimate packet: the next step of that client or server. */
static void legit_verdict(sim_t *s, legit_t *l, const vgw_pkt_t *p, const vgw_verdict_t *v, uint32_t ms)
{
    const uint8_t *l3 = p->data + 14, *l4 = l3 + 20;
    uint8_t fl = v->action == VGW_ACT_FORWARD ? l4[13] : 0;
    if (v->action == VGW_ACT_FORWARD && v->port == VGW_PORT_EXT && (fl & 0x12) == 0x12) {
        l->ack = n2h32(ld32(l4 + 4)) + 1; /* the client acknowledges the SYN-ACK it got */
        l->step = L_CACK;
    } else if (v->action == VGW_ACT_FORWARD && v->port == VGW_PORT_INT && (fl & 0x12) == 0x02) {
        l->lip = ld32(l3 + 12), l->rip = ld32(l3 + 16), l->lport = ld16(l4);
        l->step = L_RS_SYNACK;
    } else if (v->action == VGW_ACT_FORWARD && v->port == VGW_PORT_INT && (fl & 0x12) == 0x10) {
        l->active = 0;
        s->completed++;
        return;
    } else {
        l->active = 0;
        s->failed++;
        return;
    }
    l->due = ms + 1;
}

static void process(env_t *e, uint32_t n, uint32_t ms)
{
    double t0 = now_ns();
    vgw_worker_process(e->w, e->pkts, e->out, n, ms);
    double t = now_ns() - t0;
    e->engine_ns += t;
    e->engine_pkts += n;
    if (e->nbursts == e->cap_bursts) {
        e->cap_bursts = e->cap_bursts ? e->cap_bursts * 2 : 65536;
        e->burst_ns = realloc(e->burst_ns, sizeof(double) * e->cap_bursts);
    }
    e->burst_ns[e->nbursts++] = t / n;
}

/* Engine time per packet, robust to this machine being shared: a burst that took more than
 * twice the median per-packet time was interrupted by the OS, and counts at twice the median. */
static double engine_ns_per_pkt(env_t *e)
{
    if (!e->nbursts)
        return 0;
    double med = median(e->burst_ns, (int)e->nbursts), sum = 0; /* sorts: order does not matter here */
    for (uint32_t i = 0; i < e->nbursts; i++)
        sum += e->burst_ns[i] > 2 * med ? 2 * med : e->burst_ns[i];
    return sum / e->nbursts;
}

static void put(env_t *e, uint32_t i, const uint8_t *frame, uint32_t len)
{
    uint8_t *d = e->bufs + (size_t)i * SLOT + HEADROOM;
    memcpy(d, frame, len);
    e->pkts[i] = (vgw_pkt_t){.data = d, .len = (uint16_t)len, .headroom = HEADROOM,
                             .tailroom = (uint16_t)(SLOT - HEADROOM - len)};
}

/* ---- flood case ------------------------------------------------------------------------------------ */

typedef struct flood_result {
    const char *proxy;
    double rate_mpps, capacity_mpps, capacity_wall_mpps, q, sim_success, legit_success;
    uint64_t started, completed, conns_left, cookies, evicted;
} flood_result_t;

static flood_result_t run_flood(const char *proxy, double rate_mpps, uint32_t ms_total, uint32_t capacity)
{
    env_t e;
    env_init(&e, proxy, capacity);
    static sim_t s;
    memset(&s, 0, sizeof s);
    uint32_t flood_per_ms = (uint32_t)(rate_mpps * 1000.0);
    uint8_t frame[128];
    /* The legitimate packets of one ms, spread over its flood. */
    uint32_t idx[MAXQ];
    for (uint32_t ms = 1000; ms < 1000 + ms_total; ms++) {
        for (uint32_t k = 0; k < LEGIT_PER_MS; k++) {
            legit_t *l = &s.q[s.next++ % MAXQ];
            if (l->active)
                s.failed++; /* still pending after MAXQ starts: count as lost */
            uint32_t id = (uint32_t)s.started++;
            *l = (legit_t){.cip = h2n32(0xcb007100u | (1 + id % 250)), .cport = h2n16((uint16_t)(1024 + id / 250)),
                           .due = ms, .step = L_SYN, .active = 1};
        }
        uint32_t nl = 0;
        for (uint32_t i = 0; i < MAXQ; i++)
            if (s.q[i].active && s.q[i].due == ms)
                idx[nl++] = i;
        uint32_t total = flood_per_ms + nl, li = 0, n = 0;
        int32_t tag[BURST];
        for (uint32_t p = 0; p < total; p++) {
            /* legitimate packet p when p crosses the next evenly spaced position */
            if (li < nl && (uint64_t)p * nl >= (uint64_t)li * total) {
                legit_t *l = &s.q[idx[li]];
                put(&e, n, frame, legit_frame(l, frame));
                tag[n++] = (int32_t)idx[li++];
            } else {
                uint64_t r = rnd();
                uint32_t src = h2n32(0xc6120000u | (uint32_t)(r & 0x1ffff));
                put(&e, n, frame, tcp_frame(frame, src, h2n32(VIP), h2n16((uint16_t)(1024 + (r >> 17) % 60000)),
                                            h2n16(80), (uint32_t)(r >> 32), 0, 0x02, 0, 0, 0));
                tag[n++] = -1;
            }
            if (n == BURST || p + 1 == total) {
                process(&e, n, ms);
                for (uint32_t i = 0; i < n; i++)
                    if (tag[i] >= 0)
                        legit_verdict(&s, &s.q[tag[i]], &e.pkts[i], &e.out[i], ms);
                n = 0;
            }
        }
    }
    vgw_counters_t c;
    vgw_worker_counters(e.w, &c);
    flood_result_t r = {.proxy = proxy, .rate_mpps = rate_mpps, .started = s.started, .completed = s.completed};
    r.capacity_mpps = 1e3 / engine_ns_per_pkt(&e);
    r.capacity_wall_mpps = (double)e.engine_pkts / e.engine_ns * 1e3;
    r.q = r.capacity_mpps >= rate_mpps ? 1.0 : r.capacity_mpps / rate_mpps;
    uint64_t finished = s.completed + s.failed;
    r.sim_success = finished ? (double)s.completed / (double)finished : 0;
    r.legit_success = r.sim_success * r.q * r.q * r.q;
    r.conns_left = c.v[VGW_CNT_CONN_ACTIVE];
    r.cookies = c.v[VGW_CNT_SYN_COOKIE_SENT];
    r.evicted = c.v[VGW_CNT_CONN_EVICTED];
    env_fini(&e);
    return r;
}

/* ---- handshake cost and established traffic -------------------------------------------------------- */

/* ns of engine time per completed handshake (no flood), through the proxy or not. */
static double handshake_ns(const char *proxy, uint32_t nconns)
{
    env_t e;
    env_init(&e, proxy, nconns * 2);
    static sim_t s;
    memset(&s, 0, sizeof s);
    uint8_t frame[128];
    uint32_t ms = 1000;
    for (uint32_t done = 0; done < nconns; ms++) {
        uint32_t n = 0;
        int32_t tag[BURST];
        for (uint32_t k = 0; k < BURST / 2 && s.started < nconns; k++) {
            legit_t *l = &s.q[s.next++ % MAXQ];
            uint32_t id = (uint32_t)s.started++;
            *l = (legit_t){.cip = h2n32(0xcb000000u | id >> 8), .cport = h2n16((uint16_t)(1024 + (id & 255))),
                           .due = ms, .step = L_SYN, .active = 1};
        }
        for (uint32_t i = 0; i < MAXQ; i++) {
            if (!s.q[i].active || s.q[i].due != ms)
                continue;
            put(&e, n, frame, legit_frame(&s.q[i], frame));
            tag[n++] = (int32_t)i;
            if (n == BURST) {
                process(&e, n, ms);
                for (uint32_t j = 0; j < n; j++)
                    legit_verdict(&s, &s.q[tag[j]], &e.pkts[j], &e.out[j], ms);
                n = 0;
            }
        }
        if (n) {
            process(&e, n, ms);
            for (uint32_t j = 0; j < n; j++)
                legit_verdict(&s, &s.q[tag[j]], &e.pkts[j], &e.out[j], ms);
        }
        done = (uint32_t)(s.completed + s.failed);
    }
    if (s.failed) {
        fprintf(stderr, "handshake %s: %llu failed\n", proxy, (unsigned long long)s.failed);
        exit(1);
    }
    double ns = engine_ns_per_pkt(&e) * (double)e.engine_pkts / (double)s.completed;
    env_fini(&e);
    return ns;
}

/* Mpps of established traffic (both directions, timestamps on) over nconns connections opened
 * through the proxy or not. */
static double established_mpps(const char *proxy, uint32_t nconns, uint32_t npkts)
{
    env_t e;
    env_init(&e, proxy, nconns * 2);
    static sim_t s;
    memset(&s, 0, sizeof s);
    legit_t *ls = calloc(nconns, sizeof *ls);
    uint8_t frame[128];
    /* Open the connections (the handshake driver above, keeping every client). */
    uint32_t ms = 1000;
    for (uint32_t base = 0; base < nconns; base += BURST) {
        uint32_t n = nconns - base < BURST ? nconns - base : BURST;
        for (uint32_t i = 0; i < n; i++)
            ls[base + i] = (legit_t){.cip = h2n32(0xcb000000u | (base + i) >> 8),
                                     .cport = h2n16((uint16_t)(1024 + ((base + i) & 255))), .step = L_SYN,
                                     .active = 1};
        for (int round = 0; round < 3; round++) {
            for (uint32_t i = 0; i < n; i++)
                put(&e, i, frame, legit_frame(&ls[base + i], frame));
            vgw_worker_process(e.w, e.pkts, e.out, n, ms);
            for (uint32_t i = 0; i < n; i++)
                legit_verdict(&s, &ls[base + i], &e.pkts[i], &e.out[i], ms);
        }
    }
    if (s.completed != nconns) {
        fprintf(stderr, "established %s: %llu of %u opened\n", proxy, (unsigned long long)s.completed, nconns);
        exit(1);
    }
    uint8_t *tmpl = malloc((size_t)npkts * 128);
    uint16_t *lens = malloc(sizeof(uint16_t) * npkts);
    for (uint32_t p = 0; p < npkts; p++) {
        const legit_t *l = &ls[rnd() % nconns];
        if (p & 1)
            lens[p] = (uint16_t)tcp_frame(tmpl + (size_t)p * 128, l->cip, h2n32(VIP), l->cport, h2n16(80), CISN + 1,
                                          l->ack, 0x10, 102, 0, 10);
        else
            lens[p] = (uint16_t)tcp_frame(tmpl + (size_t)p * 128, l->rip, l->lip, h2n16(8080), l->lport, 7000001,
                                          CISN + 1, 0x10, 5001, 102, 10);
    }
    double best[5];
    for (int rep = 0; rep < 5; rep++) {
        e.engine_ns = 0, e.engine_pkts = 0, e.nbursts = 0;
        for (uint32_t p = 0; p < npkts; p += BURST) {
            for (uint32_t i = 0; i < BURST; i++)
                put(&e, i, tmpl + (size_t)(p + i) * 128, lens[p + i]);
            process(&e, BURST, ms);
            for (uint32_t i = 0; i < BURST; i++)
                if (e.out[i].action != VGW_ACT_FORWARD) {
                    fprintf(stderr, "established %s: %s\n", proxy, vgw_drop_reason_name(e.out[i].arg));
                    exit(1);
                }
        }
        best[rep] = 1e3 / engine_ns_per_pkt(&e);
    }
    free(tmpl), free(lens), free(ls);
    env_fini(&e);
    return median(best, 5);
}

int main(int argc, char **argv)
{
    int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    if (argc > 2 && strcmp(argv[1], "--profile") == 0) { /* one flood case, for perf */
        flood_result_t r = run_flood(argv[2], 10, 1000, 1000000);
        printf("capacity %.3f Mpps (all bursts: %.3f)\n", r.capacity_mpps, r.capacity_wall_mpps);
        return 0;
    }
    int reps = quick ? 1 : 3;
    uint32_t ms_total = quick ? 200 : 1000;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET((int)(ncpu > 0 ? ncpu - 1 : 0), &set);
    sched_setaffinity(0, sizeof set, &set);
    char cpu[128];
    cpu_model(cpu, sizeof cpu);

    static const double rates[] = {1, 5, 10};
    static const char *const modes[] = {"on", "off"};
    flood_result_t all[6];
    int na = 0;
    for (int m = 0; m < 2; m++)
        for (int ri = 0; ri < 3; ri++) {
            flood_result_t runs[5];
            double succ[5];
            for (int k = 0; k < reps; k++) {
                runs[k] = run_flood(modes[m], rates[ri], ms_total, 1000000);
                succ[k] = runs[k].legit_success;
            }
            double med = median(succ, reps);
            flood_result_t r = runs[0];
            for (int k = 0; k < reps; k++)
                if (runs[k].legit_success == med)
                    r = runs[k];
            all[na++] = r;
            printf("{\"case\":\"synflood_%gmpps_proxy_%s\",\"flood_mpps_per_core\":%g,\"legit_success_ratio\":%.4f,"
                   "\"simulated_success_ratio\":%.4f,\"capacity_mpps_per_core\":%.3f,\"capacity_wall_mpps_per_core\":%.3f,"
                   "\"legit_cps\":%.0f,\"packet_survival\":%.4f,"
                   "\"legit_started\":%llu,\"legit_completed\":%llu,\"table_entries_after\":%llu,"
                   "\"cookies_sent\":%llu,\"half_open_evicted\":%llu,\"simulated_s\":%.1f,\"runs\":%d,\"cpu\":\"%s\"}\n",
                   rates[ri], modes[m], rates[ri], r.legit_success, r.sim_success, r.capacity_mpps, r.capacity_wall_mpps,
                   LEGIT_PER_MS * 1000.0 * r.legit_success, r.q,
                   (unsigned long long)r.started, (unsigned long long)r.completed, (unsigned long long)r.conns_left,
                   (unsigned long long)r.cookies, (unsigned long long)r.evicted, ms_total / 1000.0, reps, cpu);
            fflush(stdout);
        }

    double hs_on[5], hs_off[5];
    for (int k = 0; k < 3; k++) {
        hs_on[k] = handshake_ns("on", quick ? 20000 : 200000);
        hs_off[k] = handshake_ns("off", quick ? 20000 : 200000);
    }
    double on = median(hs_on, 3), off = median(hs_off, 3);
    printf("{\"case\":\"handshake_cost\",\"ns_per_conn_proxy_on\":%.1f,\"ns_per_conn_proxy_off\":%.1f,"
           "\"ns_per_conn_added\":%.1f,\"ratio\":%.3f,\"runs\":3,\"cpu\":\"%s\"}\n",
           on, off, on - off, on / off, cpu);
    double eon = established_mpps("on", 10000, quick ? 65536 : 262144);
    double eoff = established_mpps("off", 10000, quick ? 65536 : 262144);
    printf("{\"case\":\"established_10k_ts\",\"mpps_per_core_proxy_on\":%.3f,\"mpps_per_core_proxy_off\":%.3f,"
           "\"proxy_cost_fraction\":%.3f,\"runs\":5,\"cpu\":\"%s\"}\n",
           eon, eoff, 1 - eon / eoff, cpu);

    printf("\n%-28s %10s %12s %12s %10s %12s\n", "case", "flood", "legit ok", "capacity", "entries", "cookies");
    for (int i = 0; i < na; i++)
        printf("synflood proxy=%-13s %7.0f Mpps %11.2f%% %7.2f Mpps %10llu %12llu\n", all[i].proxy,
               all[i].rate_mpps, 100 * all[i].legit_success, all[i].capacity_mpps,
               (unsigned long long)all[i].conns_left, (unsigned long long)all[i].cookies);
    printf("handshake: %.0f ns/conn with the proxy, %.0f without (+%.0f ns)\n", on, off, on - off);
    printf("established (timestamps): %.2f Mpps proxied, %.2f plain: proxy costs %.1f%%\n", eon, eoff,
           100 * (1 - eon / eoff));
    printf("cpu: %s, pinned to the last of %ld CPUs\n", cpu, ncpu);
    return 0;
}
