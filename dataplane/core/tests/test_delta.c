/* SPDX-License-Identifier: Apache-2.0
 * The "vgw-delta 1" grammar: every verb accepted and each of its failures (short, long,
 * duplicated, out of order, unknown target, bad token) rejected with a reason and no change. */
#include <stdio.h>
#include <stdlib.h>

#include "cfgint.h"
#include "testutil.h"

static const char *base_doc = "vgw-config 1\n"
                              "generation 10\n"
                              "service web tcp 192.0.2.10 80 maglev table=251\n"
                              "lip web 198.18.0.100\n"
                              "lip web 198.18.0.101\n"
                              "backend web 198.18.1.1 80 100 active\n"
                              "backend web 198.18.1.2 80 100 active\n"
                              "service dns udp 192.0.2.10 53 wrr\n"
                              "lip dns 198.18.0.100\n"
                              "backend dns 198.18.1.1 53 1 active\n"
                              "end\n";

#define D(ops) "vgw-delta 1\ngeneration 11\n" ops "end\n"

static vgw_cfg_t *base(void)
{
    vgw_cfg_t *cfg = NULL;
    char err[256];
    if (vgw_cfg_parse(base_doc, strlen(base_doc), &cfg, err, sizeof err) != 0)
        fail_msg("base: %s", err);
    return cfg;
}

/* The delta is rejected with a reason containing needle, and cfg is exactly as before. */
static void expect_bad(const char *delta, const char *needle)
{
    tu_delta_bad(base(), delta, needle);
}

/* The delta is accepted; the result contains every line of want (each "\n"-terminated). */
static vgw_cfg_t *expect_ok(const char *delta, const char *want)
{
    vgw_cfg_t *cfg = base();
    char err[256] = "";
    if (vgw_cfg_apply_delta(cfg, delta, strlen(delta), err, sizeof err) != 0)
        fail_msg("delta:\n%s-> rejected: %s", delta, err);
    char *text = vgw_cfg_serialize(cfg, NULL);
    for (const char *l = want; l && *l;) {
        const char *nl = strchr(l, '\n');
        size_t n = nl ? (size_t)(nl - l + 1) : strlen(l);
        char line[256];
        snprintf(line, sizeof line, "%.*s", (int)n, l);
        if (!strstr(text, line))
            fail_msg("after delta:\n%s\nmissing line '%s' in:\n%s", delta, line, text);
        l += n;
    }
    free(text);
    return cfg;
}

static void test_header_and_framing(void **unused)
{
    (void)unused;
    expect_bad("", "truncated");
    expect_bad("vgw-delta 2\ngeneration 11\nend\n", "unsupported delta version");
    expect_bad("vgw-delta\ngeneration 11\nend\n", "expected header");
    expect_bad("vgw-config 1\ngeneration 11\nend\n", "expected header");
    expect_bad("vgw-delta 1\nend\n", "expected 'generation");
    expect_bad("vgw-delta 1\nbackend remove web 198.18.1.1 80\ngeneration 11\nend\n", "expected 'generation");
    expect_bad("vgw-delta 1\ngeneration 10\nend\n", "not newer");
    expect_bad("vgw-delta 1\ngeneration 9\nend\n", "not newer");
    expect_bad("vgw-delta 1\ngeneration 011\nend\n", "expected 'generation");
    expect_bad("vgw-delta 1\ngeneration 11 12\nend\n", "expected 'generation");
    expect_bad("vgw-delta 1\ngeneration 11\nbackend remove web 198.18.1.1 80\n", "truncated");
    expect_bad(D("") "backend remove web 198.18.1.1 80\n", "after 'end'");
    expect_bad(D("") "end\n", "after 'end'");
    expect_bad(D("backend remove web 198.18.1.1 80\x01\n"), "non-printable");
    expect_bad(D("backend remove web 198.18.1.1 80 a b c d e f g h i j k l m n o p q r s t u v w x y z A B C\n"),
               "too many tokens");
    char longline[1200];
    memset(longline, 'a', sizeof longline);
    memcpy(longline, "vgw-delta 1\ngeneration 11\n", 26);
    longline[sizeof longline - 1] = 0;
    expect_bad(longline, "longer than");
    char nul[] = "vgw-delta 1\ngeneration 11\nend\n";
    nul[14] = 0; /* inside the generation line */
    vgw_cfg_t *cfg = base();
    char err[128];
    vgw_cfg_txn_t *txn;
    assert_int_equal(vgw_cfg_delta_begin(cfg, nul, sizeof nul - 1, &txn, err, sizeof err), -1);
    assert_non_null(strstr(err, "NUL"));
    vgw_cfg_free(cfg);
}

