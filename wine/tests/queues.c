/* A Windows program using DirectStorage as a game does, run under Wine with dsr's dstorage.dll:
 * the factory, files on C: and Z:, file and memory queues, plain and GDeflate requests checked
 * byte for byte, status arrays with failures in enqueue order, Win32 events, a D3D12 fence's
 * Signal, cancellation by tag, error records, QueryInterface, and hostile calls.
 * Usage: queues.exe C_PATH Z_PATH PACKED_PATH SIZE
 * (the same asset on C: and on Z:, the GDeflate stream of it, its size) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#define INITGUID
#include "dstorage.h"
#include "check.h"

/* A D3D12 fence as far as dstorage.dll uses it: AddRef, Release, GetCompletedValue (slot 8),
 * SetEventOnCompletion (9), Signal (10). */
typedef struct fake_fence_vtbl {
    HRESULT(STDMETHODCALLTYPE *QueryInterface)(ID3D12Fence *, REFIID, void **);
    ULONG(STDMETHODCALLTYPE *AddRef)(ID3D12Fence *);
    ULONG(STDMETHODCALLTYPE *Release)(ID3D12Fence *);
    void *unused[5];
    UINT64(STDMETHODCALLTYPE *GetCompletedValue)(ID3D12Fence *);
    HRESULT(STDMETHODCALLTYPE *SetEventOnCompletion)(ID3D12Fence *, UINT64, HANDLE);
    HRESULT(STDMETHODCALLTYPE *Signal)(ID3D12Fence *, UINT64);
} fake_fence_vtbl;
struct ID3D12Fence {
    const fake_fence_vtbl *lpVtbl;
    LONG refs;
    volatile LONG64 value;
    HANDLE waiter;          /* set by SetEventOnCompletion (under fence_lock) */
    UINT64 wait_value;
};
static HRESULT STDMETHODCALLTYPE fence_qi(ID3D12Fence *f, REFIID r, void **o) {
    (void)f, (void)r, *o = NULL;
    return E_NOINTERFACE;
}
static ULONG STDMETHODCALLTYPE fence_addref(ID3D12Fence *f) { return InterlockedIncrement(&f->refs); }
static ULONG STDMETHODCALLTYPE fence_release(ID3D12Fence *f) { return InterlockedDecrement(&f->refs); }
static CRITICAL_SECTION fence_lock;
static UINT64 STDMETHODCALLTYPE fence_completed(ID3D12Fence *f) { return (UINT64)InterlockedOr64(&f->value, 0); }
static HRESULT STDMETHODCALLTYPE fence_set_event(ID3D12Fence *f, UINT64 v, HANDLE event) {
    EnterCriticalSection(&fence_lock);
    f->waiter = event;
    f->wait_value = v;
    if (fence_completed(f) >= v) SetEvent(event);
    LeaveCriticalSection(&fence_lock);
    return S_OK;
}
static HRESULT STDMETHODCALLTYPE fence_signal(ID3D12Fence *f, UINT64 v) {
    EnterCriticalSection(&fence_lock);
    InterlockedExchange64(&f->value, (LONG64)v);
    if (f->waiter && v >= f->wait_value) SetEvent(f->waiter);
    LeaveCriticalSection(&fence_lock);
    return S_OK;
}
static const fake_fence_vtbl fence_vtbl = {fence_qi, fence_addref, fence_release, {0}, fence_completed,
                                           fence_set_event, fence_signal};

static DSTORAGE_REQUEST file_request(IDStorageFile *file, UINT64 offset, UINT32 size, void *dest, UINT32 dest_size) {
    DSTORAGE_REQUEST r;
    memset(&r, 0, sizeof r);
    r.Options.SourceType = DSTORAGE_REQUEST_SOURCE_FILE;
    r.Options.DestinationType = DSTORAGE_REQUEST_DESTINATION_MEMORY;
    r.Source.File.Source = file;
    r.Source.File.Offset = offset;
    r.Source.File.Size = size;
    r.Destination.Memory.Buffer = dest;
    r.Destination.Memory.Size = dest_size;
    r.UncompressedSize = dest_size;
    return r;
}

/* Waits for entry `index` of `status` (10 s at most). */
static HRESULT wait_status(IDStorageStatusArray *status, UINT32 index) {
    for (int i = 0; i < 10000 && !status->lpVtbl->IsComplete(status, index); i++) Sleep(1);
    return status->lpVtbl->GetHResult(status, index);
}

/* Opens `path` (a spelling of the test asset's) and reads the asset through it on `queue`, byte
 * for byte; or, where `expected` is a failure, checks OpenFile returns it. */
