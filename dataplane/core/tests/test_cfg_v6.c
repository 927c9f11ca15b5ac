/* SPDX-License-Identifier: Apache-2.0
 * IPv6 in the configuration: the address parser (vgw_parse_addr, vgw_addr_unicast) and printer
 * (vgw_addr_str, RFC 5952), IPv6 services, LIPs and backends in both grammars ("vgw-config 1" and
 * "vgw-delta 1"), the family rules (a service's LIPs and backends have its VIP's family; an IPv6
 * service takes no syn_proxy=on|auto and no rst_unknown=on), the address indexes keyed on
 * (family, address), the canonical round trip, and the connection tables' IPv6 side array in
 * the cost model. */
#include <stdio.h>
#include <stdlib.h>

#include "cfgint.h"
#include "testutil.h"
#include "text.h"

/* ---- addresses ------------------------------------------------------------------------------- */

static void addr6(const char *text, uint8_t want[16])
{
    uint8_t af = 0;
    vgw_addr_t a;
    if (vgw_parse_addr(text, &af, &a) != 0 || af != VGW_AF_INET6)
        fail_msg("'%s' is not read as IPv6", text);
    memcpy(want, a.v6, 16);
}

static void test_parse_addr_good(void **unused)
{
    (void)unused;
    uint8_t af = 0;
    vgw_addr_t a;
    static const uint8_t db8_1[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    const char *same[] = {"2001:db8::1", "2001:DB8::1", "2001:0db8:0000:0000:0000:0000:0000:0001",
                          "2001:db8:0:0:0:0:0:1", "2001:db8::0:1"};
    for (unsigned i = 0; i < sizeof same / sizeof same[0]; i++) {
        memset(&a, 0xaa, sizeof a);
        assert_int_equal(vgw_parse_addr(same[i], &af, &a), 0);
        assert_int_equal(af, VGW_AF_INET6);
        assert_memory_equal(a.v6, db8_1, 16);
        assert_true(vgw_addr_unicast(af, &a));
    }
    /* IPv4 stays the strict dotted quad, in v4 with the rest of the union zero. */
    memset(&a, 0xaa, sizeof a);
    assert_int_equal(vgw_parse_addr("192.0.2.1", &af, &a), 0);
    assert_int_equal(af, VGW_AF_INET);
    assert_int_equal(a.v4, tu_ip(192, 0, 2, 1));
    assert_int_equal(a.w[1] | a.w[2] | a.w[3], 0);
    assert_true(vgw_addr_unicast(af, &a));
    assert_int_equal(vgw_parse_addr("192.0.2.01", &af, &a), -1);
    assert_int_equal(vgw_parse_addr("192.0.2", &af, &a), -1);
    /* An embedded dotted quad is IPv6 text too (and prints back in hex). */
    assert_int_equal(vgw_parse_addr("2001:db8::192.0.2.1", &af, &a), 0);
    assert_int_equal(af, VGW_AF_INET6);
    assert_true(vgw_addr_unicast(af, &a));
    char buf[VGW_ADDR_STR_MAX];
    assert_string_equal(vgw_addr_str(af, &a, buf, sizeof buf), "2001:db8::c000:201");
    /* Still unicast: site-local (deprecated, not link-local), ULA, a /10 neighbour of fe80. */
    const char *ok[] = {"fec0::1", "fd00::1", "fe7f::1", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db8::"};
    for (unsigned i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        if (vgw_parse_addr(ok[i], &af, &a) != 0 || af != VGW_AF_INET6 || !vgw_addr_unicast(af, &a))
            fail_msg("'%s' refused", ok[i]);
    }
}

static void test_parse_addr_bad(void **unused)
{
    (void)unused;
    /* Not IPv6 text at all. */
    const char *bad[] = {
        "2001:db8::1%eth0", "2001:db8:::1", "2001:db8::1::2", ":::", "2001:db8::g", "[2001:db8::1]",
        "2001:db8::1/64", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", "2001:db8::12345", "2001:db8::1 ", ":",
        "2001:db8::192.0.2.256", "2001:db8::192.0.2", "2001:db8::1:", ":2001:db8::1",
        /* longer than any IPv6 text (45 characters) */
        "2001:0db8:0000:0000:0000:0000:0000:0000:0001", "0000000000000000000000000000000000000000000000000::1",
        "2001:0db8:0000:0000:0000:ffff:255.255.255.255x",
    };
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t af;
        vgw_addr_t a;
        if (vgw_parse_addr(bad[i], &af, &a) == 0)
            fail_msg("'%s' parsed", bad[i]);
    }
    char longer[1100];
    memset(longer, '1', sizeof longer);
    memcpy(longer, "2001:db8::", 10);
    longer[sizeof longer - 1] = 0;
    uint8_t af;
    vgw_addr_t a;
    assert_int_equal(vgw_parse_addr(longer, &af, &a), -1);
    /* IPv6 text, but no usable unicast address. */
    const char *unusable[] = {"::", "::1", "ff02::1", "ff05::2", "ff00::", "fe80::1", "febf:ffff::1",
                              "::ffff:192.0.2.1", "::ffff:c000:201", "::192.0.2.1", "::c000:201"};
    for (unsigned i = 0; i < sizeof unusable / sizeof unusable[0]; i++) {
        if (vgw_parse_addr(unusable[i], &af, &a) != 0 || af != VGW_AF_INET6)
            fail_msg("'%s' is IPv6 text", unusable[i]);
        if (vgw_addr_unicast(af, &a))
            fail_msg("'%s' passes as unicast", unusable[i]);
    }
}

static void test_addr_str_canonical(void **unused)
{
    (void)unused;
    /* RFC 5952: lower case, no leading zeros, the longest run of two or more zero groups (the
     * first of equal ones) as "::", a single zero group kept. */
    const char *cases[][2] = {
        {"2001:DB8:0:0:1:0:0:1", "2001:db8::1:0:0:1"},
        {"2001:db8:0:1:0:0:0:1", "2001:db8:0:1::1"},
        {"2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"},
        {"2001:0db8:00aa:0000:0000:0000:0000:0001", "2001:db8:aa::1"},
        {"2001:db8:0:0:0:0:0:0", "2001:db8::"},
    };
    for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t af;
        vgw_addr_t a, back;
        char buf[VGW_ADDR_STR_MAX], ep[VGW_ENDPOINT_STR_MAX];
        assert_int_equal(vgw_parse_addr(cases[i][0], &af, &a), 0);
        assert_string_equal(vgw_addr_str(af, &a, buf, sizeof buf), cases[i][1]);
        assert_int_equal(vgw_parse_addr(buf, &af, &back), 0);
        assert_memory_equal(&a, &back, sizeof a);
        char want[80];
        snprintf(want, sizeof want, "[%s]:443", cases[i][1]);
        assert_string_equal(vgw_endpoint_str(af, &a, 443, ep, sizeof ep), want);
    }
    vgw_addr_t v4 = {.v4 = tu_ip(198, 51, 100, 7)};
    char ep[VGW_ENDPOINT_STR_MAX];
    assert_string_equal(vgw_endpoint_str(VGW_AF_INET, &v4, 80, ep, sizeof ep), "198.51.100.7:80");
}

