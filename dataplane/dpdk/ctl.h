/* SPDX-License-Identifier: Apache-2.0
 * The control socket of vgw-fwd (ctl.c): framing, clients, peer checks, request dispatch. */
#ifndef VGW_FWD_CTL_H
#define VGW_FWD_CTL_H

#include "fwd.h"

int ctl_open(fwd_t *f);
/* Serves what is pending, waiting up to timeout_ms. */
void ctl_poll(fwd_t *f, int timeout_ms);
void ctl_close(fwd_t *f);

#endif
