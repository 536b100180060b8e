/* The seed's first demo, on dsr's C ABI: write an asset, then enqueue a raw and a compressed
 * read of it, wait, print.
 * Usage: demo_assets DIR COMPRESSED_FILE UNCOMPRESSED_SIZE
 * (the compressed file is the test asset, GDeflate-encoded by the harness). */
#include "common.h"

static void on_done(void *user_data, dsr_result result) {
    *(dsr_result *)user_data = result;
}

int main(int argc, char **argv) {
    CHECK(argc == 4);
    size_t size = (size_t)strtoull(argv[3], NULL, 10);
    char path[4096];
    snprintf(path, sizeof path, "%s/asset.bin", argv[1]);
    FILE *created = fopen(path, "wb");
    CHECK(created != NULL);
    fclose(created);

    dsr_runtime_config config = test_config();
    dsr_runtime runtime;
    OK(dsr_runtime_create(&config, &runtime));

    /* Write the asset through a memory queue, made durable. */
    unsigned char *asset = malloc(size);
    CHECK(asset != NULL);
    for (size_t i = 0; i < size; i++) asset[i] = asset_byte(i);
    dsr_file out;
    OK(dsr_file_open(runtime, path, &out, NULL));
    dsr_queue_desc memory_desc = test_queue(DSR_SOURCE_MEMORY, 256);
    dsr_queue writer;
    OK(dsr_queue_create(runtime, &memory_desc, &writer));
    dsr_request write = blank_request(DSR_REQUEST_WRITE_FILE);
    write.file = out;
    write.source = asset;
    write.source_size = size;
    write.options = DSR_OPTION_SYNC;
    write.name = "asset.bin";
    dsr_result written = DSR_PENDING;
    write.callback = on_done;
    write.user_data = &written;
    OK(dsr_queue_enqueue(writer, &write));
    drain(writer); /* sources are borrowed: `asset` stays untouched until the write completes */
    EXPECT(written, DSR_OK);
    memset(asset, 0, size); /* from here on the file is the only copy */
    OK(dsr_file_close(out));

    /* Read it back raw, and the compressed copy decoded, through a file queue. */
    dsr_file raw, packed;
    uint64_t raw_size = 0, packed_size = 0;
    OK(dsr_file_open(runtime, path, &raw, &raw_size));
    OK(dsr_file_open(runtime, argv[2], &packed, &packed_size));
    CHECK(raw_size == size);
    dsr_queue_desc file_desc = test_queue(DSR_SOURCE_FILE, 256);
    dsr_queue reader;
    OK(dsr_queue_create(runtime, &file_desc, &reader));
    unsigned char *plain = calloc(1, size), *decoded = calloc(1, size);
    CHECK(plain != NULL && decoded != NULL);
    dsr_request read = blank_request(DSR_REQUEST_READ_FILE);
    read.file = raw;
    read.source_size = size;
    read.destination = plain;
    read.destination_size = size;
    OK(dsr_queue_enqueue(reader, &read));
    dsr_request unpack = blank_request(DSR_REQUEST_READ_FILE);
    unpack.file = packed;
    unpack.compression = DSR_COMPRESSION_GDEFLATE;
    unpack.source_size = packed_size;
    unpack.destination = decoded;
    unpack.destination_size = size;
    OK(dsr_queue_enqueue(reader, &unpack));
    dsr_status_array statuses;
    OK(dsr_status_array_create(1, &statuses));
    OK(dsr_queue_enqueue_status(reader, statuses, 0));
    drain(reader);
    dsr_result status;
    OK(dsr_status_array_get(statuses, 0, &status));
    EXPECT(status, DSR_OK);
    for (size_t i = 0; i < size; i++) {
        CHECK(plain[i] == asset_byte(i));
        CHECK(decoded[i] == asset_byte(i));
    }
    printf("raw: %zu bytes ok; compressed: %llu -> %zu bytes ok\n", size, (unsigned long long)packed_size, size);

    OK(dsr_status_array_destroy(statuses));
    OK(dsr_queue_destroy(reader));
    OK(dsr_queue_destroy(writer));
    OK(dsr_file_close(raw));
    OK(dsr_file_close(packed));
    OK(dsr_runtime_destroy(runtime));
    free(asset);
    free(plain);
    free(decoded);
    return 0;
}
