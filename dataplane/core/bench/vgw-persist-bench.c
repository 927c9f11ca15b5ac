/* SPDX-License-Identifier: Apache-2.0
 * Connection tables in files (persist.c), measured in memory like vgw-fwd-bench:
 *
 *  persist_fastpath      established traffic over 1M connections, the table in private memory
 *                        (THP) and in a file on tmpfs/hugetlbfs (as vgw-fwd keeps it by default),
 *                        runs alternating so machine noise hits both alike: ns/pkt each, ratio;
 *  persist_attach_clean  re-attaching that file after a clean close (index checked, trusted);
 *  persist_attach_crash  the same file marked as left open by a dead process (index rebuilt).
 *
 * Usage: vgw-persist-bench [--quick] [DIR] (default DIR /dev/shm). One JSON object per case. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "benchutil.h"
#include "internal.h"
#include "benchpkt.h"
#include "vgw/persist.h"

#define BURST 32u

static void make_tcp(uint8_t *f, uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport, uint8_t flags)
{
    bench_tcp_frame(f, FRAME, src, dst, sport, dport, flags);
}

/* 100 backends, 4 LIPs: room for millions of (backend, LIP, port) tuples. */
static const char *config(void)
{
    static char buf[8192];
    int n = snprintf(buf, sizeof buf, "vgw-config 1\ngeneration 1\nservice web tcp 192.0.2.10 80 maglev\n");
    for (int i = 0; i < 4; i++)
        n += snprintf(buf + n, sizeof buf - (size_t)n, "lip web 198.18.0.%d\n", 100 + i);
    for (int i = 0; i < 100; i++)
        n += snprintf(buf + n, sizeof buf - (size_t)n, "backend web 198.18.%d.%d 8080 1 active\n", 1 + i / 200,
                      1 + i % 200);
    snprintf(buf + n, sizeof buf - (size_t)n, "end\n");
    return buf;
}

typedef struct env {
    vgw_dp_t *dp;
    vgw_worker_t *w;
    uint8_t *bufs;
    vgw_pkt_t pkts[BURST];
    vgw_verdict_t out[BURST];
} env_t;

static vgw_dp_t *mk_dp(void)
{
    vgw_dp_t *dp = vgw_dp_create(&(vgw_dp_params_t){.nworkers = 1});
    char err[256];
    const char *cfg = config();
    if (!dp || vgw_dp_apply_text(dp, cfg, strlen(cfg), err, sizeof err))
        fprintf(stderr, "config: %s\n", err), exit(1);
    return dp;
}

static vgw_worker_t *mk_worker(vgw_dp_t *dp, uint32_t cap, const char *path, vgw_persist_report_t *rep)
{
    vgw_persist_params_t pp = {.path = path, .now_ms = 1000};
    vgw_worker_t *w = vgw_worker_create(dp, &(vgw_worker_params_t){.id = 0, .conn_capacity = cap, .mtu = 1500,
                                                                   .hash_seed = 7, .persist = path ? &pp : NULL,
                                                                   .report = path ? rep : NULL});
    if (!w)
        fprintf(stderr, "worker: %s\n", rep && rep->err[0] ? rep->err : "out of memory"), exit(1);
    return w;
}

static void burst(env_t *e, const uint8_t *src, uint32_t n, uint64_t now)
{
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *d = e->bufs + (size_t)i * SLOT + HEADROOM;
        memcpy(d, src + (size_t)i * FRAME, FRAME);
        e->pkts[i] = (vgw_pkt_t){.data = d, .len = FRAME, .headroom = HEADROOM};
    }
    vgw_worker_process(e->w, e->pkts, e->out, n, now);
    for (uint32_t i = 0; i < n; i++)
        if (e->out[i].action != VGW_ACT_FORWARD)
            fprintf(stderr, "not forwarded: %s\n", vgw_drop_reason_name(e->out[i].arg)), exit(1);
}

typedef struct ref {
    uint32_t cip, rip, lip;
    uint16_t cport, lport;
} ref_t;

/* nconns connections (SYN, then the client's ACK); the same clients in every env. */
static void open_conns(env_t *e, ref_t *c, uint32_t nconns)
{
    uint8_t tmpl[BURST * FRAME];
    for (uint32_t base = 0; base < nconns; base += BURST) {
        uint32_t n = nconns - base < BURST ? nconns - base : BURST;
        for (int phase = 0; phase < 2; phase++) {
            for (uint32_t i = 0; i < n; i++) {
                uint32_t k = base + i;
                c[k].cip = h2n32(0xcb000000u | (k >> 6));
                c[k].cport = h2n16((uint16_t)(1024 + (k & 63) * 997 % 60000));
                make_tcp(tmpl + i * FRAME, c[k].cip, h2n32(0xc000020au), c[k].cport, h2n16(80),
                         phase == 0 ? 0x02 : 0x10);
            }
            burst(e, tmpl, n, 1000);
            if (phase == 0)
                for (uint32_t i = 0; i < n; i++) {
                    const uint8_t *l3 = e->pkts[i].data + 14;
                    c[base + i].lip = ld32(l3 + 12), c[base + i].rip = ld32(l3 + 16);
                    c[base + i].lport = ld16(l3 + 20);
                }
        }
    }
}

static double run(env_t *e, const uint8_t *tmpl, uint32_t nbursts)
{
    double t0 = now_ns();
    for (uint32_t b = 0; b < nbursts; b++)
        burst(e, tmpl + (size_t)b * BURST * FRAME, BURST, 2000);
    return (now_ns() - t0) / ((double)nbursts * BURST);
}