static void test_unknown_directives(void **unused)
{
    (void)unused;
    expect_bad(D("frobnicate\n"), "unknown directive");
    expect_bad(D("frobnicate a b\n"), "unknown directive");
    expect_bad(D("backend\n"), "unknown directive");
    expect_bad(D("backend frob web 198.18.1.1 80\n"), "unknown operation");
    expect_bad(D("lip frob web 198.18.0.1\n"), "unknown operation");
    expect_bad(D("service frob web\n"), "unknown operation");
    expect_bad(D("timeout udp 5\n"), "unknown directive");
}

static void test_backend_add(void **unused)
{
    (void)unused;
    vgw_cfg_free(expect_ok(D("backend add web 198.18.1.3 80 7 draining\n"), "backend web 198.18.1.3 80 7 draining\n"));
    expect_bad(D("backend add web 198.18.1.3 80 7\n"), "expected 'backend add");
    expect_bad(D("backend add web 198.18.1.3\n"), "expected 'backend add");
    expect_bad(D("backend add web\n"), "expected 'backend add");
    expect_bad(D("backend add web 198.18.1.3 80 7 active extra\n"), "expected 'backend add");
    expect_bad(D("backend add web 198.18.1.1 80 7 active\n"), "duplicate");
    expect_bad(D("backend add web 198.18.1.3 80 7 active\nbackend add web 198.18.1.3 80 7 active\n"), "duplicate");
    expect_bad(D("backend add nope 198.18.1.3 80 7 active\n"), "no service 'nope'");
    expect_bad(D("backend add web 198.18.1.300 80 7 active\n"), "bad address");
    expect_bad(D("backend add web 224.0.0.1 80 7 active\n"), "bad address");
    expect_bad(D("backend add web 198.18.1.3 0 7 active\n"), "bad port");
    expect_bad(D("backend add web 198.18.1.3 65536 7 active\n"), "bad port");
    expect_bad(D("backend add web 198.18.1.3 80 65536 active\n"), "weight");
    expect_bad(D("backend add web 198.18.1.3 80 -1 active\n"), "weight");
    expect_bad(D("backend add web 198.18.1.3 80 7 sleepy\n"), "state");
}

