/* SPDX-License-Identifier: Apache-2.0
 * Connection state that outlives the process (connstate.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include <rte_eal.h>

#include "apply.h"
#include "connstate.h"

#define HUGETLBFS_MAGIC_ 0x958458f6u
#define TMPFS_MAGIC_ 0x01021994u
#define HUGE_DIR "/dev/hugepages"
#define SHM_DIR "/dev/shm"
/* The saved configuration is rewritten once the applied one has been quiet this long (a burst
 * of deltas writes once: serialising a node-limit document takes milliseconds on the control
 * thread, which must not sit between two deltas of a burst), and at the latest this long after
 * the first unsaved change, however busy the control socket is. */
#define SAVE_QUIET_MS 300u
#define SAVE_MAX_STALE_MS 3000u

enum { CS_AUTO = 0, CS_OFF = 1, CS_DIR = 2 };

static struct {
    int mode;
    bool discard;
    char dir[PATH_MAX];
    const char *fs;
    bool huge; /* the tables get huge pages there */
    uint32_t nworkers;
    char (*paths)[PATH_MAX];
    vgw_persist_params_t *params;
    vgw_persist_report_t *reports;
    char writer[64];
    /* after restore */
    bool restored_any;
    uint32_t restored, expired, invalid, orphaned, rebuilt, prev_pid;
    int prev_clean; /* -1 = no previous process */
    uint64_t attach_us;
    bool config_restored;
    uint64_t config_generation;
    /* saving */
    uint64_t saved_gen, seen_gen, changed_ms, unsaved_since_ms;
    uint64_t saves, save_errors;
} cs;

int connstate_setting(const char *key, char **v, int n)
{
    if (!strcmp(key, "conn-state") && n == 1) {
        if (!strcmp(v[0], "off"))
            cs.mode = CS_OFF;
        else if (!strcmp(v[0], "auto"))
            cs.mode = CS_AUTO;
        else if (v[0][0] == '/' && strlen(v[0]) < sizeof cs.dir - 32 && !strpbrk(v[0], "\"\\")) {
            cs.mode = CS_DIR;
            snprintf(cs.dir, sizeof cs.dir, "%s", v[0]);
        } else {
            return -1;
        }
        return 0;
    }
    if (!strcmp(key, "conn-state-discard") && n == 0) {
        cs.discard = true;
        return 0;
    }
    return -2;
}

bool connstate_flag_only(const char *key)
{
    return !strcmp(key, "conn-state-discard");
}

static const char *fs_of(const char *path)
{
    struct statfs s;
    if (statfs(path, &s) != 0)
        return NULL;
    if ((uint32_t)s.f_type == HUGETLBFS_MAGIC_)
        return "hugetlbfs";
    if ((uint32_t)s.f_type == TMPFS_MAGIC_)
        return "tmpfs";
    return "other";
}

/* Will the tables get huge pages there? hugetlbfs always; tmpfs only when mounted with huge=
 * (advise, within_size or always: the core asks with MADV_HUGEPAGE); anything else not. With
 * 4 KiB pages a table of millions of connections costs the fast path TLB misses (~15% at 1M
 * here, docs/benchmarks.md), so the start says so. */
static bool huge_pages_at(const char *dir, const char *fs)
{
    if (fs && !strcmp(fs, "hugetlbfs"))
        return true;
    FILE *fp = fopen("/proc/self/mounts", "re");
    if (!fp)
        return false;
    char line[1024], best_opts[512] = "";
    size_t best = 0;
    while (fgets(line, sizeof line, fp)) {
        char src[256], mnt[512], type[64], opts[512];
        if (sscanf(line, "%255s %511s %63s %511s", src, mnt, type, opts) != 4)
            continue;
        size_t n = strlen(mnt);
        bool under = !strncmp(dir, mnt, n) && (dir[n] == '/' || dir[n] == 0 || (n == 1 && mnt[0] == '/'));
        if (under && n >= best) {
            best = n;
            snprintf(best_opts, sizeof best_opts, "%s", opts);
        }
    }
    fclose(fp);
    const char *h = strstr(best_opts, "huge=");
    return h && strncmp(h + 5, "never", 5) != 0 && strncmp(h + 5, "deny", 4) != 0;
}

