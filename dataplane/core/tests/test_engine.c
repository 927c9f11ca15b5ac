/* SPDX-License-Identifier: Apache-2.0
 * Unit tests of the engine API: schedulers through the fast path, port ownership, LIP port
 * exhaustion, expiry, config generations and reclamation. */
#include <stdio.h>
#include <stdlib.h>

#include "testutil.h"

static vgw_worker_t *mk_worker(vgw_dp_t *dp, uint32_t id, uint32_t cap)
{
    return tu_worker(dp, (vgw_worker_params_t){.id = id, .conn_capacity = cap, .hash_seed = 5 + id});
}

#define VIP tu_ip(192, 0, 2, 10)
#define LIP tu_ip(198, 18, 0, 1)

static vgw_verdict_t send_syn(vgw_worker_t *w, uint32_t client, uint16_t cport, uint16_t vport, uint64_t now,
                              uint32_t *rs)
{
    tu_buf_t b;
    vgw_pkt_t *p = tu_build(&b, VGW_PROTO_TCP, client, VIP, cport, vport, 0x02, NULL, 0, 0);
    vgw_verdict_t v;
    vgw_worker_process(w, p, &v, 1, now);
    if (v.action == VGW_ACT_FORWARD) {
        assert_true(tu_csums_ok(p));
        if (rs)
            *rs = ld32(p->data + 14 + 16);
    }
    return v;
}

static void test_owner_of_port(void **unused)
{
    (void)unused;
    assert_int_equal(vgw_owner_of_port(1234, 1), 0);
    assert_int_equal(vgw_owner_of_port(1027, 4), 3);
    assert_int_equal(vgw_owner_of_port(65535, 3), 65535 % 3);
}

static void test_lport_partition_and_exhaustion(void **unused)
{
    (void)unused;
    const char *cfg = "vgw-config 1\ngeneration 1\nservice s tcp 192.0.2.10 80 maglev\nlip s 198.18.0.1\n"
                      "backend s 198.18.1.1 8080 1 active\nend\n";
    vgw_dp_t *dp = tu_dp(VGW_MAX_WORKERS, cfg);
    vgw_worker_t *w = mk_worker(dp, 5, 1024);
    uint32_t nports = (65535u - 1024u - 5u) / VGW_MAX_WORKERS + 1; /* ports p with p % 128 == 5 */
    for (uint32_t i = 0; i < nports; i++) {
        tu_buf_t b;
        vgw_pkt_t *p = tu_build(&b, VGW_PROTO_TCP, tu_ip(203, 0, 113, 1), VIP, (uint16_t)(1000 + i), 80, 0x02,
                                NULL, 0, 0);
        vgw_verdict_t v;
        vgw_worker_process(w, p, &v, 1, 1000);
        assert_int_equal(v.action, VGW_ACT_FORWARD);
        uint16_t lport = n2h16(ld16(p->data + 34));
        assert_true(lport >= 1024);
        assert_int_equal(vgw_owner_of_port(lport, VGW_MAX_WORKERS), 5);
    }
    vgw_verdict_t v = send_syn(w, tu_ip(203, 0, 113, 2), 5555, 80, 1000, NULL);
    assert_int_equal(v.action, VGW_ACT_DROP);
    assert_int_equal(v.arg, VGW_DROP_NO_LPORT);
    vgw_worker_destroy(w);
    vgw_dp_destroy(dp);
}

static void test_wlc_balances_by_weight(void **unused)
{
    (void)unused;
    const char *cfg = "vgw-config 1\ngeneration 1\nservice s tcp 192.0.2.10 80 wlc\nlip s 198.18.0.1\n"
                      "backend s 198.18.1.1 8080 1 active\nbackend s 198.18.1.2 8080 3 active\nend\n";
    vgw_dp_t *dp = tu_dp(1, cfg);
    vgw_worker_t *w = mk_worker(dp, 0, 4096);
    uint32_t n1 = 0, n2 = 0, rs = 0;
    for (uint32_t i = 0; i < 400; i++) {
        vgw_verdict_t v = send_syn(w, tu_ip(203, 0, 113, (uint8_t)(i % 250 + 1)), (uint16_t)(2000 + i), 80, 1000, &rs);
        assert_int_equal(v.action, VGW_ACT_FORWARD);
        if (rs == tu_ip(198, 18, 1, 1))
            n1++;
        else
            n2++;
    }
    assert_int_equal(n1, 100);
    assert_int_equal(n2, 300);
    vgw_worker_destroy(w);
    vgw_dp_destroy(dp);
}

