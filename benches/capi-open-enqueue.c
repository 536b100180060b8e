/* How long libdsr takes to open files and enqueue a read of each, from C, without Wine: the
 * share of a title's OpenFile + EnqueueRequest loop that is libdsr's (docs/benchmarks.md,
 * session 15). Each file's first MiB is read into its own touched buffer after the clock.
 *   gcc -O2 -I include -o /tmp/open-enqueue benches/capi-open-enqueue.c \
 *       -L target/release -ldsr -Wl,-rpath,$PWD/target/release
 *   /tmp/open-enqueue FILE...        (files of 1 MiB or more; warm them first) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include "dsr.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int fail(const char *what, dsr_result result) {
    fprintf(stderr, "%s failed: %d\n", what, result);
    return 1;
}

int main(int argc, char **argv) {
    int n = argc - 1;
    if (n < 1) return fprintf(stderr, "usage: %s FILE...\n", argv[0]), 2;
    dsr_runtime_config config = {.struct_size = sizeof config, .api_version = DSR_API_VERSION};
    dsr_runtime runtime;
    dsr_result r = dsr_runtime_create(&config, &runtime);
    if (r) return fail("dsr_runtime_create", r);
    dsr_queue_desc desc = {.struct_size = sizeof desc, .source_type = DSR_SOURCE_FILE, .capacity = DSR_MAX_QUEUE_CAPACITY};
    dsr_queue queue;
    if ((r = dsr_queue_create(runtime, &desc, &queue))) return fail("dsr_queue_create", r);
    /* The executor starts with the first file: not part of the loop measured. */
    dsr_file first;
    if ((r = dsr_file_open(runtime, argv[1], &first, NULL))) return fail("dsr_file_open", r);
    dsr_file *files = calloc(n, sizeof *files);
    unsigned char **buffers = calloc(n, sizeof *buffers);
    for (int i = 0; i < n; i++) {
        buffers[i] = malloc(1 << 20);
        memset(buffers[i], 0xA5, 1 << 20);
    }
    double start = now();
    for (int i = 0; i < n; i++)
        if ((r = dsr_file_open(runtime, argv[i + 1], &files[i], NULL))) return fail("dsr_file_open", r);
    double opened = now();
    for (int i = 0; i < n; i++) {
        dsr_request request = {.struct_size = sizeof request, .kind = DSR_REQUEST_READ_FILE, .file = files[i],
                               .source_size = 1 << 20, .destination = buffers[i], .destination_size = 1 << 20};
        if ((r = dsr_queue_enqueue(queue, &request))) return fail("dsr_queue_enqueue", r);
    }
    double enqueued = now();
    /* Then the reads, so the program checks what it timed did work. */
    dsr_status_array status;
    int event = eventfd(0, EFD_CLOEXEC);
    if ((r = dsr_status_array_create(1, &status))) return fail("dsr_status_array_create", r);
    if ((r = dsr_queue_enqueue_status(queue, status, 0)) || (r = dsr_queue_enqueue_event(queue, event)) ||
        (r = dsr_queue_submit(queue)))
        return fail("submitting", r);
    eventfd_t fired;
    dsr_result result = DSR_E_INTERNAL;
    if (eventfd_read(event, &fired) || dsr_status_array_get(status, 0, &result) || result != DSR_OK)
        return fail("the reads", result);
    printf("%d files: open %.2f us a file, enqueue %.2f us a request\n", n, (opened - start) * 1e6 / n,
           (enqueued - opened) * 1e6 / n);
    return 0;
}
