/* SPDX-License-Identifier: Apache-2.0
 * Flood-protection options of a service line (vgw_cfg_protect_t): syn_proxy, syn_proxy_halfopen,
 * syn_proxy_syn_rate, conn_rate, conn_rate_src24, rst_unknown. Defaults, every value and bound,
 * TCP-only rules, canonical serialisation (only what differs from the defaults, so documents
 * without the options serialise as before; parse(serialize(x)) == x), and the same options
 * through a delta's "service add". */
#include <stdio.h>
#include <stdlib.h>

#include "cfgint.h"
#include "testutil.h"

#define HDR "vgw-config 1\ngeneration 1\n"
#define LIPS "lip web 198.18.0.1\nlip dns 198.18.0.1\n"

/* A document with one TCP service "web" carrying opts and one UDP service "dns" carrying
 * udp_opts. */
static char *doc_with(const char *opts, const char *udp_opts)
{
    static char buf[1024];
    snprintf(buf, sizeof buf,
             HDR "service web tcp 192.0.2.10 80 maglev%s%s\n"
                 "service dns udp 192.0.2.10 53 wrr%s%s\n" LIPS "end\n",
             *opts ? " " : "", opts, *udp_opts ? " " : "", udp_opts);
    return buf;
}

#define parse_ok tu_parse_ok

static void parse_bad(const char *doc, const char *needle)
{
    char err[256];
    tu_parse_bad(doc, needle, err);
    assert_true(strncmp(err, "line 3: service web:", 20) == 0 || strncmp(err, "line 4: service dns:", 20) == 0);
}

static void assert_protect(const vgw_cfg_protect_t *p, unsigned mode, uint32_t halfopen, uint32_t syn_rate,
                           uint32_t rate, uint32_t src24, unsigned rst)
{
    assert_int_equal(p->syn_proxy, mode);
    assert_int_equal(p->auto_halfopen, halfopen);
    assert_int_equal(p->auto_syn_rate, syn_rate);
    assert_int_equal(p->conn_rate, rate);
    assert_int_equal(p->conn_rate_src24, src24);
    assert_int_equal(p->rst_unknown, rst);
}

/* Serialises cfg, parses that back and checks the result serialises to the same text and has
 * the same protection for every service. Returns the text (the caller frees it). */
static char *roundtrip(const vgw_cfg_t *cfg)
{
    char *text = vgw_cfg_serialize(cfg, NULL);
    assert_non_null(text);
    vgw_cfg_t *again = parse_ok(text);
    char *text2 = vgw_cfg_serialize(again, NULL);
    assert_string_equal(text, text2);
    assert_int_equal(again->nservices, cfg->nservices);
    for (uint32_t i = 0; i < cfg->nservices; i++)
        assert_memory_equal(&again->services[i]->protect, &cfg->services[i]->protect, sizeof(vgw_cfg_protect_t));
    free(text2);
    vgw_cfg_free(again);
    return text;
}

static void test_defaults(void **unused)
{
    (void)unused;
    vgw_cfg_t *cfg = parse_ok(doc_with("", ""));
    for (uint32_t i = 0; i < cfg->nservices; i++)
        assert_protect(&cfg->services[i]->protect, VGW_SYNPROXY_OFF, VGW_AUTO_HALFOPEN_DEFAULT,
                       VGW_AUTO_SYN_RATE_DEFAULT, 0, 0, 0);
    vgw_cfg_free(cfg);
    /* A service allocated for any other path starts from the same defaults. */
    vgw_cfg_service_t *s = vgw_cfg_svc_alloc();
    assert_non_null(s);
    assert_protect(&s->protect, VGW_SYNPROXY_OFF, VGW_AUTO_HALFOPEN_DEFAULT, VGW_AUTO_SYN_RATE_DEFAULT, 0, 0, 0);
    vgw_cfg_svc_free(s);
}

