/*
 * dsr.h: the C ABI of dsr (libdsr.so / libdsr.a), DirectStorage-class asset streaming for
 * Linux. C11; no C++ needed. Written by hand; capi/tests/c_api.rs checks every declaration and
 * struct layout here against the Rust definitions.
 *
 * The model is DirectStorage's: a runtime (the factory) opens files and makes queues; requests
 * are enqueued on a queue and start at dsr_queue_submit, when the queue is half full, or early
 * (groups of 16, 32, 64, ... enqueued, while dsr's workers have room for them);
 * status, signal and event entries complete after everything enqueued before them.
 *
 * Handles are 64-bit values checked on every call: a stale, destroyed or forged handle is
 * DSR_E_INVALID_HANDLE, never a wild pointer. Every function is safe to call from several
 * threads at once, returns a dsr_result, and never lets a panic or a crash cross into the
 * caller. Structs start with `struct_size` (set it to sizeof the struct): a size dsr does not
 * know is DSR_E_INVALID_ARGUMENT.
 *
 * Memory: a read's destination must stay valid, and untouched by the caller, until the request
 * completes (its callback runs, or a later status/signal/event entry completes). Memory sources
 * (memory reads, writes) are borrowed, not copied, as DirectStorage's are: they too must stay
 * valid and unchanged until the request completes.
 *
 * Vulkan: a runtime made with dsr_runtime_create_vulkan on the caller's VkDevice takes requests
 * whose destination (reads) or source (writes) is a range of the caller's VkBuffer, imported as
 * a dsr_buffer, and signal entries for the caller's timeline semaphores. This header needs no
 * Vulkan header: Vulkan handles are passed as `void *` (dispatchable) and `uint64_t`
 * (non-dispatchable), as the 64-bit Vulkan ABI defines them.
 */
#ifndef DSR_H
#define DSR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this header; dsr_runtime_config.api_version must carry it. */
#define DSR_API_VERSION 1

/* Results. Zero is success, positive values are not errors, negative values are. The mapping
 * to DirectStorage's HRESULTs is in docs/capi.md. */
typedef int32_t dsr_result;
#define DSR_OK                        0
#define DSR_PENDING                   1   /* a status entry not yet complete */
#define DSR_TIMEOUT                   2   /* a wait ran out of time */
#define DSR_E_INVALID_ARGUMENT       -1   /* null pointer, wrong struct size, bad value */
#define DSR_E_INVALID_HANDLE         -2   /* stale, destroyed or forged handle */
#define DSR_E_VERSION                -3   /* api_version is not DSR_API_VERSION */
#define DSR_E_WOULD_BLOCK            -4   /* the queue is full (dsr_queue_try_enqueue) */
#define DSR_E_CLOSED                 -5   /* the queue is closed */
#define DSR_E_NOT_FOUND              -6
#define DSR_E_PERMISSION             -7
#define DSR_E_IO                     -8   /* see the error's errno */
#define DSR_E_END_OF_FILE            -9   /* the range runs past the end of the file */
#define DSR_E_DESTINATION_TOO_SMALL -10
#define DSR_E_OVERLAP               -11   /* overlapping destinations, or a read and a write */
#define DSR_E_OUT_OF_MEMORY         -12
#define DSR_E_DEVICE                -13   /* the GPU failed; see the error's VkResult */
#define DSR_E_CORRUPT               -14   /* bad compressed data, hash mismatch */
#define DSR_E_UNSUPPORTED           -15
#define DSR_E_CANCELLED             -16   /* a request's result when it was cancelled */
#define DSR_E_INTERNAL              -17   /* a bug in dsr; the call failed, nothing else did */
#define DSR_E_BUSY                  -18   /* the runtime's configuration cannot change now */

typedef uint64_t dsr_runtime;
typedef uint64_t dsr_file;
typedef uint64_t dsr_queue;
typedef uint64_t dsr_fence;
typedef uint64_t dsr_status_array;
typedef uint64_t dsr_buffer;

/* dsr_runtime_config.flags */
#define DSR_RUNTIME_DISABLE_GPU_DECOMPRESSION 0x1u
#define DSR_RUNTIME_FORCE_FILE_BUFFERING      0x2u
/* dsr_runtime_config.debug_flags */
#define DSR_DEBUG_SHOW_ERRORS  0x1u
#define DSR_DEBUG_RECORD_NAMES 0x4u

typedef struct dsr_runtime_config {
    uint32_t struct_size;
    uint32_t api_version;   /* DSR_API_VERSION */
    uint64_t staging_bytes; /* 0: the default (256 MiB) */
    uint32_t workers;       /* 0: one per core */
    uint32_t flags;
    uint32_t debug_flags;
    uint32_t reserved;      /* 0 */
} dsr_runtime_config;

