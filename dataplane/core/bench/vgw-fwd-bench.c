/* SPDX-License-Identifier: Apache-2.0
 * vgw-fwd-bench: per-packet cost of the full FULLNAT path, in memory, on one core (Katran-style).
 *
 * Every case drives vgw_worker_process() with bursts of 32 prebuilt Ethernet frames. Before each
 * burst the frames are copied from templates into the working buffers (translation rewrites them
 * in place, so they must be restored); that copy is inside the timed region, so figures are
 * conservative. Every verdict is checked: a case aborts if a packet is not forwarded, so a drop
 * path can never be measured by mistake. Each case runs several times; the median is reported.
 *
 * The *_v6 cases run the same traffic over IPv6 (a v6 VIP, LIPs and backends): frames of the same
 * payload, 20 bytes longer.
 *
 * Output: one JSON object per line per case, then a table. --quick shrinks sizes for CI.
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
#include "vgw/persist.h"

#define BURST 32u
#define NBACKENDS 100u
#define NLIPS 4u

static uint32_t ip4(uint32_t host_order)
{
    return h2n32(host_order);
}

/* The family the cases run over (1 = IPv6) and its frame length. */
static int g_v6;
#define FLEN (g_v6 ? FRAME6 : FRAME)

/* An address of the benchmark's plan: a 16-byte slot, IPv4 in its first 4 bytes. */
typedef struct baddr {
    uint8_t b[16];
} baddr_t;

static const uint8_t VIP6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10};

static baddr_t vip_addr(void)
{
    baddr_t a = {{0}};
    if (g_v6)
        memcpy(a.b, VIP6, 16);
    else
        st32(a.b, ip4(0xc000020au));
    return a;
}

/* Client k: 203.0.0.0/8-ish by index, or 2001:db8:c::/64 + index. */
static baddr_t client_addr(uint32_t k)
{
    baddr_t a = {{0}};
    if (g_v6) {
        static const uint8_t pfx[8] = {0x20, 0x01, 0x0d, 0xb8, 0, 0x0c, 0, 0};
        memcpy(a.b, pfx, 8);
        st32(a.b + 12, h2n32((k >> 6) + 1));
    } else {
        st32(a.b, ip4(0xcb000000u | (k >> 6)));
    }
    return a;
}

static void make_tcp(uint8_t *f, const baddr_t *src, const baddr_t *dst, uint16_t sport, uint16_t dport,
                     uint8_t flags)
{
    if (g_v6)
        bench_tcp_frame6(f, FRAME6, src->b, dst->b, sport, dport, flags);
    else
        bench_tcp_frame(f, FRAME, ld32(src->b), ld32(dst->b), sport, dport, flags);
}

static char *make_config(uint64_t gen, uint32_t nbackends)
{
    size_t cap = 256 + (size_t)nbackends * 64 + NLIPS * 48;
    char *s = malloc(cap);
    size_t n = (size_t)snprintf(s, cap, "vgw-config 1\ngeneration %llu\nservice web tcp %s 80 maglev\n",
                                (unsigned long long)gen, g_v6 ? "2001:db8::10" : "192.0.2.10");
    for (uint32_t i = 0; i < NLIPS; i++)
        n += (size_t)snprintf(s + n, cap - n, g_v6 ? "lip web 2001:db8:ff::%u\n" : "lip web 198.18.0.%u\n", i + 1);
    for (uint32_t i = 0; i < nbackends; i++) {
        if (g_v6)
            n += (size_t)snprintf(s + n, cap - n, "backend web 2001:db8:1::%x 8080 1 active\n", i + 1);
        else
            n += (size_t)snprintf(s + n, cap - n, "backend web 10.%u.%u.%u 8080 1 active\n", (i >> 16) & 255,
                                  (i >> 8) & 255, i & 255);
    }
    snprintf(s + n, cap - n, "end\n");
    return s;
}

typedef struct bench_env {
    vgw_dp_t *dp;
    vgw_worker_t *w;
    uint8_t *bufs;      /* BURST working slots */
    vgw_pkt_t pkts[BURST];
    vgw_verdict_t out[BURST];
    int sync;           /* connection sync on: notes taken, encoded and framed after each burst */
    uint32_t seq;
    uint64_t records;   /* sync records taken and sent */
    uint64_t sink;      /* keeps the framing work from being optimised away */
} bench_env_t;

