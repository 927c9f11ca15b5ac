/* SPDX-License-Identifier: Apache-2.0
 * Connection tables in files (persist.c): a round trip through a clean close and through a
 * process that dies with the file open, uid remapping against a configuration whose uids differ,
 * expiry times moved onto the new clock, and every refusal (layout version, sizes, checksum,
 * garbage, worker count, capacity, a file in use) with its message and the file untouched. The
 * golden layout tests fail when vgw_conn_t, vgw_bucket_t or the header move a field: then bump
 * VGW_PERSIST_LAYOUT (an old file must be refused, not misread) and update the golden values. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"
#include "vgw/persist.h"

#define VIP tu_ip(192, 0, 2, 10)
#define LIP tu_ip(198, 18, 0, 1)
#define CLIENT tu_ip(203, 0, 113, 7)
#define CAP 1024u
#define NCONN 60u

/* Two services; the second process lists them the other way round after an extra one, so every
 * uid differs between the processes. */
static const char *CFG_A = "vgw-config 1\ngeneration 1\n"
                           "service web tcp 192.0.2.10 80 wlc\nlip web 198.18.0.1\n"
                           "backend web 198.18.1.1 8080 1 active\nbackend web 198.18.1.2 8080 1 active\n"
                           "service dns udp 192.0.2.10 53 maglev\nlip dns 198.18.0.1\n"
                           "backend dns 198.18.1.3 53 1 active\nend\n";
static const char *CFG_B = "vgw-config 1\ngeneration 9\n"
                           "service extra tcp 192.0.2.11 80 maglev\nlip extra 198.18.0.2\n"
                           "backend extra 198.18.2.1 80 1 active\nbackend extra 198.18.2.2 80 1 active\n"
                           "service dns udp 192.0.2.10 53 maglev\nlip dns 198.18.0.1\n"
                           "backend dns 198.18.1.3 53 1 active\n"
                           "service web tcp 192.0.2.10 80 wlc\nlip web 198.18.0.1\n"
                           "backend web 198.18.1.2 8080 1 active\nbackend web 198.18.1.1 8080 1 active\nend\n";
/* web without 198.18.1.2: its connections are orphans (still forwarded). */
static const char *CFG_C = "vgw-config 1\ngeneration 3\n"
                           "service web tcp 192.0.2.10 80 wlc\nlip web 198.18.0.1\n"
                           "backend web 198.18.1.1 8080 1 active\n"
                           "service dns udp 192.0.2.10 53 maglev\nlip dns 198.18.0.1\n"
                           "backend dns 198.18.1.3 53 1 active\nend\n";

static char g_path[256];

static vgw_worker_t *attach(vgw_dp_t *dp, uint32_t id, uint32_t cap, uint64_t now, int64_t offset, uint32_t flags,
                            vgw_persist_report_t *rep)
{
    vgw_persist_params_t pp = {.path = g_path, .flags = flags, .clock_offset_ms = offset, .now_ms = now,
                               .writer = "test_persist"};
    vgw_worker_params_t wp = {.id = id, .conn_capacity = cap, .hash_seed = 77 + id, .persist = &pp, .report = rep};
    return vgw_worker_create(dp, &wp);
}

typedef struct flow {
    uint8_t proto;
    uint16_t cport, vport;
    uint32_t rip, lip;
    uint16_t rport, lport; /* host order */
} flow_t;

static uint16_t l4port(const vgw_pkt_t *p, int dst)
{
    const uint8_t *l3 = p->data + 14;
    return n2h16(ld16(l3 + (l3[0] & 15) * 4 + (dst ? 2 : 0)));
}

/* One packet through w; returns the verdict, the packet rewritten in b. */
static vgw_verdict_t pkt(vgw_worker_t *w, tu_buf_t *b, uint8_t proto, uint32_t src, uint32_t dst, uint16_t sport,
                         uint16_t dport, uint8_t flags, uint64_t now)
{
    vgw_pkt_t *p = tu_build(b, proto, src, dst, sport, dport, flags, NULL, 0, proto == VGW_PROTO_UDP ? 4 : 0);
    vgw_verdict_t v;
    vgw_worker_process(w, p, &v, 1, now);
    if (v.action == VGW_ACT_FORWARD)
        assert_true(tu_csums_ok(p));
    return v;
}

/* NCONN connections: TCP ones established (SYN, SYN-ACK, ACK) except every fifth (half-open),
 * and every fourth one UDP. */
