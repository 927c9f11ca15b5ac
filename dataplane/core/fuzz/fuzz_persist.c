/* SPDX-License-Identifier: Apache-2.0
 * libFuzzer harness for re-attaching a connection-state file (persist.c): whatever a file holds
 * (a torn write, another build's layout, garbage), attaching it either refuses with a reason or
 * gives a worker whose derived state matches its records and which then forwards packets without
 * a memory error.
 *
 * Input: byte 0 = flags (bit 0: recompute the header checksum after patching, so the fuzzer gets
 * past it; bit 1: leave the file marked open, as a crashed writer does; bits 2-3: worker count
 * 1..4 of the attaching engine), then patches, each [region (1)][offset (2, LE)][len (1)][bytes]:
 * region 0 = header, 1 = records, 2 = buckets, 3 = the copy of the IPv6 address table, applied to
 * a file a worker has just written with a few real connections of both families in it. The rest
 * of the input after the last whole patch is ignored. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"
#include "vgw/persist.h"

#define CAP 64u
static const char CFG[] = "vgw-config 1\ngeneration 1\n"
                          "service web tcp 192.0.2.10 80 wlc toa=on\nlip web 198.18.0.1\n"
                          "backend web 198.18.1.1 8080 1 active\nbackend web 198.18.1.2 8080 1 active\n"
                          "service dns udp 192.0.2.10 53 maglev\nlip dns 198.18.0.1\n"
                          "backend dns 198.18.1.3 53 1 active\n"
                          "service web6 tcp 2001:db8::10 80 wlc toa=on\nlip web6 2001:db8:ff::1\n"
                          "backend web6 2001:db8:1::1 8080 1 active\nbackend web6 2001:db8:1::2 8080 1 active\nend\n";
static const uint8_t VIP6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10};
static const uint8_t CLIENT6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5};

static char g_path[128];

static uint16_t csum(const uint8_t *p, size_t n, uint32_t s)
{
    for (size_t i = 0; i + 1 < n; i += 2)
        s += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (n & 1)
        s += (uint32_t)p[n - 1] << 8;
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

/* A TCP or UDP frame with valid checksums; addresses in network order, ports host order. */
static void frame(uint8_t *d, uint16_t *len, uint8_t proto, uint32_t src, uint32_t dst, uint16_t sp, uint16_t dp,
                  uint8_t flags)
{
    memset(d, 0, 128);
    d[12] = 0x08;
    uint8_t *l3 = d + 14, *l4 = l3 + 20;
    uint16_t l4len = proto == VGW_PROTO_TCP ? 20 : 12;
    l3[0] = 0x45, l3[2] = 0, l3[3] = (uint8_t)(20 + l4len), l3[8] = 64, l3[9] = proto;
    memcpy(l3 + 12, &src, 4), memcpy(l3 + 16, &dst, 4);
    uint16_t c = csum(l3, 20, 0);
    l3[10] = (uint8_t)(c >> 8), l3[11] = (uint8_t)c;
    l4[0] = (uint8_t)(sp >> 8), l4[1] = (uint8_t)sp, l4[2] = (uint8_t)(dp >> 8), l4[3] = (uint8_t)dp;
    if (proto == VGW_PROTO_TCP) {
        l4[7] = 1, l4[12] = 0x50, l4[13] = flags, l4[14] = 0xff;
    } else {
        l4[5] = (uint8_t)l4len;
    }
    uint8_t ph[12];
    memcpy(ph, &src, 4), memcpy(ph + 4, &dst, 4);
    ph[8] = 0, ph[9] = proto, ph[10] = 0, ph[11] = (uint8_t)l4len;
    uint32_t s = 0;
    for (int i = 0; i < 12; i += 2)
        s += (uint32_t)(ph[i] << 8 | ph[i + 1]);
    c = csum(l4, l4len, s);
    uint8_t *at = l4 + (proto == VGW_PROTO_TCP ? 16 : 6);
    at[0] = (uint8_t)(c >> 8), at[1] = (uint8_t)c;
    *len = (uint16_t)(14 + 20 + l4len);
}

