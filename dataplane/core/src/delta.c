/* SPDX-License-Identifier: Apache-2.0
 * The "vgw-delta 1" grammar: operations applied in place to a configuration through the same
 * primitives as the document parser, journaled so a failure anywhere (a bad line, a rule, a
 * later rejection by the engine) restores the configuration exactly.
 *
 *   vgw-delta 1
 *   generation <n>                                     newer than the configuration's
 *   backend add <svc> <addr> <port> <weight> <state>
 *   backend remove <svc> <addr> <port>
 *   backend weight <svc> <addr> <port> <weight>
 *   backend state <svc> <addr> <port> <active|draining|disabled>
 *   lip add|remove <svc> <addr>
 *   service add <name> <tcp|udp> <vip> <port> <sched> [options]   (as a document's service line)
 *   service remove <svc>
 *   end
 */
#include <stdio.h>
#include <stdlib.h>

#include "cfgint.h"
#include "internal.h"
#include "text.h"

struct vgw_cfg_txn {
    vgw_cfg_t *cfg;
    vgw_undo_t *undo;
    uint32_t ops;
};

#define FAIL(...) (snprintf(reason, rlen, __VA_ARGS__), -1)

static vgw_cfg_service_t *existing(vgw_cfg_t *cfg, const char *name, char *reason, size_t rlen)
{
    vgw_cfg_service_t *s = vgw_cfg_lookup(cfg, name);
    if (!s)
        snprintf(reason, rlen, "no service '%.64s'", name);
    return s;
}

static int op_backend(vgw_cfg_t *cfg, vgw_undo_t *u, char **t, int n, char *reason, size_t rlen)
{
    static const char *const usage[] = {
        "backend add <service> <addr> <port> <weight 0-65535> <active|draining|disabled>",
        "backend remove <service> <addr> <port>",
        "backend weight <service> <addr> <port> <weight 0-65535>",
        "backend state <service> <addr> <port> <active|draining|disabled>",
    };
    int op = !strcmp(t[1], "add") ? 0 : !strcmp(t[1], "remove") ? 1 : !strcmp(t[1], "weight") ? 2
           : !strcmp(t[1], "state")                               ? 3
                                                                  : -1;
    static const int arity[] = {7, 5, 6, 6};
    if (op < 0)
        return FAIL("backend: unknown operation '%.32s' (add, remove, weight, state)", t[1]);
    if (n != arity[op])
        return FAIL("expected '%s'", usage[op]);
    vgw_cfg_service_t *s = existing(cfg, t[2], reason, rlen);
    vgw_cfg_backend_t b;
    if (!s || vgw_cfg_parse_be_addr(t[3], t[4], &b, reason, rlen))
        return -1;
    uint64_t w = 0;
    int st = -1;
    if ((op == 0 || op == 2) && vgw_parse_u64(t[5], 65535, &w))
        return FAIL("backend: weight must be 0..65535");
    if ((op == 0 || op == 3) && (st = vgw_be_state_by_name(t[op == 0 ? 6 : 5])) < 0)
        return FAIL("backend: state must be active, draining or disabled");
    switch (op) {
    case 0:
        b.weight = (uint16_t)w;
        b.state = (uint8_t)st;
        return vgw_cfg_be_add(cfg, s, &b, u, reason, rlen);
    case 1:
        return vgw_cfg_be_remove(cfg, s, &b, u, reason, rlen);
    case 2:
        return vgw_cfg_be_set(cfg, s, &b, (int32_t)w, -1, u, reason, rlen);
    default:
        return vgw_cfg_be_set(cfg, s, &b, -1, st, u, reason, rlen);
    }
}

static int op_lip(vgw_cfg_t *cfg, vgw_undo_t *u, char **t, int n, char *reason, size_t rlen)
{
    int add = !strcmp(t[1], "add");
    if (!add && strcmp(t[1], "remove"))
        return FAIL("lip: unknown operation '%.32s' (add, remove)", t[1]);
    if (n != 4)
        return FAIL("expected 'lip %s <service> <addr>'", t[1]);
    vgw_cfg_service_t *s = existing(cfg, t[2], reason, rlen);
    if (!s)
        return -1;
    vgw_addr_t a;
    uint8_t af;
    if (vgw_parse_addr(t[3], &af, &a) || !vgw_addr_unicast(af, &a))
        return FAIL("lip: bad address '%.64s'", t[3]);
    return add ? vgw_cfg_lip_add(cfg, s, af, &a, u, reason, rlen) : vgw_cfg_lip_remove(cfg, s, af, &a, u, reason, rlen);
}

static int op_service(vgw_cfg_t *cfg, vgw_undo_t *u, char **t, int n, char *reason, size_t rlen)
{
    if (!strcmp(t[1], "remove")) {
        if (n != 3)
            return FAIL("expected 'service remove <service>'");
        vgw_cfg_service_t *s = existing(cfg, t[2], reason, rlen);
        return s ? vgw_cfg_svc_remove(cfg, s, u, reason, rlen) : -1;
    }
    if (strcmp(t[1], "add"))
        return FAIL("service: unknown operation '%.32s' (add, remove)", t[1]);
    vgw_cfg_service_t *s = vgw_cfg_svc_alloc();
    if (!s)
        return FAIL("out of memory");
    if (vgw_cfg_parse_service(t + 2, n - 2, s, reason, rlen) || vgw_cfg_svc_add(cfg, s, u, reason, rlen)) {
        vgw_cfg_svc_free(s);
        return -1;
    }
    return 0;
}

