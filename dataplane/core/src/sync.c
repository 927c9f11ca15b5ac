/* SPDX-License-Identifier: Apache-2.0
 * Connection sync: the message format (encode/decode), a worker's outbox, and importing a peer's
 * record into a worker's connection table. See include/vgw/sync.h for the wire format. */
#include "fastpath.h"
#include "internal.h"

#define MAGIC0 'V'
#define MAGIC1 'S'
/* Longest timeout a record may carry: no configurable timeout is longer than a week. */
#define MAX_TIMEOUT_MS (7u * 24u * 3600u * 1000u)

static const char *const err_names[VGW_SYNC_E_MAX] = {
    "ok", "short", "bad_magic", "bad_version", "bad_length", "bad_mac", "bad_record",
    "no_service", "no_backend", "conflict", "table_full",
};

const char *vgw_sync_err_name(int err)
{
    if (err < 0)
        err = -err;
    return err < VGW_SYNC_E_MAX ? err_names[err] : "unknown";
}

/* ---- wire format ------------------------------------------------------------------------- */

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8), p[1] = (uint8_t)v;
}
static void put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)(v >> 16)), put16(p + 2, (uint16_t)v);
}
static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)get16(p) << 16 | get16(p + 2);
}

static uint64_t mac_of(const uint8_t key[16], const uint8_t *buf, size_t len)
{
    uint64_t k0 = 0, k1 = 0;
    for (int i = 7; i >= 0; i--) {
        k0 = k0 << 8 | key[i];
        k1 = k1 << 8 | key[8 + i];
    }
    return vgw_siphash24(k0, k1, buf, len);
}

static void put_rec(uint8_t *p, const vgw_sync_rec_t *r)
{
    p[0] = r->af, p[1] = r->proto, p[2] = r->state, p[3] = r->flags;
    /* addresses, ports and rs_isn1 are already in network order: copied as bytes */
    memcpy(p + 4, &r->cip, 4), memcpy(p + 8, &r->vip, 4), memcpy(p + 12, &r->lip, 4), memcpy(p + 16, &r->rip, 4);
    memcpy(p + 20, &r->cport, 2), memcpy(p + 22, &r->vport, 2), memcpy(p + 24, &r->lport, 2);
    memcpy(p + 26, &r->rport, 2);
    put32(p + 28, r->timeout_ms);
    memcpy(p + 32, &r->rs_isn1, 4);
    put32(p + 36, r->sp_seq);
    put32(p + 40, r->sp_ts);
    put16(p + 44, r->sp_win);
    p[46] = r->sp_ws[0], p[47] = r->sp_ws[1];
}

static void get_rec(const uint8_t *p, vgw_sync_rec_t *r)
{
    memset(r, 0, sizeof *r);
    r->af = p[0], r->proto = p[1], r->state = p[2], r->flags = p[3];
    memcpy(&r->cip, p + 4, 4), memcpy(&r->vip, p + 8, 4), memcpy(&r->lip, p + 12, 4), memcpy(&r->rip, p + 16, 4);
    memcpy(&r->cport, p + 20, 2), memcpy(&r->vport, p + 22, 2), memcpy(&r->lport, p + 24, 2);
    memcpy(&r->rport, p + 26, 2);
    r->timeout_ms = get32(p + 28);
    memcpy(&r->rs_isn1, p + 32, 4);
    r->sp_seq = get32(p + 36);
    r->sp_ts = get32(p + 40);
    r->sp_win = get16(p + 44);
    r->sp_ws[0] = p[46], r->sp_ws[1] = p[47];
}

/* A record a peer could have sent: what the import relies on without checking again. */
static bool rec_valid(const vgw_sync_rec_t *r)
{
    if (r->af != VGW_AF_INET || (r->flags & ~VGW_SYNC_F_ALL) || r->timeout_ms == 0 || r->timeout_ms > MAX_TIMEOUT_MS)
        return false;
    if (!r->cip || !r->vip || !r->lip || !r->rip || !r->cport || !r->vport || !r->lport || !r->rport)
        return false;
    if (r->proto == VGW_PROTO_TCP)
        return r->state <= VGW_TCP_SYNACK;
    if (r->proto == VGW_PROTO_UDP)
        return r->state == VGW_UDP_NORMAL && !(r->flags & (VGW_SYNC_F_PROXY | VGW_SYNC_F_SP_TS | VGW_SYNC_F_SP_WIN));
    return false;
}