static void check_spelling(IDStorageFactory *factory, IDStorageQueue *queue, IDStorageStatusArray *status,
                           const WCHAR *path, size_t size, HRESULT expected) {
    IDStorageFile *file = (IDStorageFile *)1;
    HRESULT hr = factory->lpVtbl->OpenFile(factory, path, &IID_IDStorageFile, (void **)&file);
    if (hr != expected) printf("OpenFile(%ls)\n", path);
    EXPECT_HR(hr, expected);
    if (FAILED(expected)) {
        CHECK(file == NULL);
        return;
    }
    unsigned char *got = calloc(1, size);
    DSTORAGE_REQUEST r = file_request(file, 0, (UINT32)size, got, (UINT32)size);
    queue->lpVtbl->EnqueueRequest(queue, &r);
    queue->lpVtbl->EnqueueStatus(queue, status, 0);
    queue->lpVtbl->Submit(queue);
    EXPECT_HR(wait_status(status, 0), S_OK);
    for (size_t i = 0; i < size; i++) CHECK(got[i] == asset_byte(i));
    free(got);
    file->lpVtbl->Release(file);
}

/* `path` with `from` (once, the last occurrence) replaced by `to`; the caller frees it. */
static WCHAR *respell(const WCHAR *path, const WCHAR *from, const WCHAR *to) {
    size_t len = wcslen(path), from_len = wcslen(from), to_len = wcslen(to);
    WCHAR *out = calloc(len + to_len + 1, sizeof *out);
    const WCHAR *at = NULL;
    for (const WCHAR *p = path; (p = wcsstr(p, from)); p++) at = p;
    CHECK(at != NULL);
    size_t head = (size_t)(at - path);
    memcpy(out, path, head * sizeof *out);
    memcpy(out + head, to, to_len * sizeof *out);
    wcscpy(out + head + to_len, at + from_len);
    return out;
}