static void open_flows(vgw_worker_t *w, flow_t *f, uint64_t now)
{
    for (uint32_t i = 0; i < NCONN; i++) {
        tu_buf_t b;
        f[i].proto = i % 4 == 3 ? VGW_PROTO_UDP : VGW_PROTO_TCP;
        f[i].cport = (uint16_t)(20000 + i);
        f[i].vport = f[i].proto == VGW_PROTO_TCP ? 80 : 53;
        vgw_verdict_t v = pkt(w, &b, f[i].proto, CLIENT, VIP, f[i].cport, f[i].vport, 0x02, now);
        assert_int_equal(v.action, VGW_ACT_FORWARD);
        const uint8_t *l3 = b.pkt.data + 14;
        f[i].lip = ld32(l3 + 12), f[i].rip = ld32(l3 + 16);
        f[i].lport = l4port(&b.pkt, 0), f[i].rport = l4port(&b.pkt, 1);
        if (f[i].proto == VGW_PROTO_TCP && i % 5 != 0) {
            v = pkt(w, &b, VGW_PROTO_TCP, f[i].rip, f[i].lip, f[i].rport, f[i].lport, 0x12, now);
            assert_int_equal(v.action, VGW_ACT_FORWARD);
            v = pkt(w, &b, VGW_PROTO_TCP, CLIENT, VIP, f[i].cport, f[i].vport, 0x10, now);
            assert_int_equal(v.action, VGW_ACT_FORWARD);
        }
    }
}

/* Every flow continues both ways with its original translation. */
static void check_flows(vgw_worker_t *w, const flow_t *f, uint64_t now)
{
    for (uint32_t i = 0; i < NCONN; i++) {
        tu_buf_t b;
        uint8_t fl = f[i].proto == VGW_PROTO_TCP ? 0x18 : 0;
        vgw_verdict_t v = pkt(w, &b, f[i].proto, CLIENT, VIP, f[i].cport, f[i].vport, fl, now);
        assert_int_equal(v.action, VGW_ACT_FORWARD);
        const uint8_t *l3 = b.pkt.data + 14;
        assert_int_equal(ld32(l3 + 12), f[i].lip);
        assert_int_equal(ld32(l3 + 16), f[i].rip);
        assert_int_equal(l4port(&b.pkt, 0), f[i].lport);
        assert_int_equal(l4port(&b.pkt, 1), f[i].rport);
        v = pkt(w, &b, f[i].proto, f[i].rip, f[i].lip, f[i].rport, f[i].lport, fl, now);
        assert_int_equal(v.action, VGW_ACT_FORWARD);
        assert_int_equal(ld32(l3 + 12), VIP);
        assert_int_equal(ld32(l3 + 16), CLIENT);
        assert_int_equal(l4port(&b.pkt, 0), f[i].vport);
        assert_int_equal(l4port(&b.pkt, 1), f[i].cport);
    }
}

/* The worker's derived state equals what its records say, with the uids of dp's state. */
static void check_derived(vgw_worker_t *w, uint32_t orphans_expected)
{
    const vgw_state_t *st = atomic_load(&w->dp->state);
    uint32_t halfopen = 0, used = 0, orphans = 0;
    uint32_t *load = calloc(VGW_MAX_BACKENDS, sizeof *load);
    assert_non_null(load);
    for (uint32_t i = 0; i < w->ct.capacity; i++) {
        const vgw_conn_t *c = &w->ct.conns[i];
        if (!(c->flags & VGW_CF_USED))
            continue;
        used++;
        assert_int_equal(c->held, 0);
        const vgw_svc_t *s = vgw_state_find_svc(st, c->vip, c->vport, c->proto);
        assert_non_null(s);
        assert_int_equal(c->svc_uid, s->uid);
        int found = 0;
        for (uint32_t j = 0; j < s->nbackends; j++)
            if (s->backends[j].addr == c->rip && s->backends[j].port == c->rport) {
                assert_int_equal(c->be_uid, s->backends[j].uid);
                found = 1;
            }
        if (!found) {
            assert_int_equal(c->be_uid, VGW_MAX_BACKENDS - 1);
            orphans++;
        }
        load[c->be_uid]++;
        halfopen += c->proto == VGW_PROTO_TCP && (c->state == VGW_TCP_NONE || c->state == VGW_TCP_SYN_RECV);
    }
    assert_int_equal(used, w->ct.count);
    assert_int_equal(used + w->ct.free_top, w->ct.capacity);
    assert_int_equal(halfopen, w->pr.halfopen);
    assert_int_equal(orphans, orphans_expected);
    assert_memory_equal(load, w->be_conns, VGW_MAX_BACKENDS * sizeof *load);
    free(load);
}

