/* SPDX-License-Identifier: Apache-2.0
 * vgw-fwd: EAL, ports and lcores from a settings file and flags; the control thread's loop;
 * graceful stop on SIGTERM/SIGINT. See docs/forwarder.md.
 *
 *   vgw-fwd [EAL options] -- [--config FILE] [--socket PATH] [--workers N]
 *           [--ext DEV[,IP/LEN]] [--int DEV[,IP/LEN]] [--single-arm] [--route PFX/LEN,GW,ext|int]
 *           [--neigh IP,MAC,ext|int]
 *           [--conn-capacity N] [--mbufs N] [--rxd N] [--txd N] [--mtu N]
 *           [--conn-state auto|off|DIR] [--conn-state-discard]
 *           [--idle-sleep-max-us N] [--deep-idle-us N] [--deep-idle-after-ms N] [--apply FILE]
 *           [--no-sw-l4-csum] [--memory-budget BYTES] [--socket-group GROUP]
 *           [--neigh-refresh-s N] [--neigh-stale-s N] [--neigh-expire-s N] [--syn-cookie-key-file PATH]
 *           [--steer-clients auto|on|off]
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <limits.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_malloc.h>

#include "apply.h"
#include "connstate.h"
#include "ctl.h"
#include "fwd.h"
#include "neigh.h"
#include "predecessor.h"
#include "priv.h"
#include "protect.h"
#include "sync.h"
#include "telemetry.h"
#include "tsccal.h"
#include "vbuf.h"

fwd_t g_fwd;

static uint64_t g_mono0;

uint64_t fwd_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u - g_mono0;
}

static void on_signal(int sig)
{
    (void)sig;
    atomic_store(&g_fwd.stop, true);
}

static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *e;
    errno = 0;
    unsigned long long v = strtoull(s, &e, 10);
    if (!*s || *s == '-' || *e || errno || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
    uint64_t v;
    if (parse_u64(s, min, max, &v))
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int parse_seconds_ms(const char *s, uint32_t *ms)
{
    uint32_t v;
    if (parse_u32(s, 1, 86400, &v))
        return -1;
    *ms = v * 1000u;
    return 0;
}

static int parse_prefix(const char *s, uint32_t *addr, uint8_t *plen)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%s", s);
    char *slash = strchr(buf, '/');
    uint32_t l = 32;
    if (slash) {
        *slash = 0;
        if (parse_u32(slash + 1, 0, 32, &l))
            return -1;
    }
    if (inet_pton(AF_INET, buf, addr) != 1)
        return -1;
    *plen = (uint8_t)l;
    return 0;
}

static uint32_t mask_of(uint8_t plen)
{
    return plen ? htonl(~0u << (32 - plen)) : 0;
}

/* "DEV[,IP/LEN]" or "DEV IP/LEN" */
static int set_port(uint8_t role, const char *dev, const char *addr)
{
    fwd_port_t *p = &g_fwd.port[role];
    snprintf(p->name, sizeof p->name, "%s", dev);
    p->present = true;
    if (addr && *addr) {
        if (parse_prefix(addr, &p->ip, &p->plen) || p->plen == 0) {
            fprintf(stderr, "vgw-fwd: bad address '%s' for port %s (want IP/LEN)\n", addr, dev);
            return -1;
        }
        p->mask = mask_of(p->plen);
    }
    return 0;
}

static int add_route(const char *pfx, const char *gw, const char *port)
{
    if (g_fwd.nroutes >= FWD_MAX_ROUTES)
        return fprintf(stderr, "vgw-fwd: too many routes\n"), -1;
    route_t *r = &g_fwd.routes[g_fwd.nroutes];
    if (parse_prefix(pfx, &r->prefix, &r->plen))
        return fprintf(stderr, "vgw-fwd: bad route prefix '%s'\n", pfx), -1;
    r->mask = mask_of(r->plen);
    r->prefix &= r->mask;
    if (!strcmp(gw, "0.0.0.0") || !strcmp(gw, "connected"))
        r->gateway = 0;
    else if (inet_pton(AF_INET, gw, &r->gateway) != 1)
        return fprintf(stderr, "vgw-fwd: bad route gateway '%s'\n", gw), -1;
    if (!strcmp(port, "ext"))
        r->port = VGW_PORT_EXT;
    else if (!strcmp(port, "int"))
        r->port = VGW_PORT_INT;
    else
        return fprintf(stderr, "vgw-fwd: route port must be ext or int, not '%s'\n", port), -1;
    g_fwd.nroutes++;
    return 0;
}

static char g_apply_path[512];

