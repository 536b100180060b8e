/* Helpers shared by the C tests: checks that print where they failed and exit. */
#ifndef DSR_TEST_COMMON_H
#define DSR_TEST_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsr.h"

#define CHECK(cond)                                                                     \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);    \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

#define EXPECT(call, want)                                                              \
    do {                                                                                \
        dsr_result got_ = (call);                                                       \
        if (got_ != (want)) {                                                           \
            fprintf(stderr, "%s:%d: %s returned %s, not %s\n", __FILE__, __LINE__, #call, \
                    dsr_result_name(got_), dsr_result_name(want));                      \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

#define OK(call) EXPECT(call, DSR_OK)

static inline dsr_runtime_config test_config(void) {
    dsr_runtime_config config;
    memset(&config, 0, sizeof config);
    config.struct_size = sizeof config;
    config.api_version = DSR_API_VERSION;
    config.workers = 2;
    config.debug_flags = DSR_DEBUG_RECORD_NAMES;
    return config;
}

static inline dsr_queue_desc test_queue(uint32_t source, uint32_t capacity) {
    dsr_queue_desc desc;
    memset(&desc, 0, sizeof desc);
    desc.struct_size = sizeof desc;
    desc.source_type = source;
    desc.capacity = capacity;
    desc.priority = DSR_PRIORITY_NORMAL;
    desc.name = "test queue";
    return desc;
}

static inline dsr_request blank_request(uint32_t kind) {
    dsr_request request;
    memset(&request, 0, sizeof request);
    request.struct_size = sizeof request;
    request.kind = kind;
    return request;
}

/* Enqueues a signal of `fence` to 1 and waits for it (10 s at most). */
static inline void drain(dsr_queue queue) {
    dsr_fence fence;
    OK(dsr_fence_create(&fence));
    OK(dsr_queue_enqueue_signal(queue, fence, 1));
    OK(dsr_queue_submit(queue));
    OK(dsr_fence_wait(fence, 1, 10000));
    OK(dsr_fence_destroy(fence));
}

/* The bytes of the test asset: a text that compresses. */
static inline unsigned char asset_byte(size_t i) {
    static const char text[] = "dsr streams assets from disk ";
    return (unsigned char)text[i % (sizeof text - 1)];
}

#endif