/* dsr_queue_desc.source_type */
#define DSR_SOURCE_FILE   0u
#define DSR_SOURCE_MEMORY 1u
/* dsr_queue_desc.priority */
#define DSR_PRIORITY_LOW      -1
#define DSR_PRIORITY_NORMAL    0
#define DSR_PRIORITY_HIGH      1
#define DSR_PRIORITY_REALTIME  2
/* dsr_queue_desc.capacity bounds */
#define DSR_MIN_QUEUE_CAPACITY 0x80u
#define DSR_MAX_QUEUE_CAPACITY 0x2000u
/* dsr_queue_desc.flags */
#define DSR_QUEUE_TRACK_COMPLETIONS 0x1u  /* keep completions for dsr_queue_take_completed */

typedef struct dsr_queue_desc {
    uint32_t struct_size;
    uint32_t source_type;
    uint32_t capacity;     /* DSR_MIN_QUEUE_CAPACITY..=DSR_MAX_QUEUE_CAPACITY */
    int32_t priority;
    const char *name;      /* may be NULL */
    uint32_t flags;
    uint32_t reserved;     /* 0 */
} dsr_queue_desc;

/* dsr_request.kind */
#define DSR_REQUEST_READ_FILE   0u  /* file range -> memory */
#define DSR_REQUEST_READ_MEMORY 1u  /* memory -> memory (decoding, if compressed) */
#define DSR_REQUEST_WRITE_FILE  2u  /* memory -> file range */
/* dsr_request.compression */
#define DSR_COMPRESSION_NONE     0u
#define DSR_COMPRESSION_GDEFLATE 1u
/* dsr_request.options */
#define DSR_OPTION_SYNC     0x1u  /* writes: fdatasync before completing */
#define DSR_OPTION_BUFFERED 0x2u  /* through the page cache */
#define DSR_OPTION_DIRECT   0x4u  /* O_DIRECT, or fail */

/* Called once per request, from a dsr thread, with how it ended: keep it short. */
typedef void (*dsr_request_callback)(void *user_data, dsr_result result);

typedef struct dsr_request {
    uint32_t struct_size;
    uint32_t kind;
    uint32_t compression;
    uint32_t options;
    dsr_file file;               /* READ_FILE, WRITE_FILE */
    uint64_t file_offset;        /* READ_FILE: first byte read; WRITE_FILE: first byte written */
    const void *source;          /* READ_MEMORY, WRITE_FILE: the bytes (borrowed until completion) */
    uint64_t source_size;        /* bytes read from the file or taken from `source` */
    void *destination;           /* READ_*: where the bytes land */
    uint64_t destination_size;   /* READ_*: bytes that land (the uncompressed size) */
    uint64_t tag;                /* for dsr_queue_cancel */
    const char *name;            /* may be NULL; error records keep 64 characters */
    dsr_request_callback callback; /* may be NULL */
    void *user_data;
    /* Vulkan runtimes: with `buffer` set (not 0), a read lands in the buffer at `buffer_offset`
     * instead of `destination` (which must be NULL), and a write takes its bytes from the
     * buffer at `buffer_offset` instead of `source` (which must be NULL). */
    dsr_buffer buffer;
    uint64_t buffer_offset;
} dsr_request;

typedef struct dsr_queue_info {
    uint32_t struct_size;
    uint32_t empty_slots;        /* capacity - 1 when empty */
    uint32_t until_auto_submit;
    uint32_t reserved;
} dsr_queue_info;

typedef struct dsr_completion {
    void *user_data;
    dsr_result result;
    uint32_t reserved;
} dsr_completion;

/* What a failure carries. Strings are NUL-terminated and cut to fit. */
typedef struct dsr_error_info {
    uint32_t struct_size;
    dsr_result result;
    int32_t os_errno;            /* 0 when none */
    int32_t vk_result;           /* 0 when none */
    uint32_t tile;               /* 0xffffffff when none */
    uint32_t reserved;
    uint64_t offset;             /* file offset; UINT64_MAX when none */
    char stage[16];              /* "read", "decompress-cpu", "write", ... or "" */
    char file[512];
    char request_name[65];
    char message[319];
} dsr_error_info;

typedef void (*dsr_error_callback)(void *user_data, const dsr_error_info *error);

typedef struct dsr_error_record {
    uint32_t struct_size;
    uint32_t failure_count;      /* failures since the record was last retrieved */
    dsr_error_info first;        /* the first in enqueue order (result DSR_OK when none) */
    dsr_request request;         /* a copy of that request, as enqueued */
} dsr_error_record;

