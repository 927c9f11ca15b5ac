/* SPDX-License-Identifier: Apache-2.0
 * A growable text buffer for control-socket replies and telemetry JSON. An allocation failure
 * sets oom and turns later writes into no-ops, so callers check once at the end. */
#ifndef VGW_FWD_VBUF_H
#define VGW_FWD_VBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct vbuf {
    char *p;
    size_t len, cap;
    bool oom;
};

void vb_printf(struct vbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void vb_put(struct vbuf *b, const char *s, size_t n);
void vb_free(struct vbuf *b);
/* Append everything left in fp (closing it); 0 on success, -1 on a read error or oom (b->oom). */
int vb_read_file(struct vbuf *b, FILE *fp);

#endif