static int mkdirs(const char *dir)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s", dir);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = 0;
        if (mkdir(p, 0700) != 0 && errno != EEXIST)
            return -1;
        *s = '/';
    }
    return mkdir(p, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

static bool has_state(const char *dir)
{
    char p[PATH_MAX + 16];
    snprintf(p, sizeof p, "%s/conn-w0", dir);
    return access(p, F_OK) == 0;
}

/* The default: where state already is (an earlier start chose it), else hugetlbfs when it has
 * room for every worker's file after the EAL took its share, else tmpfs (/dev/shm): both are
 * memory that outlives the process; only the first gives the table huge pages for sure. */
static void resolve_auto(const fwd_t *f)
{
    const char *rt = rte_eal_get_runtime_dir();
    const char *prefix = strrchr(rt, '/');
    prefix = prefix && prefix[1] ? prefix + 1 : "rte";
    char hp[PATH_MAX], shm[PATH_MAX];
    snprintf(hp, sizeof hp, HUGE_DIR "/vgw-fwd/%s", prefix);
    snprintf(shm, sizeof shm, SHM_DIR "/vgw-fwd/%s", prefix);
    const char *hfs = fs_of(HUGE_DIR);
    bool huge = hfs && !strcmp(hfs, "hugetlbfs");
    if (huge && has_state(hp)) {
        snprintf(cs.dir, sizeof cs.dir, "%s", hp);
        return;
    }
    if (has_state(shm)) {
        snprintf(cs.dir, sizeof cs.dir, "%s", shm);
        return;
    }
    struct statfs s;
    uint64_t need = (uint64_t)f->nworkers * vgw_persist_file_size(f->conn_capacity);
    if (huge && statfs(HUGE_DIR, &s) == 0 && (uint64_t)s.f_bavail * (uint64_t)s.f_bsize >= need)
        snprintf(cs.dir, sizeof cs.dir, "%s", hp);
    else
        snprintf(cs.dir, sizeof cs.dir, "%s", shm);
}

static void discard_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char p[PATH_MAX + 256];
    uint32_t n = 0;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "conn-w", 6) && strncmp(e->d_name, "config", 6))
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        n += unlink(p) == 0;
    }
    closedir(d);
    fprintf(stderr, "vgw-fwd: connection state in %s discarded (%u files)\n", dir, n);
}

static int64_t clock_offset_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t mono = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    return (int64_t)mono - (int64_t)fwd_now_ms();
}