size_t vgw_sync_encode(const vgw_sync_hdr_t *hdr, const vgw_sync_rec_t *recs, uint32_t n, const uint8_t key[16],
                       uint8_t *buf, size_t cap)
{
    size_t len = VGW_SYNC_HDR_LEN + (size_t)n * VGW_SYNC_REC_LEN + VGW_SYNC_MAC_LEN;
    if (n > VGW_SYNC_MAX_RECS || cap < len)
        return 0;
    buf[0] = MAGIC0, buf[1] = MAGIC1, buf[2] = VGW_SYNC_VERSION, buf[3] = (uint8_t)n;
    memcpy(buf + 4, &hdr->sender, 4);
    put32(buf + 8, (uint32_t)(hdr->epoch >> 32));
    put32(buf + 12, (uint32_t)hdr->epoch);
    put32(buf + 16, hdr->seq);
    put16(buf + 20, hdr->nworkers);
    put16(buf + 22, 0);
    for (uint32_t i = 0; i < n; i++)
        put_rec(buf + VGW_SYNC_HDR_LEN + (size_t)i * VGW_SYNC_REC_LEN, &recs[i]);
    uint64_t mac = mac_of(key, buf, len - VGW_SYNC_MAC_LEN);
    put32(buf + len - 8, (uint32_t)(mac >> 32));
    put32(buf + len - 4, (uint32_t)mac);
    return len;
}

int vgw_sync_decode(const uint8_t *buf, size_t len, const uint8_t key[16], vgw_sync_hdr_t *hdr,
                    vgw_sync_rec_t recs[VGW_SYNC_MAX_RECS])
{
    if (len < VGW_SYNC_HDR_LEN + VGW_SYNC_MAC_LEN)
        return -VGW_SYNC_E_SHORT;
    if (buf[0] != MAGIC0 || buf[1] != MAGIC1)
        return -VGW_SYNC_E_MAGIC;
    /* The reserved field is for a later version's flags: this one must not guess at them. */
    if (buf[2] != VGW_SYNC_VERSION || buf[22] || buf[23])
        return -VGW_SYNC_E_VERSION;
    uint32_t n = buf[3];
    if (n > VGW_SYNC_MAX_RECS || len != VGW_SYNC_HDR_LEN + (size_t)n * VGW_SYNC_REC_LEN + VGW_SYNC_MAC_LEN)
        return -VGW_SYNC_E_LENGTH;
    uint64_t mac = mac_of(key, buf, len - VGW_SYNC_MAC_LEN);
    uint64_t got = (uint64_t)get32(buf + len - 8) << 32 | get32(buf + len - 4);
    /* Compared without an early exit, so timing tells nothing about how much matched. */
    if ((mac ^ got) != 0)
        return -VGW_SYNC_E_MAC;
    memset(hdr, 0, sizeof *hdr);
    memcpy(&hdr->sender, buf + 4, 4);
    hdr->epoch = (uint64_t)get32(buf + 8) << 32 | get32(buf + 12);
    hdr->seq = get32(buf + 16);
    hdr->nworkers = get16(buf + 20);
    hdr->count = (uint8_t)n;
    for (uint32_t i = 0; i < n; i++) {
        get_rec(buf + VGW_SYNC_HDR_LEN + (size_t)i * VGW_SYNC_REC_LEN, &recs[i]);
        if (!rec_valid(&recs[i]))
            return -VGW_SYNC_E_RECORD;
    }
    return (int)n;
}

/* ---- the sender's side ------------------------------------------------------------------ */

static uint8_t rec_flags(uint8_t cf)
{
    return cf & (VGW_CF_TOA | VGW_CF_RS_ISN | VGW_CF_PROXY | VGW_CF_SP_TS | VGW_CF_SP_WIN);
}

