/* SPDX-License-Identifier: Apache-2.0
 * Connection sync: the wire format (golden bytes, every rejection), a worker's notes, and a
 * peer carrying a connection on with the original node's LIP after importing it. */
#include <stdio.h>
#include <stdlib.h>

#include "testutil.h"

#define VIP tu_ip(192, 0, 2, 10)
#define RS tu_ip(198, 51, 100, 21)
#define CLIENT tu_ip(198, 18, 0, 2)

static const char *CFG_A = "vgw-config 1\ngeneration 1\nservice s tcp 192.0.2.10 80 maglev\nlip s 198.51.100.101\n"
                           "backend s 198.51.100.21 8080 1 active\nservice u udp 192.0.2.10 53 maglev\n"
                           "lip u 198.51.100.101\nbackend u 198.51.100.21 5353 1 active\nend\n";
/* The peer node: the same services, its own LIP. */
static const char *CFG_B = "vgw-config 1\ngeneration 1\nservice s tcp 192.0.2.10 80 maglev\nlip s 198.51.100.105\n"
                           "backend s 198.51.100.21 8080 1 active\nservice u udp 192.0.2.10 53 maglev\n"
                           "lip u 198.51.100.105\nbackend u 198.51.100.21 5353 1 active\nend\n";

static const uint8_t KEY[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

static vgw_worker_t *mk_worker(vgw_dp_t *dp, uint32_t cap, uint16_t flags)
{
    return tu_worker(dp, (vgw_worker_params_t){.id = 0, .conn_capacity = cap, .hash_seed = 7, .flags = flags});
}

static vgw_verdict_t send(vgw_worker_t *w, uint8_t proto, uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport,
                          uint8_t flags, uint64_t now, tu_buf_t *b)
{
    vgw_pkt_t *p = tu_build(b, proto, src, dst, sport, dport, flags, NULL, 0, proto == VGW_PROTO_TCP ? 0 : 4);
    vgw_verdict_t v;
    vgw_worker_process(w, p, &v, 1, now);
    return v;
}

static vgw_sync_rec_t sample_rec(void)
{
    vgw_sync_rec_t r = {.af = VGW_AF_INET, .proto = VGW_PROTO_TCP, .state = VGW_TCP_ESTABLISHED,
                        .flags = VGW_SYNC_F_TOA | VGW_SYNC_F_RS_ISN};
    r.cip = CLIENT, r.vip = VIP, r.lip = tu_ip(198, 51, 100, 101), r.rip = RS;
    r.cport = h2n16(40000), r.vport = h2n16(80), r.lport = h2n16(1030), r.rport = h2n16(8080);
    r.timeout_ms = 90000;
    r.rs_isn1 = h2n32(0x01020304);
    return r;
}

/* The format is a contract between nodes running different builds: these bytes must not change
 * without a new version number. */
static void test_golden_bytes(void **unused)
{
    (void)unused;
    vgw_sync_hdr_t h = {.sender = tu_ip(198, 51, 100, 11), .epoch = 0x0102030405060708ULL, .seq = 9, .nworkers = 2};
    vgw_sync_rec_t r = sample_rec();
    uint8_t buf[VGW_SYNC_MAX_MSG];
    size_t len = vgw_sync_encode(&h, &r, 1, KEY, buf, sizeof buf);
    assert_int_equal(len, 24 + 48 + 8);
    static const uint8_t want[24 + 48] = {
        'V', 'S', 1, 1, 198, 51, 100, 11, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 9, 0, 2, 0, 0, /* header */
        4, 6, VGW_TCP_ESTABLISHED, 0x03,                                             /* af proto state flags */
        198, 18, 0, 2, 192, 0, 2, 10, 198, 51, 100, 101, 198, 51, 100, 21,            /* cip vip lip rip */
        0x9c, 0x40, 0, 80, 0x04, 0x06, 0x1f, 0x90,                                    /* ports */
        0, 1, 0x5f, 0x90, 1, 2, 3, 4,                                                 /* timeout, rs_isn1 */
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,                                           /* SYN proxy fields */
    };
    assert_memory_equal(buf, want, sizeof want);
    /* the MAC: SipHash-2-4 under KEY (key bytes as the reference implementation reads them) */
    uint64_t k0 = 0x0706050403020100ULL, k1 = 0x0f0e0d0c0b0a0908ULL;
    uint64_t mac = vgw_siphash24(k0, k1, buf, len - 8);
    uint8_t tail[8];
    for (int i = 0; i < 8; i++)
        tail[i] = (uint8_t)(mac >> (56 - 8 * i));
    assert_memory_equal(buf + len - 8, tail, 8);
}

static void test_round_trip(void **unused)
{
    (void)unused;
    vgw_sync_hdr_t h = {.sender = tu_ip(198, 51, 100, 11), .epoch = 77, .seq = 0xfffffffe, .nworkers = 3};
    vgw_sync_rec_t in[VGW_SYNC_MAX_RECS], out[VGW_SYNC_MAX_RECS];
    for (uint32_t i = 0; i < VGW_SYNC_MAX_RECS; i++) {
        in[i] = sample_rec();
        in[i].cport = h2n16((uint16_t)(1024 + i));
        in[i].flags = VGW_SYNC_F_PROXY | VGW_SYNC_F_SP_TS;
        in[i].sp_seq = 0x11111111u * (i + 1), in[i].sp_ts = i, in[i].sp_win = 512, in[i].sp_ws[1] = 0x27;
    }
    uint8_t buf[VGW_SYNC_MAX_MSG];
    size_t len = vgw_sync_encode(&h, in, VGW_SYNC_MAX_RECS, KEY, buf, sizeof buf);
    assert_int_equal(len, VGW_SYNC_MAX_MSG);
    assert_true(len <= 1500 - 20 - 8 - 4);
    vgw_sync_hdr_t g;
    assert_int_equal(vgw_sync_decode(buf, len, KEY, &g, out), VGW_SYNC_MAX_RECS);
    assert_int_equal(g.sender, h.sender);
    assert_true(g.epoch == 77 && g.seq == 0xfffffffe && g.nworkers == 3 && g.count == VGW_SYNC_MAX_RECS);
    assert_memory_equal(in, out, sizeof in);
    /* a heartbeat: no records */
    assert_int_equal(vgw_sync_encode(&h, in, 0, KEY, buf, sizeof buf), 32);
    assert_int_equal(vgw_sync_decode(buf, 32, KEY, &g, out), 0);
    assert_int_equal(g.count, 0);
    /* out of range counts or room */
    assert_int_equal(vgw_sync_encode(&h, in, VGW_SYNC_MAX_RECS + 1, KEY, buf, sizeof buf), 0);
    assert_int_equal(vgw_sync_encode(&h, in, 2, KEY, buf, 24 + 96 + 7), 0);
}

static void test_every_rejection(void **unused)
{
    (void)unused;
    vgw_sync_hdr_t h = {.sender = tu_ip(198, 51, 100, 11), .epoch = 1, .seq = 1, .nworkers = 1};
    vgw_sync_rec_t r = sample_rec(), out[VGW_SYNC_MAX_RECS];
    uint8_t buf[VGW_SYNC_MAX_MSG], bad[VGW_SYNC_MAX_MSG];
    size_t len = vgw_sync_encode(&h, &r, 1, KEY, buf, sizeof buf);
    vgw_sync_hdr_t g;
    assert_int_equal(vgw_sync_decode(buf, 31, KEY, &g, out), -VGW_SYNC_E_SHORT);
    assert_int_equal(vgw_sync_decode(buf, len - 1, KEY, &g, out), -VGW_SYNC_E_LENGTH);
    /* every single flipped bit is caught (header fields first, the rest by the MAC) */
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            memcpy(bad, buf, len);
            bad[i] ^= (uint8_t)(1u << bit);
            assert_true(vgw_sync_decode(bad, len, KEY, &g, out) < 0);
        }
    }
    memcpy(bad, buf, len);
    bad[0] = 'X';
    assert_int_equal(vgw_sync_decode(bad, len, KEY, &g, out), -VGW_SYNC_E_MAGIC);
    bad[0] = 'V', bad[2] = 2;
    assert_int_equal(vgw_sync_decode(bad, len, KEY, &g, out), -VGW_SYNC_E_VERSION);
    bad[2] = 1, bad[22] = 1; /* reserved: a later version's flags */
    assert_int_equal(vgw_sync_decode(bad, len, KEY, &g, out), -VGW_SYNC_E_VERSION);
    bad[22] = 0, bad[3] = 0;
    assert_int_equal(vgw_sync_decode(bad, len, KEY, &g, out), -VGW_SYNC_E_LENGTH);
    bad[3] = VGW_SYNC_MAX_RECS + 1;
    assert_int_equal(vgw_sync_decode(bad, len, KEY, &g, out), -VGW_SYNC_E_LENGTH);
    bad[3] = 1;
    bad[30] ^= 1;
    assert_int_equal(vgw_sync_decode(bad, len, KEY, &g, out), -VGW_SYNC_E_MAC);
    uint8_t other_key[16] = {1};
    assert_int_equal(vgw_sync_decode(buf, len, other_key, &g, out), -VGW_SYNC_E_MAC);
    /* a well-signed record with impossible values: a sender bug or a key in the wrong hands */
    vgw_sync_rec_t weird[8] = {sample_rec(), sample_rec(), sample_rec(), sample_rec(),
                               sample_rec(), sample_rec(), sample_rec(), sample_rec()};
    weird[0].af = VGW_AF_INET6;
    weird[1].proto = VGW_PROTO_ICMP;
    weird[2].state = VGW_STATE_MAX;
    weird[3].flags = 0x80;
    weird[4].timeout_ms = 0;
    weird[5].proto = VGW_PROTO_UDP; /* with a TCP state */
    weird[6].state = VGW_TCP_SYNACK + 1; /* a UDP state on TCP */
    weird[7].timeout_ms = 8u * 24u * 3600u * 1000u; /* longer than any timeout */
    for (int i = 0; i < 8; i++) {
        len = vgw_sync_encode(&h, &weird[i], 1, KEY, buf, sizeof buf);
        assert_int_equal(vgw_sync_decode(buf, len, KEY, &g, out), -VGW_SYNC_E_RECORD);
    }
    assert_string_equal(vgw_sync_err_name(-VGW_SYNC_E_MAC), "bad_mac");
    assert_string_equal(vgw_sync_err_name(VGW_SYNC_E_CONFLICT), "conflict");
    assert_string_equal(vgw_sync_err_name(99), "unknown");
}