/* ---- documents ------------------------------------------------------------------------------- */

#define HDR "vgw-config 1\ngeneration 1\n"

#define parse_ok tu_parse_ok

static void parse_bad(const char *doc, const char *needle)
{
    char err[256];
    tu_parse_bad(doc, needle, err);
}

static void assert_canonical(const char *doc)
{
    vgw_cfg_t *cfg = parse_ok(doc);
    char *text = vgw_cfg_serialize(cfg, NULL);
    assert_non_null(text);
    assert_string_equal(text, doc);
    free(text);
    vgw_cfg_free(cfg);
}

static const char *mixed_doc = "vgw-config 1\n"
                               "generation 7\n"
                               "service web tcp 192.0.2.10 80 maglev table=251\n"
                               "lip web 198.18.0.1\n"
                               "backend web 198.18.1.1 8080 100 active\n"
                               "service web6 tcp 2001:DB8:0:0::10 80 maglev table=251 toa=on conn_rate=500 "
                               "conn_rate_src24=20 syn_proxy=off rst_unknown=off\n"
                               "lip web6 2001:db8:1:0:0:0:0:100\n"
                               "lip web6 2001:db8:1::101\n"
                               "backend web6 2001:db8:2::1 8080 100 active\n"
                               "backend web6 2001:db8:2:0:0:0:0:2 8080 50 draining\n"
                               "service dns6 udp 2001:db8::10 53 wrr\n"
                               "lip dns6 2001:db8:1::100\n"
                               "backend dns6 2001:db8:2::1 53 1 active\n"
                               "end\n";

