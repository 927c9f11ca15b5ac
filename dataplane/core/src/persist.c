/* SPDX-License-Identifier: Apache-2.0
 * Connection tables in files that outlive the process (include/vgw/persist.h has the layout and
 * the rules). Control thread only: a worker's file is opened by vgw_worker_create and closed by
 * vgw_worker_destroy, never while the worker runs. Nothing here is on the fast path: a table in
 * a file is the same records and buckets at other addresses. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include "fastpath.h"
#include "vgw/persist.h"

#define HUGE_2M (2ull << 20)
#define MAGIC "VGWCONN\n"
#define BOOT_ID_LEN 40u
/* Longest a record may still have to live: no configurable timeout exceeds a day; a record
 * further in the future than this (a torn write, a clock gone wrong) is not trusted. */
#define MAX_EXPIRE_MS (2u * 86400u * 1000u)
/* Records whose service or backend the applied state does not have: these uids are the last of
 * their spaces, which registries hand out last (only when every other uid is in use). */
#define ORPHAN_SVC (VGW_MAX_SERVICES - 1u)
#define ORPHAN_BE (VGW_MAX_BACKENDS - 1u)

/* The header, at offset 0 of the file. Everything up to `sum` is written once when the file is
 * created and checked on every attach; the rest changes with each process. */
typedef struct phdr {
    char magic[8];
    uint32_t layout;
    uint32_t hdr_size;
    uint32_t conn_size, bucket_size;
    uint32_t capacity, bmask;
    uint32_t worker_id, nworkers;
    uint64_t seed;
    uint64_t conns_off, buckets_off, file_size;
    char boot_id[BOOT_ID_LEN];
    uint64_t sum; /* over the bytes above */
    /* per process */
    uint32_t open; /* 1 while a process has it attached; 0 once one closed it cleanly */
    uint32_t pid;
    uint32_t attaches;
    uint32_t addr6_count; /* entries of the IPv6 address table's copy (ADDR6_OFF); 0 in older files */
    int64_t clock_offset_ms; /* the writer's now_ms + this = CLOCK_MONOTONIC ms */
    char writer[64];
} phdr_t;

_Static_assert(sizeof(phdr_t) <= VGW_PERSIST_HDR_SIZE, "header must fit its page");

/* IPv6 records name their VIP and LIP by id in the node's address table (internal.h), so the
 * table outlives the process too: each worker's file keeps a copy in the header's padding (bytes
 * older files left zero: their count, 0, says there is none), written before a connection can
 * name an id. */
#define ADDR6_OFF VGW_PERSIST_HDR_SIZE
_Static_assert(ADDR6_OFF + 16ull * VGW_ADDR6_MAX <= HUGE_2M, "the address table must fit the header's padding");

struct vgw_pfile {
    int fd;
    uint8_t *base;
    size_t len;
    phdr_t *h;
};

static uint64_t round2m(uint64_t v)
{
    return (v + HUGE_2M - 1) & ~(HUGE_2M - 1);
}

static void layout_of(uint32_t capacity, uint64_t *conns_off, uint64_t *buckets_off, uint64_t *size)
{
    *conns_off = HUGE_2M; /* the header page, padded so the records start on a huge page */
    *buckets_off = *conns_off + round2m((uint64_t)capacity * sizeof(vgw_conn_t));
    *size = *buckets_off + round2m(vgw_ctab_nbuckets(capacity) * sizeof(vgw_bucket_t));
}

uint64_t vgw_persist_file_size(uint32_t capacity)
{
    uint64_t a, b, size;
    layout_of(capacity, &a, &b, &size);
    return size;
}

uint64_t vgw_persist_hdr_sum(const void *hdr)
{
    const phdr_t *h = hdr;
    const uint8_t *p = (const uint8_t *)h;
    uint64_t s = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i + 8 <= offsetof(phdr_t, sum); i += 8) {
        uint64_t v;
        memcpy(&v, p + i, 8);
        s = vgw_mix64(s ^ v) + i;
    }
    return s;
}