/* One setting, from the file ("key value...") or a flag ("--key value"). */
static int setting(const char *key, char **v, int n)
{
    int cs = connstate_setting(key, v, n); /* conn-state, conn-state-discard (connstate.c) */
    if (cs != -2)
        return cs;
    if (!strcmp(key, "socket") && n == 1)
        snprintf(g_fwd.socket_path, sizeof g_fwd.socket_path, "%s", v[0]);
    else if (!strcmp(key, "workers") && n == 1)
        return parse_u32(v[0], 1, VGW_MAX_WORKERS, &g_fwd.nworkers);
    else if ((!strcmp(key, "ext") || !strcmp(key, "int")) && (n == 1 || n == 2))
        return set_port(key[0] == 'e' ? VGW_PORT_EXT : VGW_PORT_INT, v[0], n == 2 ? v[1] : NULL);
    else if (!strcmp(key, "single-arm") && n == 0)
        g_fwd.single_arm = true;
    else if (!strcmp(key, "mode") && n == 1 && (!strcmp(v[0], "single-arm") || !strcmp(v[0], "dual-arm")))
        g_fwd.single_arm = !strcmp(v[0], "single-arm");
    else if (!strcmp(key, "route") && n == 3)
        return add_route(v[0], v[1], v[2]);
    else if (!strcmp(key, "neigh") && n == 3) {
        if (g_fwd.nstatic_neigh >= FWD_MAX_ROUTES)
            return -1;
        typeof(g_fwd.static_neigh[0]) *sn = &g_fwd.static_neigh[g_fwd.nstatic_neigh];
        if (inet_pton(AF_INET, v[0], &sn->ip) != 1 || rte_ether_unformat_addr(v[1], &sn->mac) != 0 ||
            (strcmp(v[2], "ext") && strcmp(v[2], "int")))
            return -1;
        sn->role = !strcmp(v[2], "ext") ? VGW_PORT_EXT : VGW_PORT_INT;
        g_fwd.nstatic_neigh++;
    }
    else if (!strcmp(key, "conn-capacity") && n == 1)
        return parse_u32(v[0], 1024, 1u << 28, &g_fwd.conn_capacity);
    else if (!strcmp(key, "mbufs") && n == 1)
        return parse_u32(v[0], 1023, 1u << 24, &g_fwd.mbufs);
    else if (!strcmp(key, "rxd") && n == 1)
        return parse_u32(v[0], 64, 8192, &g_fwd.rxd);
    else if (!strcmp(key, "txd") && n == 1)
        return parse_u32(v[0], 64, 8192, &g_fwd.txd);
    else if (!strcmp(key, "idle-sleep-max-us") && n == 1)
        return parse_u32(v[0], 0, 100000, &g_fwd.idle_sleep_max_us);
    else if (!strcmp(key, "deep-idle-us") && n == 1)
        return parse_u32(v[0], 0, 1000000, &g_fwd.deep_idle_us);
    else if (!strcmp(key, "deep-idle-after-ms") && n == 1)
        return parse_u32(v[0], 0, 3600000, &g_fwd.deep_idle_after_ms);
    else if (!strcmp(key, "mtu") && n == 1) {
        uint32_t m;
        if (parse_u32(v[0], 576, 9000, &m))
            return -1;
        g_fwd.mtu = (uint16_t)m;
    } else if (!strcmp(key, "apply") && n == 1)
        snprintf(g_apply_path, sizeof g_apply_path, "%s", v[0]);
    else if (!strcmp(key, "no-sw-l4-csum") && n == 0)
        g_fwd.no_sw_csum = true;
    else if (!strcmp(key, "memory-budget") && n == 1)
        return parse_u64(v[0], 1ull << 20, 1ull << 50, &g_fwd.memory_budget);
    else if (!strcmp(key, "neigh-refresh-s") && n == 1)
        return parse_seconds_ms(v[0], &g_fwd.neigh_refresh_ms);
    else if (!strcmp(key, "neigh-stale-s") && n == 1)
        return parse_seconds_ms(v[0], &g_fwd.neigh_stale_ms);
    else if (!strcmp(key, "neigh-expire-s") && n == 1)
        return parse_seconds_ms(v[0], &g_fwd.neigh_expire_ms);
    else if (!strcmp(key, "socket-group") && n == 1 && strlen(v[0]) < sizeof g_fwd.socket_group)
        snprintf(g_fwd.socket_group, sizeof g_fwd.socket_group, "%s", v[0]);
    else if (!strcmp(key, "steer-clients") && n == 1 && (!strcmp(v[0], "auto") || !strcmp(v[0], "on") || !strcmp(v[0], "off")))
        g_fwd.steer_clients = !strcmp(v[0], "on") ? FWD_STEER_ON : !strcmp(v[0], "off") ? FWD_STEER_OFF : FWD_STEER_AUTO;
    else if (!strcmp(key, "syn-cookie-key-file") && n == 1 && v[0][0] && strlen(v[0]) < sizeof g_fwd.cookie_key_file)
        snprintf(g_fwd.cookie_key_file, sizeof g_fwd.cookie_key_file, "%s", v[0]);
    else if (!strncmp(key, "sync-", 5))
        return sync_setting(key, v, n);
    else
        return -1;
    return 0;
}