static void test_backend_remove_weight_state(void **unused)
{
    (void)unused;
    vgw_cfg_t *c = expect_ok(D("backend remove web 198.18.1.1 80\n"), "backend web 198.18.1.2 80 100 active\n");
    assert_int_equal(c->services[0]->nbackends, 1);
    assert_int_equal(c->nbackends, 2);
    vgw_cfg_free(c);
    expect_bad(D("backend remove web 198.18.1.9 80\n"), "no backend 198.18.1.9:80 in service web");
    expect_bad(D("backend remove web 198.18.1.1 80\nbackend remove web 198.18.1.1 80\n"), "no backend");
    expect_bad(D("backend remove web 198.18.1.1\n"), "expected 'backend remove");
    expect_bad(D("backend remove web 198.18.1.1 80 1\n"), "expected 'backend remove");

    vgw_cfg_free(expect_ok(D("backend weight web 198.18.1.1 80 0\n"), "backend web 198.18.1.1 80 0 active\n"));
    vgw_cfg_free(expect_ok(D("backend weight web 198.18.1.1 80 0\nbackend state web 198.18.1.1 80 draining\n"),
                           "backend web 198.18.1.1 80 0 draining\n"));
    expect_bad(D("backend weight web 198.18.1.1 80 5\nbackend weight web 198.18.1.1 80 5\n"), "weight set twice");
    expect_bad(D("backend state web 198.18.1.1 80 draining\nbackend state web 198.18.1.1 80 active\n"),
               "state set twice");
    expect_bad(D("backend weight web 198.18.1.1 80\n"), "expected 'backend weight");
    expect_bad(D("backend weight web 198.18.1.1 80 1 2\n"), "expected 'backend weight");
    expect_bad(D("backend weight web 198.18.1.1 80 x\n"), "weight");
    expect_bad(D("backend weight web 198.18.1.9 80 1\n"), "no backend");

    vgw_cfg_free(expect_ok(D("backend state web 198.18.1.2 80 disabled\n"), "backend web 198.18.1.2 80 100 disabled\n"));
    expect_bad(D("backend state web 198.18.1.2 80\n"), "expected 'backend state");
    expect_bad(D("backend state web 198.18.1.2 80 active x\n"), "expected 'backend state");
    expect_bad(D("backend state web 198.18.1.2 80 up\n"), "state");
    expect_bad(D("backend state dns 198.18.1.2 53 active\n"), "no backend");
}

static void test_lips(void **unused)
{
    (void)unused;
    vgw_cfg_free(expect_ok(D("lip add dns 198.18.0.102\n"), "lip dns 198.18.0.100\nlip dns 198.18.0.102\n"));
    vgw_cfg_free(expect_ok(D("lip remove web 198.18.0.100\n"), "lip web 198.18.0.101\n"));
    expect_bad(D("lip add dns 198.18.0.100\n"), "duplicate");
    expect_bad(D("lip add dns 192.0.2.10\n"), "also the VIP");
    expect_bad(D("lip add dns 198.18.0.1.1\n"), "bad address");
    expect_bad(D("lip add nope 198.18.0.102\n"), "no service");
    expect_bad(D("lip add dns\n"), "expected 'lip add");
    expect_bad(D("lip add dns 198.18.0.102 x\n"), "expected 'lip add");
    expect_bad(D("lip remove dns 198.18.0.101\n"), "no lip 198.18.0.101");
    expect_bad(D("lip remove dns 198.18.0.100\n"), "needs at least one lip");
    /* The last LIP may go if another comes in the same delta. */
    vgw_cfg_free(expect_ok(D("lip remove dns 198.18.0.100\nlip add dns 198.18.0.105\n"), "lip dns 198.18.0.105\n"));
}

