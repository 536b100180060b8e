/* What the Windows test programs share: checks that end the program with where they failed, the
 * test asset's bytes (the harness writes the same pattern, capi/tests/c_api.rs `asset`), and
 * making a queue. */
#ifndef DSR_WINE_TESTS_CHECK_H
#define DSR_WINE_TESTS_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <windows.h>

#include "dstorage.h"

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            printf("%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);          \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)
#define EXPECT_HR(call, want)                                                        \
    do {                                                                             \
        HRESULT hr_ = (call);                                                        \
        if (hr_ != (HRESULT)(want)) {                                                \
            printf("%s:%d: %s returned %#lx, not %#lx\n", __FILE__, __LINE__, #call, \
                   (unsigned long)hr_, (unsigned long)(want));                       \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)

static inline unsigned char asset_byte(size_t i) {
    static const char text[] = "dsr streams assets from disk ";
    return (unsigned char)text[i % (sizeof text - 1)];
}

/* A UTF-8 path as Win32 wants it (never freed: the programs are short). */
static inline WCHAR *wide(const char *text) {
    int n = MultiByteToWideChar(CP_UTF8, 0, text, -1, NULL, 0);
    WCHAR *out = malloc(n * sizeof(WCHAR));
    MultiByteToWideChar(CP_UTF8, 0, text, -1, out, n);
    return out;
}

/* A queue as the programs make them: the largest capacity, on `device` (NULL: none). */
static inline IDStorageQueue *make_queue(IDStorageFactory *factory, DSTORAGE_REQUEST_SOURCE_TYPE source,
                                         ID3D12Device *device) {
    DSTORAGE_QUEUE_DESC desc;
    memset(&desc, 0, sizeof desc);
    desc.SourceType = source;
    desc.Capacity = DSTORAGE_MAX_QUEUE_CAPACITY;
    desc.Priority = DSTORAGE_PRIORITY_NORMAL;
    desc.Name = "test queue";
    desc.Device = device;
    IDStorageQueue *queue = NULL;
    EXPECT_HR(factory->lpVtbl->CreateQueue(factory, &desc, &IID_IDStorageQueue, (void **)&queue), S_OK);
    return queue;
}

#endif