/* Node A opens a connection, node B imports A's records and carries the flow on: B sends the
 * client's next segment to the same real server from A's LIP and port. */
static void test_peer_carries_the_connection_on(void **unused)
{
    (void)unused;
    vgw_dp_t *dpa = tu_dp(1, CFG_A), *dpb = tu_dp(1, CFG_B);
    vgw_worker_t *a = mk_worker(dpa, 1024, VGW_WF_SYNC), *b = mk_worker(dpb, 1024, 0);
    tu_buf_t buf;
    vgw_sync_rec_t recs[VGW_SYNC_MAX_RECS];

    vgw_verdict_t v = send(a, VGW_PROTO_TCP, CLIENT, VIP, 40000, 80, 0x02, 1000, &buf);
    assert_int_equal(v.action, VGW_ACT_FORWARD);
    uint8_t *l3 = buf.pkt.data + 14;
    uint32_t lip = ld32(l3 + 12);
    uint16_t lport = ld16(l3 + 20);
    /* half-open already: a flow moved in the middle of its handshake finds its copy */
    assert_int_equal(vgw_worker_sync_take(a, recs, VGW_SYNC_MAX_RECS, 1000), 1);
    assert_int_equal(recs[0].state, VGW_TCP_SYN_RECV);
    assert_int_equal(recs[0].lip, lip);
    assert_int_equal(recs[0].lport, lport);
    assert_int_equal(vgw_worker_sync_take(a, recs, VGW_SYNC_MAX_RECS, 1000), 0); /* taken once */

    /* the ACK completes it on A: one more note, ESTABLISHED */
    v = send(a, VGW_PROTO_TCP, CLIENT, VIP, 40000, 80, 0x10, 1001, &buf);
    assert_int_equal(v.action, VGW_ACT_FORWARD);
    assert_int_equal(vgw_worker_sync_take(a, recs, VGW_SYNC_MAX_RECS, 1001), 1);
    assert_int_equal(recs[0].state, VGW_TCP_ESTABLISHED);

    /* B without the record: a mid-flow segment has no connection */
    v = send(b, VGW_PROTO_TCP, CLIENT, VIP, 40000, 80, 0x10, 1002, &buf);
    assert_int_equal(v.action, VGW_ACT_DROP);
    assert_int_equal(vgw_worker_sync_import(b, &recs[0], 1002), VGW_SYNC_OK);
    assert_int_equal(vgw_worker_conn_count(b), 1);
    v = send(b, VGW_PROTO_TCP, CLIENT, VIP, 40000, 80, 0x10, 1003, &buf);
    assert_int_equal(v.action, VGW_ACT_FORWARD);
    assert_int_equal(v.port, VGW_PORT_INT);
    assert_true(tu_csums_ok(&buf.pkt));
    l3 = buf.pkt.data + 14;
    assert_int_equal(ld32(l3 + 12), lip);   /* A's LIP, not B's */
    assert_int_equal(ld16(l3 + 20), lport); /* and A's port */
    assert_int_equal(ld32(l3 + 16), RS);
    vgw_conn_info_t ci;
    assert_int_equal(vgw_worker_conn_find(b, VGW_PROTO_TCP, CLIENT, 40000, VIP, 80, 1003, &ci), 0);
    assert_int_equal(ci.state, VGW_TCP_ESTABLISHED);
    assert_true(ci.flags & VGW_CF_SYNCED);
    assert_true(ci.expires_in_ms > 80000);

    /* A fails: B takes over A's LIP, so the server's replies to it are B's to translate. Before,
     * an address that is not B's own is not the forwarder's business (LOCAL). */
    v = send(b, VGW_PROTO_TCP, RS, lip, 8080, n2h16(lport), 0x10, 1003, &buf);
    assert_int_equal(v.action, VGW_ACT_LOCAL);
    assert_int_equal(vgw_dp_foreign_lip_add(dpb, lip), 0);
    assert_int_equal(vgw_dp_foreign_lip_add(dpb, lip), 0); /* once */
    assert_int_equal(vgw_dp_foreign_lip_count(dpb), 1);
    assert_true(vgw_dp_foreign_lip_has(dpb, lip));
    v = send(b, VGW_PROTO_TCP, RS, lip, 8080, n2h16(lport), 0x10, 1003, &buf);
    assert_int_equal(v.action, VGW_ACT_FORWARD);
    assert_int_equal(v.port, VGW_PORT_EXT);
    assert_true(tu_csums_ok(&buf.pkt));
    l3 = buf.pkt.data + 14;
    assert_int_equal(ld32(l3 + 12), VIP);
    assert_int_equal(ld32(l3 + 16), CLIENT);
    /* a reply to the taken-over LIP without a copy is no connection of B's */
    v = send(b, VGW_PROTO_TCP, RS, lip, 8080, (uint16_t)(n2h16(lport) + 1), 0x10, 1003, &buf);
    assert_int_equal(v.action, VGW_ACT_DROP);
    assert_int_equal(v.arg, VGW_DROP_LIP_NO_CONN);
    /* A is back: the LIP is A's again */
    assert_int_equal(vgw_dp_foreign_lip_del(dpb, lip), 0);
    assert_int_equal(vgw_dp_foreign_lip_del(dpb, lip), -1);
    assert_int_equal(vgw_dp_foreign_lip_count(dpb), 0);
    v = send(b, VGW_PROTO_TCP, RS, lip, 8080, n2h16(lport), 0x10, 1003, &buf);
    assert_int_equal(v.action, VGW_ACT_LOCAL);
    assert_int_equal(vgw_dp_foreign_lip_add(dpb, 0), -1);
    assert_int_equal(vgw_dp_foreign_lip_add(dpb, 0xffffffffu), -1);

    /* an update of the same connection changes it in place */
    recs[0].state = VGW_TCP_FIN_WAIT;
    recs[0].timeout_ms = 5000;
    assert_int_equal(vgw_worker_sync_import(b, &recs[0], 1004), VGW_SYNC_OK);
    assert_int_equal(vgw_worker_conn_count(b), 1);
    assert_int_equal(vgw_worker_conn_find(b, VGW_PROTO_TCP, CLIENT, 40000, VIP, 80, 1004, &ci), 0);
    assert_int_equal(ci.state, VGW_TCP_FIN_WAIT);
    assert_true(ci.expires_in_ms <= 5000);

    vgw_worker_destroy(a), vgw_worker_destroy(b);
    vgw_dp_destroy(dpa), vgw_dp_destroy(dpb);
}