/* Takes or releases the lock of the caller's queues (see dsr_vulkan_device). */
typedef void (*dsr_queue_lock_fn)(void *user_data);
typedef void (*dsr_vk_void_function)(void);
/* PFN_vkGetInstanceProcAddr, with the VkInstance as `void *`. */
typedef dsr_vk_void_function (*dsr_vk_get_instance_proc_addr)(void *instance, const char *name);

/* A Vulkan device the caller made and keeps: dsr uses it and destroys none of it. It must be
 * Vulkan 1.2 or later with the `timelineSemaphore` feature enabled, and outlive the runtime. */
typedef struct dsr_vulkan_device {
    uint32_t struct_size;
    uint32_t reserved;                /* 0 */
    void *instance;                   /* VkInstance */
    void *physical_device;            /* VkPhysicalDevice */
    void *device;                     /* VkDevice */
    /* The vkGetInstanceProcAddr the instance was made with; NULL: the system's libvulkan.so.1. */
    dsr_vk_get_instance_proc_addr get_instance_proc_addr;
    uint32_t transfer_family;         /* the queue uploads and copies go to */
    uint32_t transfer_index;
    uint32_t compute_family;          /* the queue compute work goes to (may be the same) */
    uint32_t compute_index;
    /* Vulkan requires a queue's submissions to be serialised. If the caller also submits to
     * these queues, dsr calls lock_queue / unlock_queue around each of its own submissions (set
     * both, or neither when nobody else submits to them). Called from dsr's threads. */
    dsr_queue_lock_fn lock_queue;
    dsr_queue_lock_fn unlock_queue;
    void *lock_user_data;
    /* The queues themselves (VkQueue), for callers that know a queue but not the index it was
     * made with (a D3D12 translation layer's); NULL: queue `transfer_index` / `compute_index` of
     * the family. Added after the first header: a struct_size that ends at lock_user_data is
     * still accepted, and reads these as NULL. */
    void *transfer_queue;
    void *compute_queue;
} dsr_vulkan_device;

/* The runtime. */
dsr_result dsr_runtime_create(const dsr_runtime_config *config, dsr_runtime *out);
dsr_result dsr_runtime_destroy(dsr_runtime runtime);
/* DSR_E_BUSY while a queue or file of the runtime is open. */
dsr_result dsr_runtime_set_config(dsr_runtime runtime, const dsr_runtime_config *config);
/* Called for every failed request of every queue of the runtime; NULL removes it. */
dsr_result dsr_runtime_set_error_callback(dsr_runtime runtime, dsr_error_callback callback, void *user_data);
/* A runtime on the caller's Vulkan device. DSR_E_UNSUPPORTED without a Vulkan loader. */
dsr_result dsr_runtime_create_vulkan(const dsr_runtime_config *config, const dsr_vulkan_device *device,
                                     dsr_runtime *out);

/* GPU buffers of a Vulkan runtime: `vk_buffer` is a VkBuffer of the runtime's device, bound to
 * memory, made with TRANSFER_SRC and TRANSFER_DST usage, `size` bytes long, and alive until every
 * request naming it has completed. Requests are checked against `size`. Releasing the handle
 * does not wait for requests already enqueued. DSR_E_UNSUPPORTED on a runtime without a device. */
dsr_result dsr_buffer_import(dsr_runtime runtime, uint64_t vk_buffer, uint64_t size, dsr_buffer *out);
dsr_result dsr_buffer_release(dsr_buffer buffer);

/* Files: the handle may be closed while requests made with it are in flight. `size_out`, when not
 * NULL, receives the file's size; NULL spares the `statx` that asks it (a fifth of an open). */
dsr_result dsr_file_open(dsr_runtime runtime, const char *path, dsr_file *out, uint64_t *size_out);
dsr_result dsr_file_close(dsr_file file);

/* Queues. */
dsr_result dsr_queue_create(dsr_runtime runtime, const dsr_queue_desc *desc, dsr_queue *out);
/* Closes the queue (nothing completes afterwards) and frees the handle. */
dsr_result dsr_queue_destroy(dsr_queue queue);
dsr_result dsr_queue_enqueue(dsr_queue queue, const dsr_request *request);       /* blocks when full */
dsr_result dsr_queue_try_enqueue(dsr_queue queue, const dsr_request *request);   /* DSR_E_WOULD_BLOCK */
dsr_result dsr_queue_enqueue_status(dsr_queue queue, dsr_status_array array, uint32_t index);
dsr_result dsr_queue_enqueue_signal(dsr_queue queue, dsr_fence fence, uint64_t value);
/* Vulkan runtimes: the timeline semaphore `vk_semaphore` (of the runtime's device, alive until
 * it is signalled) is signalled to `value` on the GPU once everything enqueued before it has
 * finished, after the transfers that wrote their buffers. DSR_E_INVALID_ARGUMENT for a value the
 * semaphore has reached, DSR_E_UNSUPPORTED on a runtime without a device. */