static int delta_op(vgw_cfg_t *cfg, vgw_undo_t *u, char **t, int n, char *reason, size_t rlen)
{
    if (n < 2)
        return FAIL("unknown directive '%.64s'", t[0]);
    if (!strcmp(t[0], "backend"))
        return op_backend(cfg, u, t, n, reason, rlen);
    if (!strcmp(t[0], "lip"))
        return op_lip(cfg, u, t, n, reason, rlen);
    if (!strcmp(t[0], "service"))
        return op_service(cfg, u, t, n, reason, rlen);
    return FAIL("unknown directive '%.64s'", t[0]);
}

int vgw_cfg_delta_begin(vgw_cfg_t *cfg, const char *text, size_t len, vgw_cfg_txn_t **txn, char *err,
                        size_t errlen)
{
    *txn = NULL;
    if (err && errlen)
        err[0] = 0;
    if (!text || len > VGW_CFG_MAX_BYTES)
        return vgw_text_fail(err, errlen, 0, "delta too large (max %u bytes)", VGW_CFG_MAX_BYTES);
    vgw_undo_t *u = vgw_undo_new();
    vgw_lines_t *l = malloc(sizeof *l);
    vgw_cfg_txn_t *x = malloc(sizeof *x);
    if (!u || !l || !x) {
        vgw_undo_rollback(cfg, u);
        free(l), free(x);
        return vgw_text_fail(err, errlen, 0, "out of memory");
    }
    vgw_lines_init(l, text, len);
    char reason[256];
    char *t[VGW_TEXT_MAX_TOKENS];
    int n, rc = 0, header = 0, gen = 0, ended = 0;
    uint32_t ops = 0;
    while (rc == 0 && (n = vgw_lines_next(l, t, err, errlen)) != 0) {
        reason[0] = 0;
        uint64_t v = 0;
        if (n < 0) {
            rc = -1;
        } else if (ended) {
            rc = vgw_text_fail(err, errlen, l->lineno, "content after 'end'");
        } else if (!header) {
            if (n != 2 || strcmp(t[0], "vgw-delta") || vgw_parse_u64(t[1], 1000, &v))
                rc = vgw_text_fail(err, errlen, l->lineno, "expected header 'vgw-delta 1'");
            else if (v != 1)
                rc = vgw_text_fail(err, errlen, l->lineno, "unsupported delta version %llu (this build reads 1)",
                                   (unsigned long long)v);
            header = 1;
        } else if (!gen) {
            if (n != 2 || strcmp(t[0], "generation") || vgw_parse_u64(t[1], UINT64_MAX, &v) || v == 0)
                rc = vgw_text_fail(err, errlen, l->lineno, "expected 'generation <n>' after the header");
            else if (v <= cfg->generation)
                rc = vgw_text_fail(err, errlen, l->lineno, "generation %llu is not newer than the applied %llu",
                                   (unsigned long long)v, (unsigned long long)cfg->generation);
            else
                rc = vgw_cfg_set_generation(cfg, v, u, reason, sizeof reason);
            gen = 1;
        } else if (n == 1 && !strcmp(t[0], "end")) {
            ended = 1;
        } else {
            rc = delta_op(cfg, u, t, n, reason, sizeof reason);
            ops++;
        }
        if (rc && reason[0])
            vgw_text_fail(err, errlen, l->lineno, "%s", reason);
    }
    if (rc == 0 && (!header || !gen || !ended))
        rc = vgw_text_fail(err, errlen, l->lineno,
                           "truncated delta: needs 'vgw-delta 1', 'generation <n>', operations, 'end'");
    if (rc == 0 && vgw_undo_check_lips(cfg, u, reason, sizeof reason))
        rc = vgw_text_fail(err, errlen, l->lineno, "%s", reason);
    free(l);
    if (rc) {
        vgw_undo_rollback(cfg, u);
        free(x);
        return -1;
    }
    x->cfg = cfg, x->undo = u, x->ops = ops;
    *txn = x;
    return 0;
}

void vgw_cfg_txn_commit(vgw_cfg_txn_t *txn)
{
    if (!txn)
        return;
    vgw_undo_commit(txn->undo);
    free(txn);
}

void vgw_cfg_txn_rollback(vgw_cfg_txn_t *txn)
{
    if (!txn)
        return;
    vgw_undo_rollback(txn->cfg, txn->undo);
    free(txn);
}

uint32_t vgw_cfg_txn_ops(const vgw_cfg_txn_t *txn)
{
    return txn ? txn->ops : 0;
}

unsigned vgw_cfg_txn_changes(const vgw_cfg_txn_t *txn)
{
    return txn ? vgw_undo_changes(txn->undo) : 0;
}

int vgw_cfg_apply_delta(vgw_cfg_t *cfg, const char *text, size_t len, char *err, size_t errlen)
{
    vgw_cfg_txn_t *txn;
    if (vgw_cfg_delta_begin(cfg, text, len, &txn, err, errlen))
        return -1;
    vgw_cfg_txn_commit(txn);
    return 0;
}