static void test_document_v6(void **unused)
{
    (void)unused;
    vgw_cfg_t *cfg = parse_ok(mixed_doc);
    assert_int_equal(cfg->nservices, 3);
    const vgw_cfg_service_t *v4 = vgw_cfg_find(cfg, "web");
    vgw_cfg_service_t *s = vgw_cfg_lookup(cfg, "web6");
    assert_non_null(v4);
    assert_non_null(s);
    assert_int_equal(v4->af, VGW_AF_INET);
    assert_int_equal(s->af, VGW_AF_INET6);
    uint8_t want[16];
    addr6("2001:db8::10", want);
    assert_memory_equal(s->vip.v6, want, 16);
    assert_int_equal(s->nlips, 2);
    addr6("2001:db8:1::100", want);
    assert_memory_equal(s->lips[0].v6, want, 16);
    assert_int_equal(s->nbackends, 2);
    assert_int_equal(s->backends[1].af, VGW_AF_INET6);
    assert_int_equal(s->backends[1].port, 8080);
    assert_int_equal(s->backends[1].state, VGW_BE_DRAINING);
    addr6("2001:db8:2::2", want);
    assert_memory_equal(s->backends[1].addr.v6, want, 16);
    assert_int_equal(s->protect.syn_proxy, VGW_SYNPROXY_OFF);
    assert_int_equal(s->protect.conn_rate, 500);
    assert_int_equal(s->protect.conn_rate_src24, 20);
    assert_true(s->flags & VGW_SVC_F_TOA);
    /* web6 and dns6 share a VIP (other port and protocol) and a LIP, like IPv4 services. */
    addr6("2001:db8::10", want);
    vgw_addr_t a;
    memcpy(a.v6, want, 16);
    assert_int_equal(vgw_cfg_addr_kind(cfg, VGW_AF_INET6, &a), VGW_ADDR_F_VIP);
    addr6("2001:db8:1::100", want);
    memcpy(a.v6, want, 16);
    assert_int_equal(vgw_cfg_addr_kind(cfg, VGW_AF_INET6, &a), VGW_ADDR_F_LIP);
    assert_non_null(vgw_cfg_be_find(s, VGW_AF_INET6, &s->backends[0].addr, 8080));
    assert_null(vgw_cfg_be_find(s, VGW_AF_INET, &s->backends[0].addr, 8080));

    /* Canonical text: RFC 5952 addresses, the default protection options left out. */
    char *text = vgw_cfg_serialize(cfg, NULL);
    assert_non_null(text);
    const char *canon = "service web6 tcp 2001:db8::10 80 maglev table=251 toa=on conn_rate=500 conn_rate_src24=20\n"
                        "lip web6 2001:db8:1::100\n"
                        "lip web6 2001:db8:1::101\n"
                        "backend web6 2001:db8:2::1 8080 100 active\n"
                        "backend web6 2001:db8:2::2 8080 50 draining\n"
                        "service dns6 udp 2001:db8::10 53 wrr\n"
                        "lip dns6 2001:db8:1::100\n"
                        "backend dns6 2001:db8:2::1 53 1 active\n"
                        "end\n";
    if (!strstr(text, canon))
        fail_msg("canonical text:\n%s", text);
    assert_canonical(text);
    free(text);
    vgw_cfg_free(cfg);
}

