/* SPDX-License-Identifier: Apache-2.0
 * Incremental generations: what a change rebuilds, what it shares with the previous generation,
 * and that uids (which connections and per-worker arrays hold) stay stable and are released. */
#include <stdio.h>
#include <stdlib.h>

#include "cfgint.h"
#include "testutil.h"

static const char *doc = "vgw-config 1\n"
                         "generation 1\n"
                         "service a tcp 192.0.2.10 80 maglev table=251\n"
                         "lip a 198.18.0.100\n"
                         "backend a 198.18.1.1 80 100 active\n"
                         "backend a 198.18.1.2 80 100 active\n"
                         "backend a 198.18.1.3 80 100 draining\n"
                         "service b udp 192.0.2.10 53 wrr\n"
                         "lip b 198.18.0.100\n"
                         "backend b 198.18.1.1 53 1 active\n"
                         "backend b 198.18.1.2 53 3 active\n"
                         "service c tcp 192.0.2.11 443 wlc\n"
                         "lip c 198.18.0.101\n"
                         "backend c 198.18.1.7 443 1 active\n"
                         "end\n";

typedef struct fixture {
    vgw_dp_t *dp;
    vgw_worker_t *w;
    vgw_cfg_t *cfg;
} fixture_t;

static const vgw_state_t *cur(const fixture_t *f)
{
    return atomic_load(&f->dp->state);
}

static const vgw_svc_t *svc(const fixture_t *f, const char *name)
{
    const vgw_cfg_service_t *cs = vgw_cfg_find(f->cfg, name);
    assert_non_null(cs);
    const vgw_svc_t *s = vgw_state_find_svc(cur(f), cs->vip.v4, h2n16(cs->port), cs->proto);
    assert_non_null(s);
    return s;
}

static void delta(fixture_t *f, const char *ops)
{
    char text[2048], err[256];
    snprintf(text, sizeof text, "vgw-delta 1\ngeneration %llu\n%send\n", (unsigned long long)f->cfg->generation + 1,
             ops);
    if (vgw_cfg_apply_delta(f->cfg, text, strlen(text), err, sizeof err) != 0)
        fail_msg("delta: %s", err);
    if (vgw_dp_apply(f->dp, f->cfg, err, sizeof err) != 0)
        fail_msg("apply: %s", err);
}

/* The worker starts a burst on the current generation: retired states stay until settle(), so a
 * test may look at them. */
static void hold(fixture_t *f)
{
    vgw_pkt_t p = {0};
    vgw_verdict_t v;
    uint8_t frame[14] = {0};
    p.data = frame, p.len = sizeof frame;
    vgw_worker_process(f->w, &p, &v, 1, 1);
}