static void set_path(const char *name)
{
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(g_path, sizeof g_path, "%s/vgw-test-persist-%ld-%s", dir, (long)getpid(), name);
    unlink(g_path);
}

/* The first process: a new file under CFG_A, NCONN flows opened at 1000, a clean close. */
static void run_first_process(flow_t *f)
{
    vgw_persist_report_t rep;
    vgw_dp_t *dp = tu_dp(1, CFG_A);
    vgw_worker_t *w = attach(dp, 0, CAP, 1000, 0, 0, &rep);
    assert_non_null(w);
    assert_int_equal(rep.status, VGW_PERSIST_CREATED);
    open_flows(w, f, 1000);
    vgw_conn_info_t ci;
    assert_int_equal(vgw_worker_conn_find(w, VGW_PROTO_TCP, CLIENT, f[1].cport, VIP, 80, 1000, &ci), 0);
    assert_int_equal(ci.expires_in_ms, 90000);
    vgw_worker_destroy(w);
    vgw_dp_destroy(dp);
}

static void test_round_trip_clean(void **unused)
{
    (void)unused;
    set_path("clean");
    flow_t f[NCONN];
    run_first_process(f);
    vgw_persist_report_t rep;
    vgw_conn_info_t ci;

    /* A new process: other uids, a clock whose zero is 500 ms later (offset -500), 1 s later. */
    vgw_dp_t *dp = tu_dp(1, CFG_B);
    vgw_worker_t *w = attach(dp, 0, CAP, 1500, -500, 0, &rep);
    assert_non_null(w);
    assert_int_equal(rep.status, VGW_PERSIST_ATTACHED);
    assert_int_equal(rep.restored, NCONN);
    assert_int_equal(rep.prev_clean, 1);
    assert_int_equal(rep.index_rebuilt, 0);
    assert_int_equal(rep.orphaned, 0);
    assert_int_equal(rep.attaches, 1);
    assert_string_equal(rep.prev_writer, "test_persist");
    /* 90 s from 1000 on the old clock = 91500 on the new one; now is 1500. */
    assert_int_equal(vgw_worker_conn_find(w, VGW_PROTO_TCP, CLIENT, f[1].cport, VIP, 80, 1500, &ci), 0);
    assert_int_equal(ci.expires_in_ms, 90000);
    assert_int_equal(ci.state, VGW_TCP_ESTABLISHED);
    check_derived(w, 0);
    check_flows(w, f, 1600);
    /* New connections after the attach neither collide with old LIP ports nor break the counts. */
    for (uint32_t i = 0; i < 40; i++) {
        tu_buf_t b;
        assert_int_equal(pkt(w, &b, VGW_PROTO_TCP, CLIENT, VIP, (uint16_t)(30000 + i), 80, 0x02, 1700).action,
                         VGW_ACT_FORWARD);
    }
    assert_int_equal(vgw_worker_conn_count(w), NCONN + 40);
    check_derived(w, 0);
    vgw_worker_destroy(w);
    vgw_dp_destroy(dp);
    unlink(g_path);
}

