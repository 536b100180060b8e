/* Queue semantics through the C ABI: statuses with failures in enqueue order, error records,
 * event entries, a full queue blocking (and try saying would-block), cancellation by tag.
 * Usage: semantics DIR */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

static dsr_runtime runtime;
static char dir[2048];

static dsr_file open_file(const char *name, uint64_t *size) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    dsr_file file;
    OK(dsr_file_open(runtime, path, &file, size));
    return file;
}

static dsr_request read_of(dsr_file file, uint64_t offset, uint64_t size, void *dst) {
    dsr_request read = blank_request(DSR_REQUEST_READ_FILE);
    read.file = file;
    read.file_offset = offset;
    read.source_size = size;
    read.destination = dst;
    read.destination_size = size;
    return read;
}

static void statuses_report_the_first_failure_in_enqueue_order(void) {
    uint64_t size;
    dsr_file good = open_file("good.bin", &size);
    dsr_queue_desc desc = test_queue(DSR_SOURCE_FILE, 128);
    dsr_queue queue;
    OK(dsr_queue_create(runtime, &desc, &queue));
    static unsigned char buffer[5][4096];
    dsr_request first_bad = read_of(good, size - 100, 4096, buffer[1]);
    first_bad.name = "first";
    dsr_request second_bad = read_of(good, size + 5, 4096, buffer[2]);
    second_bad.name = "second";
    dsr_status_array statuses;
    OK(dsr_status_array_create(2, &statuses));
    dsr_request ok = read_of(good, 0, 4096, buffer[0]);
    OK(dsr_queue_enqueue(queue, &ok));
    OK(dsr_queue_enqueue(queue, &first_bad));
    OK(dsr_queue_enqueue(queue, &second_bad));
    OK(dsr_queue_enqueue_status(queue, statuses, 0));
    EXPECT(dsr_queue_enqueue_status(queue, statuses, 0), DSR_E_INVALID_ARGUMENT); /* still pending */
    ok.destination = buffer[3];
    OK(dsr_queue_enqueue(queue, &ok));
    OK(dsr_queue_enqueue_status(queue, statuses, 1));
    int event = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    CHECK(event >= 0);
    OK(dsr_queue_enqueue_event(queue, event));
    drain(queue);
    dsr_result status;
    OK(dsr_status_array_get(statuses, 0, &status));
    EXPECT(status, DSR_E_END_OF_FILE);
    OK(dsr_status_array_get(statuses, 1, &status));
    EXPECT(status, DSR_OK);
    struct pollfd pfd = {.fd = event, .events = POLLIN};
    CHECK(poll(&pfd, 1, 0) == 1); /* the event entry fired */
    int error_fd;
    OK(dsr_queue_error_event(queue, &error_fd));
    pfd.fd = error_fd;
    CHECK(poll(&pfd, 1, 0) == 1);
    dsr_error_record record;
    memset(&record, 0, sizeof record);
    record.struct_size = sizeof record;
    OK(dsr_queue_retrieve_error_record(queue, &record));
    CHECK(record.failure_count == 2);
    CHECK(strcmp(record.first.request_name, "first") == 0);
    CHECK(strstr(record.first.file, "good.bin") != NULL);
    CHECK(strcmp(record.first.stage, "read") == 0);
    CHECK(record.request.file_offset == size - 100);
    OK(dsr_queue_retrieve_error_record(queue, &record));
    CHECK(record.failure_count == 0 && record.first.result == DSR_OK);
    close(event);
    OK(dsr_status_array_destroy(statuses));
    OK(dsr_queue_destroy(queue));
    OK(dsr_file_close(good));
    printf("statuses, events and error records ok\n");
}

/* A FIFO nobody writes until the test says: reads of it wait in the kernel. */
static int fifo_writer;
static dsr_file fifo;

static void open_fifo(const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    CHECK(mkfifo(path, 0600) == 0);
    fifo_writer = open(path, O_RDWR);
    CHECK(fifo_writer >= 0);
    OK(dsr_file_open(runtime, path, &fifo, NULL));
}

static void feed_fifo(size_t bytes) {
    static unsigned char zeros[65536];
    while (bytes > 0) {
        size_t n = bytes < sizeof zeros ? bytes : sizeof zeros;
        CHECK(write(fifo_writer, zeros, n) == (ssize_t)n);
        bytes -= n;
    }
}

static dsr_queue full_queue;
static atomic_int late_enqueued;
static unsigned char fifo_buffers[129][64];

static void *late_enqueue(void *arg) {
    (void)arg;
    dsr_request read = read_of(fifo, 0, 64, fifo_buffers[128]);
    read.options = DSR_OPTION_BUFFERED;
    OK(dsr_queue_enqueue(full_queue, &read));
    atomic_store(&late_enqueued, 1);
    return NULL;
}