static int hexval(uint8_t c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* --syn-cookie-key-file: the SYN cookie key, the same on every node of a cluster so that a
 * client's ACK validates on whichever node ECMP sends it to (docs/forwarder.md, "SYN cookie key").
 * A secret: a regular file (a symbolic link to one is fine: Kubernetes mounts secrets so) owned by
 * root or the forwarder's user, with no permission for group or others (0600 or 0400). Content:
 * hex digits, at least 32 (`openssl rand -hex 16`; the first 32 are the key), or else at least 16
 * bytes (`head -c 16 /dev/urandom`; the first 16 are the key). An all-zero key is refused. */
static int read_key_file(const char *setting, const char *path, uint8_t key[16])
{
    char p[64];
    snprintf(p, sizeof p, "vgw-fwd: %s", setting); /* the same rules for the sync key (sync.c) */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return fprintf(stderr, "%s %s: %s\n", p, path, strerror(errno)), -1;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fprintf(stderr, "%s %s: not a regular file\n", p, path), -1;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        close(fd);
        return fprintf(stderr,
                       "%s %s: mode %04o gives group or others access to the key; it must be readable by its "
                       "owner only (chmod 600 %s)\n",
                       p, path, (unsigned)(st.st_mode & 07777), path),
               -1;
    }
    if (st.st_uid != 0 && st.st_uid != geteuid()) {
        close(fd);
        return fprintf(stderr, "%s %s: owned by uid %u; it must be owned by root or by the forwarder's user (uid %u)\n",
                       p, path, (unsigned)st.st_uid, (unsigned)geteuid()),
               -1;
    }
    uint8_t buf[4096];
    size_t len = 0;
    ssize_t r;
    while (len < sizeof buf && (r = read(fd, buf + len, sizeof buf - len)) != 0) {
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            close(fd);
            explicit_bzero(buf, sizeof buf);
            return fprintf(stderr, "%s %s: %s\n", p, path, strerror(e)), -1;
        }
        len += (size_t)r;
    }
    close(fd);
    size_t text = len;
    while (text && (buf[text - 1] == '\n' || buf[text - 1] == '\r' || buf[text - 1] == ' ' || buf[text - 1] == '\t'))
        text--;
    bool hex = text >= 32;
    for (size_t i = 0; i < text && hex; i++)
        hex = hexval(buf[i]) >= 0;
    if (hex) {
        for (int i = 0; i < 16; i++)
            key[i] = (uint8_t)(hexval(buf[2 * i]) << 4 | hexval(buf[2 * i + 1]));
    } else if (len >= 16) {
        memcpy(key, buf, 16);
    } else {
        explicit_bzero(buf, sizeof buf);
        return fprintf(stderr, "%s %s: %zu bytes; the key needs 16 bytes or 32 hex digits\n", p, path, len), -1;
    }
    explicit_bzero(buf, sizeof buf);
    uint8_t any = 0;
    for (int i = 0; i < 16; i++)
        any |= key[i];
    if (!any)
        return fprintf(stderr, "%s %s: the key is all zero\n", p, path), -1;
    return 0;
}

static int read_settings_file(const char *path)
{
    FILE *fp = fopen(path, "r");
    if (!fp)
        return fprintf(stderr, "vgw-fwd: cannot open %s: %s\n", path, strerror(errno)), -1;
    char line[512];
    unsigned ln = 0;
    int rc = 0;
    while (fgets(line, sizeof line, fp)) {
        ln++;
        char *h = strchr(line, '#');
        if (h)
            *h = 0;
        char *t[8], *save = NULL;
        int n = 0;
        for (char *tok = strtok_r(line, " \t\r\n", &save); tok && n < 8; tok = strtok_r(NULL, " \t\r\n", &save))
            t[n++] = tok;
        if (!n)
            continue;
        if (setting(t[0], t + 1, n - 1) != 0) {
            fprintf(stderr, "vgw-fwd: %s line %u: bad setting '%s'\n", path, ln, t[0]);
            rc = -1;
        }
    }
    fclose(fp);
    return rc;
}

