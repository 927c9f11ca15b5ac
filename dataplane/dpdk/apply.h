/* SPDX-License-Identifier: Apache-2.0
 * Configuration changes of vgw-fwd: a whole "vgw-config 1" document or a "vgw-delta 1" edit,
 * checked against the memory budget, published as one generation by the core, then followed by
 * the forwarder's own tables (counter slots, gratuitous ARP for new addresses). On any error
 * nothing changes and err says why. Control thread only. */
#ifndef VGW_FWD_APPLY_H
#define VGW_FWD_APPLY_H

#include <stddef.h>

#include "fwd.h"

int fwd_apply_init(fwd_t *f);
void fwd_apply_fini(fwd_t *f);
int fwd_apply_document(fwd_t *f, const char *text, size_t len, char *err, size_t errlen);
int fwd_apply_delta(fwd_t *f, const char *text, size_t len, char *err, size_t errlen);
/* A document from a file (--apply); prints the error. */
int fwd_apply_file(fwd_t *f, const char *path);

#endif