static void test_services(void **unused)
{
    (void)unused;
    vgw_cfg_t *c = expect_ok(D("service add api tcp 192.0.2.20 8080 wlc toa=on timeout.tcp_established=30\n"
                               "lip add api 198.18.0.100\nbackend add api 198.18.1.5 8080 1 active\n"),
                             "service api tcp 192.0.2.20 8080 wlc toa=on timeout.tcp_established=30\n"
                             "lip api 198.18.0.100\nbackend api 198.18.1.5 8080 1 active\n");
    assert_int_equal(c->nservices, 3);
    assert_true(vgw_cfg_addr_kind(c, VGW_AF_INET, &c->services[2]->vip) & VGW_ADDR_F_VIP);
    vgw_cfg_free(c);
    c = expect_ok(D("service remove dns\n"), "service web tcp 192.0.2.10 80 maglev table=251\n");
    assert_int_equal(c->nservices, 1);
    assert_null(vgw_cfg_find(c, "dns"));
    vgw_cfg_free(c);
    /* A definition changes by removal and addition in one delta. */
    vgw_cfg_free(expect_ok(D("service remove dns\nservice add dns udp 192.0.2.10 53 maglev\nlip add dns 198.18.0.9\n"),
                           "service dns udp 192.0.2.10 53 maglev\n"));
    /* The lines that crashed vgw-fwd once: fewer arguments than a service needs. */
    expect_bad(D("service add x\n"), "expected <name>");
    expect_bad(D("service add x tcp\n"), "expected <name>");
    expect_bad(D("service add x tcp 192.0.2.20\n"), "expected <name>");
    expect_bad(D("service add x tcp 192.0.2.20 80\n"), "expected <name>");
    expect_bad(D("service add\n"), "expected <name>");
    expect_bad(D("service remove\n"), "expected 'service remove");
    expect_bad(D("service remove dns extra\n"), "expected 'service remove");
    expect_bad(D("service remove nope\n"), "no service 'nope'");
    expect_bad(D("service remove dns\nservice remove dns\n"), "no service 'dns'");
    expect_bad(D("service add dns udp 192.0.2.11 53 wrr\nlip add dns 198.18.0.1\n"), "duplicate");
    expect_bad(D("service add dns2 udp 192.0.2.10 53 wrr\nlip add dns2 198.18.0.1\n"), "same VIP, port and protocol");
    expect_bad(D("service add api tcp 192.0.2.20 80 wrr\n"), "needs at least one lip");
    expect_bad(D("service add api tcp 198.18.0.100 80 wrr\nlip add api 198.18.0.7\n"), "is also a LIP");
    expect_bad(D("service add api tcp 192.0.2.20 80 wrr bogus=1\nlip add api 198.18.0.7\n"), "unknown option");
    expect_bad(D("service add api udp 192.0.2.20 80 wrr toa=on\nlip add api 198.18.0.7\n"), "TCP only");
    expect_bad(D("service add api tcp 192.0.2.20 80 maglev table=100\nlip add api 198.18.0.7\n"), "prime");
    expect_bad(D("service add a/b%c tcp 192.0.2.20 80 wrr\n"), "bad name");
    /* Out of order: a backend for a service the delta adds later. */
    expect_bad(D("backend add api 198.18.1.5 8080 1 active\nservice add api tcp 192.0.2.20 8080 wlc\n"
                 "lip add api 198.18.0.100\n"),
               "no service 'api'");
}

/* Several good operations then a bad one: nothing of it stays. */
static void test_atomic_and_rollback(void **unused)
{
    (void)unused;
    expect_bad(D("backend weight web 198.18.1.1 80 5\nservice remove dns\nlip add web 198.18.0.7\n"
                 "backend add web 198.18.1.7 80 1 active\nservice add z tcp 192.0.2.30 80 wrr\n"
                 "lip add z 198.18.0.9\nbackend remove web 198.18.1.9 80\n"),
               "no backend");

    vgw_cfg_t *cfg = base();
    char *before = vgw_cfg_serialize(cfg, NULL);
    uint64_t revs = tu_rev_sum(cfg);
    const char *d = D("backend weight web 198.18.1.1 80 5\nbackend remove web 198.18.1.2 80\nservice remove dns\n"
                      "service add dns udp 192.0.2.10 53 maglev\nlip add dns 198.18.0.100\n"
                      "lip add web 198.18.0.7\nlip remove web 198.18.0.100\n");
    vgw_cfg_txn_t *txn;
    char err[256];
    assert_int_equal(vgw_cfg_delta_begin(cfg, d, strlen(d), &txn, err, sizeof err), 0);
    assert_int_equal(vgw_cfg_txn_ops(txn), 7);
    assert_true(vgw_cfg_txn_changes(txn) & VGW_CFG_CHANGED_SERVICES);
    assert_int_equal(cfg->generation, 11);
    assert_true(tu_rev_sum(cfg) != revs);
    vgw_cfg_txn_rollback(txn);
    char *after = vgw_cfg_serialize(cfg, NULL);
    assert_string_equal(before, after);
    assert_int_equal(tu_rev_sum(cfg), revs);
    assert_int_equal(cfg->generation, 10);
    free(after);

    /* A weight change touches one service: its rev changes, the other's does not. */
    uint64_t dns_rev = vgw_cfg_find(cfg, "dns")->rev, web_rev = vgw_cfg_find(cfg, "web")->rev;
    const char *d2 = D("backend weight web 198.18.1.1 80 5\n");
    assert_int_equal(vgw_cfg_delta_begin(cfg, d2, strlen(d2), &txn, err, sizeof err), 0);
    assert_int_equal(vgw_cfg_txn_changes(txn), 0);
    vgw_cfg_txn_commit(txn);
    assert_int_equal(vgw_cfg_find(cfg, "dns")->rev, dns_rev);
    assert_true(vgw_cfg_find(cfg, "web")->rev != web_rev);
    free(before);
    vgw_cfg_free(cfg);
}