/* What vgw-fwd does after a burst with sync on (dataplane/dpdk/sync.c), minus the NIC: take the
 * notes, encode and sign messages, copy each into a frame for one peer and checksum it (UDP). */
static void sync_drain(bench_env_t *e, uint64_t now)
{
    static const uint8_t key[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    vgw_sync_rec_t recs[VGW_SYNC_MAX_RECS];
    uint8_t msg[VGW_SYNC_MAX_MSG], frame[1536];
    uint32_t n;
    while ((n = vgw_worker_sync_take(e->w, recs, VGW_SYNC_MAX_RECS, now)) > 0) {
        vgw_sync_hdr_t h = {.sender = ip4(0xc6120001u), .epoch = 1, .seq = ++e->seq, .nworkers = 1};
        size_t len = vgw_sync_encode(&h, recs, n, key, msg, sizeof msg);
        e->records += n;
        memcpy(frame + 42, msg, len);
        e->sink += vgw_csum_partial(frame + 42, len, 0);
    }
}

static void env_init_sync(bench_env_t *e, uint32_t capacity, int sync)
{
    vgw_dp_params_t dpp = {.nworkers = 1};
    e->dp = vgw_dp_create(&dpp);
    char *cfg = make_config(1, NBACKENDS), err[256];
    if (!e->dp || vgw_dp_apply_text(e->dp, cfg, strlen(cfg), err, sizeof err)) {
        fprintf(stderr, "config: %s\n", err);
        exit(1);
    }
    free(cfg);
    vgw_worker_params_t wp = {.id = 0, .conn_capacity = capacity, .mtu = 1500, .hash_seed = 7,
                              .flags = sync ? VGW_WF_SYNC : 0};
    e->sync = sync, e->seq = 0, e->sink = 0, e->records = 0;
    /* VGW_BENCH_CONN_STATE=DIR: the table in a file there, as vgw-fwd keeps it by default
     * (vgw/persist.h), to compare the fast path over a shared mapping with private memory. */
    const char *state_dir = getenv("VGW_BENCH_CONN_STATE");
    char state_path[512];
    vgw_persist_params_t pp = {.path = state_path, .flags = VGW_PERSIST_F_DISCARD, .now_ms = 1000};
    if (state_dir && *state_dir) {
        snprintf(state_path, sizeof state_path, "%s/bench-%d-%u", state_dir, (int)getpid(), (unsigned)sync);
        wp.persist = &pp;
    }
    e->w = vgw_worker_create(e->dp, &wp);
    if (state_dir && *state_dir)
        unlink(state_path); /* the mapping stays until the worker is destroyed */
    e->bufs = aligned_alloc(64, (size_t)BURST * SLOT);
    if (!e->w || !e->bufs) {
        fprintf(stderr, "out of memory for %u connections\n", capacity);
        exit(1);
    }
}

static void env_fini(bench_env_t *e)
{
    vgw_worker_destroy(e->w);
    vgw_dp_destroy(e->dp);
    free(e->bufs);
}

/* Runs nbursts bursts from templates; returns elapsed ns. Aborts unless every packet forwards. */
static double run_bursts(bench_env_t *e, const uint8_t *tmpl, uint32_t nbursts, uint64_t now)
{
    double t0 = now_ns();
    for (uint32_t b = 0; b < nbursts; b++) {
        const uint32_t flen = FLEN;
        const uint8_t *src = tmpl + (size_t)b * BURST * flen;
        for (uint32_t i = 0; i < BURST; i++) {
            uint8_t *d = e->bufs + (size_t)i * SLOT + HEADROOM;
            memcpy(d, src + (size_t)i * flen, flen);
            e->pkts[i] = (vgw_pkt_t){.data = d, .len = (uint16_t)flen, .headroom = HEADROOM};
        }
        vgw_worker_process(e->w, e->pkts, e->out, BURST, now);
        if (e->sync)
            sync_drain(e, now);
        uint32_t bad = 0;
        for (uint32_t i = 0; i < BURST; i++)
            bad += e->out[i].action != VGW_ACT_FORWARD;
        if (VGW_UNLIKELY(bad)) {
            fprintf(stderr, "bench: %u packets not forwarded (first reason %s)\n", bad,
                    vgw_drop_reason_name(e->out[0].arg));
            exit(1);
        }
    }
    return now_ns() - t0;
}

typedef struct conn_ref {
    baddr_t cip, rip, lip;
    uint16_t cport, lport;
} conn_ref_t;

/* Opens nconns connections through the real path (SYN, then the client's ACK), recording each
 * one's translated tuple so replies can be built. */
static conn_ref_t *open_conns(bench_env_t *e, uint32_t nconns, uint64_t now)
{
    conn_ref_t *c = malloc(sizeof *c * nconns);
    const uint32_t flen = FLEN;
    const baddr_t vip = vip_addr();
    uint8_t *tmpl = malloc((size_t)BURST * flen);
    for (uint32_t base = 0; base < nconns; base += BURST) {
        uint32_t n = nconns - base < BURST ? nconns - base : BURST;
        for (int phase = 0; phase < 2; phase++) {
            for (uint32_t i = 0; i < n; i++) {
                uint32_t k = base + i;
                /* Distinct clients by index, ports spread. */
                c[k].cip = client_addr(k);
                c[k].cport = h2n16((uint16_t)(1024 + (k & 63) * 997 % 60000));
                make_tcp(tmpl + i * flen, &c[k].cip, &vip, c[k].cport, h2n16(80), phase == 0 ? 0x02 : 0x10);
            }
            for (uint32_t i = 0; i < n; i++) {
                uint8_t *d = e->bufs + (size_t)i * SLOT + HEADROOM;
                memcpy(d, tmpl + i * flen, flen);
                e->pkts[i] = (vgw_pkt_t){.data = d, .len = (uint16_t)flen, .headroom = HEADROOM};
            }
            vgw_worker_process(e->w, e->pkts, e->out, n, now);
            if (e->sync)
                sync_drain(e, now);
            for (uint32_t i = 0; i < n; i++) {
                if (e->out[i].action != VGW_ACT_FORWARD) {
                    fprintf(stderr, "open_conns: %s\n", vgw_drop_reason_name(e->out[i].arg));
                    exit(1);
                }
                if (phase == 0) {
                    const uint8_t *l3 = e->pkts[i].data + 14;
                    conn_ref_t *r = &c[base + i];
                    if (g_v6) {
                        memcpy(r->lip.b, l3 + 8, 16), memcpy(r->rip.b, l3 + 24, 16);
                        r->lport = ld16(l3 + 40);
                    } else {
                        memcpy(r->lip.b, l3 + 12, 4), memcpy(r->rip.b, l3 + 16, 4);
                        r->lport = ld16(l3 + 20);
                    }
                }
            }
        }
    }
    free(tmpl);
    return c;
}

typedef struct result {
    const char *name;
    double value;
    const char *unit;
    double mpps, ns;
    uint32_t conns;
    uint64_t bytes_per_conn;
    double extra;
    int runs;
} result_t;

static result_t results[24];
static int nresults;

/* The variants of a case: name, connection sync on, IPv6. The variants' runs alternate, so the
 * machine's noise hits all alike and their ratios mean something. */
typedef struct variant {
    const char *name;
    int sync, v6;
} variant_t;
#define NVAR 3
static void bench_established(const variant_t *vs, uint32_t nvariants, uint32_t nconns, uint32_t nbursts,
                              int reps)
{
    bench_env_t e[NVAR];
    uint8_t *tmpl[NVAR];
    uint64_t now = 1000;
    for (uint32_t s = 0; s < nvariants; s++) {
        g_v6 = vs[s].v6;
        const uint32_t flen = FLEN;
        const baddr_t vip = vip_addr();
        env_init_sync(&e[s], nconns, vs[s].sync);
        conn_ref_t *c = open_conns(&e[s], nconns, now);
        tmpl[s] = malloc((size_t)nbursts * BURST * flen);
        bench_rng = 0x243f6a8885a308d3ULL; /* the same packet sequence for each variant */
        for (uint32_t p = 0; p < nbursts * BURST; p++) {
            const conn_ref_t *r = &c[rnd() % nconns];
            if (rnd() & 1)
                make_tcp(tmpl[s] + (size_t)p * flen, &r->cip, &vip, r->cport, h2n16(80), 0x10);
            else
                make_tcp(tmpl[s] + (size_t)p * flen, &r->rip, &r->lip, h2n16(8080), r->lport, 0x10);
        }
        free(c);
        run_bursts(&e[s], tmpl[s], nbursts, now); /* warm-up */
    }
    double v[NVAR][16];
    for (int i = 0; i < reps; i++)
        for (uint32_t s = 0; s < nvariants; s++) {
            g_v6 = vs[s].v6;
            v[s][i] = run_bursts(&e[s], tmpl[s], nbursts, now) / ((double)nbursts * BURST);
        }
    for (uint32_t s = 0; s < nvariants; s++) {
        double ns = median(v[s], reps);
        results[nresults++] = (result_t){.name = vs[s].name, .mpps = 1e3 / ns, .ns = ns,
                                         .conns = vgw_worker_conn_count(e[s].w),
                                         .bytes_per_conn = vgw_worker_conn_bytes(e[s].w), .runs = reps};
        free(tmpl[s]);
        env_fini(&e[s]);
    }
    g_v6 = 0;
}

/* Every packet a new connection's SYN; or, with handshake, each burst of SYNs followed by a burst
 * of the same clients' ACKs (two packets per connection, which is then established). With
 * connection sync each of those packets changes a state: a record each. */
static void bench_new_conns(const variant_t *vs, uint32_t nvariants, uint32_t nconns, int reps,
                            int handshake)
{
    uint32_t per = handshake ? 2 : 1, npkts = nconns / BURST * BURST * per;
    uint8_t *tmpls[NVAR];
    for (uint32_t s = 0; s < nvariants; s++) {
        g_v6 = vs[s].v6;
        const uint32_t flen = FLEN;
        const baddr_t vip = vip_addr();
        uint8_t *tmpl = tmpls[s] = malloc((size_t)npkts * flen);
        for (uint32_t p = 0; p < npkts; p++) {
            uint32_t blk = p / (BURST * per), in = p % (BURST * per), k = blk * BURST + in % BURST;
            baddr_t cip = client_addr(k);
            make_tcp(tmpl + (size_t)p * flen, &cip, &vip, h2n16((uint16_t)(1024 + (k & 63) * 997 % 60000)),
                     h2n16(80), in < BURST ? 0x02 : 0x10);
        }
    }
    double v[NVAR][16];
    uint64_t bpc[NVAR] = {0};
    for (int i = 0; i < reps + 1; i++) {
        for (uint32_t s = 0; s < nvariants; s++) {
            bench_env_t e;
            g_v6 = vs[s].v6;
            env_init_sync(&e, nconns, vs[s].sync);
            double ns = run_bursts(&e, tmpls[s], npkts / BURST, 1000) / (double)npkts;
            if (vgw_worker_conn_count(e.w) != nconns / BURST * BURST) {
                fprintf(stderr, "new_conns: %u conns created\n", vgw_worker_conn_count(e.w));
                exit(1);
            }
            /* with sync: a record per state change (SYN_RECV; ESTABLISHED after the ACK) */
            if (vs[s].sync && e.records != (uint64_t)npkts) {
                fprintf(stderr, "new_conns: %llu sync records\n", (unsigned long long)e.records);
                exit(1);
            }
            bpc[s] = vgw_worker_conn_bytes(e.w);
            env_fini(&e);
            if (i > 0)
                v[s][i - 1] = ns; /* first run warms the page cache / allocator */
        }
    }
    for (uint32_t s = 0; s < nvariants; s++) {
        double ns = median(v[s], reps);
        results[nresults++] = (result_t){.name = vs[s].name, .mpps = 1e3 / ns, .ns = ns, .conns = nconns,
                                         .bytes_per_conn = bpc[s], .extra = 1e9 / ns, .runs = reps};
        free(tmpls[s]);
    }
    g_v6 = 0;
}

static void mk_backends(vgw_maglev_backend_t *b, uint32_t n)
{
    memset(b, 0, sizeof *b * n);
    for (uint32_t i = 0; i < n; i++) {
        b[i].addr.v4 = ip4(0x0a000000u + i);
        b[i].port = 8080;
        b[i].weight = 1;
        b[i].af = VGW_AF_INET;
    }
}

static void bench_maglev_build(uint32_t n, int reps)
{
    vgw_maglev_backend_t *b = malloc(sizeof *b * n);
    mk_backends(b, n);
    uint16_t *t = malloc(sizeof(uint16_t) * VGW_MAGLEV_DEFAULT_M);
    double v[16];
    vgw_maglev_build(t, VGW_MAGLEV_DEFAULT_M, b, n);
    for (int i = 0; i < reps; i++) {
        double t0 = now_ns();
        vgw_maglev_build(t, VGW_MAGLEV_DEFAULT_M, b, n);
        v[i] = (now_ns() - t0) / 1e6;
    }
    results[nresults++] = (result_t){.name = "maglev_build_1000", .value = median(v, reps), .unit = "ms",
                                     .conns = 0, .extra = n};
    free(b);
    free(t);
}

static void bench_remap(uint32_t n)
{
    vgw_maglev_backend_t *b = malloc(sizeof *b * n), *c = malloc(sizeof *c * n);
    mk_backends(b, n);
    uint32_t m = VGW_MAGLEV_DEFAULT_M;
    uint16_t *t1 = malloc(sizeof(uint16_t) * m), *t2 = malloc(sizeof(uint16_t) * m);
    vgw_maglev_build(t1, m, b, n);
    double sum = 0, worst = 0;
    /* Remove each backend in turn: the figure is the mean, the worst case is reported too. */
    for (uint32_t r = 0; r < n; r++) {
        for (uint32_t i = 0, k = 0; i < n; i++)
            if (i != r)
                c[k++] = b[i];
        vgw_maglev_build(t2, m, c, n - 1);
        uint32_t changed = 0;
        for (uint32_t i = 0; i < m; i++)
            changed += b[t1[i]].addr.v4 != c[t2[i]].addr.v4;
        double f = (double)changed / m;
        sum += f;
        worst = f > worst ? f : worst;
    }
    results[nresults++] = (result_t){.name = "maglev_remap_1_of_100", .value = sum / n, .unit = "fraction",
                                     .extra = worst};
    free(b), free(c), free(t1), free(t2);
}

int main(int argc, char **argv)
{
    int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    int reps = quick ? 3 : 7;
    /* Pin to the last CPU: fewer migrations, steadier numbers on a small VM. */
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET((int)(ncpu > 0 ? ncpu - 1 : 0), &set);
    sched_setaffinity(0, sizeof set, &set);

    /* The *_sync variants run with connection sync on (docs/forwarder.md, "Connection sync"):
     * every new connection and state change becomes a record, encoded, signed and framed. */
    static const variant_t est10k[] = {{"established_10k", 0, 0}, {"established_10k_v6", 0, 1}};
    /* The 1M-connection IPv6 case runs after the IPv4 pair, not alternating with it: three 1M
     * tables resident at once slow the IPv4 cases (fewer huge pages for each), which would make
     * them incomparable with earlier runs. */
    static const variant_t est1m[] = {{"established_1m", 0, 0}, {"established_1m_sync", 1, 0}};
    static const variant_t est1m6[] = {{"established_1m_v6", 0, 1}};
    static const variant_t newc[] = {{"new_conns", 0, 0}, {"new_conns_sync", 1, 0}};
    static const variant_t newc6[] = {{"new_conns_v6", 0, 1}};
    static const variant_t hands[] = {{"handshakes", 0, 0}, {"handshakes_sync", 1, 0}};
    /* VGW_BENCH_ONLY=established_{10k,1m}[_v6]: that case alone (no ratios), for a profiler. */
    const char *only = getenv("VGW_BENCH_ONLY");
    if (only && *only) {
        const variant_t one[] = {{only, 0, strstr(only, "_v6") != NULL}};
        int big = strstr(only, "_1m") != NULL;
        bench_established(one, 1, big ? 1000000 : 10000, big ? 8192 : 16384, 5);
        printf("%s %.1f ns/pkt\n", only, results[0].ns);
        return 0;
    }
    bench_established(est10k, 2, 10000, quick ? 512 : 4096, reps);
    bench_established(est1m, 2, quick ? 200000 : 1000000, quick ? 1024 : 8192, reps);
    bench_established(est1m6, 1, quick ? 200000 : 1000000, quick ? 1024 : 8192, reps);
    bench_new_conns(newc, 2, quick ? 100000 : 1000000, quick ? 3 : 5, 0);
    bench_new_conns(newc6, 1, quick ? 100000 : 1000000, quick ? 3 : 5, 0);
    bench_new_conns(hands, 2, quick ? 100000 : 1000000, quick ? 3 : 5, 1);
    bench_maglev_build(1000, quick ? 3 : 9);
    bench_remap(100);

    char cpu[128];
    cpu_model(cpu, sizeof cpu);
    for (int i = 0; i < nresults; i++) {
        const result_t *r = &results[i];
        if (r->unit && strcmp(r->unit, "ms") == 0)
            printf("{\"case\":\"%s\",\"ms\":%.3f,\"backends\":%.0f,\"table_size\":%u,\"conns\":0,\"cpu\":\"%s\"}\n",
                   r->name, r->value, r->extra, VGW_MAGLEV_DEFAULT_M, cpu);
        else if (r->unit)
            printf("{\"case\":\"%s\",\"fraction\":%.5f,\"fraction_x_n\":%.3f,\"worst_fraction\":%.5f,"
                   "\"backends\":100,\"table_size\":%u,\"conns\":0,\"cpu\":\"%s\"}\n",
                   r->name, r->value, r->value * 100, r->extra, VGW_MAGLEV_DEFAULT_M, cpu);
        else
            printf("{\"case\":\"%s\",\"mpps_per_core\":%.3f,\"ns_per_pkt\":%.1f,\"conns\":%u,"
                   "\"bytes_per_conn\":%llu,\"burst\":%u,\"runs\":%d,\"cpu\":\"%s\"}\n",
                   r->name, r->mpps, r->ns, r->conns, (unsigned long long)r->bytes_per_conn, BURST, r->runs, cpu);
    }
    /* Issue #16's bar: forwarding with sync on >= 85% of sync off, per case. */
    double m[6] = {0};
    const char *names[6] = {"established_1m", "established_1m_sync", "new_conns",
                            "new_conns_sync", "handshakes", "handshakes_sync"};
    for (int i = 0; i < nresults; i++)
        for (int k = 0; k < 6; k++)
            if (!strcmp(results[i].name, names[k]))
                m[k] = results[i].mpps;
    if (m[0] > 0 && m[2] > 0 && m[4] > 0)
        printf("{\"case\":\"sync_cost\",\"established_1m_ratio\":%.3f,\"new_conns_ratio\":%.3f,"
               "\"handshakes_ratio\":%.3f,\"target_ratio\":0.85,\"cpu\":\"%s\"}\n",
               m[1] / m[0], m[3] / m[2], m[5] / m[4], cpu);
    double v4[3] = {0}, v6[3] = {0};
    const char *fam[3][2] = {{"established_10k", "established_10k_v6"},
                             {"established_1m", "established_1m_v6"},
                             {"new_conns", "new_conns_v6"}};
    for (int i = 0; i < nresults; i++)
        for (int k = 0; k < 3; k++) {
            if (!strcmp(results[i].name, fam[k][0]))
                v4[k] = results[i].mpps;
            if (!strcmp(results[i].name, fam[k][1]))
                v6[k] = results[i].mpps;
        }
    if (v4[0] > 0 && v4[1] > 0 && v4[2] > 0)
        printf("{\"case\":\"ipv6_cost\",\"established_10k_ratio\":%.3f,\"established_1m_ratio\":%.3f,"
               "\"new_conns_ratio\":%.3f,\"target_ratio\":0.85,\"cpu\":\"%s\"}\n",
               v6[0] / v4[0], v6[1] / v4[1], v6[2] / v4[2], cpu);
    printf("\n%-24s %14s %12s %10s %14s\n", "case", "Mpps/core", "ns/pkt", "conns", "bytes/conn");
    for (int i = 0; i < nresults; i++) {
        const result_t *r = &results[i];
        if (r->unit && strcmp(r->unit, "ms") == 0)
            printf("%-24s %14s %12s %10s %14s   build %.2f ms (1000 backends, M=%u)\n", r->name, "-", "-", "-", "-",
                   r->value, VGW_MAGLEV_DEFAULT_M);
        else if (r->unit)
            printf("%-24s %14s %12s %10s %14s   %.4f of table = %.2f/N (worst %.2f/N)\n", r->name, "-", "-", "-",
                   "-", r->value, r->value * 100, r->extra * 100);
        else
            printf("%-24s %14.2f %12.1f %10u %14llu\n", r->name, r->mpps, r->ns, r->conns,
                   (unsigned long long)r->bytes_per_conn);
    }
    printf("cpu: %s, %ld online CPUs, pinned to the last one\n", cpu, ncpu);
    return 0;
}