/* A process that dies with the file open (as kill -9 leaves it): the index is rebuilt. */
static void test_round_trip_crash(void **unused)
{
    (void)unused;
    set_path("crash");
    flow_t *f = mmap(NULL, sizeof(flow_t) * NCONN, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(f != MAP_FAILED);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        vgw_persist_report_t rep;
        vgw_dp_t *dp = tu_dp(1, CFG_A);
        vgw_worker_t *w = attach(dp, 0, CAP, 1000, 0, 0, &rep);
        if (!w)
            _exit(3);
        open_flows(w, f, 1000);
        _exit(0); /* no destroy: the file stays marked open */
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    vgw_persist_report_t rep;
    vgw_dp_t *dp = tu_dp(1, CFG_B);
    vgw_worker_t *w = attach(dp, 0, CAP, 2000, 0, 0, &rep);
    assert_non_null(w);
    assert_int_equal(rep.status, VGW_PERSIST_ATTACHED);
    assert_int_equal(rep.prev_clean, 0);
    assert_int_equal(rep.prev_pid, (uint32_t)pid);
    assert_int_equal(rep.index_rebuilt, 1);
    assert_int_equal(rep.restored, NCONN);
    check_derived(w, 0);
    check_flows(w, f, 2000);
    vgw_worker_destroy(w);

    /* Cleanly closed, but the index lost entries (a torn file): the count check rebuilds it. */
    int fd = open(g_path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t *m = mmap(NULL, vgw_persist_file_size(CAP), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    assert_true(m != MAP_FAILED);
    uint64_t boff;
    memcpy(&boff, m + 56, 8);
    memset(m + boff, 0, 64 * 64);
    munmap(m, vgw_persist_file_size(CAP));
    close(fd);
    w = attach(dp, 0, CAP, 2100, 0, 0, &rep);
    assert_non_null(w);
    assert_int_equal(rep.prev_clean, 1);
    assert_int_equal(rep.index_rebuilt, 1);
    check_flows(w, f, 2100);
    vgw_worker_destroy(w);
    vgw_dp_destroy(dp);
    munmap(f, sizeof(flow_t) * NCONN);
    unlink(g_path);
}

static void test_orphans_and_expiry(void **unused)
{
    (void)unused;
    set_path("orphans");
    flow_t f[NCONN];
    run_first_process(f);
    uint32_t to_removed = 0;
    for (uint32_t i = 0; i < NCONN; i++)
        to_removed += f[i].rip == tu_ip(198, 18, 1, 2);
    assert_true(to_removed > 0);

    vgw_persist_report_t rep;
    vgw_dp_t *dp = tu_dp(1, CFG_C);
    vgw_worker_t *w = attach(dp, 0, CAP, 1000, 0, 0, &rep);
    assert_non_null(w);
    assert_int_equal(rep.orphaned, to_removed);
    check_derived(w, to_removed);
    check_flows(w, f, 1100); /* like a removed backend's connections: they keep flowing */
    vgw_worker_destroy(w);

    /* 95 s later the TCP connections (established by check_flows: 90 s) have expired, the UDP
     * ones (300 s) have not: counted, and recycled as usual. */
    w = attach(dp, 0, CAP, 96100, 0, 0, &rep);
    assert_non_null(w);
    uint32_t tcp = 0;
    for (uint32_t i = 0; i < NCONN; i++)
        tcp += f[i].proto == VGW_PROTO_TCP;
    assert_int_equal(rep.expired, tcp);
    assert_int_equal(rep.restored, NCONN - tcp);
    vgw_worker_housekeep(w, 96100, CAP);
    assert_int_equal(vgw_worker_conn_count(w), NCONN - tcp);
    assert_int_equal(w->pr.halfopen, 0);
    vgw_worker_destroy(w);

    /* Discarded on purpose: a new, empty table. */
    w = attach(dp, 0, CAP, 41100, 0, VGW_PERSIST_F_DISCARD, &rep);
    assert_non_null(w);
    assert_int_equal(rep.status, VGW_PERSIST_CREATED);
    assert_int_equal(vgw_worker_conn_count(w), 0);
    vgw_worker_destroy(w);
    vgw_dp_destroy(dp);
    unlink(g_path);
}

static uint64_t file_sum(void)
{
    FILE *fp = fopen(g_path, "rb");
    assert_non_null(fp);
    uint64_t s = 1469598103934665603ULL;
    int c;
    while ((c = fgetc(fp)) != EOF)
        s = (s ^ (uint64_t)c) * 1099511628211ULL;
    fclose(fp);
    return s;
}

static void patch(size_t off, const void *bytes, size_t n)
{
    int fd = open(g_path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, bytes, n, (off_t)off), (ssize_t)n);
    close(fd);
}

/* Refused: create fails, the report says why, the file is byte for byte what it was. */
static void expect_refused(vgw_dp_t *dp, uint32_t id, uint32_t cap, const char *needle)
{
    uint64_t before = file_sum();
    vgw_persist_report_t rep;
    vgw_worker_t *w = attach(dp, id, cap, 1000, 0, 0, &rep);
    assert_null(w);
    assert_int_equal(rep.status, VGW_PERSIST_REFUSED);
    if (!strstr(rep.err, needle))
        fail_msg("refusal '%s' does not mention '%s'", rep.err, needle);
    assert_non_null(strstr(rep.err, "--conn-state-discard"));
    assert_true(file_sum() == before);
}

static void test_refusals(void **unused)
{
    (void)unused;
    set_path("refuse");
    vgw_persist_report_t rep;
    vgw_dp_t *dp2 = tu_dp(2, CFG_A);
    vgw_worker_t *w = attach(dp2, 0, CAP, 1000, 0, 0, &rep);
    assert_non_null(w);
    /* In use by a live attach (another process, or this one twice). */
    vgw_dp_t *dp2b = tu_dp(2, CFG_A);
    assert_null(attach(dp2b, 0, CAP, 1000, 0, 0, &rep));
    assert_int_equal(rep.status, VGW_PERSIST_ERROR);
    assert_non_null(strstr(rep.err, "in use"));
    vgw_dp_destroy(dp2b);
    vgw_worker_destroy(w);

    vgw_dp_t *dp1 = tu_dp(1, CFG_A);
    expect_refused(dp1, 0, CAP, "--workers 2");
    vgw_dp_t *dp2c = tu_dp(2, CFG_A);
    expect_refused(dp2c, 0, CAP * 2, "--conn-capacity 1024");

    uint8_t hdr[VGW_PERSIST_HDR_SIZE];
    int fd = open(g_path, O_RDONLY);
    assert_int_equal(pread(fd, hdr, sizeof hdr, 0), (ssize_t)sizeof hdr);
    close(fd);
    uint32_t v = 2;
    patch(8, &v, 4); /* a newer layout */
    expect_refused(dp2c, 0, CAP, "incompatible layout: the file has connection-table layout version 2, this build reads version 1");
    patch(0, hdr, sizeof hdr);
    uint32_t sz = 128;
    patch(16, &sz, 4); /* records of another size */
    expect_refused(dp2c, 0, CAP, "header/record/bucket sizes");
    patch(0, hdr, sizeof hdr);
    uint8_t x = hdr[41] ^ 0x10;
    patch(41, &x, 1); /* the seed, torn */
    expect_refused(dp2c, 0, CAP, "checksum mismatch");
    patch(0, hdr, sizeof hdr);
    patch(0, "GARBAGE!", 8);
    expect_refused(dp2c, 0, CAP, "bad magic");
    patch(0, hdr, sizeof hdr);
    assert_int_equal(truncate(g_path, 4 << 20), 0);
    expect_refused(dp2c, 0, CAP, "truncated");

    /* A zeroed header never completed: a new file replaces it. */
    static const uint8_t zero[64];
    patch(0, zero, sizeof zero);
    w = attach(dp2c, 0, CAP, 1000, 0, 0, &rep);
    assert_non_null(w);
    assert_int_equal(rep.status, VGW_PERSIST_CREATED);
    vgw_worker_destroy(w);
    vgw_dp_destroy(dp1);
    vgw_dp_destroy(dp2);
    vgw_dp_destroy(dp2c);
    unlink(g_path);
}

/* IPv6 records name their VIP and LIP by id in the node's address table, whose copy the file
 * keeps: a new process continues them both ways, even when its configuration gave the addresses
 * other ids (listed in another order, after another IPv6 service), and recounts their backends.
 * A copy that names nothing (zeroed: as a process dying while it rewrote the ids leaves it) loses
 * them, counted: the client's next segment finds no connection, its next SYN opens a new one. */
static const uint8_t C6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5};
static const uint8_t V6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10};
static const uint8_t L6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
static const uint8_t R6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
#define HDR_ADDR6_COUNT 132u /* phdr_t.addr6_count */