static void read_boot_id(char out[BOOT_ID_LEN])
{
    memset(out, 0, BOOT_ID_LEN);
    FILE *fp = fopen("/proc/sys/kernel/random/boot_id", "re");
    if (!fp)
        return;
    if (fgets(out, BOOT_ID_LEN, fp)) {
        char *nl = strchr(out, '\n');
        if (nl)
            *nl = 0;
    }
    fclose(fp);
    size_t n = strnlen(out, BOOT_ID_LEN);
    memset(out + n, 0, BOOT_ID_LEN - n);
}

#define REFUSE_HINT "drain the node, then start with the state discarded (vgw-fwd --conn-state-discard)"

int vgw_persist_check(const void *hdr, size_t len, uint64_t file_size, const vgw_persist_layout_t *want,
                      char *err, size_t errlen)
{
    phdr_t h;
    memset(&h, 0, sizeof h);
    memcpy(&h, hdr, len < sizeof h ? len : sizeof h);
    static const char zero[8];
    if (len < 8 || !memcmp(h.magic, zero, 8))
        return 1; /* never completed (creation is write-then-rename, so only a truncated copy) */
    if (memcmp(h.magic, MAGIC, 8) != 0)
        return snprintf(err, errlen, "not a VGW connection-state file (bad magic); " REFUSE_HINT), -1;
    if (len < sizeof h)
        return snprintf(err, errlen, "header truncated (%zu bytes); " REFUSE_HINT, len), -1;
    /* The version comes before the checksum: another layout may sum differently. */
    if (h.layout != VGW_PERSIST_LAYOUT)
        return snprintf(err, errlen,
                        "incompatible layout: the file has connection-table layout version %u, this build "
                        "reads version %u; its connections cannot be continued by this binary: " REFUSE_HINT,
                        h.layout, VGW_PERSIST_LAYOUT),
               -1;
    if (h.hdr_size != sizeof(phdr_t) || h.conn_size != sizeof(vgw_conn_t) || h.bucket_size != sizeof(vgw_bucket_t))
        return snprintf(err, errlen,
                        "incompatible layout: header/record/bucket sizes %u/%u/%u, this build uses %zu/%zu/%zu: "
                        REFUSE_HINT,
                        h.hdr_size, h.conn_size, h.bucket_size, sizeof(phdr_t), sizeof(vgw_conn_t),
                        sizeof(vgw_bucket_t)),
               -1;
    if (vgw_persist_hdr_sum(&h) != h.sum)
        return snprintf(err, errlen, "header checksum mismatch (torn or overwritten file); " REFUSE_HINT), -1;
    if (h.capacity == 0 || h.capacity > (1u << 30) || h.bmask != vgw_ctab_nbuckets(h.capacity) - 1)
        return snprintf(err, errlen, "header capacity %u / bucket mask %#x are inconsistent; " REFUSE_HINT,
                        h.capacity, h.bmask),
               -1;
    uint64_t co, bo, size;
    layout_of(h.capacity, &co, &bo, &size);
    if (h.conns_off != co || h.buckets_off != bo || h.file_size != size)
        return snprintf(err, errlen, "header offsets do not match its capacity %u; " REFUSE_HINT, h.capacity), -1;
    if (file_size < size)
        return snprintf(err, errlen, "file is %llu bytes, its header needs %llu (truncated); " REFUSE_HINT,
                        (unsigned long long)file_size, (unsigned long long)size),
               -1;
    if (h.nworkers != want->nworkers || h.worker_id != want->worker_id)
        return snprintf(err, errlen,
                        "written by worker %u of a forwarder with %u workers; this one has %u workers (LIP ports "
                        "and client flows are partitioned by the worker count): start it with --workers %u, or "
                        REFUSE_HINT,
                        h.worker_id, h.nworkers, want->nworkers, h.nworkers),
               -1;
    if (h.capacity != want->capacity)
        return snprintf(err, errlen,
                        "written with conn-capacity %u per worker, this forwarder has %u: start it with "
                        "--conn-capacity %u, or " REFUSE_HINT,
                        h.capacity, want->capacity, h.capacity),
               -1;
    return 0;
}