static void test_foreign_set_fills_and_reuses_removed_slots(void **unused)
{
    (void)unused;
    vgw_dp_t *dp = tu_dp(1, CFG_B);
    for (uint32_t i = 1; i <= VGW_FOREIGN_SLOTS / 2; i++)
        assert_int_equal(vgw_dp_foreign_lip_add(dp, h2n32(0xc6120000u + i)), 0);
    assert_int_equal(vgw_dp_foreign_lip_add(dp, h2n32(0xc6130001u)), -1); /* full */
    for (uint32_t i = 1; i <= VGW_FOREIGN_SLOTS / 2; i++)
        assert_true(vgw_dp_foreign_lip_has(dp, h2n32(0xc6120000u + i)));
    for (int round = 0; round < 4; round++) /* removed slots are reused, lookups stay right */
        for (uint32_t i = 1; i <= VGW_FOREIGN_SLOTS / 2; i++) {
            assert_int_equal(vgw_dp_foreign_lip_del(dp, h2n32(0xc6120000u + i)), 0);
            assert_false(vgw_dp_foreign_lip_has(dp, h2n32(0xc6120000u + i)));
            assert_int_equal(vgw_dp_foreign_lip_add(dp, h2n32(0xc6140000u + i + (uint32_t)round * 1000u)), 0);
            assert_int_equal(vgw_dp_foreign_lip_del(dp, h2n32(0xc6140000u + i + (uint32_t)round * 1000u)), 0);
            assert_int_equal(vgw_dp_foreign_lip_add(dp, h2n32(0xc6120000u + i)), 0);
        }
    assert_int_equal(vgw_dp_foreign_lip_count(dp), VGW_FOREIGN_SLOTS / 2);
    vgw_dp_destroy(dp);
}