static void test_wrr_through_engine(void **unused)
{
    (void)unused;
    const char *cfg = "vgw-config 1\ngeneration 1\nservice s tcp 192.0.2.10 80 wrr\nlip s 198.18.0.1\n"
                      "backend s 198.18.1.1 8080 2 active\nbackend s 198.18.1.2 8080 1 active\n"
                      "backend s 198.18.1.3 8080 1 draining\nend\n";
    vgw_dp_t *dp = tu_dp(1, cfg);
    vgw_worker_t *w = mk_worker(dp, 0, 4096);
    uint32_t cnt[4] = {0}, rs = 0;
    for (uint32_t i = 0; i < 300; i++) {
        send_syn(w, tu_ip(203, 0, 113, 9), (uint16_t)(3000 + i), 80, 1000, &rs);
        cnt[((uint8_t *)&rs)[3]]++;
    }
    assert_int_equal(cnt[1], 200);
    assert_int_equal(cnt[2], 100);
    assert_int_equal(cnt[3], 0);
    vgw_worker_destroy(w);
    vgw_dp_destroy(dp);
}

static void test_expiry_lookup_and_housekeep(void **unused)
{
    (void)unused;
    const char *cfg = "vgw-config 1\ngeneration 1\ntimeout udp 10\n"
                      "service d udp 192.0.2.10 53 maglev timeout.udp=20\nlip d 198.18.0.1\n"
                      "backend d 198.18.1.1 53 1 active\nend\n";
    vgw_dp_t *dp = tu_dp(1, cfg);
    vgw_worker_t *w = mk_worker(dp, 0, 128);
    for (uint32_t i = 0; i < 50; i++) {
        tu_buf_t b;
        vgw_pkt_t *p = tu_build(&b, VGW_PROTO_UDP, tu_ip(203, 0, 113, 7), VIP, (uint16_t)(4000 + i), 53, 0, NULL, 0, 4);
        vgw_verdict_t v;
        vgw_worker_process(w, p, &v, 1, 1000);
        assert_int_equal(v.action, VGW_ACT_FORWARD);
        assert_true(tu_csums_ok(p));
    }
    vgw_conn_info_t ci;
    assert_int_equal(vgw_worker_conn_find(w, VGW_PROTO_UDP, tu_ip(203, 0, 113, 7), 4000, VIP, 53, 1000, &ci), 0);
    assert_int_equal(ci.expires_in_ms, 20000); /* the per-service override wins */
    assert_int_equal(vgw_worker_conn_count(w), 50);
    assert_int_equal(vgw_worker_housekeep(w, 15000, 1000), 0);
    /* Bounded work: a budget of 10 slots removes at most 10. */
    assert_true(vgw_worker_housekeep(w, 21001, 10) <= 10);
    vgw_worker_housekeep(w, 21001, 1000);
    assert_int_equal(vgw_worker_conn_count(w), 0);
    vgw_counters_t c;
    vgw_worker_counters(w, &c);
    assert_int_equal(c.v[VGW_CNT_CONN_EXPIRED], 50);
    vgw_worker_destroy(w);
    vgw_dp_destroy(dp);
}

static uint64_t retired_gen;
static void retire_hook(vgw_state_t *old, uint64_t gen, void *arg)
{
    (void)arg;
    retired_gen = gen;
    vgw_state_free(old);
}

static void test_generations_and_qsbr(void **unused)
{
    (void)unused;
    const char *c1 = "vgw-config 1\ngeneration 1\nend\n";
    const char *c2 = "vgw-config 1\ngeneration 2\nend\n";
    const char *c3 = "vgw-config 1\ngeneration 3\nend\n";
    vgw_dp_t *dp = tu_dp(2, c1);
    vgw_worker_t *w0 = mk_worker(dp, 0, 16), *w1 = mk_worker(dp, 1, 16);
    uint8_t frame[14] = {0};
    vgw_pkt_t p = {.data = frame, .len = sizeof frame};
    vgw_verdict_t v;
    vgw_worker_process(w0, &p, &v, 1, 1);
    vgw_worker_process(w1, &p, &v, 1, 1);
    char err[128];
    assert_int_equal(vgw_dp_apply_text(dp, c2, strlen(c2), err, sizeof err), 0);
    assert_int_equal(vgw_dp_generation(dp), 2);
    /* Both workers may still hold generation 1. */
    assert_int_equal(vgw_dp_reclaim(dp), 1);
    vgw_worker_process(w0, &p, &v, 1, 1);
    assert_int_equal(vgw_dp_reclaim(dp), 1); /* w1 has not moved on */
    vgw_worker_quiesce(w1);
    assert_int_equal(vgw_dp_reclaim(dp), 0);
    assert_int_equal(vgw_dp_apply_text(dp, c2, strlen(c2), err, sizeof err), -1);
    assert_non_null(strstr(err, "not newer"));
    vgw_dp_set_retire_hook(dp, retire_hook, NULL);
    assert_int_equal(vgw_dp_apply_text(dp, c3, strlen(c3), err, sizeof err), 0);
    assert_int_equal(retired_gen, 2);
    vgw_worker_destroy(w0);
    vgw_worker_destroy(w1);
    vgw_dp_destroy(dp);
}