static void test_every_option(void **unused)
{
    (void)unused;
    vgw_cfg_t *cfg = parse_ok(doc_with("toa=on syn_proxy=auto syn_proxy_halfopen=500 syn_proxy_syn_rate=2000 "
                                       "conn_rate=300 conn_rate_src24=40 rst_unknown=on timeout.tcp_syn_recv=5",
                                       "conn_rate=7 conn_rate_src24=1"));
    const vgw_cfg_service_t *web = vgw_cfg_find(cfg, "web"), *dns = vgw_cfg_find(cfg, "dns");
    assert_protect(&web->protect, VGW_SYNPROXY_AUTO, 500, 2000, 300, 40, 1);
    assert_true(web->flags & VGW_SVC_F_TOA);
    assert_int_equal(web->timeout_s[VGW_TCP_SYN_RECV], 5);
    /* The caps are not TCP only: a UDP flow is a new connection too. */
    assert_protect(&dns->protect, VGW_SYNPROXY_OFF, VGW_AUTO_HALFOPEN_DEFAULT, VGW_AUTO_SYN_RATE_DEFAULT, 7, 1, 0);
    vgw_cfg_free(cfg);

    cfg = parse_ok(doc_with("syn_proxy=on", ""));
    assert_int_equal(vgw_cfg_find(cfg, "web")->protect.syn_proxy, VGW_SYNPROXY_ON);
    vgw_cfg_free(cfg);
    /* Like every other option, a later one wins. */
    cfg = parse_ok(doc_with("syn_proxy=on syn_proxy=off rst_unknown=on rst_unknown=off conn_rate=5 conn_rate=0", ""));
    assert_protect(&vgw_cfg_find(cfg, "web")->protect, VGW_SYNPROXY_OFF, VGW_AUTO_HALFOPEN_DEFAULT,
                   VGW_AUTO_SYN_RATE_DEFAULT, 0, 0, 0);
    vgw_cfg_free(cfg);
}

static void test_bounds(void **unused)
{
    (void)unused;
    char opts[256];
    /* The largest value of every numeric option, and the smallest. */
    snprintf(opts, sizeof opts,
             "syn_proxy_halfopen=%u syn_proxy_syn_rate=%u conn_rate=%u conn_rate_src24=%u", VGW_MAX_RATE,
             VGW_MAX_RATE, VGW_MAX_RATE, VGW_MAX_RATE);
    vgw_cfg_t *cfg = parse_ok(doc_with(opts, ""));
    assert_protect(&vgw_cfg_find(cfg, "web")->protect, VGW_SYNPROXY_OFF, VGW_MAX_RATE, VGW_MAX_RATE, VGW_MAX_RATE,
                   VGW_MAX_RATE, 0);
    vgw_cfg_free(cfg);
    cfg = parse_ok(doc_with("syn_proxy_halfopen=1 syn_proxy_syn_rate=1 conn_rate=0 conn_rate_src24=0", ""));
    assert_protect(&vgw_cfg_find(cfg, "web")->protect, VGW_SYNPROXY_OFF, 1, 1, 0, 0, 0);
    vgw_cfg_free(cfg);

    static const char *const keys[] = {"syn_proxy_halfopen", "syn_proxy_syn_rate", "conn_rate", "conn_rate_src24"};
    static const char *const bad_values[] = {"100000001", "4294967296", "-1", "01", "1k", "", "1.5", "0x10"};
    for (unsigned k = 0; k < 4; k++) {
        for (unsigned v = 0; v < sizeof bad_values / sizeof bad_values[0]; v++) {
            snprintf(opts, sizeof opts, "%s=%s", keys[k], bad_values[v]);
            char want[64];
            snprintf(want, sizeof want, "service web: %s must be %u..%u", keys[k], k < 2 ? 1u : 0u, VGW_MAX_RATE);
            parse_bad(doc_with(opts, ""), want);
        }
    }
    /* The auto thresholds are positive; the caps take 0 (unlimited). */
    parse_bad(doc_with("syn_proxy_halfopen=0", ""), "syn_proxy_halfopen must be 1..100000000 (got '0')");
    parse_bad(doc_with("syn_proxy_syn_rate=0", ""), "syn_proxy_syn_rate must be 1..100000000 (got '0')");
}