uint32_t vgw_worker_sync_take(vgw_worker_t *w, vgw_sync_rec_t *out, uint32_t max, uint64_t now_ms)
{
    uint32_t now = (uint32_t)now_ms, n = 0;
    while (w->sync_len && n < max) {
        uint64_t note = w->sync_box[w->sync_head];
        w->sync_head = (w->sync_head + 1) % VGW_SYNC_OUTBOX;
        w->sync_len--;
        uint32_t idx = (uint32_t)note;
        vgw_conn_t *c = &w->ct.conns[idx];
        if (!(c->flags & VGW_CF_USED) || c->gen != (uint8_t)(note >> 32) || vgw_expired(c->expire, now))
            continue; /* ended since: the peers' copy expires on its own */
        if (c->flags & VGW_CF_SP_WAIT) {
            /* A proxied connection is of no use to a peer before the server answered (its
             * sequence deltas are not known): its next packet notes it again. */
            c->sync_t = (uint16_t)((now >> 10) - 0x8000u);
            continue;
        }
        vgw_sync_rec_t *r = &out[n++];
        memset(r, 0, sizeof *r);
        r->af = c->af, r->proto = c->proto, r->state = c->state, r->flags = rec_flags(c->flags);
        r->cip = c->cip, r->vip = c->vip, r->lip = c->lip, r->rip = c->rip;
        r->cport = c->cport, r->vport = c->vport, r->lport = c->lport, r->rport = c->rport;
        r->timeout_ms = c->expire - now;
        r->rs_isn1 = c->rs_isn1;
        if (c->flags & VGW_CF_PROXY) {
            r->sp_seq = c->sp_seq, r->sp_ts = c->sp_ts, r->sp_win = c->sp_win;
            r->sp_ws[0] = c->sp_ws[0], r->sp_ws[1] = c->sp_ws[1];
        }
    }
    return n;
}

uint64_t vgw_worker_sync_overflow(const vgw_worker_t *w)
{
    return w->sync_overflow;
}

/* ---- the receiver's side ---------------------------------------------------------------- */

static void fill_conn(vgw_conn_t *c, const vgw_sync_rec_t *r)
{
    c->cip = r->cip, c->vip = r->vip, c->lip = r->lip, c->rip = r->rip;
    c->cport = r->cport, c->vport = r->vport, c->lport = r->lport, c->rport = r->rport;
    c->proto = r->proto;
    c->af = VGW_AF_INET;
    c->rs_isn1 = r->rs_isn1;
    c->sp_seq = r->sp_seq, c->sp_ts = r->sp_ts, c->sp_win = r->sp_win;
    c->sp_ws[0] = r->sp_ws[0], c->sp_ws[1] = r->sp_ws[1];
}

int vgw_worker_sync_import(vgw_worker_t *w, const vgw_sync_rec_t *r, uint64_t now_ms)
{
    if (!rec_valid(r))
        return VGW_SYNC_E_RECORD;
    uint32_t now = (uint32_t)now_ms;
    vgw_dp_t *dp = w->dp;
    atomic_store(&w->qsbr_gen, atomic_load(&dp->generation));
    const vgw_state_t *st = atomic_load(&dp->state);
    const vgw_svc_t *svc = st ? vgw_state_find_svc(st, r->vip, r->vport, r->proto) : NULL;
    if (!svc)
        return VGW_SYNC_E_NO_SERVICE;
    const vgw_be_t *be = NULL;
    for (uint32_t j = 0; j < svc->nbackends && !be; j++)
        if (svc->backends[j].addr == r->rip && svc->backends[j].port == r->rport)
            be = &svc->backends[j];
    if (!be)
        return VGW_SYNC_E_NO_BACKEND;
    /* The sender's remaining time, but never longer than this node would give the state. */
    uint32_t cap = svc->timeout_ms[r->state];
    uint32_t expire = now + (r->timeout_ms < cap || cap == 0 ? r->timeout_ms : cap);
    uint8_t flags = VGW_CF_USED | VGW_CF_SYNCED | r->flags;

    vgw_ctab_t *t = &w->ct;
    vgw_key4_t ck = {.src = r->cip, .dst = r->vip, .sport = r->cport, .dport = r->vport, .proto = r->proto};
    vgw_key4_t rk = {.src = r->rip, .dst = r->lip, .sport = r->rport, .dport = r->lport, .proto = r->proto};
    uint32_t ref = vgw_ctab_lookup(t, &ck, vgw_ctab_hash(t, &ck));
    if (ref != UINT32_MAX) {
        vgw_conn_t *c = &t->conns[ref >> 1];
        bool live = !vgw_expired(c->expire, now);
        if ((ref & 1) == 0 && vgw_conn_match(c, 1, &rk)) {
            /* The same connection: the newer word on its state wins. SYN proxy translation
             * state is the creator's to decide; a copy keeps what it was told. */
            if (c->proto == VGW_PROTO_TCP && !(c->flags & VGW_CF_PROXY))
                w->pr.halfopen += (uint32_t)tcp_halfopen_state(r->state) - (uint32_t)tcp_halfopen_state(c->state);
            c->state = r->state; /* not conn_set_state: that would echo the change back */
            c->flags = (uint8_t)((c->flags & (VGW_CF_USED | VGW_CF_SYNCED | VGW_CF_SP_WAIT)) | r->flags);
            c->rs_isn1 = r->rs_isn1;
            c->expire = expire;
            c->sync_t = (uint16_t)(now >> 10);
            return VGW_SYNC_OK;
        }
        if (live && !(c->proto == VGW_PROTO_TCP && (c->state == VGW_TCP_TIME_WAIT || c->state == VGW_TCP_CLOSE)))
            return VGW_SYNC_E_CONFLICT;
        vgw_conn_release(w, ref >> 1);
    }
    ref = vgw_ctab_lookup(t, &rk, vgw_ctab_hash(t, &rk));
    if (ref != UINT32_MAX) {
        if (!vgw_expired(t->conns[ref >> 1].expire, now))
            return VGW_SYNC_E_CONFLICT; /* the reply tuple is another connection's */
        vgw_conn_release(w, ref >> 1);
    }
    uint32_t idx = vgw_ctab_alloc(t);
    if (idx == UINT32_MAX)
        return VGW_SYNC_E_FULL;
    vgw_conn_t *c = &t->conns[idx];
    uint8_t gen = (uint8_t)(c->gen + 1);
    memset(c, 0, sizeof *c);
    c->gen = gen;
    fill_conn(c, r);
    c->state = r->state;
    c->flags = flags;
    c->expire = expire;
    c->be_uid = (uint16_t)be->uid;
    c->svc_uid = svc->uid;
    c->sync_t = (uint16_t)(now >> 10);
    vgw_conn_deltas(c);
    vgw_ctab_insert(t, idx);
    /* Counted like a local one (vgw_conn_release undoes both); a copy is never evicted as
     * half-open: it stands for a connection a client has really opened somewhere. */
    if (c->proto == VGW_PROTO_TCP && !(c->flags & VGW_CF_PROXY) && tcp_halfopen_state(c->state))
        w->pr.halfopen++;
    w->be_conns[be->uid]++;
    return VGW_SYNC_OK;
}

