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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