/* Lets the worker see the newest generation, then frees the retired ones. */
static void settle(fixture_t *f)
{
    vgw_worker_quiesce(f->w);
    vgw_dp_reclaim(f->dp);
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    char err[256];
    f->dp = vgw_dp_create(&(vgw_dp_params_t){.nworkers = 1});
    f->w = vgw_worker_create(f->dp, &(vgw_worker_params_t){.id = 0, .conn_capacity = 64, .hash_seed = 1});
    assert_int_equal(vgw_cfg_parse(doc, strlen(doc), &f->cfg, err, sizeof err), 0);
    assert_int_equal(vgw_dp_apply(f->dp, f->cfg, err, sizeof err), 0);
    hold(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    vgw_worker_destroy(f->w);
    vgw_dp_destroy(f->dp);
    vgw_cfg_free(f->cfg);
    free(f);
    return 0;
}

static void test_one_backend_rebuilds_one_service(void **state)
{
    fixture_t *f = *state;
    const vgw_svc_t *a = svc(f, "a"), *b = svc(f, "b"), *c = svc(f, "c");
    const vgw_state_t *st1 = cur(f);
    uint32_t a_be_uid = a->backends[0].uid;
    delta(f, "backend weight a 198.18.1.1 80 50\n");
    const vgw_state_t *st2 = cur(f);
    assert_ptr_not_equal(st1, st2);
    assert_ptr_equal(svc(f, "b"), b);
    assert_ptr_equal(svc(f, "c"), c);
    const vgw_svc_t *a2 = svc(f, "a");
    assert_ptr_not_equal(a2, a);
    assert_ptr_not_equal(a2->tab, a->tab); /* a candidate's weight changed: new Maglev table */
    assert_int_equal(a2->uid, a->uid);
    assert_int_equal(a2->backends[0].uid, a_be_uid);
    assert_int_equal(a2->backends[0].weight, 50);
    assert_ptr_equal(st2->lookup, st1->lookup); /* same services, same addresses */
    settle(f);
}

static void test_table_kept_when_candidates_unchanged(void **state)
{
    fixture_t *f = *state;
    const vgw_svc_t *a = svc(f, "a");
    const vgw_lookup_t *lk = cur(f)->lookup;
    /* draining -> disabled: not a candidate either way */
    delta(f, "backend state a 198.18.1.3 80 disabled\n");
    const vgw_svc_t *a2 = svc(f, "a");
    assert_ptr_not_equal(a2, a);
    assert_ptr_equal(a2->tab, a->tab);
    assert_ptr_equal(a2->maglev, a->maglev);
    assert_ptr_equal(cur(f)->lookup, lk);
    /* A new LIP: the table stays, the address lookup is rebuilt. */
    delta(f, "lip add a 198.18.0.102\n");
    const vgw_svc_t *a3 = svc(f, "a");
    assert_ptr_equal(a3->tab, a->tab);
    assert_ptr_not_equal(cur(f)->lookup, lk);
    assert_int_equal(vgw_state_addr_kind(cur(f), tu_ip(198, 18, 0, 102)), VGW_ADDR_LIP);
    /* A candidate leaves: a new table without it. */
    delta(f, "backend state a 198.18.1.2 80 draining\n");
    const vgw_svc_t *a4 = svc(f, "a");
    assert_ptr_not_equal(a4->tab, a->tab);
    for (uint32_t k = 0; k < a4->maglev_m; k++)
        assert_int_equal(a4->backends[a4->maglev[k]].addr, tu_ip(198, 18, 1, 1));
    settle(f);
}

static void test_noop_and_full_reapply_share_everything(void **state)
{
    fixture_t *f = *state;
    const vgw_svc_t *a = svc(f, "a"), *b = svc(f, "b"), *c = svc(f, "c");
    const vgw_lookup_t *lk = cur(f)->lookup;
    delta(f, "");
    assert_ptr_equal(svc(f, "a"), a);
    assert_ptr_equal(cur(f)->lookup, lk);
    /* The same document applied again in full (new revs everywhere): equal content is shared. */
    vgw_cfg_t *again = NULL;
    char err[256];
    assert_int_equal(vgw_cfg_parse(doc, strlen(doc), &again, err, sizeof err), 0);
    again->generation = f->cfg->generation + 1;
    assert_int_equal(vgw_dp_apply(f->dp, again, err, sizeof err), 0);
    vgw_cfg_free(f->cfg);
    f->cfg = again;
    assert_ptr_equal(svc(f, "a"), a);
    assert_ptr_equal(svc(f, "b"), b);
    assert_ptr_equal(svc(f, "c"), c);
    assert_ptr_equal(cur(f)->lookup, lk);
    settle(f);
}

static void test_uids_released_and_reused_late(void **state)
{
    fixture_t *f = *state;
    uint32_t svcs = f->dp->svc_reg.count, bes = f->dp->be_reg.count;
    uint32_t b_uid = svc(f, "b")->uid;
    delta(f, "service remove b\n");
    assert_int_equal(f->dp->svc_reg.count, svcs - 1);
    assert_int_equal(f->dp->be_reg.count, bes - 2);
    assert_null(cur(f)->svc_by_uid[b_uid]);
    /* Re-added: a fresh uid (fresh ones first, freed ones only when those run out). */
    delta(f, "service add b udp 192.0.2.10 53 wrr\nlip add b 198.18.0.100\nbackend add b 198.18.1.1 53 1 active\n");
    assert_int_not_equal(svc(f, "b")->uid, b_uid);
    assert_int_equal(f->dp->be_reg.count, bes - 1);
    /* Removing a backend releases exactly its uid. */
    delta(f, "backend remove a 198.18.1.3 80\n");
    assert_int_equal(f->dp->be_reg.count, bes - 2);
    /* A failed build changes nothing: the generation must be newer. */
    char err[128];
    f->cfg->generation = vgw_dp_generation(f->dp);
    assert_int_equal(vgw_dp_apply(f->dp, f->cfg, err, sizeof err), -1);
    assert_int_equal(f->dp->be_reg.count, bes - 2);
    settle(f);
}

/* A retired state's services stay alive while it is pending, and shared ones survive its free. */
static void test_retired_states_keep_their_services(void **state)
{
    fixture_t *f = *state;
    const vgw_svc_t *c = svc(f, "c");
    delta(f, "backend weight a 198.18.1.1 80 7\n");
    delta(f, "backend weight a 198.18.1.1 80 8\n");
    assert_true(vgw_dp_reclaim(f->dp) >= 1); /* pending: the worker has not moved on */
    settle(f);
    assert_int_equal(vgw_dp_reclaim(f->dp), 0);
    assert_ptr_equal(svc(f, "c"), c); /* shared through all of it, still alive (ASan would say) */
    assert_int_equal(c->backends[0].addr, tu_ip(198, 18, 1, 7));
}

/* A document of one IPv6 service whose VIP and 256 LIPs are all new in round r (2001:db8:r::/48). */
static char *v6_round(uint64_t generation, unsigned r)
{
    size_t cap = 64 * 1024, n = 0;
    char *t = malloc(cap);
    assert_non_null(t);
    n += (size_t)snprintf(t + n, cap - n, "vgw-config 1\ngeneration %llu\nservice a tcp 2001:db8:%x::1 80 wlc\n",
                          (unsigned long long)generation, r);
    for (unsigned l = 0; l < 256; l++)
        n += (size_t)snprintf(t + n, cap - n, "lip a 2001:db8:%x::%x\n", r, l + 2);
    snprintf(t + n, cap - n, "backend a 2001:db8:ffff::1 80 1 active\nend\n");
    return t;
}

static void apply_text(fixture_t *f, const char *text, char *err, size_t errlen, int want)
{
    vgw_cfg_t *cfg = NULL;
    assert_int_equal(vgw_cfg_parse(text, strlen(text), &cfg, err, errlen), 0);
    assert_int_equal(vgw_dp_apply(f->dp, cfg, err, errlen), want);
    if (want == 0) {
        vgw_cfg_free(f->cfg);
        f->cfg = cfg;
    } else {
        vgw_cfg_free(cfg);
    }
    settle(f);
}

/* IPv6 records name their VIP and LIP by id: ids are never reused for another address, and an
 * apply that needs more than the table holds is refused whole, with a message. */
static void test_ipv6_address_ids_last_and_their_table_refuses_when_full(void **state)
{
    fixture_t *f = *state;
    char err[256];
    uint64_t gen = 2;
    for (unsigned r = 0; r < VGW_ADDR6_MAX / 257; r++) { /* 255 rounds x 257 new addresses: full */
        char *t = v6_round(gen++, r);
        apply_text(f, t, err, sizeof err, 0);
        free(t);
    }
    assert_int_equal(f->dp->addr6.count, VGW_ADDR6_MAX);
    /* The first round's VIP still has id 0, though no service has used it for 254 applies. */
    uint8_t first[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    assert_int_equal(vgw_addr6_find(&f->dp->addr6, first), 0);
    assert_memory_equal(f->dp->addr6.addr[0], first, 16);

    uint64_t before = vgw_dp_generation(f->dp);
    char *t = v6_round(gen++, 255);
    apply_text(f, t, err, sizeof err, -1);
    free(t);
    assert_non_null(strstr(err, "service a: the IPv6 address table is full (65535 distinct IPv6 VIPs and LIPs"));
    assert_int_equal(vgw_dp_generation(f->dp), before);
    assert_int_equal(f->dp->addr6.count, VGW_ADDR6_MAX);

    /* Addresses the table knows still apply. */
    t = v6_round(gen++, 7);
    apply_text(f, t, err, sizeof err, 0);
    free(t);
    assert_int_equal(vgw_dp_generation(f->dp), gen - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_one_backend_rebuilds_one_service, setup, teardown),
        cmocka_unit_test_setup_teardown(test_table_kept_when_candidates_unchanged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_noop_and_full_reapply_share_everything, setup, teardown),
        cmocka_unit_test_setup_teardown(test_uids_released_and_reused_late, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retired_states_keep_their_services, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ipv6_address_ids_last_and_their_table_refuses_when_full, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