/* ---- takeover: failed peers' LIPs --------------------------------------------------------- */

static uint32_t foreign_home(uint32_t addr)
{
    return (uint32_t)vgw_mix64(addr) & (VGW_FOREIGN_SLOTS - 1);
}

int vgw_dp_foreign_lip_has(const vgw_dp_t *dp, uint32_t addr)
{
    return vgw_foreign_lip(dp, addr);
}

uint32_t vgw_dp_foreign_lip_count(const vgw_dp_t *dp)
{
    return atomic_load_explicit(&dp->foreign_n, memory_order_relaxed);
}

int vgw_dp_foreign_lip_add(vgw_dp_t *dp, uint32_t addr)
{
    if (addr == 0 || addr == VGW_FOREIGN_GONE)
        return -1;
    if (atomic_load_explicit(&dp->foreign_n, memory_order_relaxed) >= VGW_FOREIGN_SLOTS / 2)
        return vgw_foreign_lip(dp, addr) ? 0 : -1;
    uint32_t i = foreign_home(addr), slot = UINT32_MAX;
    for (uint32_t probes = 0; probes < VGW_FOREIGN_SLOTS; probes++, i = (i + 1) & (VGW_FOREIGN_SLOTS - 1)) {
        uint32_t a = atomic_load_explicit(&dp->foreign[i], memory_order_relaxed);
        if (a == addr)
            return 0;
        if (a == VGW_FOREIGN_GONE && slot == UINT32_MAX)
            slot = i;
        if (a == 0) {
            if (slot == UINT32_MAX)
                slot = i;
            break;
        }
    }
    if (slot == UINT32_MAX)
        return -1;
    /* The count first: a reader that sees the address also sees a non-zero count. */
    atomic_fetch_add_explicit(&dp->foreign_n, 1, memory_order_release);
    atomic_store_explicit(&dp->foreign[slot], addr, memory_order_release);
    return 0;
}

int vgw_dp_foreign_lip_del(vgw_dp_t *dp, uint32_t addr)
{
    uint32_t i = foreign_home(addr);
    for (uint32_t probes = 0; probes < VGW_FOREIGN_SLOTS; probes++, i = (i + 1) & (VGW_FOREIGN_SLOTS - 1)) {
        uint32_t a = atomic_load_explicit(&dp->foreign[i], memory_order_relaxed);
        if (a == 0)
            return -1;
        if (a == addr) {
            atomic_store_explicit(&dp->foreign[i], VGW_FOREIGN_GONE, memory_order_release);
            atomic_fetch_sub_explicit(&dp->foreign_n, 1, memory_order_release);
            return 0;
        }
    }
    return -1;
}