static vgw_verdict_t pkt6(vgw_worker_t *w, tu_buf_t *b, const uint8_t *src, const uint8_t *dst, uint16_t sport,
                          uint16_t dport, uint8_t flags, uint64_t now)
{
    vgw_verdict_t v;
    vgw_worker_process(w, tu_build6_tcp(b, src, dst, sport, dport, flags), &v, 1, now);
    return v;
}

static void test_ipv6_records_continue_and_their_ids_follow_the_new_table(void **unused)
{
    (void)unused;
    set_path("v6");
    static const char *cfg = "vgw-config 1\ngeneration 1\n"
                             "service web tcp 192.0.2.10 80 wlc\nlip web 198.18.0.1\n"
                             "backend web 198.18.1.1 8080 1 active\n"
                             "service web6 tcp 2001:db8::10 80 wlc\nlip web6 2001:db8:ff::1\n"
                             "backend web6 2001:db8:1::1 8080 1 active\nend\n";
    /* The next process: another IPv6 service first, so web6's VIP and LIP get ids 2 and 3. */
    static const char *cfg2 = "vgw-config 1\ngeneration 5\n"
                              "service api6 tcp 2001:db8::20 443 wlc\nlip api6 2001:db8:ff::2\n"
                              "backend api6 2001:db8:1::2 8443 1 active\n"
                              "service web6 tcp 2001:db8::10 80 wlc\nlip web6 2001:db8:ff::1\n"
                              "backend web6 2001:db8:1::1 8080 1 active\n"
                              "service web tcp 192.0.2.10 80 wlc\nlip web 198.18.0.1\n"
                              "backend web 198.18.1.1 8080 1 active\nend\n";
    vgw_persist_report_t rep;
    tu_buf_t b;
    vgw_dp_t *dp = tu_dp(1, cfg);
    vgw_worker_t *w = attach(dp, 0, CAP, 1000, 0, VGW_PERSIST_F_DISCARD, &rep);
    assert_non_null(w);
    assert_int_equal(pkt(w, &b, VGW_PROTO_TCP, CLIENT, VIP, 20000, 80, 0x02, 1000).action, VGW_ACT_FORWARD);
    assert_int_equal(pkt6(w, &b, C6, V6, 20001, 80, 0x02, 1000).action, VGW_ACT_FORWARD);
    const uint8_t *ip6 = b.pkt.data + 14;
    assert_memory_equal(ip6 + 8, L6, 16);
    assert_memory_equal(ip6 + 24, R6, 16);
    uint16_t lport = n2h16(ld16(ip6 + 40));
    assert_int_equal(vgw_worker_conn_count(w), 2);
    vgw_worker_destroy(w);
    vgw_dp_destroy(dp);

    dp = tu_dp(1, cfg2);
    w = attach(dp, 0, CAP, 1500, 0, 0, &rep);
    assert_non_null(w);
    assert_int_equal(rep.status, VGW_PERSIST_ATTACHED);
    assert_int_equal(rep.restored, 2);
    assert_int_equal(rep.v6_lost, 0);
    assert_int_equal(rep.invalid, 0);
    assert_int_equal(rep.orphaned, 0);
    vgw_verdict_t v = pkt6(w, &b, R6, L6, 8080, lport, 0x12, 1600); /* the server's SYN-ACK */
    assert_int_equal(v.action, VGW_ACT_FORWARD);
    assert_memory_equal(ip6 + 8, V6, 16);
    assert_memory_equal(ip6 + 24, C6, 16);
    assert_int_equal(n2h16(ld16(ip6 + 42)), 20001);
    v = pkt6(w, &b, C6, V6, 20001, 80, 0x10, 1600);
    assert_int_equal(v.action, VGW_ACT_FORWARD);
    assert_memory_equal(ip6 + 8, L6, 16);
    assert_memory_equal(ip6 + 24, R6, 16);
    assert_int_equal(n2h16(ld16(ip6 + 40)), lport);
    assert_int_equal(vgw_l4_csum_v6(ip6 + 8, ip6 + 24, VGW_PROTO_TCP, ip6 + 40, n2h16(ld16(ip6 + 4))), 0);
    vgw_worker_destroy(w);
    vgw_dp_destroy(dp);

    static const uint32_t zero = 0;
    patch(HDR_ADDR6_COUNT, &zero, 4);
    dp = tu_dp(1, cfg);
    w = attach(dp, 0, CAP, 1700, 0, 0, &rep);
    assert_non_null(w);
    assert_int_equal(rep.restored, 1);
    assert_int_equal(rep.v6_lost, 1);
    assert_int_equal(vgw_worker_conn_count(w), 1);
    v = pkt6(w, &b, C6, V6, 20001, 80, 0x10, 1800);
    assert_int_equal(v.action, VGW_ACT_DROP);
    assert_int_equal(v.arg, VGW_DROP_TCP_NO_CONN);
    v = pkt6(w, &b, C6, V6, 20001, 80, 0x02, 1800);
    assert_int_equal(v.action, VGW_ACT_FORWARD);
    assert_int_equal(v.af, VGW_AF_INET6);
    vgw_worker_destroy(w);
    vgw_dp_destroy(dp);
    unlink(g_path);
}