static void test_import_refusals(void **unused)
{
    (void)unused;
    vgw_dp_t *dpb = tu_dp(1, CFG_B);
    vgw_worker_t *b = mk_worker(dpb, 2, 0);
    vgw_sync_rec_t r = sample_rec();
    r.vport = h2n16(81);
    assert_int_equal(vgw_worker_sync_import(b, &r, 10), VGW_SYNC_E_NO_SERVICE);
    r = sample_rec();
    r.rip = tu_ip(198, 51, 100, 99);
    assert_int_equal(vgw_worker_sync_import(b, &r, 10), VGW_SYNC_E_NO_BACKEND);
    r = sample_rec();
    r.af = 0;
    assert_int_equal(vgw_worker_sync_import(b, &r, 10), VGW_SYNC_E_RECORD);
    /* B's own live connection on the client tuple wins over a peer's different one */
    tu_buf_t buf;
    vgw_verdict_t v = send(b, VGW_PROTO_TCP, CLIENT, VIP, 40000, 80, 0x02, 10, &buf);
    assert_int_equal(v.action, VGW_ACT_FORWARD);
    r = sample_rec();
    assert_int_equal(vgw_worker_sync_import(b, &r, 11), VGW_SYNC_E_CONFLICT);
    /* capacity 2: one more fits, then the table is full */
    r.cport = h2n16(40001);
    assert_int_equal(vgw_worker_sync_import(b, &r, 11), VGW_SYNC_OK);
    r.cport = h2n16(40002), r.lport = h2n16(1031);
    assert_int_equal(vgw_worker_sync_import(b, &r, 11), VGW_SYNC_E_FULL);
    assert_int_equal(vgw_worker_conn_count(b), 2);
    vgw_worker_destroy(b);
    vgw_dp_destroy(dpb);
}