/* An IPv6 TCP frame with a valid checksum; ports host order. */
static void frame6(uint8_t *d, uint16_t *len, const uint8_t *src, const uint8_t *dst, uint16_t sp, uint16_t dp,
                   uint8_t flags)
{
    memset(d, 0, 128);
    d[12] = 0x86, d[13] = 0xdd;
    uint8_t *l3 = d + 14, *l4 = l3 + 40;
    l3[0] = 0x60, l3[5] = 20, l3[6] = VGW_PROTO_TCP, l3[7] = 64;
    memcpy(l3 + 8, src, 16), memcpy(l3 + 24, dst, 16);
    l4[0] = (uint8_t)(sp >> 8), l4[1] = (uint8_t)sp, l4[2] = (uint8_t)(dp >> 8), l4[3] = (uint8_t)dp;
    l4[7] = 1, l4[12] = 0x50, l4[13] = flags, l4[14] = 0xff;
    uint32_t s = VGW_PROTO_TCP + 20;
    for (int i = 0; i < 32; i += 2)
        s += (uint32_t)(l3[8 + i] << 8 | l3[9 + i]);
    uint16_t c = csum(l4, 20, s);
    l4[16] = (uint8_t)(c >> 8), l4[17] = (uint8_t)c;
    *len = 14 + 40 + 20;
}

static void cleanup(void)
{
    unlink(g_path);
}

static vgw_worker_t *attach(vgw_dp_t *dp, uint32_t flags, vgw_persist_report_t *rep)
{
    vgw_persist_params_t pp = {.path = g_path, .flags = flags, .now_ms = 1000};
    return vgw_worker_create(dp, &(vgw_worker_params_t){.id = 0, .conn_capacity = CAP, .hash_seed = 9,
                                                        .persist = &pp, .report = rep});
}

static void run(vgw_worker_t *w, uint8_t proto, uint32_t src, uint32_t dst, uint16_t sp, uint16_t dp, uint8_t fl,
                uint64_t now)
{
    uint8_t mem[256];
    vgw_pkt_t p = {.data = mem + 64, .headroom = 64, .tailroom = 64};
    frame(p.data, &p.len, proto, src, dst, sp, dp, fl);
    vgw_verdict_t v;
    vgw_worker_process(w, &p, &v, 1, now);
}

static void run6(vgw_worker_t *w, const uint8_t *src, const uint8_t *dst, uint16_t sp, uint16_t dp, uint8_t fl,
                 uint64_t now)
{
    uint8_t mem[256];
    vgw_pkt_t p = {.data = mem + 64, .headroom = 64, .tailroom = 64};
    frame6(p.data, &p.len, src, dst, sp, dp, fl);
    vgw_verdict_t v;
    vgw_worker_process(w, &p, &v, 1, now);
}