/* Golden layout, version 1. A failure here means a change an older or newer binary would
 * misread: bump VGW_PERSIST_LAYOUT in persist.h and update these values. */
static void test_golden_layout(void **unused)
{
    (void)unused;
    assert_int_equal(VGW_PERSIST_LAYOUT, 1);
    assert_int_equal(sizeof(vgw_conn_t), 64);
    assert_int_equal(offsetof(vgw_conn_t, cip), 0);
    assert_int_equal(offsetof(vgw_conn_t, vip), 4);
    assert_int_equal(offsetof(vgw_conn_t, lip), 8);
    assert_int_equal(offsetof(vgw_conn_t, rip), 12);
    assert_int_equal(offsetof(vgw_conn_t, cport), 16);
    assert_int_equal(offsetof(vgw_conn_t, rport), 22);
    assert_int_equal(offsetof(vgw_conn_t, proto), 24);
    assert_int_equal(offsetof(vgw_conn_t, flags), 27);
    assert_int_equal(offsetof(vgw_conn_t, expire), 28);
    assert_int_equal(offsetof(vgw_conn_t, ip_delta), 32);
    assert_int_equal(offsetof(vgw_conn_t, l4_delta), 36);
    assert_int_equal(offsetof(vgw_conn_t, rs_isn1), 40);
    assert_int_equal(offsetof(vgw_conn_t, be_uid), 44);
    assert_int_equal(offsetof(vgw_conn_t, svc_uid), 46);
    assert_int_equal(offsetof(vgw_conn_t, sp_seq), 48);
    assert_int_equal(offsetof(vgw_conn_t, sp_ts), 52);
    assert_int_equal(offsetof(vgw_conn_t, sp_win), 56);
    assert_int_equal(offsetof(vgw_conn_t, sp_ws), 58);
    assert_int_equal(offsetof(vgw_conn_t, held), 60);
    assert_int_equal(offsetof(vgw_conn_t, gen), 61);
    /* IPv6 records: the same bytes (internal.h) */
    assert_int_equal(offsetof(vgw_conn_t, cip6), 0);
    assert_int_equal(offsetof(vgw_conn_t, rip6_head), 32);
    assert_int_equal(offsetof(vgw_conn_t, vip6_id), 36);
    assert_int_equal(offsetof(vgw_conn_t, lip6_id), 38);
    assert_int_equal(offsetof(vgw_conn_t, rip6_tail), 48);
    assert_int_equal(VGW_CF_USED, 0x80);
    assert_int_equal(VGW_TCP_SYNACK, 10);
    assert_int_equal(sizeof(vgw_bucket_t), 64);
    assert_int_equal(VGW_BUCKET_SLOTS, 10);
    assert_int_equal(offsetof(vgw_bucket_t, ovf), 20);
    assert_int_equal(offsetof(vgw_bucket_t, ref), 24);
    assert_int_equal(vgw_ctab_nbuckets(CAP), 512);
    assert_int_equal(vgw_persist_file_size(CAP), 6u << 20);

    set_path("golden");
    vgw_dp_t *dp = tu_dp(3, NULL);
    vgw_persist_report_t rep;
    vgw_worker_t *w = attach(dp, 2, CAP, 1000, 0, 0, &rep);
    assert_non_null(w);
    vgw_worker_destroy(w);
    uint8_t h[128];
    int fd = open(g_path, O_RDONLY);
    assert_int_equal(pread(fd, h, sizeof h, 0), (ssize_t)sizeof h);
    struct stat sb;
    assert_int_equal(fstat(fd, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    close(fd);
    uint32_t u32[8];
    uint64_t u64[4];
    assert_memory_equal(h, "VGWCONN\n", 8);
    memcpy(u32, h + 8, 32);
    uint32_t want32[8] = {1, 208, 64, 64, CAP, 511, 2, 3};
    assert_memory_equal(u32, want32, sizeof want32);
    memcpy(u64, h + 48, 24);
    assert_int_equal(u64[0], 2u << 20);        /* records */
    assert_int_equal(u64[1], 4u << 20);        /* buckets */
    assert_int_equal(u64[2], 6u << 20);        /* file size */
    assert_int_equal(h[72 + 8], '-');          /* boot id (text) */
    vgw_dp_destroy(dp);
    unlink(g_path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_layout),
        cmocka_unit_test(test_round_trip_clean),
        cmocka_unit_test(test_round_trip_crash),
        cmocka_unit_test(test_ipv6_records_continue_and_their_ids_follow_the_new_table),
        cmocka_unit_test(test_orphans_and_expiry),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
