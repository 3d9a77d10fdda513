/* libfcgi reading a request's parameters from memory only (params.c). */
#ifndef PARAMS_H
#define PARAMS_H

#include <fcgiapp.h>
#include <stdbool.h>
#include <stddef.h>

/* Fills req's parameters (req->envp) from a whole parameter stream that the
 * record reader has checked, with libfcgi's own reader. 0, or -1 when
 * libfcgi failed. req was set up once with FCGX_InitRequest. */
int params_parse(FCGX_Request *req, const unsigned char *params, size_t len);

/* Frees what libfcgi made for req; nothing is written or closed. */
void params_free(FCGX_Request *req);

/* Whether libfcgi reads and writes through the OS_Read and OS_Write defined
 * here, which keep it off every socket: call after FCGX_Init. */
bool server_libfcgi_works(void);

#endif