/* What the attach derived must agree with the records. */
static void check(const vgw_worker_t *w)
{
    const vgw_ctab_t *t = &w->ct;
    uint32_t used = 0, half = 0;
    uint64_t load = 0;
    for (uint32_t i = 0; i < t->capacity; i++) {
        const vgw_conn_t *c = &t->conns[i];
        if (!(c->flags & VGW_CF_USED))
            continue;
        used++;
        if (c->held)
            abort();
        half += c->proto == VGW_PROTO_TCP && !(c->flags & VGW_CF_PROXY) &&
                (c->state == VGW_TCP_NONE || c->state == VGW_TCP_SYN_RECV);
    }
    for (uint32_t i = 0; i < VGW_MAX_BACKENDS; i++)
        load += w->be_conns[i];
    if (used != t->count || used + t->free_top != t->capacity || load != used || half != w->pr.halfopen)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (!g_path[0])
        snprintf(g_path, sizeof g_path, "%s/vgw-fuzz-persist-%ld", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp",
                 (long)getpid());
    /* The header check on the raw input, as bytes read from any file. */
    char err[384];
    vgw_persist_layout_t want = {.capacity = CAP, .worker_id = 0, .nworkers = 1};
    (void)vgw_persist_check(data, size, size, &want, err, sizeof err);

    uint8_t flags = data[0];
    char e[256];
    vgw_dp_t *dp;
    vgw_persist_report_t rep;
    vgw_worker_t *w;
    uint32_t vip = 0x0a0200c0u, client = 0x077100cbu; /* 192.0.2.10, 203.0.113.7 */
    /* The file a worker writes with a few connections, made once and restored before each input
     * (a new file per input would spend the time on creating and mapping it). */
    enum { NREG = 4 };
    static uint8_t tmpl[NREG][512 * 64];
    static const size_t base[NREG] = {0, 2u << 20, 4u << 20, VGW_PERSIST_HDR_SIZE},
                        span[NREG] = {256, CAP * 64, 512 * 64, 64};
    if (!tmpl[0][0]) {
        dp = vgw_dp_create(&(vgw_dp_params_t){.nworkers = 1});
        if (!dp || vgw_dp_apply_text(dp, CFG, sizeof CFG - 1, e, sizeof e))
            abort();
        w = attach(dp, VGW_PERSIST_F_DISCARD, &rep);
        if (!w)
            abort();
        for (uint16_t i = 0; i < 6; i++)
            run(w, i % 3 == 2 ? VGW_PROTO_UDP : VGW_PROTO_TCP, client, vip, (uint16_t)(1000 + i),
                i % 3 == 2 ? 53 : 80, 0x02, 1000);
        for (uint16_t i = 0; i < 3; i++)
            run6(w, CLIENT6, VIP6, (uint16_t)(2000 + i), 80, 0x02, 1000);
        vgw_worker_destroy(w);
        vgw_dp_destroy(dp);
        int fd = open(g_path, O_RDONLY);
        for (int r = 0; r < NREG; r++)
            if (fd < 0 || pread(fd, tmpl[r], span[r], (off_t)base[r]) != (ssize_t)span[r])
                abort();
        close(fd);
        atexit(cleanup);
    }

    /* Restore the template, then patch it. */
    int fd = open(g_path, O_RDWR);
    if (fd < 0)
        abort();
    uint8_t buf[256 + CAP * 64 + 512 * 64 + 64];
    uint8_t *reg[NREG] = {buf, buf + 256, buf + 256 + CAP * 64, buf + 256 + CAP * 64 + 512 * 64};
    for (int r = 0; r < NREG; r++)
        memcpy(reg[r], tmpl[r], span[r]);
    size_t i = 1;
    while (i + 4 <= size) {
        uint8_t region = data[i] % NREG;
        size_t off = (size_t)(data[i + 1] | data[i + 2] << 8) % span[region];
        size_t n = data[i + 3];
        if (i + 4 + n > size)
            break;
        if (off + n > span[region])
            n = span[region] - off;
        memcpy(reg[region] + off, data + i + 4, n);
        i += 4 + data[i + 3];
    }
    if (flags & 2) {
        uint32_t one = 1; /* as a writer that died leaves it */
        memcpy(reg[0] + 120, &one, 4);
    }
    if (flags & 1) {
        uint8_t h[VGW_PERSIST_HDR_SIZE] = {0};
        memcpy(h, reg[0], 256);
        uint64_t sum = vgw_persist_hdr_sum(h);
        memcpy(reg[0] + 112, &sum, 8);
    }
    for (int r = 0; r < NREG; r++)
        if (pwrite(fd, reg[r], span[r], (off_t)base[r]) != (ssize_t)span[r])
            abort();
    if (ftruncate(fd, (off_t)vgw_persist_file_size(CAP)) != 0)
        abort();
    close(fd);

    uint32_t nw = 1u + ((flags >> 2) & 3u);
    dp = vgw_dp_create(&(vgw_dp_params_t){.nworkers = nw});
    if (!dp || vgw_dp_apply_text(dp, CFG, sizeof CFG - 1, e, sizeof e))
        abort();
    w = attach(dp, 0, &rep);
    if (w) {
        if (rep.status != VGW_PERSIST_ATTACHED && rep.status != VGW_PERSIST_CREATED)
            abort();
        check(w);
        /* Traffic over whatever came back: both directions of the records' tuples, new flows. */
        for (uint32_t k = 0; k < CAP; k++) {
            const vgw_conn_t c = w->ct.conns[k];
            if (!(c.flags & VGW_CF_USED) || (c.proto != VGW_PROTO_TCP && c.proto != VGW_PROTO_UDP))
                continue;
            if (c.af == VGW_AF_INET6) {
                vgw_conn_addrs6_t a;
                vgw_conn_addrs6(&w->ct, &c, &a);
                run6(w, a.cip, a.vip, (uint16_t)(c.cport >> 8 | c.cport << 8), (uint16_t)(c.vport >> 8 | c.vport << 8),
                     0x10, 2000);
                run6(w, a.rip, a.lip, (uint16_t)(c.rport >> 8 | c.rport << 8), (uint16_t)(c.lport >> 8 | c.lport << 8),
                     0x11, 2000);
                continue;
            }
            run(w, c.proto, c.cip, c.vip, (uint16_t)(c.cport >> 8 | c.cport << 8),
                (uint16_t)(c.vport >> 8 | c.vport << 8), 0x10, 2000);
            run(w, c.proto, c.rip, c.lip, (uint16_t)(c.rport >> 8 | c.rport << 8),
                (uint16_t)(c.lport >> 8 | c.lport << 8), 0x11, 2000);
        }
        for (uint16_t k = 0; k < 8; k++)
            run(w, VGW_PROTO_TCP, client, vip, (uint16_t)(3000 + k), 80, 0x02, 3000);
        for (uint16_t k = 0; k < 4; k++)
            run6(w, CLIENT6, VIP6, (uint16_t)(4000 + k), 80, 0x02, 3000);
        vgw_worker_housekeep(w, 400000, CAP);
        check(w);
        vgw_worker_destroy(w);
    } else if (rep.status != VGW_PERSIST_REFUSED || !rep.err[0]) {
        abort();
    }
    vgw_dp_destroy(dp);
    return 0;
}