static int fail(vgw_persist_report_t *r, int status, const char *path, const char *what, int e)
{
    if (r) {
        r->status = status;
        /* A long path is cut, the reason is not lost: it comes first in the caller's message. */
        if (snprintf(r->err, sizeof r->err, "%s: %s%s%s", path, what, e ? ": " : "", e ? strerror(e) : "") < 0)
            r->err[0] = 0;
    }
    return -1;
}

/* Maps the file at a 2 MiB aligned address (huge pages need it: hugetlbfs always, THP on tmpfs
 * when shmem_enabled allows it), then pre-faults it so the fast path takes no page faults. The
 * hint comes before the first touch: a page allocated before it is a 4 KiB page for good. */
static uint8_t *map_file(int fd, size_t len)
{
    size_t span = len + HUGE_2M;
    uint8_t *res = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (res == MAP_FAILED)
        return NULL;
    uint8_t *at = (uint8_t *)(((uintptr_t)res + HUGE_2M - 1) & ~(uintptr_t)(HUGE_2M - 1));
    uint8_t *p = mmap(at, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
    if (p == MAP_FAILED) {
        munmap(res, span);
        return NULL;
    }
    if (at > res)
        munmap(res, (size_t)(at - res));
    if (res + span > at + len)
        munmap(at + len, (size_t)(res + span - (at + len)));
#ifdef MADV_HUGEPAGE
    (void)madvise(p, len, MADV_HUGEPAGE);
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14; older kernels refuse it and we touch the pages */
#endif
    if (madvise(p, len, MADV_POPULATE_WRITE) != 0) {
        /* A write fault per page (a read fault could map a shared zero page). Writing back what
         * is there changes nothing: nobody else has the file mapped. */
        for (size_t off = 0; off < len; off += 4096) {
            volatile uint8_t *b = p + off;
            *b = *b;
        }
    }
    return p;
}

/* A new file: written under a temporary name and renamed into place, so a file at path always
 * has a complete header. The lock is taken before the rename and moves with the inode. */
static int create_file(const char *path, const vgw_worker_t *w, uint32_t capacity, uint64_t seed,
                       struct vgw_pfile *pf, vgw_persist_report_t *r)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.new.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return fail(r, VGW_PERSIST_ERROR, path, "path too long", 0);
    unlink(tmp);
    int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return fail(r, VGW_PERSIST_ERROR, tmp, "create", errno);
    uint64_t co, bo, size;
    layout_of(capacity, &co, &bo, &size);
    /* hugetlbfs only takes whole pages of its own size (1 GiB pages: round up). */
    struct statfs sfs;
    uint64_t file_size = size;
    if (fstatfs(fd, &sfs) == 0 && sfs.f_bsize > 0 && (uint64_t)sfs.f_bsize > HUGE_2M)
        file_size = (size + (uint64_t)sfs.f_bsize - 1) / (uint64_t)sfs.f_bsize * (uint64_t)sfs.f_bsize;
    int e = 0;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0 || ftruncate(fd, (off_t)file_size) != 0)
        e = errno;
    uint8_t *base = e ? NULL : map_file(fd, file_size);
    if (!base) {
        e = e ? e : errno;
        close(fd);
        unlink(tmp);
        return fail(r, VGW_PERSIST_ERROR, path, "cannot size or map a new file (no room on its file system?)", e);
    }
    phdr_t *h = (phdr_t *)base;
    memset(h, 0, sizeof *h);
    h->layout = VGW_PERSIST_LAYOUT;
    h->hdr_size = sizeof(phdr_t);
    h->conn_size = sizeof(vgw_conn_t);
    h->bucket_size = sizeof(vgw_bucket_t);
    h->capacity = capacity;
    h->bmask = (uint32_t)(vgw_ctab_nbuckets(capacity) - 1);
    h->worker_id = w->id;
    h->nworkers = w->nworkers;
    h->seed = seed;
    h->conns_off = co, h->buckets_off = bo, h->file_size = size;
    read_boot_id(h->boot_id);
    memcpy(h->magic, MAGIC, 8);
    h->sum = vgw_persist_hdr_sum(h);
    if (rename(tmp, path) != 0) {
        e = errno;
        munmap(base, file_size);
        close(fd);
        unlink(tmp);
        return fail(r, VGW_PERSIST_ERROR, path, "rename into place", e);
    }
    pf->fd = fd, pf->base = base, pf->len = file_size, pf->h = h;
    return 0;
}