static void test_bad_words(void **unused)
{
    (void)unused;
    parse_bad(doc_with("syn_proxy=maybe", ""), "syn_proxy must be off, on or auto (got 'maybe')");
    parse_bad(doc_with("syn_proxy=ON", ""), "syn_proxy must be off, on or auto");
    parse_bad(doc_with("syn_proxy=", ""), "syn_proxy must be off, on or auto");
    parse_bad(doc_with("rst_unknown=yes", ""), "rst_unknown must be on or off (got 'yes')");
    parse_bad(doc_with("rst_unknown=1", ""), "rst_unknown must be on or off");
    /* Near misses of the keys are unknown options, not prefixes of known ones. */
    parse_bad(doc_with("syn_proxyx=on", ""), "unknown option 'syn_proxyx'");
    parse_bad(doc_with("syn_prox=on", ""), "unknown option 'syn_prox'");
    parse_bad(doc_with("conn_rate_src=5", ""), "unknown option 'conn_rate_src'");
    parse_bad(doc_with("conn_rate_src24x=5", ""), "unknown option 'conn_rate_src24x'");
    parse_bad(doc_with("syn_proxy", ""), "option 'syn_proxy' is not key=value");
}

static void test_tcp_only(void **unused)
{
    (void)unused;
    parse_bad(doc_with("", "syn_proxy=on"), "service dns: syn_proxy is TCP only");
    parse_bad(doc_with("", "syn_proxy=auto"), "service dns: syn_proxy is TCP only");
    parse_bad(doc_with("", "rst_unknown=on"), "service dns: rst_unknown is TCP only");
    parse_bad(doc_with("", "syn_proxy_halfopen=5"), "service dns: syn_proxy_halfopen is TCP only");
    parse_bad(doc_with("", "syn_proxy_syn_rate=5"), "service dns: syn_proxy_syn_rate is TCP only");
    /* Given at the default value it is still a TCP setting on a UDP service. */
    parse_bad(doc_with("", "syn_proxy_halfopen=10000"), "service dns: syn_proxy_halfopen is TCP only");
    /* "off" says nothing TCP-specific: accepted, as toa=off is. */
    vgw_cfg_t *cfg = parse_ok(doc_with("", "syn_proxy=off rst_unknown=off toa=off"));
    assert_protect(&vgw_cfg_find(cfg, "dns")->protect, VGW_SYNPROXY_OFF, VGW_AUTO_HALFOPEN_DEFAULT,
                   VGW_AUTO_SYN_RATE_DEFAULT, 0, 0, 0);
    vgw_cfg_free(cfg);
}

static void test_serialize_canonical(void **unused)
{
    (void)unused;
    /* A document without protection options serialises exactly as before they existed. */
    static const char legacy[] = HDR "timeout tcp_established 120\n"
                                     "service web tcp 192.0.2.10 80 maglev table=251 toa=on timeout.tcp_fin_wait=9\n"
                                     "lip web 198.18.0.1\n"
                                     "backend web 198.18.1.1 8080 100 active\n"
                                     "service dns udp 192.0.2.10 53 wlc\n"
                                     "lip dns 198.18.0.1\n"
                                     "end\n";
    vgw_cfg_t *cfg = parse_ok(legacy);
    char *text = roundtrip(cfg);
    assert_null(strstr(text, "syn_proxy"));
    assert_null(strstr(text, "conn_rate"));
    assert_null(strstr(text, "rst_unknown"));
    assert_non_null(strstr(text, "service web tcp 192.0.2.10 80 maglev table=251 toa=on timeout.tcp_fin_wait=9\n"));
    assert_non_null(strstr(text, "service dns udp 192.0.2.10 53 wlc\n"));
    free(text);
    vgw_cfg_free(cfg);

    /* Options given at their default values are not written. */
    cfg = parse_ok(doc_with("syn_proxy=off syn_proxy_halfopen=10000 syn_proxy_syn_rate=100000 conn_rate=0 "
                            "conn_rate_src24=0 rst_unknown=off",
                            "syn_proxy=off rst_unknown=off conn_rate=0"));
    text = roundtrip(cfg);
    assert_non_null(strstr(text, "service web tcp 192.0.2.10 80 maglev\n"));
    assert_non_null(strstr(text, "service dns udp 192.0.2.10 53 wrr\n"));
    free(text);
    vgw_cfg_free(cfg);

    /* Everything else is, in one canonical order whatever the order given. */
    cfg = parse_ok(doc_with("timeout.tcp_syn_recv=5 rst_unknown=on conn_rate_src24=40 conn_rate=300 "
                            "syn_proxy_syn_rate=2000 syn_proxy_halfopen=500 syn_proxy=auto toa=on",
                            "conn_rate_src24=9 conn_rate=8"));
    text = roundtrip(cfg);
    assert_non_null(strstr(text, "service web tcp 192.0.2.10 80 maglev toa=on syn_proxy=auto syn_proxy_halfopen=500 "
                                 "syn_proxy_syn_rate=2000 conn_rate=300 conn_rate_src24=40 rst_unknown=on "
                                 "timeout.tcp_syn_recv=5\n"));
    assert_non_null(strstr(text, "service dns udp 192.0.2.10 53 wrr conn_rate=8 conn_rate_src24=9\n"));
    free(text);
    vgw_cfg_free(cfg);
}