static void test_notes_udp_refresh_overflow_and_ended(void **unused)
{
    (void)unused;
    vgw_dp_t *dpa = tu_dp(1, CFG_A);
    vgw_worker_t *a = mk_worker(dpa, 4096, VGW_WF_SYNC);
    tu_buf_t buf;
    vgw_sync_rec_t recs[VGW_SYNC_MAX_RECS];
    /* UDP: a flow's first datagram is not noted (a flood of one-datagram flows costs the peers
     * nothing); its second is */
    vgw_verdict_t v = send(a, VGW_PROTO_UDP, CLIENT, VIP, 5000, 53, 0, 100, &buf);
    assert_int_equal(v.action, VGW_ACT_FORWARD);
    assert_int_equal(vgw_worker_sync_take(a, recs, VGW_SYNC_MAX_RECS, 100), 0);
    send(a, VGW_PROTO_UDP, CLIENT, VIP, 5000, 53, 0, 150, &buf);
    assert_int_equal(vgw_worker_sync_take(a, recs, VGW_SYNC_MAX_RECS, 150), 1);
    assert_int_equal(recs[0].state, VGW_UDP_NORMAL);
    /* the next datagram soon after: nothing new */
    send(a, VGW_PROTO_UDP, CLIENT, VIP, 5000, 53, 0, 2000, &buf);
    assert_int_equal(vgw_worker_sync_take(a, recs, VGW_SYNC_MAX_RECS, 2000), 0);
    /* past half the timeout (300 s): refreshed */
    send(a, VGW_PROTO_UDP, CLIENT, VIP, 5000, 53, 0, 160000, &buf);
    assert_int_equal(vgw_worker_sync_take(a, recs, VGW_SYNC_MAX_RECS, 160000), 1);

    /* TCP: every state change is noted, from the SYN on; a record says the state at the take,
     * so a reset one's copy goes soon (CLOSE) */
    send(a, VGW_PROTO_TCP, CLIENT, VIP, 20001, 80, 0x02, 165000, &buf);
    send(a, VGW_PROTO_TCP, CLIENT, VIP, 20001, 80, 0x10, 165000, &buf);
    send(a, VGW_PROTO_TCP, CLIENT, VIP, 20001, 80, 0x04, 165000, &buf);
    assert_int_equal(vgw_worker_sync_take(a, recs, VGW_SYNC_MAX_RECS, 165000), 3);
    assert_int_equal(recs[0].state, VGW_TCP_CLOSE);
    assert_int_equal(recs[2].state, VGW_TCP_CLOSE);
    vgw_worker_housekeep(a, 169000, 4096);

    /* more notes than the outbox holds: the excess is counted, not written past the end */
    for (uint16_t i = 0; i < VGW_SYNC_OUTBOX + 10; i++)
        send(a, VGW_PROTO_TCP, CLIENT, VIP, (uint16_t)(10000 + i), 80, 0x02, 170000, &buf);
    assert_int_equal(vgw_worker_sync_overflow(a), 10);
    uint32_t total = 0, n;
    while ((n = vgw_worker_sync_take(a, recs, VGW_SYNC_MAX_RECS, 170000)) > 0)
        total += n;
    assert_int_equal(total, VGW_SYNC_OUTBOX);

    /* a connection that ended before the take is not sent */
    send(a, VGW_PROTO_TCP, CLIENT, VIP, 30000, 80, 0x02, 171000, &buf);
    vgw_worker_housekeep(a, 171000 + 3600000, 4096); /* everything expired and swept */
    assert_int_equal(vgw_worker_sync_take(a, recs, VGW_SYNC_MAX_RECS, 171000 + 3600000), 0);
    vgw_worker_destroy(a);
    vgw_dp_destroy(dpa);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_bytes),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_every_rejection),
        cmocka_unit_test(test_peer_carries_the_connection_on),
        cmocka_unit_test(test_import_refusals),
        cmocka_unit_test(test_foreign_set_fills_and_reuses_removed_slots),
        cmocka_unit_test(test_notes_udp_refresh_overflow_and_ended),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