/* Large services index their backends: removals move the last backend, and the index follows
 * through edits and rollbacks. */
static void test_large_service_index(void **unused)
{
    (void)unused;
    char *doc = malloc(1 << 20), *d = malloc(1 << 20);
    int o = sprintf(doc, "vgw-config 1\ngeneration 1\nservice big tcp 192.0.2.50 80 maglev\nlip big 198.18.0.1\n");
    for (int i = 0; i < 3000; i++)
        o += sprintf(doc + o, "backend big 198.18.%d.%d 80 1 active\n", 10 + i / 250, 1 + i % 250);
    sprintf(doc + o, "end\n");
    vgw_cfg_t *cfg = NULL;
    char err[256];
    assert_int_equal(vgw_cfg_parse(doc, strlen(doc), &cfg, err, sizeof err), 0);
    vgw_cfg_service_t *s = cfg->services[0];
    assert_non_null(s->be_index);
    o = sprintf(d, "vgw-delta 1\ngeneration 2\n");
    for (int i = 0; i < 3000; i += 3)
        o += sprintf(d + o, "backend remove big 198.18.%d.%d 80\n", 10 + i / 250, 1 + i % 250);
    for (int i = 0; i < 3000; i += 6)
        o += sprintf(d + o, "backend add big 198.18.%d.%d 80 2 draining\n", 10 + i / 250, 1 + i % 250);
    sprintf(d + o, "backend remove big 198.18.99.99 80\nend\n"); /* fails at the very end */
    char *before = vgw_cfg_serialize(cfg, NULL);
    vgw_cfg_txn_t *txn;
    assert_int_equal(vgw_cfg_delta_begin(cfg, d, strlen(d), &txn, err, sizeof err), -1);
    char *after = vgw_cfg_serialize(cfg, NULL);
    assert_string_equal(before, after);
    sprintf(strstr(d, "backend remove big 198.18.99.99"), "end\n");
    assert_int_equal(vgw_cfg_delta_begin(cfg, d, strlen(d), &txn, err, sizeof err), 0);
    vgw_cfg_txn_commit(txn);
    assert_int_equal(s->nbackends, 2500);
    for (uint32_t j = 0; j < s->nbackends; j++)
        assert_ptr_equal(vgw_cfg_be_find(s, s->backends[j].af, &s->backends[j].addr, s->backends[j].port),
                         &s->backends[j]);
    vgw_addr_t gone = {0};
    gone.v4 = tu_ip(198, 18, 10, 4);
    assert_null(vgw_cfg_be_find(s, VGW_AF_INET, &gone, 80));
    free(before), free(after), free(doc), free(d);
    vgw_cfg_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_and_framing),  cmocka_unit_test(test_unknown_directives),
        cmocka_unit_test(test_backend_add),         cmocka_unit_test(test_backend_remove_weight_state),
        cmocka_unit_test(test_lips),                cmocka_unit_test(test_services),
        cmocka_unit_test(test_atomic_and_rollback), cmocka_unit_test(test_large_service_index),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