static void test_worker_ids_exclusive(void **unused)
{
    (void)unused;
    vgw_dp_t *dp = tu_dp(2, NULL);
    vgw_worker_t *w = mk_worker(dp, 1, 16);
    vgw_worker_params_t wp = {.id = 1, .conn_capacity = 16};
    assert_null(vgw_worker_create(dp, &wp));
    wp.id = 2;
    assert_null(vgw_worker_create(dp, &wp));
    vgw_worker_destroy(w);
    vgw_dp_destroy(dp);
}

static void test_counter_names(void **unused)
{
    (void)unused;
    assert_string_equal(vgw_counter_name(VGW_CNT_RX), "rx");
    assert_string_equal(vgw_counter_name(VGW_CNT_DROP_BASE + VGW_DROP_IP_BAD_CSUM), "drop_ip_bad_csum");
    assert_null(vgw_counter_name(VGW_CNT_MAX));
    assert_string_equal(vgw_drop_reason_name(VGW_DROP_NO_LPORT), "no_lport");
}

static vgw_backend_counters_t backend_of(const vgw_dp_t *dp, uint32_t svc_uid, uint32_t index, uint32_t *total)
{
    vgw_backend_counters_t bc;
    memset(&bc, 0xa5, sizeof bc);
    *total = vgw_dp_backend_counters(dp, svc_uid, index, &bc, 1);
    return bc;
}

static void test_backend_counters(void **unused)
{
    (void)unused;
    const char *cfg = "vgw-config 1\ngeneration 1\nservice s tcp 192.0.2.10 80 wlc\nlip s 198.18.0.1\n"
                      "backend s 198.18.1.1 8080 1 active\nbackend s 198.18.1.2 8081 3 active\n"
                      "backend s 198.18.1.3 8082 1 draining\nend\n";
    vgw_dp_t *dp = tu_dp(2, cfg);
    vgw_worker_t *w[2] = {mk_worker(dp, 0, 4096), mk_worker(dp, 1, 4096)};
    uint32_t uid = vgw_dp_svc_uid(dp, VGW_PROTO_TCP, VIP, 80), total = 0;
    /* 40 connections on each worker, then a data segment on each: only the SYNs create. */
    for (uint32_t round = 0; round < 2; round++)
        for (uint32_t i = 0; i < 80; i++) {
            tu_buf_t b;
            vgw_pkt_t *p = tu_build(&b, VGW_PROTO_TCP, tu_ip(203, 0, 113, 5), VIP, (uint16_t)(5000 + i), 80,
                                    round ? 0x10 : 0x02, NULL, 0, round ? 100 : 0);
            vgw_verdict_t v;
            vgw_worker_process(w[i % 2], p, &v, 1, 1000);
            assert_int_equal(v.action, VGW_ACT_FORWARD);
        }
    vgw_backend_counters_t all[4];
    memset(all, 0, sizeof all);
    assert_int_equal(vgw_dp_backend_counters(dp, uid, 0, all, 4), 3);
    /* WLC by weight 1:3 on each worker; the draining one gets nothing new. */
    assert_int_equal(all[0].addr, tu_ip(198, 18, 1, 1));
    assert_int_equal(all[0].port, 8080);
    assert_int_equal(all[0].conn_new, 20);
    assert_int_equal(all[0].conn_active, 20);
    assert_int_equal(all[1].addr, tu_ip(198, 18, 1, 2));
    assert_int_equal(all[1].port, 8081);
    assert_int_equal(all[1].conn_new, 60);
    assert_int_equal(all[1].conn_active, 60);
    assert_int_equal(all[2].port, 8082);
    assert_int_equal(all[2].conn_new + all[2].conn_active, 0);
    /* Paging: one entry from index 1; past the end nothing is written. */
    vgw_backend_counters_t one = backend_of(dp, uid, 1, &total);
    assert_int_equal(total, 3);
    assert_memory_equal(&one, &all[1], sizeof one);
    one = backend_of(dp, uid, 3, &total);
    assert_int_equal(total, 3);
    assert_int_equal(one.conn_new, 0xa5a5a5a5a5a5a5a5ull);
    assert_int_equal(vgw_dp_backend_counters(dp, VGW_MAX_SERVICES, 0, all, 4), 0);
    assert_int_equal(vgw_dp_backend_counters(dp, uid + 1, 0, all, 4), 0);
    /* Expiry ends the connections: the gauge drops, the count of created ones stays. */
    vgw_worker_housekeep(w[0], 1000 + 3600 * 1000 * 24, 8192);
    vgw_worker_housekeep(w[1], 1000 + 3600 * 1000 * 24, 8192);
    assert_int_equal(vgw_dp_backend_counters(dp, uid, 0, all, 4), 3);
    assert_int_equal(all[1].conn_active, 0);
    assert_int_equal(all[1].conn_new, 60);
    vgw_worker_destroy(w[0]);
    vgw_worker_destroy(w[1]);
    vgw_dp_destroy(dp);
}