static void test_document_v6_refusals(void **unused)
{
    (void)unused;
#define SVC6 "service web6 tcp 2001:db8::10 80 maglev\n"
#define LIP6 "lip web6 2001:db8:1::100\n"
#define SVC4 "service web tcp 192.0.2.10 80 maglev\nlip web 198.18.0.1\n"
    /* family */
    parse_bad(HDR SVC6 LIP6 "backend web6 192.0.2.1 80 1 active\nend\n",
              "line 5: service web6: backend 192.0.2.1:80 is IPv4 but the VIP is IPv6 (IPv6 VIP with IPv4 backends "
              "(NAT64) is not supported yet)");
    parse_bad(HDR SVC4 "backend web 2001:db8:2::1 80 1 active\nend\n",
              "line 5: service web: backend [2001:db8:2::1]:80 is IPv6 but the VIP is IPv4 (IPv4 VIP with IPv6 "
              "backends (NAT46) is not supported)");
    parse_bad(HDR SVC6 "lip web6 198.18.0.1\nend\n",
              "line 4: lip 198.18.0.1: family differs from the VIP of service web6 (an IPv6 VIP takes IPv6 LIPs)");
    parse_bad(HDR SVC4 "lip web 2001:db8:1::100\nend\n",
              "line 5: lip 2001:db8:1::100: family differs from the VIP of service web (an IPv4 VIP takes IPv4 LIPs)");
    /* flood protection that is IPv4 only for now (an explicit off is fine, above) */
    parse_bad(HDR "service web6 tcp 2001:db8::10 80 maglev syn_proxy=on\n" LIP6 "end\n",
              "line 3: service web6: syn_proxy is IPv4 only for now (an IPv6 service takes syn_proxy=off)");
    parse_bad(HDR "service web6 tcp 2001:db8::10 80 maglev syn_proxy=auto syn_proxy_halfopen=5\n" LIP6 "end\n",
              "syn_proxy is IPv4 only for now");
    parse_bad(HDR "service web6 tcp 2001:db8::10 80 maglev rst_unknown=on\n" LIP6 "end\n",
              "line 3: service web6: rst_unknown is IPv4 only for now (an IPv6 service takes rst_unknown=off)");
    /* the same rules as IPv4 */
    parse_bad(HDR SVC6 "lip web6 2001:db8::10\nend\n", "lip 2001:db8::10 of web6 is also the VIP of a service");
    parse_bad(HDR SVC6 LIP6 "service b tcp 2001:db8:1::100 80 maglev\nend\n",
              "service b: VIP 2001:db8:1::100 is also a LIP");
    parse_bad(HDR SVC6 LIP6 "lip web6 2001:db8:1:0::100\nend\n", "lip 2001:db8:1::100: duplicate in service web6");
    parse_bad(HDR SVC6 LIP6 "backend web6 2001:db8:2::1 80 1 active\nbackend web6 2001:DB8:2::1 80 2 active\nend\n",
              "backend [2001:db8:2::1]:80: duplicate in service web6");
    parse_bad(HDR SVC6 LIP6 "service b udp 2001:db8::10 80 wrr\nservice c udp 2001:db8:0::10 80 wrr\nend\n",
              "service c: same VIP, port and protocol as b");
    parse_bad(HDR SVC6 "end\n", "service web6: needs at least one lip");
    /* bad addresses, in each line kind */
    const char *bad[] = {"2001:db8::1%eth0", "2001:db8:::1", "ff02::1", "fe80::1", "::ffff:192.0.2.1", "::",
                         "::1", "2001:0db8:0000:0000:0000:0000:0000:0000:0001", "[2001:db8::1]"};
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char doc[512], want[128];
        snprintf(doc, sizeof doc, HDR "service web6 tcp %s 80 maglev\n" LIP6 "end\n", bad[i]);
        snprintf(want, sizeof want, "line 3: service web6: bad VIP '%s'", bad[i]);
        parse_bad(doc, want);
        snprintf(doc, sizeof doc, HDR SVC6 "lip web6 %s\nend\n", bad[i]);
        snprintf(want, sizeof want, "line 4: lip: bad address '%s'", bad[i]);
        parse_bad(doc, want);
        snprintf(doc, sizeof doc, HDR SVC6 LIP6 "backend web6 %s 80 1 active\nend\n", bad[i]);
        snprintf(want, sizeof want, "line 5: backend: bad address '%s'", bad[i]);
        parse_bad(doc, want);
    }
    char longaddr[200];
    memset(longaddr, 'a', sizeof longaddr);
    memcpy(longaddr, "2001:db8::", 10);
    longaddr[sizeof longaddr - 1] = 0;
    char doc[512];
    snprintf(doc, sizeof doc, HDR SVC6 LIP6 "backend web6 %s 80 1 active\nend\n", longaddr);
    parse_bad(doc, "line 5: backend: bad address '2001:db8::aaaa");