/* ---- uids ---------------------------------------------------------------------------------- */

/* (service uid, real server, port) -> backend uid over the applied state, built once per remap
 * (a service's backends can number 65535: a scan per record would be quadratic). */
typedef struct be_index {
    uint64_t *keys; /* 0 = empty */
    uint16_t *uids;
    uint32_t mask;
} be_index_t;

static uint64_t be_ikey(uint32_t svc_uid, uint32_t addr, uint16_t port)
{
    return (1ULL << 63) | (uint64_t)(svc_uid & 0x7fff) << 48 | (uint64_t)port << 32 | addr;
}

/* An IPv6 backend's 32 bits in be_ikey: a hash of its address. Services have one family, so two
 * backends of one service collide only on the hash (then one of them gets the other's WLC count:
 * accounting, never forwarding). */
static uint32_t be_addr6_key(const uint8_t *a)
{
    uint64_t h[2];
    memcpy(h, a, 16);
    return (uint32_t)vgw_mix64(h[0] ^ vgw_mix64(h[1] + 0x9e3779b97f4a7c15ULL));
}

static int be_index_build(be_index_t *x, const vgw_state_t *st)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < st->nservices; i++)
        n += st->services[i]->nbackends;
    uint32_t slots = 16;
    while (slots < 2 * n)
        slots *= 2;
    x->keys = calloc(slots, sizeof *x->keys);
    x->uids = calloc(slots, sizeof *x->uids);
    x->mask = slots - 1;
    if (!x->keys || !x->uids)
        return -1;
    for (uint32_t i = 0; i < st->nservices; i++) {
        const vgw_svc_t *s = st->services[i];
        for (uint32_t j = 0; j < s->nbackends; j++) {
            uint32_t a = s->af == VGW_AF_INET6 ? be_addr6_key(s->be6[j]) : s->backends[j].addr;
            uint64_t k = be_ikey(s->uid, a, s->backends[j].port);
            uint32_t at = (uint32_t)vgw_mix64(k) & x->mask;
            while (x->keys[at] && x->keys[at] != k)
                at = (at + 1) & x->mask;
            x->keys[at] = k;
            x->uids[at] = (uint16_t)s->backends[j].uid;
        }
    }
    return 0;
}

static uint32_t be_index_find(const be_index_t *x, uint32_t svc_uid, uint32_t addr, uint16_t port)
{
    uint64_t k = be_ikey(svc_uid, addr, port);
    for (uint32_t at = (uint32_t)vgw_mix64(k) & x->mask; x->keys[at]; at = (at + 1) & x->mask)
        if (x->keys[at] == k)
            return x->uids[at];
    return UINT32_MAX;
}

/* Gives every record in use the uids of its service and backend in st (orphan uids where st has
 * none) and recounts the per-backend loads. Returns the orphans. */
