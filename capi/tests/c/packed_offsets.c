/* The seed's second demo, on dsr's C ABI: one packed file read at many offsets at once, from
 * several threads, with the error callback firing for the one bad request (past the end).
 * Usage: packed_offsets PACKED_FILE */
#include <pthread.h>
#include <stdatomic.h>

#include "common.h"

#define THREADS 4
#define PER_THREAD 200
#define PIECE 4096

static dsr_queue queue;
static dsr_file packed;
static uint64_t packed_size;
static unsigned char *landed;
static atomic_int errors_seen;
static char bad_name[65];
static uint64_t bad_offset;

static void on_error(void *user_data, const dsr_error_info *error) {
    (void)user_data;
    CHECK(error->struct_size == sizeof *error);
    CHECK(error->result == DSR_E_END_OF_FILE);
    snprintf(bad_name, sizeof bad_name, "%s", error->request_name);
    bad_offset = error->offset;
    atomic_fetch_add(&errors_seen, 1);
}

static void *reader(void *arg) {
    size_t t = (size_t)arg;
    for (size_t i = 0; i < PER_THREAD; i++) {
        size_t n = t * PER_THREAD + i;
        uint64_t offset = (uint64_t)(n * 7919) % (packed_size - PIECE);
        dsr_request read = blank_request(DSR_REQUEST_READ_FILE);
        read.file = packed;
        read.file_offset = offset;
        read.source_size = PIECE;
        read.destination = landed + n * PIECE;
        read.destination_size = PIECE;
        read.user_data = (void *)(uintptr_t)offset;
        OK(dsr_queue_enqueue(queue, &read));
    }
    return NULL;
}

int main(int argc, char **argv) {
    CHECK(argc == 2);
    dsr_runtime_config config = test_config();
    dsr_runtime runtime;
    OK(dsr_runtime_create(&config, &runtime));
    OK(dsr_runtime_set_error_callback(runtime, on_error, NULL));
    OK(dsr_file_open(runtime, argv[1], &packed, &packed_size));
    CHECK(packed_size > 2 * PIECE);
    dsr_queue_desc desc = test_queue(DSR_SOURCE_FILE, 1024);
    desc.flags = DSR_QUEUE_TRACK_COMPLETIONS;
    OK(dsr_queue_create(runtime, &desc, &queue));
    landed = calloc(THREADS * PER_THREAD + 1, PIECE);
    CHECK(landed != NULL);

    pthread_t threads[THREADS];
    for (size_t t = 0; t < THREADS; t++) CHECK(pthread_create(&threads[t], NULL, reader, (void *)t) == 0);
    /* One bad request among them: past the end of the file. */
    dsr_request bad = blank_request(DSR_REQUEST_READ_FILE);
    bad.file = packed;
    bad.file_offset = packed_size - 10;
    bad.source_size = PIECE;
    bad.destination = landed + THREADS * PER_THREAD * PIECE;
    bad.destination_size = PIECE;
    bad.name = "the bad one";
    OK(dsr_queue_enqueue(queue, &bad));
    for (size_t t = 0; t < THREADS; t++) CHECK(pthread_join(threads[t], NULL) == 0);
    drain(queue);

    CHECK(atomic_load(&errors_seen) == 1);
    CHECK(strcmp(bad_name, "the bad one") == 0);
    CHECK(bad_offset == packed_size);
    /* Every good read landed what the file holds there. */
    FILE *file = fopen(argv[1], "rb");
    CHECK(file != NULL);
    unsigned char *want = malloc(PIECE);
    size_t completions = 0;
    dsr_completion done[256];
    size_t got;
    do {
        OK(dsr_queue_take_completed(queue, done, 256, &got));
        for (size_t i = 0; i < got; i++) {
            completions++;
            CHECK(done[i].result == DSR_OK || done[i].result == DSR_E_END_OF_FILE);
        }
    } while (got > 0);
    CHECK(completions == THREADS * PER_THREAD + 1);
    for (size_t n = 0; n < THREADS * PER_THREAD; n++) {
        uint64_t offset = (uint64_t)(n * 7919) % (packed_size - PIECE);
        CHECK(fseek(file, (long)offset, SEEK_SET) == 0);
        CHECK(fread(want, 1, PIECE, file) == PIECE);
        CHECK(memcmp(want, landed + n * PIECE, PIECE) == 0);
    }
    dsr_error_record record;
    memset(&record, 0, sizeof record);
    record.struct_size = sizeof record;
    OK(dsr_queue_retrieve_error_record(queue, &record));
    CHECK(record.failure_count == 1);
    CHECK(record.first.result == DSR_E_END_OF_FILE);
    CHECK(record.request.file_offset == packed_size - 10);
    CHECK(strcmp(record.first.request_name, "the bad one") == 0);
    printf("%d reads from %d threads ok; the bad one failed with %s at byte %llu\n", THREADS * PER_THREAD,
           THREADS, dsr_result_name(record.first.result), (unsigned long long)bad_offset);
    fclose(file);
    free(want);
    free(landed);
    OK(dsr_queue_destroy(queue));
    OK(dsr_file_close(packed));
    OK(dsr_runtime_destroy(runtime));
    return 0;
}
