/* Waiting for a predecessor that is still exiting (predecessor.h). */
#include "predecessor.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PIDFILE "vgw-fwd.pid"
#define PF_EXITING_FLAG 0x4u /* include/linux/sched.h: getting shut down */

int fwd_eal_runtime_dir(int argc, char **argv, char *out, uint32_t size)
{
    const char *prefix = "rte";
    out[0] = '\0';
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (!strcmp(argv[i], "--in-memory") || !strcmp(argv[i], "--no-shconf"))
            return 0;
        if (!strcmp(argv[i], "--file-prefix") && i + 1 < argc)
            prefix = argv[++i];
        else if (!strncmp(argv[i], "--file-prefix=", 14))
            prefix = argv[i] + 14;
    }
    const char *base = "/var/run";
    if (getuid() != 0) {
        const char *xdg = getenv("XDG_RUNTIME_DIR");
        base = xdg ? xdg : "/tmp";
    }
    int n = snprintf(out, size, "%s/dpdk/%s", base, prefix);
    if (n < 0 || (uint32_t)n >= size) {
        out[0] = '\0';
        return -1;
    }
    return 0;
}

enum proc_state { PROC_GONE, PROC_EXITING, PROC_RUNNING };

/* SIGKILL pending in a /proc/<pid>/status mask line ("SigPnd:\t0000000000000100"). */
static bool kill_pending(const char *line)
{
    const char *hex = strchr(line, ':');
    if (!hex)
        return false;
    unsigned long long mask = strtoull(hex + 1, NULL, 16);
    return (mask >> (SIGKILL - 1)) & 1u;
}

/* A task's state letter and flags from its stat file; false if it is gone. */
static bool task_stat(const char *path, char *state, unsigned *flags)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* pid (comm) state ppid pgrp session tty_nr tpgid flags: comm may hold spaces and parentheses */
    char *rp = strrchr(buf, ')');
    return rp && sscanf(rp + 1, " %c %*d %*d %*d %*d %*d %u", state, flags) == 2;
}

/* The process as a whole: its leader turns zombie at once when killed, while its other threads (the
 * lcores) are still tearing down, holding the memory and the files; it is gone when all are. */
static enum proc_state proc_state(long pid)
{
    char path[96];
    snprintf(path, sizeof path, "/proc/%ld/task", pid);
    DIR *d = opendir(path);
    if (!d)
        return PROC_GONE;
    bool alive = false, exiting = false;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        char state = 0;
        unsigned flags = 0;
        snprintf(path, sizeof path, "/proc/%ld/task/%.16s/stat", pid, e->d_name);
        if (!task_stat(path, &state, &flags) || state == 'Z' || state == 'X')
            continue;
        alive = true;
        if (flags & PF_EXITING_FLAG)
            exiting = true;
    }
    closedir(d);
    if (!alive)
        return PROC_GONE; /* zombies have released everything; only their parent's wait() remains */
    if (exiting)
        return PROC_EXITING;
    /* killed, but not yet scheduled to act on it */
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return PROC_GONE;
    enum proc_state st = PROC_RUNNING;
    char line[256];
    while (fgets(line, sizeof line, f))
        if ((!strncmp(line, "SigPnd:", 7) || !strncmp(line, "ShdPnd:", 7)) && kill_pending(line))
            st = PROC_EXITING;
    fclose(f);
    return st;
}

static bool read_comm(const char *path, char *out, size_t size)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    bool ok = fgets(out, (int)size, f) != NULL;
    fclose(f);
    return ok;
}

/* Whether pid runs the same program as this process (after a reboot the pid may be anyone's). The
 * name, not /proc/<pid>/exe: a killed process's leader is a zombie at once, and a zombie has no exe. */
static bool same_program(long pid)
{
    char path[64], theirs[32], ours[32];
    snprintf(path, sizeof path, "/proc/%ld/comm", pid);
    return read_comm(path, theirs, sizeof theirs) && read_comm("/proc/self/comm", ours, sizeof ours) &&
           !strcmp(theirs, ours);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int fwd_wait_predecessor(int argc, char **argv, uint32_t timeout_ms)
{
    char dir[PATH_MAX], path[PATH_MAX + 32];
    if (fwd_eal_runtime_dir(argc, argv, dir, sizeof dir) != 0 || !dir[0])
        return 0;
    snprintf(path, sizeof path, "%s/%s", dir, PIDFILE);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    long pid = 0;
    int got = fscanf(f, "%ld", &pid);
    fclose(f);
    if (got != 1 || pid <= 0 || pid == (long)getpid() || !same_program(pid))
        return 0;
    uint64_t t0 = now_ms();
    bool said = false;
    for (;;) {
        enum proc_state st = proc_state(pid);
        if (st == PROC_GONE) {
            if (said)
                fprintf(stderr, "vgw-fwd: the previous forwarder (pid %ld) has exited after %llu ms\n", pid,
                        (unsigned long long)(now_ms() - t0));
            return 0;
        }
        if (st == PROC_RUNNING) {
            fprintf(stderr,
                    "vgw-fwd: another forwarder (pid %ld) runs with the EAL runtime directory %s: stop it first, "
                    "or give this one another --file-prefix\n",
                    pid, dir);
            return -1;
        }
        if (now_ms() - t0 >= timeout_ms) {
            fprintf(stderr, "vgw-fwd: the previous forwarder (pid %ld) is still exiting after %u ms\n", pid,
                    timeout_ms);
            return -1;
        }
        if (!said) {
            fprintf(stderr, "vgw-fwd: waiting for the previous forwarder (pid %ld) to finish exiting\n", pid);
            said = true;
        }
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

void fwd_write_pidfile(const char *runtime_dir)
{
    if (!runtime_dir || !runtime_dir[0])
        return;
    char path[PATH_MAX + 32], tmp[PATH_MAX + 48];
    snprintf(path, sizeof path, "%s/%s", runtime_dir, PIDFILE);
    snprintf(tmp, sizeof tmp, "%s.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "we");
    if (!f)
        return;
    int ok = fprintf(f, "%ld\n", (long)getpid()) > 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0)
        unlink(tmp);
}