dsr_result dsr_queue_enqueue_vulkan_signal(dsr_queue queue, uint64_t vk_semaphore, uint64_t value);
/* `eventfd` is duplicated; dsr writes 1 to it when the entry completes. */
dsr_result dsr_queue_enqueue_event(dsr_queue queue, int eventfd);
dsr_result dsr_queue_submit(dsr_queue queue);
/* Cancels requests whose tag & mask == value; cancelled requests are not failures. */
dsr_result dsr_queue_cancel(dsr_queue queue, uint64_t mask, uint64_t value);
dsr_result dsr_queue_query(dsr_queue queue, dsr_queue_info *out);
/* Waits until nothing in flight touches its destination, then completes nothing more. From a
 * request's callback (a dsr worker) it cancels what is in flight without waiting, since that may
 * need the callback's thread; a later dsr_queue_close or dsr_queue_destroy from another thread
 * waits for it. */
dsr_result dsr_queue_close(dsr_queue queue);
/* An eventfd readable when a request fails; valid until the queue is destroyed. */
dsr_result dsr_queue_error_event(dsr_queue queue, int *fd_out);
dsr_result dsr_queue_retrieve_error_record(dsr_queue queue, dsr_error_record *out);
/* Completed requests since the last call (DSR_QUEUE_TRACK_COMPLETIONS), oldest first. */
dsr_result dsr_queue_take_completed(dsr_queue queue, dsr_completion *out, size_t capacity, size_t *count_out);

/* Fences: 64-bit values signal entries set. */
dsr_result dsr_fence_create(dsr_fence *out);
dsr_result dsr_fence_destroy(dsr_fence fence);
dsr_result dsr_fence_value(dsr_fence fence, uint64_t *value_out);
/* DSR_OK once the value is at least `value`, DSR_TIMEOUT after `timeout_ms`. */
dsr_result dsr_fence_wait(dsr_fence fence, uint64_t value, uint32_t timeout_ms);
/* An eventfd readable whenever the fence is set; valid until the fence is destroyed. */
dsr_result dsr_fence_eventfd(dsr_fence fence, int *fd_out);

/* Status arrays. */
dsr_result dsr_status_array_create(uint32_t length, dsr_status_array *out);
dsr_result dsr_status_array_destroy(dsr_status_array array);
/* *result_out: DSR_PENDING, DSR_OK (also for an entry never enqueued) or the first failure. */
dsr_result dsr_status_array_get(dsr_status_array array, uint32_t index, dsr_result *result_out);

/* GDeflate, as dsr encodes and decodes it: DirectStorage's TileStream format, on the calling
 * thread. Levels run from 0 (stored) to 12 (smallest). */
#define DSR_GDEFLATE_LEVEL_STORED  0u
#define DSR_GDEFLATE_LEVEL_FASTEST 1u
#define DSR_GDEFLATE_LEVEL_DEFAULT 6u
#define DSR_GDEFLATE_LEVEL_BEST    12u
/* The most bytes dsr_gdeflate_compress writes for `size` input bytes; DSR_E_UNSUPPORTED for
 * sizes no stream holds (0, or over 65535 tiles of 64 KiB). */
dsr_result dsr_gdeflate_compress_bound(uint64_t size, uint64_t *bound_out);
/* Compresses `source` into `destination`; *written_out is the stream's size, or, with
 * DSR_E_DESTINATION_TOO_SMALL, the capacity it needs. */
dsr_result dsr_gdeflate_compress(const void *source, uint64_t source_size, uint32_t level, void *destination,
                                 uint64_t destination_capacity, uint64_t *written_out);
/* Decodes a whole stream into `destination`; *written_out is the decoded size, or, with
 * DSR_E_DESTINATION_TOO_SMALL, the capacity it needs. DSR_E_CORRUPT for a bad stream. */
dsr_result dsr_gdeflate_decompress(const void *source, uint64_t source_size, void *destination,
                                   uint64_t destination_capacity, uint64_t *written_out);

/* A short English name of a result code ("DSR_E_NOT_FOUND"); never NULL. */
const char *dsr_result_name(dsr_result result);

#ifdef __cplusplus
}
#endif

#endif /* DSR_H */