static int parse_args(int argc, char **argv)
{
    /* Settings file first (flags override it), so find --config before the rest. */
    for (int i = 1; i < argc - 1; i++)
        if (!strcmp(argv[i], "--config")) {
            snprintf(g_fwd.config_path, sizeof g_fwd.config_path, "%s", argv[i + 1]);
            if (read_settings_file(g_fwd.config_path))
                return -1;
        }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2))
            return fprintf(stderr, "vgw-fwd: unexpected argument '%s'\n", a), -1;
        const char *key = a + 2;
        if (!strcmp(key, "config")) {
            i++;
            continue;
        }
        if (!strcmp(key, "help")) {
            printf("usage: vgw-fwd [EAL options] -- [--config FILE] [--socket PATH] [--workers N]\n"
                   "       [--ext DEV[,IP/LEN]] [--int DEV[,IP/LEN]] [--single-arm] [--route PFX/LEN,GW,ext|int]\n"
                   "       [--neigh IP,MAC,ext|int]\n"
                   "       [--conn-capacity N] [--mbufs N] [--rxd N] [--txd N] [--mtu N]\n"
                   "       [--conn-state auto|off|DIR] [--conn-state-discard]\n"
                   "       [--idle-sleep-max-us N] [--deep-idle-us N] [--deep-idle-after-ms N]\n"
                   "       [--apply FILE] [--no-sw-l4-csum] [--memory-budget BYTES] [--socket-group GROUP]\n"
                   "       [--neigh-refresh-s N] [--neigh-stale-s N] [--neigh-expire-s N]\n"
                   "       [--syn-cookie-key-file PATH] [--steer-clients auto|on|off]\n"
                   "       [--sync-peer IP]... [--sync-port N] [--sync-key-file PATH] [--sync-heartbeat-ms N]\n"
                   "       [--sync-dead-ms N]\n");
            exit(0);
        }
        char *v[4];
        int n = 0;
        char buf[512];
        bool flag_only = !strcmp(key, "single-arm") || !strcmp(key, "no-sw-l4-csum") || connstate_flag_only(key);
        if (!flag_only) {
            if (i + 1 >= argc)
                return fprintf(stderr, "vgw-fwd: %s needs a value\n", a), -1;
            snprintf(buf, sizeof buf, "%s", argv[++i]);
            char *save = NULL;
            bool split = !strcmp(key, "ext") || !strcmp(key, "int") || !strcmp(key, "route") || !strcmp(key, "neigh");
            for (char *tok = split ? strtok_r(buf, ",", &save) : buf; tok && n < 4;
                 tok = split ? strtok_r(NULL, ",", &save) : NULL)
                v[n++] = tok;
        }
        if (setting(key, v, n) != 0)
            return fprintf(stderr, "vgw-fwd: bad option %s\n", a), -1;
    }
    return 0;
}

static int port_init(fwd_port_t *p)
{
    if (rte_eth_dev_get_port_by_name(p->name, &p->port_id) != 0) {
        fprintf(stderr, "vgw-fwd: no DPDK port named '%s' (give it with --vdev or -a)\n", p->name);
        return -1;
    }
    struct rte_eth_dev_info info;
    if (rte_eth_dev_info_get(p->port_id, &info) != 0)
        return -1;
    /* af_packet spreads flows over its queues with the kernel's fanout, which rolls a flow over to
     * another socket when one is full: a client flow may change workers mid-connection. */
    if (g_fwd.steer_clients == FWD_STEER_AUTO && info.driver_name && strstr(info.driver_name, "af_packet"))
        g_fwd.steering = true;
    uint16_t nq = (uint16_t)g_fwd.nworkers;
    if (info.max_rx_queues < nq || info.max_tx_queues < nq) {
        fprintf(stderr, "vgw-fwd: %s has %u rx / %u tx queues, %u workers need %u each (af_packet: qpairs=%u)\n",
                p->name, info.max_rx_queues, info.max_tx_queues, nq, nq, nq);
        return -1;
    }
    struct rte_eth_conf conf;
    memset(&conf, 0, sizeof conf);
    uint64_t rss = info.flow_type_rss_offloads & (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP);
    if (nq > 1 && rss) {
        conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
        conf.rx_adv_conf.rss_conf.rss_hf = rss;
    }
    if (info.rx_offload_capa & RTE_ETH_RX_OFFLOAD_CHECKSUM)
        conf.rxmode.offloads |= info.rx_offload_capa & RTE_ETH_RX_OFFLOAD_CHECKSUM;
    int rc = rte_eth_dev_configure(p->port_id, nq, nq, &conf);
    if (rc)
        return fprintf(stderr, "vgw-fwd: configure %s: %s\n", p->name, rte_strerror(-rc)), -1;
    uint16_t rxd = (uint16_t)g_fwd.rxd, txd = (uint16_t)g_fwd.txd;
    rte_eth_dev_adjust_nb_rx_tx_desc(p->port_id, &rxd, &txd);
    int sock = rte_eth_dev_socket_id(p->port_id);
    if (sock < 0)
        sock = (int)rte_socket_id();
    for (uint16_t q = 0; q < nq; q++) {
        if ((rc = rte_eth_rx_queue_setup(p->port_id, q, rxd, (unsigned)sock, NULL, g_fwd.pool)) ||
            (rc = rte_eth_tx_queue_setup(p->port_id, q, txd, (unsigned)sock, NULL)))
            return fprintf(stderr, "vgw-fwd: queue setup %s: %s\n", p->name, rte_strerror(-rc)), -1;
    }
    if ((rc = rte_eth_dev_start(p->port_id)))
        return fprintf(stderr, "vgw-fwd: start %s: %s\n", p->name, rte_strerror(-rc)), -1;
    rte_eth_promiscuous_enable(p->port_id); /* best effort: not every PMD has it */
    rte_eth_macaddr_get(p->port_id, &p->mac);
    uint16_t mtu = 0;
    rte_eth_dev_get_mtu(p->port_id, &mtu);
    p->mtu = mtu ? mtu : 1500;
    return 0;
}

