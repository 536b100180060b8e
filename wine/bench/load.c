/* The Windows side of benches/wine-load.sh: loads a set of assets into memory the way a game
 * does, through DirectStorage (our dstorage.dll under Wine) or with plain ReadFile (what games
 * fall back to), and prints the time from the first open to the last byte in memory.
 * Usage: load.exe readfile|dstorage|dstorage-buffered LIST
 * (dstorage-buffered: DSTORAGE_CONFIGURATION1.ForceFileBuffering, reads through the page cache)
 * LIST: one asset per line, "WINDOWS_PATH<TAB>FILE_SIZE<TAB>DECODED_SIZE"; a decoded size that
 * differs from the file size marks a GDeflate stream (dstorage mode decodes it; readfile mode
 * reads the file as it is). Destinations are allocated and touched before the clock starts, as
 * `dsr load` touches its own: filled with a byte no asset ends in (a zero fill lets the compiler
 * turn malloc + memset into calloc, whose fresh pages would be first touched by the loading). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INITGUID
#include "dstorage.h"

#define MAX_ASSETS 65536

struct asset {
    WCHAR path[MAX_PATH];
    UINT32 file_size;
    UINT32 decoded_size;
    unsigned char *buffer;
};

static struct asset assets[MAX_ASSETS];

/* What destinations hold before loading; the bench's assets end in '\n'. */
#define FILL 0xEE

static double now(void) {
    LARGE_INTEGER t, f;
    QueryPerformanceCounter(&t);
    QueryPerformanceFrequency(&f);
    return (double)t.QuadPart / (double)f.QuadPart;
}