#undef SVC4
}

/* A v4 address and a v6 one with the same bytes (the v6 one's last 12 zero) are two addresses:
 * the VIP/LIP indexes key on (family, address). */
static void test_families_never_collide(void **unused)
{
    (void)unused;
    vgw_cfg_t *cfg = parse_ok(HDR "service web tcp 192.0.2.10 80 maglev\nlip web 198.18.0.1\n"
                                  "service web6 tcp 2001:db8::10 80 maglev\nlip web6 2001:db8:1::100\nend\n");
    vgw_cfg_service_t *s = vgw_cfg_lookup(cfg, "web6");
    char reason[256] = "";
    vgw_addr_t same;
    memset(&same, 0, sizeof same);
    same.v4 = tu_ip(192, 0, 2, 10); /* web's VIP's bytes, as an IPv6 address (c000:20a::) */
    assert_true(vgw_addr_unicast(VGW_AF_INET6, &same));
    assert_int_equal(vgw_cfg_addr_kind(cfg, VGW_AF_INET6, &same), 0);
    if (vgw_cfg_lip_add(cfg, s, VGW_AF_INET6, &same, NULL, reason, sizeof reason) != 0)
        fail_msg("v6 LIP with a v4 VIP's bytes refused: %s", reason);
    assert_int_equal(vgw_cfg_addr_kind(cfg, VGW_AF_INET6, &same), VGW_ADDR_F_LIP);
    assert_int_equal(vgw_cfg_addr_kind(cfg, VGW_AF_INET, &same), VGW_ADDR_F_VIP);
    /* and the other way round: a v4 service whose VIP has the bytes of that v6 LIP */
    vgw_cfg_service_t *n = vgw_cfg_svc_alloc();
    assert_non_null(n);
    snprintf(n->name, sizeof n->name, "other");
    n->af = VGW_AF_INET, n->proto = VGW_PROTO_TCP, n->port = 81, n->sched = VGW_SCHED_WLC;
    n->vip = same;
    if (vgw_cfg_svc_add(cfg, n, NULL, reason, sizeof reason) != 0)
        fail_msg("v4 VIP with a v6 LIP's bytes refused: %s", reason);
    /* the same family does collide */
    vgw_addr_t vip6 = s->vip;
    assert_int_equal(vgw_cfg_lip_add(cfg, s, VGW_AF_INET6, &vip6, NULL, reason, sizeof reason), -1);
    assert_non_null(strstr(reason, "lip 2001:db8::10 of web6 is also the VIP of a service"));
    /* a LIP removal in the other family does not find the LIP with the same bytes */
    assert_int_equal(vgw_cfg_lip_remove(cfg, s, VGW_AF_INET, &same, NULL, reason, sizeof reason), -1);
    assert_non_null(strstr(reason, "no lip 192.0.2.10 in service web6"));
    assert_int_equal(s->nlips, 2);
    /* a service carrying a backend of the other family is refused as a whole */
    vgw_cfg_service_t *m = vgw_cfg_svc_alloc();
    assert_non_null(m);
    snprintf(m->name, sizeof m->name, "mixed");
    m->af = VGW_AF_INET6, m->proto = VGW_PROTO_UDP, m->port = 53, m->sched = VGW_SCHED_WLC;
    m->vip = s->vip;
    vgw_cfg_backend_t be4 = {.addr.v4 = tu_ip(198, 51, 100, 1), .port = 53, .weight = 1, .af = VGW_AF_INET};
    m->backends = &be4;
    m->nbackends = 1;
    assert_int_equal(vgw_cfg_svc_add(cfg, m, NULL, reason, sizeof reason), -1);
    assert_non_null(strstr(reason, "service mixed: backend 198.51.100.1:53 is IPv4 but the VIP is IPv6"));
    m->backends = NULL, m->nbackends = 0;
    vgw_cfg_svc_free(m);
    vgw_cfg_free(cfg);
}