int connstate_prepare(fwd_t *f)
{
    cs.prev_clean = -1;
    if (cs.mode == CS_OFF)
        return 0;
    if (cs.mode == CS_AUTO)
        resolve_auto(f);
    cs.nworkers = f->nworkers;
    cs.paths = calloc(f->nworkers, sizeof *cs.paths);
    cs.params = calloc(f->nworkers, sizeof *cs.params);
    cs.reports = calloc(f->nworkers, sizeof *cs.reports);
    if (!cs.paths || !cs.params || !cs.reports)
        return fprintf(stderr, "vgw-fwd: out of memory\n"), -1;
    if (cs.discard)
        discard_dir(cs.dir);
    if (mkdirs(cs.dir) != 0)
        return fprintf(stderr, "vgw-fwd: conn-state directory %s: %s (or --conn-state off)\n", cs.dir,
                       strerror(errno)),
               -1;
    cs.fs = fs_of(cs.dir);
    cs.huge = huge_pages_at(cs.dir, cs.fs);
    if (!cs.huge && (uint64_t)f->conn_capacity * f->nworkers >= 1000000u)
        fprintf(stderr,
                "vgw-fwd: note: connection tables in %s get 4 KiB pages (%s without huge=): at this size that "
                "costs the fast path TLB misses; reserve hugepages (hugetlbfs) or mount the tmpfs with "
                "huge=within_size (docs/forwarder.md, \"Restarts and upgrades\")\n",
                cs.dir, cs.fs ? cs.fs : "?");
    snprintf(cs.writer, sizeof cs.writer, "vgw-fwd pid %d", (int)getpid());
    int64_t off = clock_offset_ms();
    vgw_persist_layout_t want = {.capacity = f->conn_capacity, .nworkers = f->nworkers};
    for (uint32_t i = 0; i < f->nworkers; i++) {
        if (snprintf(cs.paths[i], sizeof cs.paths[i], "%s/conn-w%u", cs.dir, i) >= (int)sizeof cs.paths[i])
            return fprintf(stderr, "vgw-fwd: conn-state directory name too long\n"), -1;
        cs.params[i] = (vgw_persist_params_t){.path = cs.paths[i], .clock_offset_ms = off, .writer = cs.writer};
        /* Every file is checked before any is attached: a refusal leaves all of them untouched. */
        int fd = open(cs.paths[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        uint8_t hdr[VGW_PERSIST_HDR_SIZE];
        struct stat st;
        ssize_t n = fstat(fd, &st) == 0 ? pread(fd, hdr, sizeof hdr, 0) : -1;
        close(fd);
        char err[384];
        want.worker_id = i;
        if (n >= 0 && vgw_persist_check(hdr, (size_t)n, (uint64_t)st.st_size, &want, err, sizeof err) < 0) {
            fprintf(stderr, "vgw-fwd: connection state refused: %s: %s\n", cs.paths[i], err);
            return -1;
        }
    }
    return 0;
}

const vgw_persist_params_t *connstate_params(uint32_t i)
{
    if (cs.mode == CS_OFF || !cs.params || i >= cs.nworkers)
        return NULL;
    cs.params[i].now_ms = fwd_now_ms();
    return &cs.params[i];
}

vgw_persist_report_t *connstate_report(uint32_t i)
{
    return cs.mode == CS_OFF || !cs.reports || i >= cs.nworkers ? NULL : &cs.reports[i];
}

int connstate_create_failed(uint32_t i)
{
    const vgw_persist_report_t *r = connstate_report(i);
    if (!r || (r->status != VGW_PERSIST_REFUSED && r->status != VGW_PERSIST_ERROR))
        return 0;
    fprintf(stderr, "vgw-fwd: worker %u: connection state %s: %s\n", i,
            r->status == VGW_PERSIST_REFUSED ? "refused" : "unusable", r->err);
    return 1;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "re");
    if (!fp)
        return NULL;
    struct vbuf b = {0};
    if (vb_read_file(&b, fp) != 0) {
        vb_free(&b);
        return NULL;
    }
    *len = b.len;
    return b.p ? b.p : calloc(1, 1);
}

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void connstate_restore(fwd_t *f)
{
    if (cs.mode == CS_OFF)
        return;
    uint64_t t0 = mono_us();
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/config", cs.dir);
    size_t len = 0;
    char *text = read_file(path, &len);
    if (text) {
        char err[512];
        if (fwd_apply_document(f, text, len, err, sizeof err) == 0) {
            cs.config_restored = true;
            cs.config_generation = cs.saved_gen = cs.seen_gen = vgw_dp_generation(f->dp);
        } else {
            fprintf(stderr, "vgw-fwd: warning: saved configuration %s not applied: %s\n", path, err);
        }
        free(text);
    }
    for (uint32_t i = 0; i < f->nworkers; i++) {
        vgw_persist_report_t *r = &cs.reports[i];
        if (r->status != VGW_PERSIST_ATTACHED)
            continue;
        /* The workers do not run yet: their records may be rewritten here. */
        r->orphaned = vgw_worker_persist_remap(f->workers[i].w);
        cs.restored_any = true;
        cs.restored += r->restored, cs.expired += r->expired, cs.invalid += r->invalid;
        cs.orphaned += r->orphaned, cs.rebuilt += r->index_rebuilt;
        cs.prev_pid = r->prev_pid;
        cs.prev_clean = cs.prev_clean == 0 ? 0 : r->prev_clean;
        cs.attach_us = cs.attach_us > r->attach_us ? cs.attach_us : r->attach_us;
    }
    cs.attach_us += mono_us() - t0;
    if (cs.restored_any)
        fprintf(stderr,
                "vgw-fwd: connection state in %s (%s): re-attached %u connections from pid %u (%s), %u expired, "
                "%u invalid, %u without their service or backend; configuration %s; %.1f ms\n",
                cs.dir, cs.fs ? cs.fs : "?", cs.restored, cs.prev_pid,
                cs.prev_clean ? "stopped cleanly" : "died: index rebuilt", cs.expired, cs.invalid, cs.orphaned,
                cs.config_restored ? "re-applied" : "not saved (connections wait for the shim's apply)",
                (double)cs.attach_us / 1000.0);
    else
        fprintf(stderr, "vgw-fwd: connection state in %s (%s): new tables\n", cs.dir, cs.fs ? cs.fs : "?");
}

void connstate_save(fwd_t *f, uint64_t now_ms, bool force)
{
    if (cs.mode == CS_OFF || !f->cfg)
        return;
    uint64_t gen = vgw_dp_generation(f->dp);
    if (gen == cs.saved_gen)
        return;
    if (gen != cs.seen_gen) {
        if (cs.seen_gen == cs.saved_gen)
            cs.unsaved_since_ms = now_ms;
        cs.seen_gen = gen;
        cs.changed_ms = now_ms;
    }
    if (!force && now_ms - cs.changed_ms < SAVE_QUIET_MS && now_ms - cs.unsaved_since_ms < SAVE_MAX_STALE_MS)
        return;
    size_t len = 0;
    char *text = vgw_cfg_serialize(f->cfg, &len);
    char tmp[PATH_MAX + 16], path[PATH_MAX + 16];
    snprintf(tmp, sizeof tmp, "%s/config.new", cs.dir);
    snprintf(path, sizeof path, "%s/config", cs.dir);
    int fd = text ? open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600) : -1;
    bool ok = fd >= 0;
    for (size_t off = 0; ok && off < len;) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        ok = w > 0;
        off += w > 0 ? (size_t)w : 0;
    }
    if (fd >= 0)
        close(fd);
    /* Renamed into place: a reader (the next start) sees the old document or the new one. */
    if (ok && rename(tmp, path) == 0) {
        cs.saved_gen = gen;
        cs.saves++;
    } else {
        unlink(tmp);
        if (cs.save_errors++ == 0)
            fprintf(stderr, "vgw-fwd: warning: cannot save the configuration in %s: %s\n", cs.dir, strerror(errno));
    }
    free(text);
}