static void a_full_queue_blocks_and_try_says_would_block(void) {
    open_fifo("full.fifo");
    dsr_queue_desc desc = test_queue(DSR_SOURCE_FILE, DSR_MIN_QUEUE_CAPACITY);
    OK(dsr_queue_create(runtime, &desc, &full_queue));
    dsr_queue_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    OK(dsr_queue_query(full_queue, &info));
    CHECK(info.empty_slots == DSR_MIN_QUEUE_CAPACITY - 1 && info.until_auto_submit == DSR_MIN_QUEUE_CAPACITY / 2);
    for (int i = 0; i < 127; i++) {
        dsr_request read = read_of(fifo, 0, 64, fifo_buffers[i]);
        read.options = DSR_OPTION_BUFFERED;
        OK(dsr_queue_enqueue(full_queue, &read));
    }
    OK(dsr_queue_query(full_queue, &info));
    CHECK(info.empty_slots == 0);
    dsr_request read = read_of(fifo, 0, 64, fifo_buffers[127]);
    read.options = DSR_OPTION_BUFFERED;
    EXPECT(dsr_queue_try_enqueue(full_queue, &read), DSR_E_WOULD_BLOCK);
    pthread_t late;
    CHECK(pthread_create(&late, NULL, late_enqueue, NULL) == 0);
    usleep(100 * 1000);
    CHECK(atomic_load(&late_enqueued) == 0); /* waiting for a slot */
    feed_fifo(128 * 64);
    CHECK(pthread_join(late, NULL) == 0);
    CHECK(atomic_load(&late_enqueued) == 1);
    drain(full_queue);
    OK(dsr_queue_query(full_queue, &info));
    CHECK(info.empty_slots == DSR_MIN_QUEUE_CAPACITY - 1);
    OK(dsr_queue_destroy(full_queue));
    OK(dsr_file_close(fifo));
    close(fifo_writer);
    printf("a full queue blocked, and try said %s\n", dsr_result_name(DSR_E_WOULD_BLOCK));
}

static atomic_int cancelled, done_ok;

static void count(void *user_data, dsr_result result) {
    (void)user_data;
    if (result == DSR_E_CANCELLED) atomic_fetch_add(&cancelled, 1);
    if (result == DSR_OK) atomic_fetch_add(&done_ok, 1);
}

static void cancelling_by_tag_is_not_a_failure(void) {
    open_fifo("cancel.fifo");
    uint64_t size;
    dsr_file good = open_file("good.bin", &size);
    dsr_queue_desc desc = test_queue(DSR_SOURCE_FILE, 256);
    dsr_queue queue;
    OK(dsr_queue_create(runtime, &desc, &queue));
    static unsigned char buffers[20][64];
    for (int i = 0; i < 20; i++) {
        dsr_request read = i % 2 ? read_of(good, 64 * (uint64_t)i, 64, buffers[i]) : read_of(fifo, 0, 64, buffers[i]);
        read.options = DSR_OPTION_BUFFERED;
        read.tag = i % 2 ? 0x20 : 0x10;
        read.callback = count;
        OK(dsr_queue_enqueue(queue, &read));
    }
    dsr_status_array statuses;
    OK(dsr_status_array_create(1, &statuses));
    OK(dsr_queue_enqueue_status(queue, statuses, 0));
    OK(dsr_queue_submit(queue));
    OK(dsr_queue_cancel(queue, 0xff, 0x10));
    drain(queue);
    dsr_result status;
    OK(dsr_status_array_get(statuses, 0, &status));
    EXPECT(status, DSR_OK);
    CHECK(atomic_load(&cancelled) == 10);
    CHECK(atomic_load(&done_ok) == 10);
    dsr_error_record record;
    memset(&record, 0, sizeof record);
    record.struct_size = sizeof record;
    OK(dsr_queue_retrieve_error_record(queue, &record));
    CHECK(record.failure_count == 0);
    OK(dsr_status_array_destroy(statuses));
    OK(dsr_queue_destroy(queue));
    OK(dsr_file_close(good));
    OK(dsr_file_close(fifo));
    close(fifo_writer);
    printf("cancelled by tag: 10 cancelled, 10 done, no failure\n");
}

int main(int argc, char **argv) {
    CHECK(argc == 2);
    snprintf(dir, sizeof dir, "%s", argv[1]);
    char path[4096];
    snprintf(path, sizeof path, "%s/good.bin", dir);
    FILE *file = fopen(path, "wb");
    CHECK(file != NULL);
    for (int i = 0; i < 8192; i++) fputc(i & 0xff, file);
    fclose(file);
    dsr_runtime_config config = test_config();
    OK(dsr_runtime_create(&config, &runtime));
    statuses_report_the_first_failure_in_enqueue_order();
    a_full_queue_blocks_and_try_says_would_block();
    cancelling_by_tag_is_not_a_failure();
    OK(dsr_runtime_destroy(runtime));
    return 0;
}