/* ---- deltas ---------------------------------------------------------------------------------- */

static const char *delta_base = "vgw-config 1\n"
                                "generation 10\n"
                                "service web tcp 192.0.2.10 80 maglev table=251\n"
                                "lip web 198.18.0.100\n"
                                "backend web 198.18.1.1 80 100 active\n"
                                "service web6 tcp 2001:db8::10 80 maglev table=251\n"
                                "lip web6 2001:db8:1::100\n"
                                "lip web6 2001:db8:1::101\n"
                                "backend web6 2001:db8:2::1 80 100 active\n"
                                "backend web6 2001:db8:2::2 80 100 active\n"
                                "end\n";

#define D(ops) "vgw-delta 1\ngeneration 11\n" ops "end\n"

static void delta_bad(const char *delta, const char *needle)
{
    tu_delta_bad(parse_ok(delta_base), delta, needle);
}

/* Accepted; the canonical result holds every line of want, parses back to itself, and a rollback
 * restores the base exactly. */
static void delta_ok(const char *delta, const char *want)
{
    vgw_cfg_t *cfg = parse_ok(delta_base);
    char *before = vgw_cfg_serialize(cfg, NULL);
    char err[256] = "";
    vgw_cfg_txn_t *txn;
    if (vgw_cfg_delta_begin(cfg, delta, strlen(delta), &txn, err, sizeof err) != 0)
        fail_msg("delta:\n%s-> rejected: %s", delta, err);
    char *text = vgw_cfg_serialize(cfg, NULL);
    for (const char *l = want; *l;) {
        const char *nl = strchr(l, '\n');
        size_t n = nl ? (size_t)(nl - l + 1) : strlen(l);
        char line[256];
        snprintf(line, sizeof line, "%.*s", (int)n, l);
        if (!strstr(text, line))
            fail_msg("after delta:\n%s\nmissing line '%s' in:\n%s", delta, line, text);
        l += n;
    }
    assert_canonical(text);
    vgw_cfg_txn_rollback(txn);
    char *back = vgw_cfg_serialize(cfg, NULL);
    assert_string_equal(before, back);
    free(before), free(text), free(back);
    vgw_cfg_free(cfg);
}