static uint32_t remap(vgw_worker_t *w, const vgw_state_t *st)
{
    vgw_ctab_t *t = &w->ct;
    be_index_t bx = {0};
    bool have = st && be_index_build(&bx, st) == 0;
    memset(w->be_conns, 0, VGW_MAX_BACKENDS * sizeof(uint32_t));
    uint32_t orphans = 0;
    /* Consecutive records mostly share a service: remember the last one. */
    const vgw_svc_t *last = NULL;
    for (uint32_t i = 0; i < t->capacity; i++) {
        vgw_conn_t *c = &t->conns[i];
        if (!(c->flags & VGW_CF_USED))
            continue;
        const vgw_svc_t *s = last;
        uint32_t be;
        if (c->af == VGW_AF_INET6) {
            uint8_t rip[16];
            vgw_conn_rip6(c, rip);
            const uint8_t *vip = t->addr6[c->vip6_id];
            if (!s || s->af != VGW_AF_INET6 || memcmp(s->vip6, vip, 16) || s->port != c->vport || s->proto != c->proto)
                s = have ? vgw_state_find_svc6(st, vip, c->vport, c->proto) : NULL;
            be = s ? be_index_find(&bx, s->uid, be_addr6_key(rip), c->rport) : UINT32_MAX;
        } else {
            if (!s || s->af != VGW_AF_INET || s->vip != c->vip || s->port != c->vport || s->proto != c->proto)
                s = have ? vgw_state_find_svc(st, c->vip, c->vport, c->proto) : NULL;
            be = s ? be_index_find(&bx, s->uid, c->rip, c->rport) : UINT32_MAX;
        }
        last = s ? s : last;
        c->svc_uid = (uint16_t)(s ? s->uid : ORPHAN_SVC);
        c->be_uid = (uint16_t)(be != UINT32_MAX ? be : ORPHAN_BE);
        w->be_conns[c->be_uid]++;
        orphans += !s || be == UINT32_MAX;
    }
    free(bx.keys), free(bx.uids);
    return orphans;
}

uint32_t vgw_worker_persist_remap(vgw_worker_t *w)
{
    return remap(w, atomic_load(&w->dp->state));
}

/* ---- the IPv6 address table's copy ---------------------------------------------------------- */

static uint8_t (*file_addr6(const struct vgw_pfile *pf))[16]
{
    return (uint8_t(*)[16])(pf->base + ADDR6_OFF);
}

static void addr6_copy(const struct vgw_pfile *pf, const vgw_addr6_tab_t *t)
{
    memcpy(file_addr6(pf), t->addr, 16u * t->count);
    atomic_thread_fence(memory_order_release); /* the entries before the count that covers them */
    pf->h->addr6_count = t->count;
}

void vgw_persist_addr6_write(vgw_worker_t *w)
{
    const struct vgw_pfile *pf = w->ct.pf;
    if (pf && w->dp->v6 && pf->h->addr6_count != w->dp->addr6.count)
        addr6_copy(pf, &w->dp->addr6);
}

/* The file's copy into the node's table: map[i] = the node's id of the file's entry i (the same
 * id when the node's table was built in the same order, as after a restart with the same
 * configuration), or VGW_UID_NONE when the node's table is full. 0, or -1 without memory. */
static int addr6_adopt(vgw_worker_t *w, const struct vgw_pfile *pf, uint32_t *map)
{
    uint32_t n = pf->h->addr6_count < VGW_ADDR6_MAX ? pf->h->addr6_count : VGW_ADDR6_MAX;
    for (uint32_t i = 0; i < VGW_ADDR6_MAX; i++)
        map[i] = VGW_UID_NONE;
    if (!n)
        return 0;
    if (vgw_dp_enable_v6(w->dp))
        return -1;
    const uint8_t(*fa)[16] = (const uint8_t(*)[16])file_addr6(pf);
    bool same = true;
    for (uint32_t i = 0; i < n; i++) {
        map[i] = vgw_addr6_intern(&w->dp->addr6, fa[i]);
        same = same && map[i] == i;
    }
    if (!same) {
        /* Records are about to name the node's ids, and the copy changes after them: a process
         * that dies in between must leave a copy that names nothing (its IPv6 records are then
         * dropped, never misread). */
        pf->h->addr6_count = 0;
        atomic_thread_fence(memory_order_seq_cst);
    }
    return 0;
}