/* Every combination of a few values per option survives parse(serialize(x)) == x. */
static void test_roundtrip_combinations(void **unused)
{
    (void)unused;
    static const char *const modes[] = {"", "syn_proxy=off", "syn_proxy=on", "syn_proxy=auto"};
    static const char *const halfopen[] = {"", "syn_proxy_halfopen=1", "syn_proxy_halfopen=10000",
                                           "syn_proxy_halfopen=100000000"};
    static const char *const rates[] = {"", "conn_rate=0", "conn_rate=1", "conn_rate_src24=100000000",
                                        "syn_proxy_syn_rate=99999 conn_rate=5 conn_rate_src24=6"};
    static const char *const rst[] = {"", "rst_unknown=off", "rst_unknown=on"};
    unsigned n = 0;
    for (unsigned a = 0; a < 4; a++)
        for (unsigned b = 0; b < 4; b++)
            for (unsigned c = 0; c < 5; c++)
                for (unsigned d = 0; d < 3; d++) {
                    char opts[256];
                    snprintf(opts, sizeof opts, "%s %s %s %s", modes[a], halfopen[b], rates[c], rst[d]);
                    vgw_cfg_t *cfg = parse_ok(doc_with(opts, ""));
                    free(roundtrip(cfg));
                    vgw_cfg_free(cfg);
                    n++;
                }
    assert_int_equal(n, 4 * 4 * 5 * 3);
}

/* "service add" in a delta takes the same options with the same rules; changing a service's
 * protection is a remove + add, which gives it a new rev (the engine rebuilds it), and a
 * rejected delta leaves the old protection in place. */
static void test_delta(void **unused)
{
    (void)unused;
    vgw_cfg_t *cfg = parse_ok(doc_with("syn_proxy=on", ""));
    char err[256] = "";
    uint64_t rev = vgw_cfg_find(cfg, "web")->rev;
    static const char change[] = "vgw-delta 1\ngeneration 2\n"
                                 "service remove web\n"
                                 "service add web tcp 192.0.2.10 80 maglev syn_proxy=auto syn_proxy_halfopen=77 "
                                 "conn_rate_src24=3 rst_unknown=on\n"
                                 "lip add web 198.18.0.1\n"
                                 "end\n";
    if (vgw_cfg_apply_delta(cfg, change, strlen(change), err, sizeof err) != 0)
        fail_msg("delta rejected: %s", err);
    const vgw_cfg_service_t *web = vgw_cfg_find(cfg, "web");
    assert_protect(&web->protect, VGW_SYNPROXY_AUTO, 77, VGW_AUTO_SYN_RATE_DEFAULT, 0, 3, 1);
    assert_true(web->rev != rev);
    free(roundtrip(cfg));

    /* A bad option in a delta: rejected with the line and reason, nothing changes. */
    static const char *const bad[][2] = {
        {"service add web2 tcp 192.0.2.11 80 wrr syn_proxy=sometimes\n", "line 4: service web2: syn_proxy must be"},
        {"service add dns2 udp 192.0.2.11 53 wrr syn_proxy=auto\n", "line 4: service dns2: syn_proxy is TCP only"},
        {"service add dns2 udp 192.0.2.11 53 wrr rst_unknown=on\n", "line 4: service dns2: rst_unknown is TCP only"},
        {"service add web2 tcp 192.0.2.11 80 wrr conn_rate=100000001\n", "line 4: service web2: conn_rate must be"},
    };
    char *before = vgw_cfg_serialize(cfg, NULL);
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char delta[512];
        snprintf(delta, sizeof delta, "vgw-delta 1\ngeneration 3\nservice remove web\n%slip add %s 198.18.0.1\nend\n",
                 bad[i][0], strstr(bad[i][0], "dns2") ? "dns2" : "web2");
        vgw_cfg_txn_t *txn = (vgw_cfg_txn_t *)1;
        err[0] = 0;
        int rc = vgw_cfg_delta_begin(cfg, delta, strlen(delta), &txn, err, sizeof err);
        if (rc == 0 || !strstr(err, bad[i][1]))
            fail_msg("delta:\n%s-> rc=%d err='%s' (wanted '%s')", delta, rc, err, bad[i][1]);
        assert_null(txn);
        char *after = vgw_cfg_serialize(cfg, NULL);
        assert_string_equal(before, after);
        free(after);
    }
    free(before);

    /* Rolled back, the replaced service is back with its protection and rev. */
    web = vgw_cfg_find(cfg, "web");
    rev = web->rev;
    static const char off[] = "vgw-delta 1\ngeneration 3\nservice remove web\n"
                              "service add web tcp 192.0.2.10 80 maglev\nlip add web 198.18.0.1\nend\n";
    vgw_cfg_txn_t *txn = NULL;
    if (vgw_cfg_delta_begin(cfg, off, strlen(off), &txn, err, sizeof err) != 0)
        fail_msg("delta rejected: %s", err);
    assert_int_equal(vgw_cfg_find(cfg, "web")->protect.syn_proxy, VGW_SYNPROXY_OFF);
    vgw_cfg_txn_rollback(txn);
    web = vgw_cfg_find(cfg, "web");
    assert_int_equal(web->rev, rev);
    assert_protect(&web->protect, VGW_SYNPROXY_AUTO, 77, VGW_AUTO_SYN_RATE_DEFAULT, 0, 3, 1);
    vgw_cfg_free(cfg);
}