static int fail(const char *what, HRESULT hr) {
    printf("error: %s: %#lx\n", what, (unsigned long)hr);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        printf("usage: load.exe readfile|dstorage|dstorage-buffered LIST\n");
        return 2;
    }
    BOOL storage = strncmp(argv[1], "dstorage", 8) == 0;
    if (strcmp(argv[1], "dstorage-buffered") == 0) {
        DSTORAGE_CONFIGURATION1 config;
        memset(&config, 0, sizeof config);
        config.ForceFileBuffering = TRUE;
        HRESULT hr = DStorageSetConfiguration1(&config);
        if (FAILED(hr)) return fail("DStorageSetConfiguration1", hr);
    }
    FILE *list = fopen(argv[2], "r");
    if (!list) return fail("cannot open the list", E_FAIL);
    char line[2 * MAX_PATH], path[MAX_PATH];
    unsigned long file_size, decoded_size;
    size_t count = 0;
    unsigned long long bytes = 0;
    while (count < MAX_ASSETS && fgets(line, sizeof line, list)) {
        if (sscanf(line, "%259[^\t]\t%lu\t%lu", path, &file_size, &decoded_size) != 3) continue;
        struct asset *a = &assets[count++];
        MultiByteToWideChar(CP_UTF8, 0, path, -1, a->path, MAX_PATH);
        a->file_size = (UINT32)file_size;
        a->decoded_size = storage ? (UINT32)decoded_size : (UINT32)file_size;
        a->buffer = malloc(a->decoded_size);
        if (!a->buffer) return fail("out of memory", E_OUTOFMEMORY);
        memset(a->buffer, FILL, a->decoded_size);
        bytes += a->decoded_size;
    }
    fclose(list);

    /* A game makes its factory and queue at start-up: before the clock, as `dsr load` starts its
     * engine before its own. Opening the files is part of loading, in both modes. */
    IDStorageFactory *factory = NULL;
    IDStorageQueue *queue = NULL;
    IDStorageStatusArray *status = NULL;
    if (storage) {
        HRESULT hr = DStorageGetFactory(&IID_IDStorageFactory, (void **)&factory);
        if (FAILED(hr)) return fail("DStorageGetFactory", hr);
        DSTORAGE_QUEUE_DESC desc;
        memset(&desc, 0, sizeof desc);
        desc.SourceType = DSTORAGE_REQUEST_SOURCE_FILE;
        desc.Capacity = DSTORAGE_MAX_QUEUE_CAPACITY;
        desc.Priority = DSTORAGE_PRIORITY_NORMAL;
        hr = factory->lpVtbl->CreateQueue(factory, &desc, &IID_IDStorageQueue, (void **)&queue);
        if (FAILED(hr)) return fail("CreateQueue", hr);
        hr = factory->lpVtbl->CreateStatusArray(factory, 1, NULL, &IID_IDStorageStatusArray, (void **)&status);
        if (FAILED(hr)) return fail("CreateStatusArray", hr);
    }

    double start = now(), submitted = 0;
    if (!storage) {
        for (size_t i = 0; i < count; i++) {
            HANDLE h = CreateFileW(assets[i].path, GENERIC_READ, FILE_SHARE_READ, NULL, OPEN_EXISTING,
                                   FILE_FLAG_SEQUENTIAL_SCAN, NULL);
            DWORD got = 0;
            if (h == INVALID_HANDLE_VALUE) return fail("CreateFileW", HRESULT_FROM_WIN32(GetLastError()));
            if (!ReadFile(h, assets[i].buffer, assets[i].file_size, &got, NULL) || got != assets[i].file_size)
                return fail("ReadFile", HRESULT_FROM_WIN32(GetLastError()));
            CloseHandle(h);
        }
    } else {
        HRESULT hr;
        IDStorageFile **files = calloc(count, sizeof *files);
        for (size_t i = 0; i < count; i++) {
            hr = factory->lpVtbl->OpenFile(factory, assets[i].path, &IID_IDStorageFile, (void **)&files[i]);
            if (FAILED(hr)) return fail("OpenFile", hr);
            DSTORAGE_REQUEST r;
            memset(&r, 0, sizeof r);
            r.Options.SourceType = DSTORAGE_REQUEST_SOURCE_FILE;
            r.Options.DestinationType = DSTORAGE_REQUEST_DESTINATION_MEMORY;
            r.Options.CompressionFormat = assets[i].decoded_size != assets[i].file_size
                                              ? DSTORAGE_COMPRESSION_FORMAT_GDEFLATE
                                              : DSTORAGE_COMPRESSION_FORMAT_NONE;
            r.Source.File.Source = files[i];
            r.Source.File.Size = assets[i].file_size;
            r.Destination.Memory.Buffer = assets[i].buffer;
            r.Destination.Memory.Size = assets[i].decoded_size;
            r.UncompressedSize = assets[i].decoded_size;
            queue->lpVtbl->EnqueueRequest(queue, &r);
        }
        HANDLE done = CreateEventW(NULL, FALSE, FALSE, NULL);
        queue->lpVtbl->EnqueueStatus(queue, status, 0);
        queue->lpVtbl->EnqueueSetEvent(queue, done);
        submitted = now() - start;
        queue->lpVtbl->Submit(queue);
        if (WaitForSingleObject(done, 600000) != WAIT_OBJECT_0) return fail("the set-event entry", E_FAIL);
        hr = status->lpVtbl->GetHResult(status, 0);
        if (FAILED(hr)) return fail("a request", hr);
        for (size_t i = 0; i < count; i++) files[i]->lpVtbl->Release(files[i]);
        free(files);
    }
    double seconds = now() - start;
    if (storage) {
        status->lpVtbl->Release(status);
        queue->lpVtbl->Release(queue);
        factory->lpVtbl->Release(factory);
    }
    /* Something of every asset landed: its last byte is no longer the fill. */
    for (size_t i = 0; i < count; i++)
        if (assets[i].buffer[assets[i].decoded_size - 1] == FILL) return fail("an asset did not land", E_FAIL);
    printf("{\"mode\": \"%s\", \"assets\": %zu, \"bytes\": %llu, \"seconds\": %.6f, \"until_submit\": %.6f}\n",
           argv[1], count, bytes, seconds, submitted);
    return 0;
}