/* ---- attach --------------------------------------------------------------------------------- */

/* Gives an IPv6 record the node's ids of its VIP and LIP; false if the file's table has no entry
 * for one of them, or the node's table had no room for it. */
static bool ids_remapped(vgw_conn_t *c, const uint32_t *map6)
{
    if (c->vip6_id >= VGW_ADDR6_MAX || c->lip6_id >= VGW_ADDR6_MAX || map6[c->vip6_id] == VGW_UID_NONE ||
        map6[c->lip6_id] == VGW_UID_NONE)
        return false;
    c->vip6_id = (uint16_t)map6[c->vip6_id];
    c->lip6_id = (uint16_t)map6[c->lip6_id];
    return true;
}

static bool record_sane(const vgw_conn_t *c)
{
    static const uint8_t zero[16];
    if (c->af == VGW_AF_INET6) {
        uint8_t rip[16];
        vgw_conn_rip6(c, rip);
        if (!memcmp(c->cip6, zero, 16) || !memcmp(rip, zero, 16) || (c->flags & VGW_CF_PROXY))
            return false;
    } else if (c->af != VGW_AF_INET || !c->cip || !c->vip || !c->lip || !c->rip) {
        return false;
    }
    if (c->proto == VGW_PROTO_TCP)
        return c->state <= VGW_TCP_SYNACK;
    return c->proto == VGW_PROTO_UDP && c->state == VGW_UDP_NORMAL;
}

/* Derives everything the worker keeps beside the records. Returns the records in use. */
static uint32_t restore(vgw_worker_t *w, uint32_t shift, uint32_t now, const uint32_t *map6, vgw_persist_report_t *rep)
{
    vgw_ctab_t *t = &w->ct;
    uint32_t used = 0, nfree = 0;
    for (uint32_t i = 0; i < t->capacity; i++) {
        vgw_conn_t *c = &t->conns[i];
        if (c->flags & VGW_CF_USED) {
            c->expire += shift;
            c->sync_t = (uint16_t)(c->sync_t + (shift >> 10));
            if (c->af == VGW_AF_INET6 && !ids_remapped(c, map6)) {
                /* Its VIP or LIP is not in the file's copy of the address table, or the node's
                 * table had no room for it: it cannot be continued. The index check then
                 * fails: rebuilt. */
                rep->v6_lost++;
                c->flags = 0;
            } else if (!record_sane(c) || (int32_t)(c->expire - now) > (int32_t)MAX_EXPIRE_MS) {
                rep->invalid++;
                c->flags = 0; /* its index entries, if any, make the index check fail: rebuilt */
            } else {
                /* The held segment was in the old process's memory; the client retransmits. */
                c->held = 0;
                /* Recomputed rather than trusted: cheap, and a torn record cannot mistranslate.
                 * (IPv6 records keep none: computed per packet.) */
                if (c->af == VGW_AF_INET)
                    vgw_conn_deltas(c);
                if (vgw_expired(c->expire, now))
                    rep->expired++; /* left for lookups/housekeeping to recycle as usual */
                if (c->proto == VGW_PROTO_TCP && !(c->flags & VGW_CF_PROXY) && tcp_halfopen_state(c->state)) {
                    w->pr.halfopen++;
                    vgw_ring_push(w, i);
                }
                used++;
                continue;
            }
        }
        t->free_stack[nfree++] = i;
    }
    /* Pop order = ascending indexes, as in a new table. */
    for (uint32_t a = 0, b = nfree ? nfree - 1 : 0; a < b; a++, b--) {
        uint32_t x = t->free_stack[a];
        t->free_stack[a] = t->free_stack[b];
        t->free_stack[b] = x;
    }
    t->free_top = nfree;
    return used;
}