static void remove_runtime_dir(const char *dir)
{
    if (!dir[0] || !strstr(dir, "/dpdk/"))
        return;
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[PATH_MAX + 256];
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

int main(int argc, char **argv)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    g_mono0 = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u - 1;
    clock_gettime(CLOCK_REALTIME, &ts);
    g_fwd.start_unix_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    g_fwd.conn_capacity = 262144;
    g_fwd.rxd = 512, g_fwd.txd = 512;
    g_fwd.idle_sleep_max_us = 1000;
    g_fwd.deep_idle_us = 5000;
    g_fwd.deep_idle_after_ms = 1000;
    g_fwd.mtu = 1500;
    g_fwd.neigh_refresh_ms = 30000;
    g_fwd.neigh_stale_ms = 120000;
    g_fwd.neigh_expire_ms = 300000;
    snprintf(g_fwd.socket_path, sizeof g_fwd.socket_path, "/run/vgw-fwd.sock");

    /* computed before rte_eal_init, which may reorder argv */
    char eal_dir[PATH_MAX];
    fwd_eal_runtime_dir(argc, argv, eal_dir, sizeof eal_dir);
    if (fwd_wait_predecessor(argc, argv, 5000) != 0)
        return 2;
    tsccal_begin();
    int eal = rte_eal_init(argc, argv);
    tsccal_end();
    if (eal < 0) {
        fprintf(stderr, "vgw-fwd: EAL init failed: %s\n", rte_strerror(rte_errno));
        return 2;
    }
    fwd_write_pidfile(eal_dir);
    argc -= eal;
    argv += eal;
    argv[0] = (char *)"vgw-fwd";
    int exit_code = 1;
    /* Scheduler tables are 64 KiB .. 2 MiB and come and go with every change: serve allocations
     * from 64 KiB up with their own mappings so a freed table goes back to the system at once
     * (glibc's adaptive threshold would otherwise move them into the heap, where freed memory
     * stays: resident memory would creep up with every change). */
    mallopt(M_MMAP_THRESHOLD, 64 * 1024);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);

    if (parse_args(argc, argv) != 0) {
        exit_code = 2;
        goto out_eal;
    }
    if (g_fwd.cookie_key_file[0] && read_key_file("syn-cookie-key-file", g_fwd.cookie_key_file, g_fwd.cookie_key) != 0) {
        exit_code = 2;
        goto out_eal;
    }
    if (sync_init() != 0 || (g_sync.npeers && read_key_file("sync-key-file", g_sync.key_file, g_sync.key) != 0)) {
        exit_code = 2;
        goto out_eal;
    }
    unsigned nlcores = rte_lcore_count();
    if (nlcores < 2) {
        fprintf(stderr, "vgw-fwd: needs a main lcore and at least one worker lcore (e.g. -l 0-1)\n");
        exit_code = 2;
        goto out_eal;
    }
    if (!g_fwd.nworkers)
        g_fwd.nworkers = nlcores - 1;
    if (g_fwd.nworkers > nlcores - 1) {
        fprintf(stderr, "vgw-fwd: %u workers need %u lcores, EAL has %u\n", g_fwd.nworkers, g_fwd.nworkers + 1,
                nlcores);
        exit_code = 2;
        goto out_eal;
    }
    if (!g_fwd.port[VGW_PORT_EXT].present) {
        fprintf(stderr, "vgw-fwd: --ext DEV[,IP/LEN] is required\n");
        exit_code = 2;
        goto out_eal;
    }
    if (!g_fwd.single_arm && !g_fwd.port[VGW_PORT_INT].present) {
        fprintf(stderr, "vgw-fwd: dual-arm mode needs --int DEV[,IP/LEN] (or --single-arm)\n");
        exit_code = 2;
        goto out_eal;
    }

    uint32_t ndev = g_fwd.single_arm ? 1 : 2;
    uint32_t need = g_fwd.nworkers * ndev * (g_fwd.rxd + g_fwd.txd + 2 * FWD_BURST) + FWD_SLOW_RING +
                    g_fwd.nworkers * (FWD_HANDOFF_RING + FWD_TXQ_RING) + 2 * FWD_NEIGH_SIZE + 1024;
    if (!g_fwd.mbufs)
        g_fwd.mbufs = need < 16383 ? 16383 : need;
    g_fwd.pool = rte_pktmbuf_pool_create("vgw_mbufs", g_fwd.mbufs, 256, (uint16_t)FWD_PRIV_SIZE,
                                         RTE_MBUF_DEFAULT_BUF_SIZE, (int)rte_socket_id());
    if (!g_fwd.pool) {
        fprintf(stderr, "vgw-fwd: mbuf pool (%u): %s (raise -m / hugepages, or lower --mbufs)\n", g_fwd.mbufs,
                rte_strerror(rte_errno));
        goto out_eal;
    }
    g_fwd.slow = rte_ring_create("vgw_slow", FWD_SLOW_RING, (int)rte_socket_id(), RING_F_SC_DEQ);
    vgw_dp_params_t dpp = {.nworkers = g_fwd.nworkers};
    memcpy(dpp.cookie_key, g_fwd.cookie_key, sizeof dpp.cookie_key); /* all zero: a random key */
    /* The cookie clock is the wall clock (nodes that share a key must agree on the cookie period;
     * keep them NTP-synchronised): its offset from the monotonic clock the workers are given. */
    clock_gettime(CLOCK_REALTIME, &ts);
    dpp.cookie_clock_offset_ms =
        (int64_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u) - (int64_t)fwd_now_ms();
    g_fwd.dp = vgw_dp_create(&dpp);
    explicit_bzero(&dpp, sizeof dpp);
    explicit_bzero(g_fwd.cookie_key, sizeof g_fwd.cookie_key); /* the core keeps its own copy */
    g_fwd.workers = rte_zmalloc("vgw_workers", sizeof(fwd_worker_t) * g_fwd.nworkers, RTE_CACHE_LINE_SIZE);
    if (!g_fwd.slow || !g_fwd.dp || !g_fwd.workers || neigh_init(&g_fwd) || svcmap_init(&g_fwd) ||
        prot_init(&g_fwd.prot) || fwd_apply_init(&g_fwd)) {
        fprintf(stderr, "vgw-fwd: out of memory\n");
        goto out_eal;
    }
    if (g_fwd.single_arm) {
        rte_free(g_fwd.port[VGW_PORT_INT].neigh);
        g_fwd.port[VGW_PORT_INT].neigh = NULL;
        g_fwd.port[VGW_PORT_INT].present = false;
    }
    for (uint32_t r = 0; r < ndev; r++)
        if (port_init(&g_fwd.port[r]) != 0)
            goto out_ports;
    if (g_fwd.single_arm) {
        g_fwd.port[VGW_PORT_INT] = g_fwd.port[VGW_PORT_EXT]; /* one link, one neighbour table */
        g_fwd.port[VGW_PORT_INT].present = false;
    } else if (g_fwd.port[VGW_PORT_EXT].port_id == g_fwd.port[VGW_PORT_INT].port_id) {
        fprintf(stderr, "vgw-fwd: ext and int are the same device: use --single-arm\n");
        goto out_ports;
    }

    if (g_fwd.steer_clients != FWD_STEER_AUTO)
        g_fwd.steering = g_fwd.steer_clients == FWD_STEER_ON;
    /* A peer's record must reach the worker that will see its client's packets: with steering
     * that worker is a function of the tuple (vgw_sync_owner); NIC RSS is not one we can compute. */
    if (g_sync.npeers && g_fwd.nworkers > 1 && !g_fwd.steering) {
        if (g_fwd.steer_clients == FWD_STEER_OFF) {
            fprintf(stderr, "vgw-fwd: sync-peer with more than one worker needs steer-clients on or auto\n");
            exit_code = 2; /* a settings error, like every other */
            goto out_ports;
        }
        g_fwd.steering = true;
    }
    if (g_fwd.nworkers < 2)
        g_fwd.steering = false; /* one worker owns everything */
    /* Connection tables that outlive the process: checked (and refused) before any is used. */
    if (connstate_prepare(&g_fwd) != 0) {
        exit_code = 2;
        goto out_ports;
    }
    unsigned lcore = rte_get_next_lcore(-1, 1, 0);
    for (uint32_t i = 0; i < g_fwd.nworkers; i++, lcore = rte_get_next_lcore(lcore, 1, 0)) {
        fwd_worker_t *fw = &g_fwd.workers[i];
        char name[32];
        fw->id = i;
        fw->lcore = lcore;
        uint64_t seed = 0;
        if (getrandom(&seed, sizeof seed, 0) != sizeof seed)
            seed = (uint64_t)rte_rdtsc() * 0x9e3779b97f4a7c15ULL;
        fw->w = vgw_worker_create(g_fwd.dp, &(vgw_worker_params_t){.id = i,
                                                                   .conn_capacity = g_fwd.conn_capacity,
                                                                   .mtu = g_fwd.mtu,
                                                                   .flags = (uint16_t)((g_fwd.no_sw_csum ? VGW_WF_NO_SW_L4_CSUM : 0) |
                                                                                       (g_fwd.steering ? VGW_WF_STEER_CLIENTS : 0) |
                                                                                       (g_sync.npeers ? VGW_WF_SYNC : 0)),
                                                                   .hash_seed = seed,
                                                                   .persist = connstate_params(i),
                                                                   .report = connstate_report(i)});
        if (!fw->w && connstate_create_failed(i)) {
            exit_code = 2;
            goto out_workers;
        }
        snprintf(name, sizeof name, "vgw_ho%u", i);
        fw->handoff = rte_ring_create(name, FWD_HANDOFF_RING, (int)rte_socket_id(), RING_F_SC_DEQ);
        snprintf(name, sizeof name, "vgw_tx%u", i);
        fw->txq = rte_ring_create(name, FWD_TXQ_RING, (int)rte_socket_id(), RING_F_SC_DEQ);
        fw->svc = calloc((size_t)FWD_MAX_SVC_SLOTS * SVC_CNT_MAX, sizeof(uint64_t));
        if (shadow_init(&fw->shadow, g_fwd.conn_capacity) != 0) {
            fprintf(stderr, "vgw-fwd: worker %u: out of memory for the connection shadow set\n", i);
            goto out_workers;
        }
        fw->svc_snap = calloc((size_t)FWD_MAX_SVC_SLOTS * SVC_CNT_MAX, sizeof(uint64_t));
        atomic_store(&fw->svcmap_gen, UINT64_MAX);
        if (!fw->w || !fw->handoff || !fw->txq || !fw->svc || !fw->svc_snap) {
            fprintf(stderr, "vgw-fwd: worker %u: out of memory (lower --conn-capacity?)\n", i);
            goto out_workers;
        }
    }
    for (uint32_t i = 0; i < g_fwd.nstatic_neigh; i++)
        if (neigh_add_static(&g_fwd, g_fwd.static_neigh[i].role, g_fwd.static_neigh[i].ip,
                             &g_fwd.static_neigh[i].mac) != 0) {
            fprintf(stderr, "vgw-fwd: static neighbour table full\n");
            goto out_workers;
        }
    if (ctl_open(&g_fwd) != 0)
        goto out_workers;
    /* The saved configuration first (connections continue before the shim re-applies); then
     * --apply, which is fatal only when it leaves nothing applied. */
    connstate_restore(&g_fwd);
    if (g_apply_path[0] && fwd_apply_file(&g_fwd, g_apply_path) != 0 && vgw_dp_generation(g_fwd.dp) == 0)
        goto out_ctl;
    if (fwd_telemetry_register() != 0)
        fprintf(stderr, "vgw-fwd: warning: telemetry commands not registered (telemetry disabled?)\n");

    for (uint32_t i = 0; i < g_fwd.nworkers; i++)
        rte_eal_remote_launch(fwd_worker_main, &g_fwd.workers[i], g_fwd.workers[i].lcore);
    neigh_announce(&g_fwd, true);

    char a[2][INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &g_fwd.port[0].ip, a[0], sizeof a[0]);
    inet_ntop(AF_INET, &g_fwd.port[1].ip, a[1], sizeof a[1]);
    printf("vgw-fwd ready pid=%d socket=%s workers=%u mode=%s ext=%s/%s int=%s/%s steer-clients=%s\n", (int)getpid(),
           g_fwd.socket_path, g_fwd.nworkers, g_fwd.single_arm ? "single-arm" : "dual-arm", g_fwd.port[0].name,
           a[0], g_fwd.port[1].name, a[1], g_fwd.steering ? "on" : "off");
    fflush(stdout);

    uint64_t last_hk = 0, last_slow = 0;
    while (!atomic_load(&g_fwd.stop)) {
        uint64_t now = fwd_now_ms();
        if (rte_ring_count(g_fwd.slow)) {
            slow_path_run(&g_fwd, now);
            last_slow = now;
        }
        /* The control thread sleeps in poll(): 1 ms while ARP/slow-path work is recent, 10 ms
         * when the node is quiet (a worker's slow-path packet waits at most that long). */
        ctl_poll(&g_fwd, rte_ring_count(g_fwd.slow) ? 0 : now - last_slow < 1000 ? 1 : 10);
        if (now - last_hk >= 200) {
            neigh_housekeep(&g_fwd, now);
            pthread_mutex_lock(&g_ctl_lock); /* see dp_apply in apply.c */
            vgw_dp_reclaim(g_fwd.dp);
            pthread_mutex_unlock(&g_ctl_lock);
            svcmap_reclaim(&g_fwd);
            last_hk = now;
        }
        sync_tick(&g_fwd, now); /* heartbeats to the sync peers, takeover of a silent one */
        connstate_save(&g_fwd, now, false); /* the applied configuration, beside the tables */
    }
    connstate_save(&g_fwd, fwd_now_ms(), true);
    exit_code = 0;
    fprintf(stderr, "vgw-fwd: stopping\n");
    rte_eal_mp_wait_lcore();