/* A configuration of generation gen whose one service has n backends, the k-th at 198.18.0.0 + first + k. */
static char *churn_config(uint64_t gen, uint32_t first, uint32_t n)
{
    size_t cap = 128 + (size_t)n * 48;
    char *t = malloc(cap);
    assert_non_null(t);
    size_t len = (size_t)snprintf(t, cap, "vgw-config 1\ngeneration %llu\nservice s tcp 192.0.2.10 80 wlc\n"
                                          "lip s 198.18.0.1\n", (unsigned long long)gen);
    for (uint32_t k = 0; k < n; k++) {
        uint32_t a = (198u << 24 | 18u << 16) + first + k;
        len += (size_t)snprintf(t + len, cap - len, "backend s %u.%u.%u.%u 80 1 active\n", a >> 24, (a >> 16) & 255,
                                (a >> 8) & 255, a & 255);
    }
    snprintf(t + len, cap - len, "end\n");
    return t;
}

static void test_backend_new_count_starts_at_zero_on_a_reused_uid(void **unused)
{
    (void)unused;
    /* Backend uids are reused once all 65,536 have been handed out: churn through them, then check
     * that the backend given the uid of one that had connections does not inherit its count. */
    const uint32_t n = 4096;
    char *t = churn_config(1, 0x100, n);
    vgw_dp_t *dp = tu_dp(1, t);
    free(t);
    vgw_worker_t *w = mk_worker(dp, 0, 1024);
    uint32_t uid = vgw_dp_svc_uid(dp, VGW_PROTO_TCP, VIP, 80);
    for (uint32_t i = 0; i < 50; i++)
        assert_int_equal(send_syn(w, tu_ip(203, 0, 113, 5), (uint16_t)(6000 + i), 80, 1000, NULL).action,
                         VGW_ACT_FORWARD);
    vgw_backend_counters_t *bc = calloc(n, sizeof *bc);
    assert_non_null(bc);
    vgw_dp_backend_counters(dp, uid, 0, bc, n);
    uint64_t created = 0;
    for (uint32_t k = 0; k < n; k++)
        created += bc[k].conn_new;
    assert_int_equal(created, 50);
    char err[256];
    for (uint64_t g = 2; g <= VGW_MAX_BACKENDS / n + 1; g++) {
        t = churn_config(g, 0x100 + (uint32_t)(g - 1) * n, n);
        int rc = vgw_dp_apply_text(dp, t, strlen(t), err, sizeof err);
        free(t);
        if (rc)
            fail_msg("generation %llu: %s", (unsigned long long)g, err);
        vgw_worker_process(w, NULL, NULL, 0, 1000); /* moves on: the old generations can go */
        vgw_dp_reclaim(dp);
    }
    /* The last generation took the uids the first one freed (the raw per-uid counts are not zero):
     * fresh backends, no connection created to any of them yet. */
    uint64_t raw = 0;
    for (uint32_t u = 0; u < n; u++)
        raw += w->be_new[u];
    assert_int_equal(raw, 50);
    assert_int_equal(vgw_dp_backend_counters(dp, uid, 0, bc, n), n);
    for (uint32_t k = 0; k < n; k++)
        if (bc[k].conn_new != 0)
            fail_msg("backend %u: conn_new %llu", k, (unsigned long long)bc[k].conn_new);
    assert_int_equal(send_syn(w, tu_ip(203, 0, 113, 6), 7000, 80, 1000, NULL).action, VGW_ACT_FORWARD);
    vgw_dp_backend_counters(dp, uid, 0, bc, n);
    created = 0;
    for (uint32_t k = 0; k < n; k++)
        created += bc[k].conn_new;
    assert_int_equal(created, 1);
    free(bc);
    vgw_worker_destroy(w);
    vgw_dp_destroy(dp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_owner_of_port),
        cmocka_unit_test(test_lport_partition_and_exhaustion),
        cmocka_unit_test(test_wlc_balances_by_weight),
        cmocka_unit_test(test_wrr_through_engine),
        cmocka_unit_test(test_expiry_lookup_and_housekeep),
        cmocka_unit_test(test_generations_and_qsbr),
        cmocka_unit_test(test_worker_ids_exclusive),
        cmocka_unit_test(test_counter_names),
        cmocka_unit_test(test_backend_counters),
        cmocka_unit_test(test_backend_new_count_starts_at_zero_on_a_reused_uid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