int main(int argc, char **argv) {
    CHECK(argc == 5);
    size_t size = (size_t)strtoull(argv[4], NULL, 10);
    DSTORAGE_CONFIGURATION1 config;
    memset(&config, 0, sizeof config);
    config.NumBuiltInCpuDecompressionThreads = 2;
    EXPECT_HR(DStorageSetConfiguration1(&config), S_OK);

    InitializeCriticalSection(&fence_lock);
    IDStorageFactory *factory = NULL;
    void *nothing = (void *)1;
    EXPECT_HR(DStorageGetFactory(&IID_IDStorageQueue, &nothing), E_NOINTERFACE);
    CHECK(nothing == NULL);
    EXPECT_HR(DStorageGetFactory(&IID_IDStorageFactory, NULL), E_POINTER);
    EXPECT_HR(DStorageGetFactory(&IID_IDStorageFactory, (void **)&factory), S_OK);
    factory->lpVtbl->SetDebugFlags(factory, DSTORAGE_DEBUG_NONE);

    /* The same asset through C: and through Z:, and its GDeflate stream. */
    IDStorageFile *on_c = NULL, *on_z = NULL, *packed = NULL;
    WCHAR *c_path = wide(argv[1]), *z_path = wide(argv[2]), *packed_path = wide(argv[3]);
    EXPECT_HR(factory->lpVtbl->OpenFile(factory, c_path, &IID_IDStorageFile, (void **)&on_c), S_OK);
    EXPECT_HR(factory->lpVtbl->OpenFile(factory, z_path, &IID_IDStorageFile, (void **)&on_z), S_OK);
    EXPECT_HR(factory->lpVtbl->OpenFile(factory, packed_path, &IID_IDStorageFile, (void **)&packed), S_OK);
    BY_HANDLE_FILE_INFORMATION info;
    EXPECT_HR(on_c->lpVtbl->GetFileInformation(on_c, &info), S_OK);
    CHECK(info.nFileSizeLow == size && info.nFileSizeHigh == 0);
    EXPECT_HR(packed->lpVtbl->GetFileInformation(packed, &info), S_OK);
    UINT32 packed_size = info.nFileSizeLow;
    EXPECT_HR(factory->lpVtbl->OpenFile(factory, L"C:\\no\\such\\asset.bin", &IID_IDStorageFile, (void **)&nothing),
              HRESULT_FROM_WIN32(ERROR_PATH_NOT_FOUND));

    /* A file queue: raw from C:, raw from Z:, GDeflate; a status, a Win32 event, a fence. */
    IDStorageQueue *files = make_queue(factory, DSTORAGE_REQUEST_SOURCE_FILE, NULL);
    IDStorageStatusArray *status = NULL;
    EXPECT_HR(factory->lpVtbl->CreateStatusArray(factory, 4, "statuses", &IID_IDStorageStatusArray, (void **)&status),
              S_OK);
    unsigned char *from_c = calloc(1, size), *from_z = calloc(1, size), *decoded = calloc(1, size);
    DSTORAGE_REQUEST r = file_request(on_c, 0, (UINT32)size, from_c, (UINT32)size);
    r.Name = "raw from C:";
    files->lpVtbl->EnqueueRequest(files, &r);
    r = file_request(on_z, 0, (UINT32)size, from_z, (UINT32)size);
    files->lpVtbl->EnqueueRequest(files, &r);
    r = file_request(packed, 0, packed_size, decoded, (UINT32)size);
    r.Options.CompressionFormat = DSTORAGE_COMPRESSION_FORMAT_GDEFLATE;
    r.UncompressedSize = (UINT32)size;
    files->lpVtbl->EnqueueRequest(files, &r);
    files->lpVtbl->EnqueueStatus(files, status, 0);
    HANDLE event = CreateEventW(NULL, FALSE, FALSE, NULL);
    IDStorageQueue *files1 = NULL;
    EXPECT_HR(files->lpVtbl->QueryInterface(files, &IID_IDStorageQueue1, (void **)&files1), S_OK);
    files->lpVtbl->EnqueueSetEvent(files, event);
    struct ID3D12Fence fence = {&fence_vtbl, 1, 0, NULL, 0};
    files->lpVtbl->EnqueueSignal(files, &fence, 7);
    files->lpVtbl->Submit(files);
    CHECK(WaitForSingleObject(event, 10000) == WAIT_OBJECT_0);
    EXPECT_HR(status->lpVtbl->GetHResult(status, 0), S_OK);
    for (size_t i = 0; i < size; i++) CHECK(from_c[i] == asset_byte(i) && from_z[i] == asset_byte(i));
    for (size_t i = 0; i < size; i++) CHECK(decoded[i] == asset_byte(i));
    for (int i = 0; i < 10000 && fence.value != 7; i++) Sleep(1);
    CHECK(fence.value == 7);
    for (int i = 0; i < 10000 && fence.refs != 1; i++) Sleep(1);
    CHECK(fence.refs == 1); /* the DLL's reference went back */
    printf("file queue: C: and Z: raw and GDeflate reads verified; event set; fence signalled\n");

    /* Windows spellings of the same file, each read back: the DLL remembers a folder's Linux
     * name and appends plain file names to it, and must still answer as Wine does. */
    {
        IDStorageStatusArray *one = NULL;
        EXPECT_HR(factory->lpVtbl->CreateStatusArray(factory, 1, "spellings", &IID_IDStorageStatusArray, (void **)&one),
                  S_OK);
        WCHAR *spelled[8];
        int n = 0;
        check_spelling(factory, files, one, z_path, size, S_OK);
        check_spelling(factory, files, one, spelled[n++] = respell(z_path, L"asset.bin", L"ASSET.Bin"), size, S_OK);
        check_spelling(factory, files, one, spelled[n++] = respell(c_path, L"asset.bin", L"Asset.BIN"), size, S_OK);
        check_spelling(factory, files, one, spelled[n++] = respell(z_path, L"asset.bin", L"asset.bin."), size, S_OK);
        check_spelling(factory, files, one, spelled[n++] = respell(z_path, L"asset.bin", L"asset.bin  "), size, S_OK);
        WCHAR *slashes = respell(z_path, L"asset.bin", L"asset.bin");
        for (WCHAR *p = slashes + 3; *p; p++)
            if (*p == '\\') *p = '/';
        check_spelling(factory, files, one, spelled[n++] = slashes, size, S_OK);
        check_spelling(factory, files, one, spelled[n++] = respell(z_path, L"asset.bin", L"missing.bin"), size,
                       HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND));
        /* More folders than the DLL remembers (the same one, spelled "\.\" k times). */
        for (int k = 1; k <= 24; k++) {
            WCHAR dots[3 * 24 + 16] = L"\\";
            for (int j = 0; j < k; j++) wcscat(dots, L".\\");
            wcscat(dots, L"asset.bin");
            WCHAR *deep = respell(z_path, L"\\asset.bin", dots);
            check_spelling(factory, files, one, deep, size, S_OK);
            free(deep);
        }
        check_spelling(factory, files, one, spelled[0], size, S_OK);
        for (int i = 0; i < n; i++) free(spelled[i]);
        one->lpVtbl->Release(one);
        printf("paths: other cases, trailing dots and spaces, slashes, 25 spellings of a folder; missing names refused\n");
    }

    /* Failures in enqueue order: past the end of the file, then a missing-file handle. */
    unsigned char small[64];
    r = file_request(on_c, size - 10, 64, small, 64);
    r.Name = "past the end";
    files->lpVtbl->EnqueueRequest(files, &r);
    r = file_request(on_c, 0, 64, small, 32); /* destination too small: refused by the DLL */
    r.Name = "too small";
    files->lpVtbl->EnqueueRequest(files, &r);
    files->lpVtbl->EnqueueStatus(files, status, 1);
    files->lpVtbl->Submit(files);
    EXPECT_HR(wait_status(status, 1), E_DSTORAGE_END_OF_FILE);
    CHECK(WaitForSingleObject(files->lpVtbl->GetErrorEvent(files), 10000) == WAIT_OBJECT_0);
    DSTORAGE_ERROR_RECORD record;
    files->lpVtbl->RetrieveErrorRecord(files, &record);
    CHECK(record.FailureCount == 2);
    EXPECT_HR(record.FirstFailure.HResult, E_DSTORAGE_END_OF_FILE);
    CHECK(record.FirstFailure.CommandType == DSTORAGE_COMMAND_TYPE_REQUEST);
    CHECK(strcmp(record.FirstFailure.Request.RequestName, "past the end") == 0);
    CHECK(lstrcmpiW(record.FirstFailure.Request.Filename, c_path) == 0);
    CHECK(record.FirstFailure.Request.Request.Source.File.Offset == size - 10);
    files->lpVtbl->RetrieveErrorRecord(files, &record);
    CHECK(record.FailureCount == 0 && record.FirstFailure.CommandType == DSTORAGE_COMMAND_TYPE_NONE);
    printf("failures: the first in enqueue order, in the status and the error record\n");

    /* A memory queue: GDeflate from memory; a file request on it is refused. */
    IDStorageQueue *memory = make_queue(factory, DSTORAGE_REQUEST_SOURCE_MEMORY, NULL);
    unsigned char *stream = malloc(packed_size);
    HANDLE h = CreateFileW(packed_path, GENERIC_READ, FILE_SHARE_READ, NULL, OPEN_EXISTING, 0, NULL);
    DWORD got = 0;
    CHECK(ReadFile(h, stream, packed_size, &got, NULL) && got == packed_size);
    CloseHandle(h);
    memset(decoded, 0, size);
    DSTORAGE_REQUEST m;
    memset(&m, 0, sizeof m);
    m.Options.SourceType = DSTORAGE_REQUEST_SOURCE_MEMORY;
    m.Options.CompressionFormat = DSTORAGE_COMPRESSION_FORMAT_GDEFLATE;
    m.Source.Memory.Source = stream;
    m.Source.Memory.Size = packed_size;
    m.Destination.Memory.Buffer = decoded;
    m.Destination.Memory.Size = (UINT32)size;
    m.UncompressedSize = (UINT32)size;
    memory->lpVtbl->EnqueueRequest(memory, &m);
    memory->lpVtbl->EnqueueStatus(memory, status, 2);
    memory->lpVtbl->Submit(memory);
    EXPECT_HR(wait_status(status, 2), S_OK);
    for (size_t i = 0; i < size; i++) CHECK(decoded[i] == asset_byte(i));
    r = file_request(on_c, 0, 64, small, 64);
    memory->lpVtbl->EnqueueRequest(memory, &r);
    memory->lpVtbl->EnqueueStatus(memory, status, 3);
    memory->lpVtbl->Submit(memory);
    EXPECT_HR(wait_status(status, 3), E_DSTORAGE_INVALID_SOURCE_TYPE);
    printf("memory queue: GDeflate from memory verified; the wrong source type refused\n");

    /* Cancellation by tag is not a failure. */
    unsigned char *cancelled = calloc(64, 64);
    for (UINT32 i = 0; i < 64; i++) {
        r = file_request(on_z, 64 * i, 64, cancelled + 64 * i, 64);
        r.CancellationTag = 0x100 | (i & 1);
        files->lpVtbl->EnqueueRequest(files, &r);
    }
    files->lpVtbl->CancelRequestsWithTag(files, 0x1ff, 0x101);
    files->lpVtbl->EnqueueStatus(files, status, 0);
    files->lpVtbl->Submit(files);
    EXPECT_HR(wait_status(status, 0), S_OK);
    for (UINT32 i = 0; i < 64; i += 2) CHECK(memcmp(cancelled + 64 * i, from_c + 64 * i, 64) == 0);
    files->lpVtbl->RetrieveErrorRecord(files, &record);
    CHECK(record.FailureCount == 0);
    printf("cancellation by tag: not a failure\n");

    /* Interfaces and queries. */
    IDStorageQueue *q3 = NULL;
    EXPECT_HR(files->lpVtbl->QueryInterface(files, &IID_IDStorageQueue3, (void **)&q3), S_OK);
    EXPECT_HR(files->lpVtbl->QueryInterface(files, &IID_IDStorageFile, (void **)&nothing), E_NOINTERFACE);
    CHECK(files->lpVtbl->GetCompressionSupport(files, DSTORAGE_COMPRESSION_FORMAT_GDEFLATE) ==
          DSTORAGE_COMPRESSION_SUPPORT_CPU_FALLBACK);
    CHECK(files->lpVtbl->GetCompressionSupport(files, DSTORAGE_CUSTOM_COMPRESSION_0) == 0);
    DSTORAGE_QUEUE_INFO qinfo;
    files->lpVtbl->Query(files, &qinfo);
    CHECK(qinfo.Desc.Capacity == DSTORAGE_MAX_QUEUE_CAPACITY && qinfo.EmptySlotCount == DSTORAGE_MAX_QUEUE_CAPACITY - 1);
    CHECK(strcmp(qinfo.Desc.Name, "test queue") == 0);
    q3->lpVtbl->Release(q3);
    files1->lpVtbl->Release(files1);

    /* EnqueueRequests gated on a D3D12 fence: neither they nor anything enqueued after them runs
     * until the fence reaches the value; then all of it, in order. */
    struct ID3D12Fence gate = {&fence_vtbl, 1, 0, NULL, 0};
    unsigned char *gated = calloc(2, 4096);
    DSTORAGE_REQUEST two[2] = {file_request(on_z, 0, 4096, gated, 4096), file_request(on_z, 4096, 4096, gated + 4096, 4096)};
    two[0].Name = "gated";
    files->lpVtbl->EnqueueRequests(files, two, 2, &gate, 3, DSTORAGE_ENQUEUE_REQUEST_FLAG_FENCE_WAIT_BEFORE_SOURCE_ACCESS);
    r = file_request(on_z, 8192, 64, small, 64);
    files->lpVtbl->EnqueueRequest(files, &r);
    files->lpVtbl->EnqueueStatus(files, status, 0);
    HANDLE after = CreateEventW(NULL, TRUE, FALSE, NULL);
    files->lpVtbl->EnqueueSetEvent(files, after);
    files->lpVtbl->Submit(files);
    Sleep(100);
    CHECK(!status->lpVtbl->IsComplete(status, 0));
    CHECK(WaitForSingleObject(after, 0) == WAIT_TIMEOUT);
    for (int i = 0; i < 8192; i++) CHECK(gated[i] == 0);
    gate.lpVtbl->Signal(&gate, 2); /* not there yet */
    Sleep(50);
    CHECK(!status->lpVtbl->IsComplete(status, 0));
    gate.lpVtbl->Signal(&gate, 3);
    EXPECT_HR(wait_status(status, 0), S_OK);
    CHECK(WaitForSingleObject(after, 10000) == WAIT_OBJECT_0);
    CHECK(memcmp(gated, from_c, 8192) == 0);
    CHECK(memcmp(small, from_c + 8192, 64) == 0);
    for (int i = 0; i < 10000 && gate.refs != 1; i++) Sleep(1);
    CHECK(gate.refs == 1); /* the DLL's reference went back */
    /* A fence reached already gates nothing; unknown flags are refused. */
    memset(gated, 0, 8192);
    files->lpVtbl->EnqueueRequests(files, two, 2, &gate, 3, DSTORAGE_ENQUEUE_REQUEST_FLAG_FENCE_WAIT_BEFORE_GPU_WORK);
    files->lpVtbl->EnqueueStatus(files, status, 0);
    files->lpVtbl->Submit(files);
    EXPECT_HR(wait_status(status, 0), S_OK);
    CHECK(memcmp(gated, from_c, 8192) == 0);
    files->lpVtbl->EnqueueRequests(files, two, 1, &gate, 3, 0x80);
    files->lpVtbl->EnqueueStatus(files, status, 0);
    files->lpVtbl->Submit(files);
    EXPECT_HR(wait_status(status, 0), E_INVALIDARG);
    files->lpVtbl->RetrieveErrorRecord(files, &record);
    CHECK(record.FailureCount == 1);
    /* Closing a queue with a gate pending drops what it held and lets the fence go. */
    IDStorageQueue *closing = make_queue(factory, DSTORAGE_REQUEST_SOURCE_FILE, NULL);
    struct ID3D12Fence never = {&fence_vtbl, 1, 0, NULL, 0};
    closing->lpVtbl->EnqueueRequests(closing, two, 2, &never, 10, 0);
    closing->lpVtbl->EnqueueStatus(closing, status, 3);
    closing->lpVtbl->Submit(closing);
    closing->lpVtbl->Close(closing);
    closing->lpVtbl->Release(closing);
    for (int i = 0; i < 10000 && never.refs != 1; i++) Sleep(1);
    CHECK(never.refs == 1);
    CloseHandle(after);
    free(gated);
    printf("fence-gated EnqueueRequests: held with what followed until the fence, then run in order\n");

    /* Custom decompression: requests in a custom format go to the title through the factory's
     * IDStorageCustomDecompressionQueue; what follows them waits for the title's result. Here
     * the "format" is XOR 0x5a; the file's bytes read through it are the asset's XORed. */
    IDStorageCustomDecompressionQueue *custom = NULL;
    EXPECT_HR(factory->lpVtbl->QueryInterface(factory, &IID_IDStorageCustomDecompressionQueue1, (void **)&custom), S_OK);
    HANDLE ready = custom->lpVtbl->GetEvent(custom);
    CHECK(ready != NULL);
    unsigned char *xored = malloc(4096), *out3 = calloc(3, 4096);
    for (int i = 0; i < 4096; i++) xored[i] = asset_byte(i) ^ 0x5a;
    m.Options.CompressionFormat = DSTORAGE_CUSTOM_COMPRESSION_0;
    m.Source.Memory.Source = xored;
    m.Source.Memory.Size = 4096;
    m.Destination.Memory.Buffer = out3;
    m.Destination.Memory.Size = 4096;
    m.UncompressedSize = 4096;
    memory->lpVtbl->EnqueueRequest(memory, &m);                       /* from memory */
    r = file_request(on_z, 0, 4096, out3 + 4096, 4096);
    r.Options.CompressionFormat = DSTORAGE_CUSTOM_COMPRESSION_0 + 1;
    r.Name = "custom from a file";
    files->lpVtbl->EnqueueRequest(files, &r);                         /* from a file */
    r = file_request(on_z, 4096, 4096, out3 + 8192, 4096);
    r.Options.CompressionFormat = DSTORAGE_CUSTOM_COMPRESSION_0;
    r.Name = "custom that fails";
    files->lpVtbl->EnqueueRequest(files, &r);                         /* the title fails this one */
    r = file_request(on_z, 0, 64, small, 64);                         /* a plain one goes past them */
    files->lpVtbl->EnqueueRequest(files, &r);
    memory->lpVtbl->EnqueueStatus(memory, status, 2);
    files->lpVtbl->EnqueueStatus(files, status, 3);
    memory->lpVtbl->Submit(memory);
    files->lpVtbl->Submit(files);
    DSTORAGE_CUSTOM_DECOMPRESSION_REQUEST got_requests[8];
    UINT32 taken = 0, n = 0;
    for (int i = 0; i < 10000 && taken < 3; i++) {
        CHECK(WaitForSingleObject(ready, 10000) == WAIT_OBJECT_0);
        EXPECT_HR(custom->lpVtbl->GetRequests(custom, 8 - taken, got_requests + taken, &n), S_OK);
        taken += n;
    }
    CHECK(taken == 3); /* all three with the title at once */
    CHECK(!status->lpVtbl->IsComplete(status, 2) && !status->lpVtbl->IsComplete(status, 3));
    /* The plain request does not wait for them: it lands while the title still holds all
     * three (it may be a moment behind them, whose reads can finish first). */
    for (int i = 0; i < 1000 && memcmp(small, from_c, 64) != 0; i++) Sleep(10);
    CHECK(memcmp(small, from_c, 64) == 0);
    EXPECT_HR(custom->lpVtbl->GetRequests1(custom, DSTORAGE_GET_REQUEST_FLAG_SELECT_BUILTIN, 8, got_requests + 3, &n), S_OK);
    CHECK(n == 0);
    DSTORAGE_CUSTOM_DECOMPRESSION_RESULT results[3];
    for (UINT32 i = 0; i < 3; i++) {
        DSTORAGE_CUSTOM_DECOMPRESSION_REQUEST *c = &got_requests[i];
        CHECK(c->SrcSize == 4096 && c->DstSize == 4096 && c->CompressionFormat >= DSTORAGE_CUSTOM_COMPRESSION_0);
        const unsigned char *src = c->SrcBuffer;
        unsigned char *dst = c->DstBuffer;
        BOOL from_memory = c->SrcBuffer == xored;
        for (int k = 0; k < 4096; k++) dst[k] = from_memory ? src[k] ^ 0x5a : src[k];
        results[i].Id = c->Id;
        results[i].Result = dst == out3 + 8192 ? E_FAIL : S_OK;
    }
    DSTORAGE_CUSTOM_DECOMPRESSION_RESULT unknown = {999999, S_OK};
    EXPECT_HR(custom->lpVtbl->SetRequestResults(custom, 1, &unknown), E_INVALIDARG);
    EXPECT_HR(custom->lpVtbl->SetRequestResults(custom, 3, results), S_OK);
    EXPECT_HR(wait_status(status, 2), S_OK);
    EXPECT_HR(wait_status(status, 3), E_FAIL);
    for (int k = 0; k < 8192; k++) CHECK(out3[k] == asset_byte(k % 4096));
    files->lpVtbl->RetrieveErrorRecord(files, &record);
    CHECK(record.FailureCount == 1);
    CHECK(strcmp(record.FirstFailure.Request.RequestName, "custom that fails") == 0);
    EXPECT_HR(record.FirstFailure.HResult, E_FAIL);
    /* Closing a queue with custom reads in flight ends them quietly: dsr calls none of them back
     * after its close, so the DLL ends them itself; the title never sees them. */
    unsigned char *sink = malloc(8 * 4096);
    for (int round = 0; round < 40; round++) {
        IDStorageQueue *brief = make_queue(factory, DSTORAGE_REQUEST_SOURCE_FILE, NULL);
        for (int k = 0; k < 8; k++) {
            r = file_request(on_z, 4096 * (k % 2), 4096, sink + 4096 * k, 4096);
            r.Options.CompressionFormat = DSTORAGE_CUSTOM_COMPRESSION_0;
            brief->lpVtbl->EnqueueRequest(brief, &r);
        }
        brief->lpVtbl->Submit(brief);
        if (round % 2) Sleep(0);
        brief->lpVtbl->Close(brief);
        brief->lpVtbl->Release(brief);
    }
    EXPECT_HR(custom->lpVtbl->GetRequests(custom, 8, got_requests, &n), S_OK);
    CHECK(n == 0);
    free(sink);
    custom->lpVtbl->Release(custom);
    free(xored);
    free(out3);
    printf("custom decompression: memory and file requests with the title at once, results in order; closed with reads in flight, ended quietly\n");

    /* Hostile calls: the right HRESULT, never a crash. */
    DSTORAGE_QUEUE_DESC desc;
    memset(&desc, 0, sizeof desc);
    desc.Capacity = DSTORAGE_MIN_QUEUE_CAPACITY - 1;
    EXPECT_HR(factory->lpVtbl->CreateQueue(factory, &desc, &IID_IDStorageQueue, &nothing),
              E_DSTORAGE_INVALID_QUEUE_CAPACITY);
    desc.Capacity = DSTORAGE_MIN_QUEUE_CAPACITY;
    desc.Priority = 5;
    EXPECT_HR(factory->lpVtbl->CreateQueue(factory, &desc, &IID_IDStorageQueue, &nothing),
              E_DSTORAGE_INVALID_QUEUE_PRIORITY);
    EXPECT_HR(factory->lpVtbl->CreateQueue(factory, NULL, &IID_IDStorageQueue, &nothing), E_INVALIDARG);
    EXPECT_HR(factory->lpVtbl->CreateQueue(factory, &desc, &IID_IDStorageQueue, NULL), E_POINTER);
    EXPECT_HR(factory->lpVtbl->OpenFile(factory, NULL, &IID_IDStorageFile, &nothing), E_INVALIDARG);
    EXPECT_HR(factory->lpVtbl->CreateStatusArray(factory, 0, NULL, &IID_IDStorageStatusArray, &nothing), E_INVALIDARG);
    EXPECT_HR(status->lpVtbl->GetHResult(status, 99), E_DSTORAGE_INDEX_BOUND);
    EXPECT_HR(factory->lpVtbl->SetStagingBufferSize(factory, 64 << 20), E_DSTORAGE_STAGING_BUFFER_LOCKED);
    EXPECT_HR(DStorageSetConfiguration1(&config), E_DSTORAGE_STAGING_BUFFER_LOCKED);
    EXPECT_HR(DStorageSetConfiguration1(NULL), E_INVALIDARG);
    files->lpVtbl->EnqueueRequest(files, NULL);
    files->lpVtbl->EnqueueStatus(files, NULL, 0);
    files->lpVtbl->EnqueueSetEvent(files, NULL);
    files->lpVtbl->EnqueueSignal(files, NULL, 1);
    files->lpVtbl->RetrieveErrorRecord(files, NULL);
    files->lpVtbl->Query(files, NULL);
    files->lpVtbl->EnqueueStatus(files, status, 1);
    files->lpVtbl->Submit(files);
    EXPECT_HR(wait_status(status, 1), E_INVALIDARG); /* the null request, first since the last status */
    r = file_request(on_c, 0, 64, small, 64);
    r.Options.DestinationType = DSTORAGE_REQUEST_DESTINATION_BUFFER; /* no D3D12 device here */
    files->lpVtbl->EnqueueRequest(files, &r);
    files->lpVtbl->EnqueueStatus(files, status, 1);
    files->lpVtbl->Submit(files);
    EXPECT_HR(wait_status(status, 1), E_DSTORAGE_INVALID_DESTINATION_TYPE);
    on_c->lpVtbl->Close(on_c);
    r = file_request(on_c, 0, 64, small, 64); /* a closed file */
    files->lpVtbl->EnqueueRequest(files, &r);
    files->lpVtbl->EnqueueStatus(files, status, 1);
    files->lpVtbl->Submit(files);
    EXPECT_HR(wait_status(status, 1), E_DSTORAGE_INVALID_FILE_HANDLE);
    EXPECT_HR(on_c->lpVtbl->GetFileInformation(on_c, &info), E_DSTORAGE_FILE_NOT_OPEN);
    files->lpVtbl->Close(files);
    files->lpVtbl->Close(files);
    files->lpVtbl->EnqueueRequest(files, &r); /* after close: recorded, never run */
    files->lpVtbl->Submit(files);
    printf("hostile calls: each got its HRESULT\n");

    /* The codec: a round trip through dsr's GDeflate, the bound, too small a buffer, bad data. */
    IDStorageCompressionCodec *codec = NULL;
    EXPECT_HR(DStorageCreateCompressionCodec(DSTORAGE_COMPRESSION_FORMAT_NONE, 0, &IID_IDStorageCompressionCodec,
                                             (void **)&codec),
              E_INVALIDARG);
    EXPECT_HR(DStorageCreateCompressionCodec(DSTORAGE_COMPRESSION_FORMAT_GDEFLATE, 2, &IID_IDStorageFactory,
                                             (void **)&codec),
              E_NOINTERFACE);
    EXPECT_HR(DStorageCreateCompressionCodec(DSTORAGE_COMPRESSION_FORMAT_GDEFLATE, 2, &IID_IDStorageCompressionCodec,
                                             (void **)&codec),
              S_OK);
    size_t bound = codec->lpVtbl->CompressBufferBound(codec, size);
    CHECK(bound > size);
    unsigned char *packed_here = malloc(bound);
    size_t packed_len = 0, unpacked_len = 0;
    EXPECT_HR(codec->lpVtbl->CompressBuffer(codec, from_c, size, DSTORAGE_COMPRESSION_BEST_RATIO, packed_here, bound,
                                            &packed_len),
              S_OK);
    CHECK(packed_len > 0 && packed_len < size);
    memset(decoded, 0, size);
    EXPECT_HR(codec->lpVtbl->DecompressBuffer(codec, packed_here, packed_len, decoded, size, &unpacked_len), S_OK);
    CHECK(unpacked_len == size && memcmp(decoded, from_c, size) == 0);
    /* What the queue decodes, the codec decodes: the harness's stream, from memory. */
    EXPECT_HR(codec->lpVtbl->DecompressBuffer(codec, stream, packed_size, decoded, size, &unpacked_len), S_OK);
    CHECK(unpacked_len == size && decoded[size - 1] == asset_byte(size - 1));
    EXPECT_HR(codec->lpVtbl->DecompressBuffer(codec, packed_here, packed_len, decoded, size - 1, &unpacked_len),
              HRESULT_FROM_WIN32(ERROR_INSUFFICIENT_BUFFER));
    CHECK(unpacked_len == size);
    EXPECT_HR(codec->lpVtbl->CompressBuffer(codec, from_c, size, DSTORAGE_COMPRESSION_DEFAULT, packed_here, 10,
                                            &packed_len),
              HRESULT_FROM_WIN32(ERROR_INSUFFICIENT_BUFFER));
    EXPECT_HR(codec->lpVtbl->DecompressBuffer(codec, packed_here, 5, decoded, size, &unpacked_len),
              E_DSTORAGE_DECOMPRESSION_ERROR);
    EXPECT_HR(codec->lpVtbl->CompressBuffer(codec, from_c, size, 7, packed_here, bound, &packed_len), E_INVALIDARG);
    CHECK(codec->lpVtbl->CompressBufferBound(codec, 0) == 0);
    codec->lpVtbl->Release(codec);
    free(packed_here);
    printf("codec: GDeflate round trip, the queue's stream, bound and errors\n");

    files->lpVtbl->Release(files);
    memory->lpVtbl->Release(memory);
    status->lpVtbl->Release(status);
    on_c->lpVtbl->Release(on_c);
    on_z->lpVtbl->Release(on_z);
    packed->lpVtbl->Release(packed);
    factory->lpVtbl->Release(factory);
    printf("dstorage.dll under Wine: every check passed\n");
    return 0;
}