static void test_delta_v6(void **unused)
{
    (void)unused;
    delta_ok(D("lip add web6 2001:DB8:1::102\nlip remove web6 2001:db8:1:0:0:0:0:100\n"),
             "lip web6 2001:db8:1::101\nlip web6 2001:db8:1::102\n");
    delta_ok(D("backend add web6 2001:db8:2::3 8080 7 draining\n"
               "backend remove web6 2001:db8:2::1 80\n"
               "backend weight web6 2001:db8:2:0::2 80 9\n"
               "backend state web6 2001:db8:2::3 8080 disabled\n"),
             "backend web6 2001:db8:2::2 80 9 active\nbackend web6 2001:db8:2::3 8080 7 disabled\n");
    delta_ok(D("service add dns6 udp 2001:db8::10 53 wlc conn_rate_src24=3\n"
               "lip add dns6 2001:db8:1::100\n"
               "backend add dns6 2001:db8:2::53 53 1 active\n"),
             "service dns6 udp 2001:db8::10 53 wlc conn_rate_src24=3\nlip dns6 2001:db8:1::100\n"
             "backend dns6 2001:db8:2::53 53 1 active\n");
    /* a v6 service replaced by a v4 one of the same name, and the v4 one by a v6 one */
    delta_ok(D("service remove web6\nservice add web6 tcp 192.0.2.11 80 wrr\nlip add web6 198.18.0.101\n"
               "service remove web\nservice add web tcp 2001:db8::11 80 wrr\nlip add web 2001:db8:1::111\n"),
             "service web6 tcp 192.0.2.11 80 wrr\nlip web6 198.18.0.101\n"
             "service web tcp 2001:db8::11 80 wrr\nlip web 2001:db8:1::111\n");
}

static void test_delta_v6_refusals(void **unused)
{
    (void)unused;
    delta_bad(D("lip add web6 198.18.0.102\n"),
              "line 3: lip 198.18.0.102: family differs from the VIP of service web6");
    delta_bad(D("lip add web 2001:db8:1::102\n"),
              "line 3: lip 2001:db8:1::102: family differs from the VIP of service web");
    delta_bad(D("lip remove web6 198.18.0.100\n"), "line 3: no lip 198.18.0.100 in service web6");
    delta_bad(D("backend add web6 198.18.1.9 80 1 active\n"),
              "line 3: service web6: backend 198.18.1.9:80 is IPv4 but the VIP is IPv6 (IPv6 VIP with IPv4 backends "
              "(NAT64) is not supported yet)");
    delta_bad(D("backend add web 2001:db8:2::9 80 1 active\n"),
              "line 3: service web: backend [2001:db8:2::9]:80 is IPv6 but the VIP is IPv4");
    delta_bad(D("backend remove web6 198.18.1.1 80\n"), "line 3: no backend 198.18.1.1:80 in service web6");
    delta_bad(D("backend weight web6 2001:db8:2::1 80 5\nbackend weight web6 2001:db8:2::1 80 6\n"),
              "line 4: backend [2001:db8:2::1]:80 in web6: weight set twice in one delta");
    delta_bad(D("backend add web6 2001:db8:2::2 80 1 active\n"),
              "backend [2001:db8:2::2]:80: duplicate in service web6");
    delta_bad(D("lip add web6 2001:db8:1::101\n"), "lip 2001:db8:1::101: duplicate in service web6");
    delta_bad(D("lip add web6 2001:db8::10\n"), "lip 2001:db8::10 of web6 is also the VIP of a service");
    delta_bad(D("service add x tcp 2001:db8:1::100 81 wrr\nlip add x 2001:db8:1::200\n"),
              "service x: VIP 2001:db8:1::100 is also a LIP");
    delta_bad(D("service add x tcp 2001:db8::20 80 maglev syn_proxy=auto\nlip add x 2001:db8:1::100\n"),
              "line 3: service x: syn_proxy is IPv4 only for now (an IPv6 service takes syn_proxy=off)");
    delta_bad(D("service add x tcp 2001:db8::20 80 maglev rst_unknown=on\nlip add x 2001:db8:1::100\n"),
              "line 3: service x: rst_unknown is IPv4 only for now");
    delta_bad(D("service add x tcp 2001:db8::20 80 maglev\n"), "service x: needs at least one lip");
    delta_bad(D("lip remove web6 2001:db8:1::100\nlip remove web6 2001:db8:1::101\n"),
              "service web6: needs at least one lip");
    /* a later family refusal undoes the edits before it */
    delta_bad(D("backend add web6 2001:db8:2::3 80 1 active\nlip add web6 2001:db8:1::102\n"
                "backend add web6 198.18.1.3 80 1 active\n"),
              "line 5: service web6: backend 198.18.1.3:80 is IPv4");
    const char *bad[] = {"2001:db8::1%eth0", "2001:db8:::1", "ff02::1", "fe80::1", "::ffff:192.0.2.1", "::", "::1"};
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char d[512], want[128];
        snprintf(d, sizeof d, D("lip add web6 %s\n"), bad[i]);
        snprintf(want, sizeof want, "line 3: lip: bad address '%s'", bad[i]);
        delta_bad(d, want);
        snprintf(d, sizeof d, D("backend add web6 %s 80 1 active\n"), bad[i]);
        snprintf(want, sizeof want, "line 3: backend: bad address '%s'", bad[i]);
        delta_bad(d, want);
        snprintf(d, sizeof d, D("service add x tcp %s 80 wrr\nlip add x 2001:db8:1::100\n"), bad[i]);
        snprintf(want, sizeof want, "line 3: service x: bad VIP '%s'", bad[i]);
        delta_bad(d, want);
    }
}