out_ctl:
    atomic_store(&g_fwd.stop, true);
    rte_eal_mp_wait_lcore();
    ctl_close(&g_fwd);
out_workers:
    for (uint32_t i = 0; i < g_fwd.nworkers; i++) {
        fwd_worker_t *fw = &g_fwd.workers[i];
        if (fw->handoff) {
            struct rte_mbuf *m = NULL;
            while (rte_ring_dequeue(fw->handoff, (void **)&m) == 0)
                rte_pktmbuf_free(m);
            rte_ring_free(fw->handoff);
        }
        if (fw->txq) {
            struct rte_mbuf *m = NULL;
            while (rte_ring_dequeue(fw->txq, (void **)&m) == 0)
                rte_pktmbuf_free(m);
            rte_ring_free(fw->txq);
        }
        if (fw->w) {
            pthread_mutex_lock(&g_ctl_lock); /* the telemetry thread reads workers' counters under it */
            vgw_worker_destroy(fw->w);
            fw->w = NULL;
            pthread_mutex_unlock(&g_ctl_lock);
        }
        free(fw->svc);
        free(fw->svc_snap);
        shadow_fini(&fw->shadow);
    }
out_ports:
    for (uint32_t r = 0; r < ndev; r++)
        if (g_fwd.port[r].present && rte_eth_dev_is_valid_port(g_fwd.port[r].port_id)) {
            rte_eth_dev_stop(g_fwd.port[r].port_id);
            rte_eth_dev_close(g_fwd.port[r].port_id);
        }
    neigh_fini(&g_fwd);
    if (g_fwd.dp) {
        vgw_dp_reclaim(g_fwd.dp);
        vgw_dp_destroy(g_fwd.dp);
    }
    svcmap_fini(&g_fwd);
    prot_fini(&g_fwd.prot);
    fwd_apply_fini(&g_fwd);
    if (g_fwd.slow) {
        struct rte_mbuf *mb = NULL;
        while (rte_ring_dequeue(g_fwd.slow, (void **)&mb) == 0)
            rte_pktmbuf_free(mb);
        rte_ring_free(g_fwd.slow);
    }
    rte_free(g_fwd.workers);
out_eal:;
    /* rte_eal_cleanup leaves the runtime directory (config, telemetry socket) behind: remove it
     * so that stopped forwarders leave no files (hugepage files are released by the EAL). */
    char rundir[PATH_MAX];
    snprintf(rundir, sizeof rundir, "%s", rte_eal_get_runtime_dir());
    rte_eal_cleanup();
    remove_runtime_dir(rundir);
    return exit_code;
}