static void mark_crashed(const char *path)
{
    int fd = open(path, O_RDWR);
    uint32_t one = 1;
    if (fd < 0 || pwrite(fd, &one, 4, 120) != 4) /* the header's "open" word: a dead writer */
        fprintf(stderr, "cannot mark %s\n", path), exit(1);
    close(fd);
}

int main(int argc, char **argv)
{
    int quick = argc > 1 && !strcmp(argv[1], "--quick");
    const char *dir = argc > 1 + quick ? argv[1 + quick] : "/dev/shm";
    uint32_t nconns = quick ? 200000 : 1000000, cap = nconns + nconns / 2, nbursts = quick ? 1024 : 8192;
    int reps = quick ? 3 : 9;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET((int)(ncpu > 0 ? ncpu - 1 : 0), &set);
    sched_setaffinity(0, sizeof set, &set);
    char path[512], cpu[128], thp[64] = "?";
    snprintf(path, sizeof path, "%s/vgw-persist-bench-%d", dir, (int)getpid());
    cpu_model(cpu, sizeof cpu);
    /* tmpfs gives huge pages only when mounted with huge= (the mount option, not the sysctl). */
    FILE *fp = fopen("/proc/self/mounts", "r");
    size_t best = 0;
    if (fp) {
        char line[1024], mnt[512], opts[512];
        while (fgets(line, sizeof line, fp)) {
            if (sscanf(line, "%*s %511s %*s %511s", mnt, opts) != 2)
                continue;
            size_t n = strlen(mnt);
            if (!strncmp(dir, mnt, n) && (dir[n] == '/' || dir[n] == 0) && n >= best) {
                const char *h = strstr(opts, "huge=");
                snprintf(thp, sizeof thp, "%.*s", h ? (int)strcspn(h + 5, ",") : 5, h ? h + 5 : "never");
                best = n;
            }
        }
        fclose(fp);
    }
    struct statfs sfs;
    const char *fs = statfs(dir, &sfs) != 0 ? "?" : (uint32_t)sfs.f_type == 0x958458f6u ? "hugetlbfs"
                                                 : (uint32_t)sfs.f_type == 0x01021994u ? "tmpfs" : "other";

    env_t e[2];
    ref_t *c = malloc(sizeof *c * nconns);
    uint8_t *tmpl = malloc((size_t)nbursts * BURST * FRAME);
    vgw_persist_report_t rep;
    for (int s = 0; s < 2; s++) {
        e[s].dp = mk_dp();
        e[s].w = mk_worker(e[s].dp, cap, s ? path : NULL, &rep);
        e[s].bufs = aligned_alloc(64, (size_t)BURST * SLOT);
        open_conns(&e[s], c, nconns);
    }
    /* Both tables hold the same tuples (same config, same seedless scheduler, same port cursor). */
    bench_rng = 0x243f6a8885a308d3ULL;
    for (uint32_t p = 0; p < nbursts * BURST; p++) {
        const ref_t *r = &c[rnd() % nconns];
        if (rnd() & 1)
            make_tcp(tmpl + (size_t)p * FRAME, r->cip, h2n32(0xc000020au), r->cport, h2n16(80), 0x10);
        else
            make_tcp(tmpl + (size_t)p * FRAME, r->rip, r->lip, h2n16(8080), r->lport, 0x10);
    }
    double v[2][16];
    for (int s = 0; s < 2; s++)
        run(&e[s], tmpl, nbursts); /* warm-up */
    for (int i = 0; i < reps; i++)
        for (int s = 0; s < 2; s++)
            v[s][i] = run(&e[s], tmpl, nbursts);
    double priv = median(v[0], reps), file = median(v[1], reps);
    printf("{\"case\":\"persist_fastpath\",\"conns\":%u,\"ns_per_pkt_private\":%.1f,\"ns_per_pkt_file\":%.1f,"
           "\"ratio_mpps_file_vs_private\":%.3f,\"fs\":\"%s\",\"tmpfs_huge\":\"%s\",\"runs\":%d,\"cpu\":\"%s\"}\n",
           nconns, priv, file, priv / file, fs, thp, reps, cpu);
    vgw_worker_destroy(e[0].w);
    vgw_dp_destroy(e[0].dp);

    /* Re-attach: a new engine (as a new process has), the same configuration. */
    for (int crash = 0; crash < 2; crash++) {
        double ms[16];
        uint32_t restored = 0;
        for (int i = 0; i < (quick ? 1 : 5); i++) {
            vgw_worker_destroy(e[1].w);
            vgw_dp_destroy(e[1].dp);
            if (crash)
                mark_crashed(path);
            e[1].dp = mk_dp();
            e[1].w = mk_worker(e[1].dp, cap, path, &rep);
            if (rep.status != VGW_PERSIST_ATTACHED || rep.index_rebuilt != crash)
                fprintf(stderr, "attach: status %d rebuilt %u\n", rep.status, rep.index_rebuilt), exit(1);
            ms[i] = (double)rep.attach_us / 1000.0;
            restored = rep.restored;
        }
        run(&e[1], tmpl, 64); /* every connection still forwards */
        printf("{\"case\":\"persist_attach_%s\",\"conns\":%u,\"attach_ms\":%.1f,\"restored\":%u,\"index_rebuilt\":%d,"
               "\"fs\":\"%s\",\"runs\":%d,\"cpu\":\"%s\"}\n",
               crash ? "crash" : "clean", nconns, median(ms, quick ? 1 : 5), restored, crash, fs, quick ? 1 : 5, cpu);
    }
    vgw_worker_destroy(e[1].w);
    vgw_dp_destroy(e[1].dp);
    unlink(path);
    free(c), free(tmpl), free(e[0].bufs), free(e[1].bufs);
    return 0;
}
