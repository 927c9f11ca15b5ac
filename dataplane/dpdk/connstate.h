/* SPDX-License-Identifier: Apache-2.0
 * Connection state that outlives vgw-fwd (docs/forwarder.md, "Restarts and upgrades"): where the
 * workers' connection tables live (files in hugetlbfs or tmpfs, the core's vgw/persist.h), the
 * last applied configuration kept beside them and applied again at start, and what STATS says
 * about it. Control thread only. */
#ifndef VGW_FWD_CONNSTATE_H
#define VGW_FWD_CONNSTATE_H

#include <stdbool.h>
#include <stdint.h>

#include "fwd.h"
#include "vbuf.h"
#include "vgw/persist.h"

/* A settings-file key / flag of ours: 0 = taken, -1 = bad value, -2 = not ours. */
int connstate_setting(const char *key, char **v, int n);
/* Flags without a value (--conn-state-discard). */
bool connstate_flag_only(const char *key);
/* After EAL init: resolves the directory, discards on request, checks every worker's file
 * (refusing before anything is touched). 0, or -1 after printing why (exit code 2). */
int connstate_prepare(fwd_t *f);
/* For vgw_worker_params_t of worker i: NULL when persistence is off. */
const vgw_persist_params_t *connstate_params(uint32_t i);
vgw_persist_report_t *connstate_report(uint32_t i);
/* Worker i could not be created: prints the reason if it was the state file's. 1 if it was. */
int connstate_create_failed(uint32_t i);
/* After the workers exist, before they run: applies the saved configuration, re-derives the
 * connections' service/backend uids from it and prints what came back. */
void connstate_restore(fwd_t *f);
/* Control loop: keeps the saved configuration at the applied generation (coalesced). */
void connstate_save(fwd_t *f, uint64_t now_ms, bool force);
/* The "conn_state" member of STATS (without a leading comma). */
void connstate_json(struct vbuf *b);

#endif