/* A TCP service with every protection option, TOA, a table and a timeout, at the longest name
 * and values, fits one delta line: 16 tokens and 512 bytes (VGW_TEXT_MAX_TOKENS,
 * VGW_CFG_MAX_LINE). One more option would not (see docs/forwarder.md on the shim's lines). */
static void test_long_line_fits(void **unused)
{
    (void)unused;
    static const char line[] =
        "service add a-service-name-of-the-largest-allowed-length-0123456789abcdefgh tcp 192.0.2.254 65535 "
        "maglev table=1048573 toa=on syn_proxy=auto syn_proxy_halfopen=100000000 syn_proxy_syn_rate=100000000 "
        "conn_rate=100000000 conn_rate_src24=100000000 rst_unknown=on timeout.tcp_none=86400 "
        "timeout.tcp_established=86400 timeout.tcp_syn_sent=86400 timeout.tcp_syn_recv=86400 "
        "timeout.tcp_fin_wait=86400 timeout.tcp_time_wait=86400 timeout.tcp_close=86400 "
        "timeout.tcp_close_wait=86400 timeout.tcp_last_ack=86400 timeout.tcp_listen=86400 "
        "timeout.tcp_synack=86400\n";
    char delta[2048];
    snprintf(delta, sizeof delta, "vgw-delta 1\ngeneration 2\n%slip add %s 198.18.0.1\nend\n", line,
             "a-service-name-of-the-largest-allowed-length-0123456789abcdefgh");
    vgw_cfg_t *cfg = parse_ok(doc_with("", ""));
    char err[256] = "";
    if (vgw_cfg_apply_delta(cfg, delta, strlen(delta), err, sizeof err) != 0)
        fail_msg("delta rejected: %s", err);
    const vgw_cfg_service_t *s = vgw_cfg_find(cfg, "a-service-name-of-the-largest-allowed-length-0123456789abcdefgh");
    assert_non_null(s);
    assert_protect(&s->protect, VGW_SYNPROXY_AUTO, VGW_MAX_RATE, VGW_MAX_RATE, VGW_MAX_RATE, VGW_MAX_RATE, 1);
    free(roundtrip(cfg));
    vgw_cfg_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),        cmocka_unit_test(test_every_option),
        cmocka_unit_test(test_bounds),          cmocka_unit_test(test_bad_words),
        cmocka_unit_test(test_tcp_only),        cmocka_unit_test(test_serialize_canonical),
        cmocka_unit_test(test_roundtrip_combinations), cmocka_unit_test(test_delta),
        cmocka_unit_test(test_long_line_fits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