void connstate_json(struct vbuf *b)
{
    if (cs.mode == CS_OFF) {
        vb_printf(b, "\"conn_state\":{\"enabled\":false}");
        return;
    }
    vb_printf(b,
              "\"conn_state\":{\"enabled\":true,\"dir\":\"%s\",\"fs\":\"%s\",\"huge_pages\":%s,\"reattached\":%s,\"restored\":%u,"
              "\"expired\":%u,\"invalid\":%u,\"orphaned\":%u,\"index_rebuilt\":%u,\"previous_stop\":%s,"
              "\"previous_pid\":%u,\"attach_ms\":%.1f,\"config_restored\":%s,\"config_generation\":%llu,"
              "\"saved_generation\":%llu,\"config_saves\":%llu,\"config_save_errors\":%llu}",
              cs.dir, cs.fs ? cs.fs : "", cs.huge ? "true" : "false", cs.restored_any ? "true" : "false", cs.restored, cs.expired, cs.invalid,
              cs.orphaned, cs.rebuilt,
              cs.prev_clean < 0 ? "null" : cs.prev_clean ? "\"clean\"" : "\"crash\"", cs.prev_pid,
              (double)cs.attach_us / 1000.0, cs.config_restored ? "true" : "false",
              (unsigned long long)cs.config_generation, (unsigned long long)cs.saved_gen,
              (unsigned long long)cs.saves, (unsigned long long)cs.save_errors);
}