/* ---- cost ------------------------------------------------------------------------------------ */

static void test_cost_ipv6_address_table(void **unused)
{
    (void)unused;
    /* conn_tables(C) = 64 C (records, one line for either family) + 64 pow2ceil(ceil(4C/10)) + 4 C
     * + 8 C + 16 pow2ceil(max(1024, 2C)); WORKER_FIXED = 2228224 (the figures of
     * tests/config/test_budget.py). An IPv6 service adds the node's address table to the base,
     * once: 16 x 65535 + 4 x 131072. */
    vgw_cost_t c;
    vgw_cfg_cost(NULL, &(vgw_cost_params_t){.workers = 1, .conn_capacity = 1024}, &c);
    assert_int_equal(c.conn_tables, 65536 + 64 * 512 + 4096 + 8192 + 16 * 2048 + 2228224);
    vgw_cfg_t *v4 = parse_ok("vgw-config 1\ngeneration 1\nservice a tcp 192.0.2.1 80 wlc\nlip a 198.18.0.1\n"
                             "backend a 198.18.1.1 80 1 active\nend\n");
    vgw_cfg_cost(v4, &(vgw_cost_params_t){.workers = 2, .conn_capacity = 262144}, &c);
    assert_int_equal(c.conn_tables, 2 * (36700160ull + 2228224));
    uint64_t base4 = c.base;
    vgw_cfg_t *v6 = parse_ok("vgw-config 1\ngeneration 1\nservice a tcp 2001:db8::1 80 wlc\nlip a 2001:db8:ff::1\n"
                             "backend a 2001:db8:1::1 80 1 active\nend\n");
    vgw_cfg_cost(v6, &(vgw_cost_params_t){.workers = 2, .conn_capacity = 262144}, &c);
    assert_int_equal(c.conn_tables, 2 * (36700160ull + 2228224));
    assert_int_equal(c.base, base4 + 16ull * 65535 + 4ull * 131072);
    vgw_cfg_free(v4);
    vgw_cfg_free(v6);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_addr_good),     cmocka_unit_test(test_parse_addr_bad),
        cmocka_unit_test(test_addr_str_canonical),  cmocka_unit_test(test_document_v6),
        cmocka_unit_test(test_document_v6_refusals), cmocka_unit_test(test_families_never_collide),
        cmocka_unit_test(test_delta_v6),            cmocka_unit_test(test_delta_v6_refusals),
        cmocka_unit_test(test_cost_ipv6_address_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
