/* Nonsense through the C ABI: every call gets an error code, never a crash.
 * Usage: hostile DIR */
#include "common.h"

int main(int argc, char **argv) {
    CHECK(argc == 2);
    dsr_runtime runtime;
    dsr_runtime_config config = test_config();

    /* Null pointers, wrong sizes, wrong versions, unknown flags. */
    EXPECT(dsr_runtime_create(NULL, &runtime), DSR_E_INVALID_ARGUMENT);
    EXPECT(dsr_runtime_create(&config, NULL), DSR_E_INVALID_ARGUMENT);
    config.struct_size = sizeof config - 4;
    EXPECT(dsr_runtime_create(&config, &runtime), DSR_E_INVALID_ARGUMENT);
    config = test_config();
    config.api_version = DSR_API_VERSION + 1;
    EXPECT(dsr_runtime_create(&config, &runtime), DSR_E_VERSION);
    config = test_config();
    config.flags = 0x80;
    EXPECT(dsr_runtime_create(&config, &runtime), DSR_E_INVALID_ARGUMENT);
    config = test_config();
    OK(dsr_runtime_create(&config, &runtime));

    /* Forged, stale and mismatched handles. */
    EXPECT(dsr_runtime_destroy(0), DSR_E_INVALID_HANDLE);
    EXPECT(dsr_runtime_destroy(0xdeadbeefcafef00dull), DSR_E_INVALID_HANDLE);
    EXPECT(dsr_runtime_destroy(runtime + 1), DSR_E_INVALID_HANDLE);
    EXPECT(dsr_queue_submit(runtime), DSR_E_INVALID_HANDLE); /* a runtime is not a queue */
    EXPECT(dsr_file_close(runtime), DSR_E_INVALID_HANDLE);

    /* Files. */
    dsr_file file;
    EXPECT(dsr_file_open(runtime, NULL, &file, NULL), DSR_E_INVALID_ARGUMENT);
    EXPECT(dsr_file_open(runtime, "/nonexistent/dsr/none.bin", &file, NULL), DSR_E_NOT_FOUND);
    char path[4096];
    snprintf(path, sizeof path, "%s/small.bin", argv[1]);
    FILE *created = fopen(path, "wb");
    CHECK(created != NULL);
    fputs("sixteen bytes...", created);
    fclose(created);
    EXPECT(dsr_file_open(runtime, path, NULL, NULL), DSR_E_INVALID_ARGUMENT);
    OK(dsr_file_open(runtime, path, &file, NULL));

    /* Queues: capacities out of range, bad source types and priorities. */
    dsr_queue queue;
    dsr_queue_desc desc = test_queue(DSR_SOURCE_FILE, DSR_MIN_QUEUE_CAPACITY - 1);
    EXPECT(dsr_queue_create(runtime, &desc, &queue), DSR_E_INVALID_ARGUMENT);
    desc.capacity = DSR_MAX_QUEUE_CAPACITY + 1;
    EXPECT(dsr_queue_create(runtime, &desc, &queue), DSR_E_INVALID_ARGUMENT);
    desc = test_queue(7, 256);
    EXPECT(dsr_queue_create(runtime, &desc, &queue), DSR_E_INVALID_ARGUMENT);
    desc = test_queue(DSR_SOURCE_FILE, 256);
    desc.priority = 9;
    EXPECT(dsr_queue_create(runtime, &desc, &queue), DSR_E_INVALID_ARGUMENT);
    EXPECT(dsr_queue_create(runtime, NULL, &queue), DSR_E_INVALID_ARGUMENT);
    desc = test_queue(DSR_SOURCE_FILE, 256);
    OK(dsr_queue_create(runtime, &desc, &queue));

    /* The configuration cannot change while a queue or file is open. */
    EXPECT(dsr_runtime_set_config(runtime, &config), DSR_E_BUSY);

    /* Requests: null, wrong size, bad kinds, null destinations, ranges that do not fit. */
    unsigned char buffer[64] = {0};
    dsr_request read = blank_request(DSR_REQUEST_READ_FILE);
    read.file = file;
    read.source_size = 16;
    read.destination = buffer;
    read.destination_size = sizeof buffer;
    EXPECT(dsr_queue_enqueue(queue, NULL), DSR_E_INVALID_ARGUMENT);
    dsr_request bad = read;
    bad.struct_size = 8;
    EXPECT(dsr_queue_enqueue(queue, &bad), DSR_E_INVALID_ARGUMENT);
    bad = read;
    bad.kind = 99;
    EXPECT(dsr_queue_enqueue(queue, &bad), DSR_E_INVALID_ARGUMENT);
    bad = read;
    bad.options = DSR_OPTION_BUFFERED | DSR_OPTION_DIRECT;
    EXPECT(dsr_queue_enqueue(queue, &bad), DSR_E_INVALID_ARGUMENT);
    bad = read;
    bad.destination = NULL;
    EXPECT(dsr_queue_enqueue(queue, &bad), DSR_E_INVALID_ARGUMENT);
    bad = read;
    bad.file = 12345;
    EXPECT(dsr_queue_enqueue(queue, &bad), DSR_E_INVALID_HANDLE);
    bad = read;
    bad.destination_size = 8; /* 16 bytes do not fit */
    EXPECT(dsr_queue_enqueue(queue, &bad), DSR_E_DESTINATION_TOO_SMALL);
    bad = blank_request(DSR_REQUEST_READ_MEMORY); /* a memory request on a file queue */
    bad.source = buffer;
    bad.source_size = 8;
    bad.destination = buffer + 32;
    bad.destination_size = 8;
    EXPECT(dsr_queue_enqueue(queue, &bad), DSR_E_INVALID_ARGUMENT);
    bad.source = NULL;
    EXPECT(dsr_queue_enqueue(queue, &bad), DSR_E_INVALID_ARGUMENT);

    /* Status arrays, fences and events. */
    dsr_status_array statuses;
    dsr_fence fence;
    dsr_result status;
    EXPECT(dsr_status_array_create(0, &statuses), DSR_E_INVALID_ARGUMENT);
    EXPECT(dsr_status_array_create(1, NULL), DSR_E_INVALID_ARGUMENT);
    OK(dsr_status_array_create(1, &statuses));
    EXPECT(dsr_status_array_get(statuses, 1, &status), DSR_E_INVALID_ARGUMENT);
    EXPECT(dsr_status_array_get(statuses, 0, NULL), DSR_E_INVALID_ARGUMENT);
    EXPECT(dsr_queue_enqueue_status(queue, statuses, 5), DSR_E_INVALID_ARGUMENT);
    EXPECT(dsr_queue_enqueue_status(queue, 77, 0), DSR_E_INVALID_HANDLE);
    EXPECT(dsr_queue_enqueue_event(queue, -1), DSR_E_INVALID_ARGUMENT);
    EXPECT(dsr_queue_enqueue_event(queue, 1 << 20), DSR_E_INVALID_ARGUMENT);
    EXPECT(dsr_fence_create(NULL), DSR_E_INVALID_ARGUMENT);
    OK(dsr_fence_create(&fence));
    EXPECT(dsr_fence_wait(fence, 1, 10), DSR_TIMEOUT);
    EXPECT(dsr_fence_value(fence, NULL), DSR_E_INVALID_ARGUMENT);

    /* Out-structs need their size too. */
    dsr_queue_info info;
    memset(&info, 0, sizeof info);
    EXPECT(dsr_queue_query(queue, &info), DSR_E_INVALID_ARGUMENT);
    EXPECT(dsr_queue_query(queue, NULL), DSR_E_INVALID_ARGUMENT);
    dsr_error_record record;
    memset(&record, 0, sizeof record);
    EXPECT(dsr_queue_retrieve_error_record(queue, &record), DSR_E_INVALID_ARGUMENT);
    size_t taken;
    EXPECT(dsr_queue_take_completed(queue, NULL, 4, &taken), DSR_E_INVALID_ARGUMENT);
    OK(dsr_queue_take_completed(queue, NULL, 0, &taken));

    /* A good request still works after all that. */
    OK(dsr_queue_enqueue(queue, &read));
    drain(queue);
    CHECK(memcmp(buffer, "sixteen bytes...", 16) == 0);

    /* A closed queue refuses everything; a double destroy is an error. */
    OK(dsr_queue_close(queue));
    OK(dsr_queue_close(queue));
    EXPECT(dsr_queue_enqueue(queue, &read), DSR_E_CLOSED);
    EXPECT(dsr_queue_submit(queue), DSR_E_CLOSED);
    EXPECT(dsr_queue_enqueue_signal(queue, fence, 2), DSR_E_CLOSED);
    OK(dsr_queue_destroy(queue));
    EXPECT(dsr_queue_destroy(queue), DSR_E_INVALID_HANDLE);
    EXPECT(dsr_queue_submit(queue), DSR_E_INVALID_HANDLE);
    OK(dsr_fence_destroy(fence));
    EXPECT(dsr_fence_destroy(fence), DSR_E_INVALID_HANDLE);
    OK(dsr_status_array_destroy(statuses));
    OK(dsr_file_close(file));
    EXPECT(dsr_file_close(file), DSR_E_INVALID_HANDLE);
    OK(dsr_runtime_set_config(runtime, &config)); /* nothing open now */
    OK(dsr_runtime_destroy(runtime));
    EXPECT(dsr_runtime_destroy(runtime), DSR_E_INVALID_HANDLE);
    CHECK(strcmp(dsr_result_name(DSR_E_NOT_FOUND), "DSR_E_NOT_FOUND") == 0);
    CHECK(strcmp(dsr_result_name(12345), "DSR_UNKNOWN_RESULT") == 0);

    /* The GDeflate codec: a round trip, then what it refuses. */
    size_t plain_size = 200000;
    unsigned char *plain = malloc(plain_size), *back = malloc(plain_size);
    CHECK(plain != NULL && back != NULL);
    for (size_t i = 0; i < plain_size; i++) plain[i] = asset_byte(i);
    uint64_t bound = 0, written = 0, needed = 0;
    OK(dsr_gdeflate_compress_bound(plain_size, &bound));
    CHECK(bound > plain_size);
    unsigned char *stream = malloc(bound);
    CHECK(stream != NULL);
    OK(dsr_gdeflate_compress(plain, plain_size, DSR_GDEFLATE_LEVEL_DEFAULT, stream, bound, &written));
    CHECK(written > 0 && written < plain_size);
    OK(dsr_gdeflate_decompress(stream, written, back, plain_size, &needed));
    CHECK(needed == plain_size && memcmp(plain, back, plain_size) == 0);
    EXPECT(dsr_gdeflate_compress(plain, plain_size, DSR_GDEFLATE_LEVEL_BEST, stream, 16, &needed),
           DSR_E_DESTINATION_TOO_SMALL);
    CHECK(needed > 16); /* the capacity it needs */
    EXPECT(dsr_gdeflate_decompress(stream, written, back, plain_size - 1, &needed), DSR_E_DESTINATION_TOO_SMALL);
    CHECK(needed == plain_size);
    stream[written / 2] ^= 0x5a; /* a flipped byte inside the compressed data */
    dsr_result flipped = dsr_gdeflate_decompress(stream, written, back, plain_size, &needed);
    /* GDeflate has no checksum (archives carry tile hashes for that): a flip decodes to other
     * bytes or fails, and never crashes or writes past the destination. */
    CHECK(flipped == DSR_E_CORRUPT || flipped == DSR_OK);
    EXPECT(dsr_gdeflate_decompress(stream, 7, back, plain_size, &needed), DSR_E_CORRUPT); /* truncated header */
    EXPECT(dsr_gdeflate_decompress(NULL, 64, back, plain_size, &needed), DSR_E_INVALID_ARGUMENT);
    EXPECT(dsr_gdeflate_compress(plain, plain_size, 13, stream, bound, &needed), DSR_E_INVALID_ARGUMENT);
    EXPECT(dsr_gdeflate_compress(plain, plain_size, 6, stream, bound, NULL), DSR_E_INVALID_ARGUMENT);
    EXPECT(dsr_gdeflate_compress(plain, 0, 6, stream, bound, &needed), DSR_E_UNSUPPORTED);
    EXPECT(dsr_gdeflate_compress_bound(0, &bound), DSR_E_UNSUPPORTED);
    EXPECT(dsr_gdeflate_compress_bound(16, NULL), DSR_E_INVALID_ARGUMENT);
    free(plain);
    free(back);
    free(stream);
    printf("every hostile call got an error code\n");
    return 0;
}