/* Does the index hold exactly two in-range entries per record in use? (One sequential pass; a
 * stale entry that passes only costs a miss, never a wrong hit: lookups compare the record.) */
static bool index_consistent(const vgw_ctab_t *t, uint32_t used)
{
    uint64_t entries = 0;
    for (uint32_t b = 0; b <= t->bmask; b++) {
        const vgw_bucket_t *bk = &t->buckets[b];
        for (uint32_t s = 0; s < VGW_BUCKET_SLOTS; s++) {
            if (!bk->tag[s])
                continue;
            if ((bk->ref[s] >> 1) >= t->capacity)
                return false;
            entries++;
        }
    }
    return entries == 2ull * used;
}

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int vgw_persist_open(vgw_worker_t *w, const vgw_worker_params_t *params, uint64_t seed)
{
    const vgw_persist_params_t *pp = params->persist;
    vgw_persist_report_t dummy, *rep = params->report ? params->report : &dummy;
    memset(rep, 0, sizeof *rep);
    uint64_t t0 = mono_us();
    const char *path = pp->path;
    memset(&w->ct, 0, sizeof w->ct);
    if (!path || !*path)
        return fail(rep, VGW_PERSIST_ERROR, "(none)", "no path given", 0);
    uint32_t capacity = params->conn_capacity;
    if (capacity == 0 || capacity > (1u << 30))
        return fail(rep, VGW_PERSIST_ERROR, path, "capacity out of range", 0);
    struct vgw_pfile *pf = calloc(1, sizeof *pf);
    if (!pf)
        return fail(rep, VGW_PERSIST_ERROR, path, "out of memory", ENOMEM);
    pf->fd = -1;
    if (pp->flags & VGW_PERSIST_F_DISCARD)
        unlink(path);

    bool fresh = true;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0 && errno != ENOENT) {
        free(pf);
        return fail(rep, VGW_PERSIST_ERROR, path, "open", errno);
    }
    if (fd >= 0) {
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            int e = errno;
            close(fd);
            free(pf);
            return fail(rep, VGW_PERSIST_ERROR, path,
                        e == EWOULDBLOCK ? "in use by another running forwarder (locked)" : "lock", e == EWOULDBLOCK ? 0 : e);
        }
        struct stat sb;
        uint8_t hb[VGW_PERSIST_HDR_SIZE];
        ssize_t n = fstat(fd, &sb) == 0 ? pread(fd, hb, sizeof hb, 0) : -1;
        char err[sizeof rep->err];
        vgw_persist_layout_t want = {.capacity = capacity, .worker_id = w->id, .nworkers = w->nworkers};
        int rc = n < 0 ? -1 : vgw_persist_check(hb, (size_t)n, (uint64_t)sb.st_size, &want, err, sizeof err);
        if (n < 0) {
            int e = errno;
            close(fd);
            free(pf);
            return fail(rep, VGW_PERSIST_ERROR, path, "read", e);
        }
        if (rc < 0) {
            close(fd);
            free(pf);
            rep->status = VGW_PERSIST_REFUSED;
            if (snprintf(rep->err, sizeof rep->err, "%s: %s", path, err) < 0)
                rep->err[0] = 0;
            return -1;
        }
        phdr_t h;
        memcpy(&h, hb, sizeof h);
        char boot[BOOT_ID_LEN];
        read_boot_id(boot);
        if (rc == 0 && memcmp(boot, h.boot_id, BOOT_ID_LEN) == 0) {
            pf->base = map_file(fd, (size_t)sb.st_size);
            if (!pf->base) {
                int e = errno;
                close(fd);
                free(pf);
                return fail(rep, VGW_PERSIST_ERROR, path, "map", e);
            }
            pf->fd = fd, pf->len = (size_t)sb.st_size, pf->h = (phdr_t *)pf->base;
            fresh = false;
        } else {
            /* Never completed, or written before a reboot (its clock and connections are gone):
             * nothing to continue, start a new file. */
            unlink(path);
            close(fd);
        }
    }
    if (fresh && create_file(path, w, capacity, seed, pf, rep) != 0) {
        free(pf);
        return -1;
    }
    phdr_t *h = pf->h;
    if (vgw_ctab_init_ext(&w->ct, capacity, h->seed, (vgw_conn_t *)(pf->base + h->conns_off),
                          (vgw_bucket_t *)(pf->base + h->buckets_off), fresh) != 0) {
        munmap(pf->base, pf->len);
        close(pf->fd);
        free(pf);
        return fail(rep, VGW_PERSIST_ERROR, path, "out of memory", ENOMEM);
    }
    w->ct.pf = pf;
    uint32_t *map6 = NULL;
    if (!fresh && (!(map6 = malloc(sizeof(uint32_t) * VGW_ADDR6_MAX)) || addr6_adopt(w, pf, map6) != 0)) {
        free(map6);
        return fail(rep, VGW_PERSIST_ERROR, path, "out of memory", ENOMEM);
    }
    if (w->dp->v6)
        vgw_ctab_enable_v6(&w->ct, (const uint8_t(*)[16])w->dp->addr6.addr);
    uint32_t now = (uint32_t)pp->now_ms;
    if (!fresh) {
        rep->prev_pid = h->pid;
        rep->prev_clean = h->open == 0;
        rep->attaches = h->attaches;
        memcpy(rep->prev_writer, h->writer, sizeof rep->prev_writer);
        rep->prev_writer[sizeof rep->prev_writer - 1] = 0;
        /* From here the records change: dying before the end must leave a file that says so. */
        h->open = 1;
        atomic_thread_fence(memory_order_seq_cst);
        /* Records' times are on the old process's clock; move them onto ours. */
        uint32_t shift = (uint32_t)(h->clock_offset_ms - pp->clock_offset_ms);
        uint32_t used = restore(w, shift, now, map6, rep);
        /* After a crash, trust nothing a half-done insert or removal may have left: rebuild. */
        if (!rep->prev_clean || !index_consistent(&w->ct, used)) {
            vgw_ctab_rebuild_index(&w->ct);
            rep->index_rebuilt = 1;
        } else {
            w->ct.count = used;
        }
        rep->restored = used - rep->expired;
        rep->orphaned = remap(w, atomic_load(&w->dp->state));
        rep->status = VGW_PERSIST_ATTACHED;
    } else {
        rep->status = VGW_PERSIST_CREATED;
    }
    free(map6);
    /* The copy is the node's table from here (its records name the node's ids now). */
    if (w->dp->v6)
        addr6_copy(pf, &w->dp->addr6);
    h->clock_offset_ms = pp->clock_offset_ms;
    h->pid = (uint32_t)getpid();
    h->attaches++;
    memset(h->writer, 0, sizeof h->writer);
    if (pp->writer)
        snprintf(h->writer, sizeof h->writer, "%s", pp->writer);
    /* Marked open last: a process that dies from here on leaves a file that says so. */
    atomic_thread_fence(memory_order_release);
    h->open = 1;
    rep->attach_us = mono_us() - t0;
    return 0;
}

void vgw_persist_close(vgw_worker_t *w)
{
    struct vgw_pfile *pf = w->ct.pf;
    if (!pf)
        return;
    if (pf->h) {
        /* Every store to the table happened before (the workers have stopped): the next
         * process may trust the index as it is. */
        atomic_thread_fence(memory_order_release);
        pf->h->open = 0;
    }
    if (pf->base)
        munmap(pf->base, pf->len);
    if (pf->fd >= 0)
        close(pf->fd); /* releases the lock */
    free(pf);
    w->ct.pf = NULL;
    w->ct.conns = NULL;
    w->ct.buckets = NULL;
}
