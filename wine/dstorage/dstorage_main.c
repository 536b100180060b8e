/*
 * dstorage.dll for Wine, over libdsr.so: a Winelib DLL (an ELF that Wine loads as a builtin)
 * implementing DirectStorage's factory, files, queues and status arrays, for memory destinations
 * and (through vkd3d-proton's Vulkan interop) D3D12 buffers.
 *
 * Threads. Every COM method runs on the game's (Wine) thread and calls libdsr directly. dsr's
 * workers are not Wine threads and never call Win32: they finish requests, write status arrays
 * and signal eventfds. One dispatcher thread per process, created by Wine, polls those eventfds
 * and turns them into Win32: SetEvent for EnqueueSetEvent and the error event, the D3D12 fence's
 * Signal for EnqueueSignal.
 *
 * Errors. DirectStorage's enqueue methods return nothing: a request dsr refuses at enqueue, or
 * one this DLL cannot serve (a texture destination), is recorded as a failure in
 * the queue's error record (and its error event set), and the next status entry reports it.
 */
#define _GNU_SOURCE /* dl_iterate_phdr */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "windef.h"
#include "winbase.h"
#include "winerror.h"
#include "winternl.h"
#include <stdio.h>

#define INITGUID
#include "dstorage.h"
#include "d3d12_interop.h"
#include "dsr.h"

#ifndef ARRAY_SIZE
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#endif

char *CDECL wine_get_unix_file_name(const WCHAR *dos);

/* ---- results ------------------------------------------------------------------------------ */

static HRESULT hresult_of(dsr_result result) {
    switch (result) {
    case DSR_OK: return S_OK;
    case DSR_E_INVALID_ARGUMENT: return E_INVALIDARG;
    case DSR_E_INVALID_HANDLE: return E_HANDLE;
    case DSR_E_VERSION: return E_NOTIMPL;
    case DSR_E_CLOSED: return E_DSTORAGE_QUEUE_CLOSED;
    case DSR_E_NOT_FOUND: return HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND);
    case DSR_E_PERMISSION: return E_ACCESSDENIED;
    case DSR_E_END_OF_FILE: return E_DSTORAGE_END_OF_FILE;
    case DSR_E_DESTINATION_TOO_SMALL: return E_DSTORAGE_INVALID_DESTINATION_SIZE;
    case DSR_E_OVERLAP: return E_INVALIDARG;
    case DSR_E_OUT_OF_MEMORY: return E_OUTOFMEMORY;
    case DSR_E_CORRUPT: return E_DSTORAGE_DECOMPRESSION_ERROR;
    case DSR_E_UNSUPPORTED: return E_NOTIMPL;
    case DSR_E_BUSY: return E_DSTORAGE_STAGING_BUFFER_LOCKED;
    case DSR_E_INTERNAL: return E_UNEXPECTED;
    default: return E_FAIL;
    }
}

/* ---- the dispatcher: eventfds written by dsr, turned into Win32 on a Wine thread ----------- */

enum watch_kind { WATCH_EVENT_ONCE, WATCH_ERROR_EVENT, WATCH_FENCE };

/* ID3D12Fence's vtable as far as Signal (slot 10: IUnknown 3, ID3D12Object 4, ID3D12DeviceChild
 * 1, then ID3D12Fence's GetCompletedValue, SetEventOnCompletion and Signal). */
typedef struct fence_vtbl {
    HRESULT(STDMETHODCALLTYPE *QueryInterface)(ID3D12Fence *, REFIID, void **);
    ULONG(STDMETHODCALLTYPE *AddRef)(ID3D12Fence *);
    ULONG(STDMETHODCALLTYPE *Release)(ID3D12Fence *);
    void *object_methods[4];
    void *GetDevice;
    UINT64(STDMETHODCALLTYPE *GetCompletedValue)(ID3D12Fence *);
    HRESULT(STDMETHODCALLTYPE *SetEventOnCompletion)(ID3D12Fence *, UINT64, HANDLE);
    HRESULT(STDMETHODCALLTYPE *Signal)(ID3D12Fence *, UINT64);
} fence_vtbl;
struct ID3D12Fence {
    const fence_vtbl *lpVtbl;
};

struct watch {
    struct watch *next;
    enum watch_kind kind;
    int fd;                /* an eventfd (owned, except a queue's error event) or a dsr fence's */
    HANDLE event;          /* EVENT_ONCE (owned duplicate), ERROR_EVENT */
    dsr_fence dsr_fence;   /* WATCH_FENCE: dsr's fence, set to 1 when the entry completes */
    ID3D12Fence *d3d12;    /* WATCH_FENCE: the game's fence (a reference held) and its value */
    UINT64 value;
    void *owner;           /* the queue, for removal */
    const volatile LONG *closed; /* the owner's closed flag, if it can close: no watch after */
    uint64_t serial;       /* unique per watch: a freed watch's address may come back */
};

static struct {
    pthread_mutex_t lock;
    struct watch *watches;
    int wake;              /* eventfd: the list changed */
    HANDLE thread;
    HANDLE to_close[64];   /* handles freed off a Wine thread, closed by the dispatcher */
    unsigned closing;
    uint64_t serials;      /* the last watch's serial */
} dispatcher = {PTHREAD_MUTEX_INITIALIZER, NULL, -1, NULL, {0}, 0, 0};

/* The link to the watch that was `w` with `serial` when the dispatcher polled, or NULL when it
 * has been removed since (a queue closed while the poll waited). Called with the lock held; `w`
 * is not read, since it may have been freed. */
static struct watch **watch_find(const struct watch *w, uint64_t serial) {
    for (struct watch **link = &dispatcher.watches; *link; link = &(*link)->next)
        if (*link == w && (*link)->serial == serial) return link;
    return NULL;
}

/* Polls the watches (255 at a time: later ones wait until earlier ones fire) and fires what is
 * ready and still watched: the lock is not held while polling, so a watch may be removed and
 * freed meanwhile. */
static DWORD WINAPI dispatch(void *unused) {
    (void)unused;
    for (;;) {
        struct pollfd fds[256];
        struct watch *watched[256];
        uint64_t serials[256];
        nfds_t n = 1;
        fds[0].fd = dispatcher.wake;
        fds[0].events = POLLIN;
        pthread_mutex_lock(&dispatcher.lock);
        for (struct watch *w = dispatcher.watches; w && n < 256; w = w->next) {
            fds[n].fd = w->fd;
            fds[n].events = POLLIN;
            serials[n] = w->serial;
            watched[n++] = w;
        }
        pthread_mutex_unlock(&dispatcher.lock);
        if (poll(fds, n, -1) < 0 && errno != EINTR) continue;
        uint64_t count;
        if (fds[0].revents & POLLIN) (void)!read(dispatcher.wake, &count, sizeof count);
        pthread_mutex_lock(&dispatcher.lock);
        while (dispatcher.closing) CloseHandle(dispatcher.to_close[--dispatcher.closing]);
        /* Watches that fired for good leave the list here and fire after the lock: a game's
         * fence runs its own code in Signal and Release, which may call back into this DLL. */
        struct watch *fired = NULL;
        for (nfds_t i = 1; i < n; i++) {
            if (!(fds[i].revents & POLLIN)) continue;
            struct watch **link = watch_find(watched[i], serials[i]);
            if (!link) continue;
            struct watch *w = *link;
            (void)!read(w->fd, &count, sizeof count);
            if (w->kind == WATCH_ERROR_EVENT) {
                /* Under the lock: the queue's Close removes this watch under it before the
                 * event can be closed. */
                SetEvent(w->event);
                continue;
            }
            uint64_t reached = 0;
            if (w->kind == WATCH_FENCE && (dsr_fence_value(w->dsr_fence, &reached) != DSR_OK || reached < 1))
                continue;
            *link = w->next;
            /* In the order they were enqueued (by serial): a fence signalled twice in one wake
             * must end at the later value. */
            struct watch **at = &fired;
            while (*at && (*at)->serial < w->serial) at = &(*at)->next;
            w->next = *at;
            *at = w;
        }
        pthread_mutex_unlock(&dispatcher.lock);
        while (fired) {
            struct watch *w = fired;
            fired = w->next;
            if (w->kind == WATCH_FENCE) {
                w->d3d12->lpVtbl->Signal(w->d3d12, w->value);
                w->d3d12->lpVtbl->Release(w->d3d12);
                dsr_fence_destroy(w->dsr_fence);
            } else {
                SetEvent(w->event);
                CloseHandle(w->event);
                close(w->fd);
            }
            free(w);
        }
    }
    return 0;
}

/* Adds `w` to the dispatcher (starting it the first time); FALSE if it cannot run, or if its
 * owner has closed (checked under the lock that Close's watch_remove_owner takes after setting
 * the flag, so no watch of a closed queue outlives its removal). */
static BOOL watch_add(struct watch *w) {
    uint64_t one = 1;
    pthread_mutex_lock(&dispatcher.lock);
    if (w->closed && *w->closed) {
        pthread_mutex_unlock(&dispatcher.lock);
        return FALSE;
    }
    if (!dispatcher.thread) {
        dispatcher.wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (dispatcher.wake >= 0) dispatcher.thread = CreateThread(NULL, 0, dispatch, NULL, 0, NULL);
        if (!dispatcher.thread) {
            pthread_mutex_unlock(&dispatcher.lock);
            return FALSE;
        }
    }
    w->serial = ++dispatcher.serials;
    w->next = dispatcher.watches;
    dispatcher.watches = w;
    pthread_mutex_unlock(&dispatcher.lock);
    (void)!write(dispatcher.wake, &one, sizeof one);
    return TRUE;
}

/* Closes `handle` on a Wine thread: now when this is one, else on the dispatcher's (a dsr worker
 * may drop the last hold on a queue). A handle that cannot be queued (the dispatcher not
 * running, or 64 waiting) is leaked rather than closed off a Wine thread. */
static void close_later(HANDLE handle) {
    if (!handle) return;
    uint64_t one = 1;
    pthread_mutex_lock(&dispatcher.lock);
    BOOL queued = dispatcher.thread && dispatcher.closing < ARRAY_SIZE(dispatcher.to_close);
    if (queued) dispatcher.to_close[dispatcher.closing++] = handle;
    pthread_mutex_unlock(&dispatcher.lock);
    if (queued) (void)!write(dispatcher.wake, &one, sizeof one);
}

/* Drops every watch of `owner` that fires no more (a closed queue's), without firing it. */
static void watch_remove_owner(void *owner) {
    pthread_mutex_lock(&dispatcher.lock);
    for (struct watch **link = &dispatcher.watches; *link;) {
        struct watch *w = *link;
        if (w->owner != owner) {
            link = &w->next;
            continue;
        }
        *link = w->next;
        if (w->kind == WATCH_EVENT_ONCE) {
            CloseHandle(w->event);
            close(w->fd);
        } else if (w->kind == WATCH_FENCE) {
            w->d3d12->lpVtbl->Release(w->d3d12);
            dsr_fence_destroy(w->dsr_fence);
        }
        free(w);
    }
    pthread_mutex_unlock(&dispatcher.lock);
    uint64_t one = 1;
    if (dispatcher.wake >= 0) (void)!write(dispatcher.wake, &one, sizeof one);
}

/* ---- COM ------------------------------------------------------------------------------------ */

/* QueryInterface for an object whose vtable starts with IUnknown's methods and that answers
 * IUnknown and `iids`. */
static HRESULT query(void *iface, const GUID *const *iids, size_t count, REFIID riid, void **out) {
    if (!out) return E_POINTER;
    BOOL known = riid && IsEqualGUID(riid, &IID_IUnknown);
    for (size_t i = 0; riid && !known && i < count; i++) known = IsEqualGUID(riid, iids[i]);
    if (!known) {
        *out = NULL;
        return E_NOINTERFACE;
    }
    IUnknown *unknown = iface;
    unknown->lpVtbl->AddRef(unknown);
    *out = iface;
    return S_OK;
}

/* ---- the factory ---------------------------------------------------------------------------- */

struct factory {
    IDStorageFactory iface;
    LONG refs;
    pthread_mutex_t lock;
    dsr_runtime runtime;   /* 0 until first needed */
    dsr_runtime_config config;
    UINT32 debug_flags;
};

static struct factory the_factory;
static DSTORAGE_CONFIGURATION1 configuration;

static dsr_runtime factory_runtime(struct factory *f) {
    pthread_mutex_lock(&f->lock);
    if (!f->runtime) {
        memset(&f->config, 0, sizeof f->config);
        f->config.struct_size = sizeof f->config;
        f->config.api_version = DSR_API_VERSION;
        f->config.workers = configuration.NumBuiltInCpuDecompressionThreads > 0
                                ? (uint32_t)configuration.NumBuiltInCpuDecompressionThreads
                                : 0;
        if (configuration.ForceFileBuffering) f->config.flags |= DSR_RUNTIME_FORCE_FILE_BUFFERING;
        if (configuration.DisableGpuDecompression) f->config.flags |= DSR_RUNTIME_DISABLE_GPU_DECOMPRESSION;
        f->config.debug_flags = DSR_DEBUG_RECORD_NAMES;
        if (dsr_runtime_create(&f->config, &f->runtime) != DSR_OK) f->runtime = 0;
    }
    dsr_runtime runtime = f->runtime;
    pthread_mutex_unlock(&f->lock);
    return runtime;
}

/* ---- D3D12 buffer destinations: vkd3d-proton's Vulkan device, through its interop --------------
 *
 * A queue made with a D3D12 device gets a link to it, one per device, shared by its queues. When
 * the device answers vkd3d-proton's ID3D12DXVKInteropDevice, the link makes a D3D12 compute
 * queue on it, asks the interop for the Vulkan instance, device and that queue, turns
 * winevulkan's client handles into the host's (what libdsr.so calls), and makes a dsr runtime
 * on that device: buffer destinations become reads into the resource's VkBuffer at its offset.
 * Without the interface (Wine's own vkd3d, a Windows D3D12), or when a step fails, the link
 * remembers why and buffer destinations fail with E_DSTORAGE_INVALID_DESTINATION_TYPE; memory
 * destinations work on every queue.
 *
 * vkd3d-proton submits to the same VkQueue, so dsr takes the queue's lock around its own
 * submissions. LockCommandQueue is PE code and dsr's threads are not Wine threads: a Wine
 * thread of the link's (the proxy) takes and releases the lock on their behalf. */

/* winevulkan's client handles (the PE side's) and the host's. Proton's winevulkan has exported
 * __wine_get_native_Vk*, from the PE DLL (WINAPI) in older releases and from the Unix library (a
 * plain C function) in later ones: both are looked for. Wine 8.0's has neither: a client
 * handle's second word points at its Unix side object, laid out (Wine 8.0's sources, checked
 * here) as
 *   instance:        function table, client handle, host handle, ...
 *   physical device: instance object, client handle, host handle
 *   device:          function table, physical device object, client handle (unset), host handle
 *   queue:           device object, client handle, host handle
 * and each is checked against its parent before its host handle is believed. Other Wine
 * versions lay it out differently (10.0 puts the host handle first): refused, not guessed. */
#define WINEVULKAN_LOADER_MAGIC 0x01CDC0DEull

enum vk_kind { VK_INSTANCE, VK_PHYSICAL_DEVICE, VK_DEVICE, VK_QUEUE, VK_KINDS };
typedef void *(WINAPI *native_handle_pe_fn)(void *client);
typedef void *(*native_handle_unix_fn)(void *client);
static const char *const native_handle_names[VK_KINDS] = {
    "__wine_get_native_VkInstance", "__wine_get_native_VkPhysicalDevice", "__wine_get_native_VkDevice",
    "__wine_get_native_VkQueue"};

static struct {
    pthread_once_t once;
    native_handle_pe_fn proton_pe[VK_KINDS];     /* all set, or none */
    native_handle_unix_fn proton_unix[VK_KINDS]; /* all set, or none */
    BOOL wine8;                                  /* Wine 8.0's layout may be walked */
} host_handles = {PTHREAD_ONCE_INIT, {0}, {0}, FALSE};

static int find_winevulkan(struct dl_phdr_info *info, size_t size, void *path) {
    (void)size;
    const char *name = info->dlpi_name;
    size_t n = name ? strlen(name) : 0;
    if (n >= 14 && !strcmp(name + n - 14, "/winevulkan.so")) {
        lstrcpynA(path, name, MAX_PATH);
        return 1;
    }
    return 0;
}

static void host_handles_init(void) {
    int found = 0;
    HMODULE pe = GetModuleHandleA("winevulkan.dll");
    for (int k = 0; pe && k < VK_KINDS; k++)
        found += !!(host_handles.proton_pe[k] = (native_handle_pe_fn)(void *)GetProcAddress(pe, native_handle_names[k]));
    if (found != VK_KINDS) memset(host_handles.proton_pe, 0, sizeof host_handles.proton_pe);
    char path[MAX_PATH] = "";
    dl_iterate_phdr(find_winevulkan, path);
    void *lib = path[0] ? dlopen(path, RTLD_NOW | RTLD_NOLOAD) : NULL;
    if (lib) {
        found = 0;
        for (int k = 0; k < VK_KINDS; k++)
            found += !!(host_handles.proton_unix[k] = (native_handle_unix_fn)dlsym(lib, native_handle_names[k]));
        if (found != VK_KINDS) memset(host_handles.proton_unix, 0, sizeof host_handles.proton_unix);
        dlclose(lib); /* NOLOAD took a reference to a library Wine keeps loaded */
    }
    /* 8.0 and its stable updates only: the 8.x development releases may differ. */
    const char *(CDECL *version)(void) =
        (void *)GetProcAddress(GetModuleHandleA("ntdll.dll"), "wine_get_version");
    const char *v = version ? version() : "";
    host_handles.wine8 = !strcmp(v, "8.0") || !strncmp(v, "8.0.", 4);
}

/* Wine 8: the Unix side object of a winevulkan client handle, or NULL. */
static const UINT64 *wine8_object(void *client) {
    const UINT64 *words = client;
    return words && words[0] == WINEVULKAN_LOADER_MAGIC ? (const UINT64 *)(UINT_PTR)words[1] : NULL;
}

/* Wine 8: the word `skip` words after `anchor` in an instance or device object (past its
 * function table, whose length depends on the build's Vulkan registry), or 0. The Unix side
 * allocates these with the C library's calloc: the scan stays inside the allocation. */
static UINT64 wine8_after(const UINT64 *object, UINT64 anchor, size_t skip) {
    size_t words = malloc_usable_size((void *)object) / sizeof(UINT64);
    for (size_t i = 0; i + skip < words; i++)
        if (object[i] == anchor) return object[i + skip];
    return 0;
}

static BOOL wine8_host_handles(void *const client[VK_KINDS], void *host[VK_KINDS]) {
    const UINT64 *object[VK_KINDS];
    for (int k = 0; k < VK_KINDS; k++)
        if (!(object[k] = wine8_object(client[k]))) return FALSE; /* not winevulkan's */
    const UINT64 *physical = object[VK_PHYSICAL_DEVICE], *queue = object[VK_QUEUE];
    if (physical[0] != (UINT64)(UINT_PTR)object[VK_INSTANCE] || physical[1] != (UINT64)(UINT_PTR)client[VK_PHYSICAL_DEVICE] ||
        queue[0] != (UINT64)(UINT_PTR)object[VK_DEVICE] || queue[1] != (UINT64)(UINT_PTR)client[VK_QUEUE])
        return FALSE;
    host[VK_INSTANCE] = (void *)(UINT_PTR)wine8_after(object[VK_INSTANCE], (UINT64)(UINT_PTR)client[VK_INSTANCE], 1);
    host[VK_PHYSICAL_DEVICE] = (void *)(UINT_PTR)physical[2];
    host[VK_DEVICE] = (void *)(UINT_PTR)wine8_after(object[VK_DEVICE], (UINT64)(UINT_PTR)physical, 2);
    host[VK_QUEUE] = (void *)(UINT_PTR)queue[2];
    return host[VK_INSTANCE] && host[VK_PHYSICAL_DEVICE] && host[VK_DEVICE] && host[VK_QUEUE];
}

/* The host handles of winevulkan's client handles (instance, physical device, device, queue). */
static BOOL host_handles_of(void *const client[VK_KINDS], void *host[VK_KINDS]) {
    pthread_once(&host_handles.once, host_handles_init);
    if (host_handles.proton_pe[0] || host_handles.proton_unix[0]) {
        for (int k = 0; k < VK_KINDS; k++) {
            host[k] = host_handles.proton_pe[0] ? host_handles.proton_pe[k](client[k])
                                                : host_handles.proton_unix[k](client[k]);
            if (!host[k]) return FALSE;
        }
        return TRUE;
    }
    return host_handles.wine8 && wine8_host_handles(client, host);
}

enum proxy_op { PROXY_IDLE, PROXY_LOCK, PROXY_UNLOCK, PROXY_DONE, PROXY_QUIT };

struct gpu_link {
    struct gpu_link *next;
    LONG queues;                        /* queues made with it (under gpu_links.lock) */
    ID3D12Device *device;               /* the key (referenced) */
    IUnknown *identity;                 /* the device's IUnknown, which its resources name */
    ID3D12DXVKInteropDevice *interop;   /* referenced, or NULL */
    ID3D12CommandQueue *d3d12_queue;    /* ours, whose VkQueue dsr submits to */
    dsr_runtime runtime;                /* 0: buffer destinations are refused */
    const char *why;                    /* ... and why (DSTORAGE_DEBUG_SHOW_ERRORS) */
    /* The lock proxy: dsr's threads hand it one operation at a time. */
    pthread_mutex_t proxy_lock;
    pthread_cond_t proxy_cond;
    enum proxy_op op;
    BOOL held;                          /* a dsr thread holds the queue's lock (or is taking it) */
    HANDLE proxy;
};

static struct {
    pthread_mutex_t lock;
    struct gpu_link *links;
} gpu_links = {PTHREAD_MUTEX_INITIALIZER, NULL};

/* The proxy, a Wine thread: takes and releases vkd3d-proton's queue lock when asked. */
static DWORD WINAPI proxy_run(void *arg) {
    struct gpu_link *l = arg;
    pthread_mutex_lock(&l->proxy_lock);
    for (;;) {
        while (l->op != PROXY_LOCK && l->op != PROXY_UNLOCK && l->op != PROXY_QUIT)
            pthread_cond_wait(&l->proxy_cond, &l->proxy_lock);
        enum proxy_op op = l->op;
        if (op == PROXY_QUIT) break;
        pthread_mutex_unlock(&l->proxy_lock);
        if (op == PROXY_LOCK) l->interop->lpVtbl->LockCommandQueue(l->interop, l->d3d12_queue);
        else l->interop->lpVtbl->UnlockCommandQueue(l->interop, l->d3d12_queue);
        pthread_mutex_lock(&l->proxy_lock);
        l->op = PROXY_DONE;
        pthread_cond_broadcast(&l->proxy_cond);
    }
    pthread_mutex_unlock(&l->proxy_lock);
    return 0;
}

/* Hands the proxy an operation and waits for it (called with proxy_lock held). */
static void proxy_do(struct gpu_link *l, enum proxy_op op) {
    l->op = op;
    pthread_cond_broadcast(&l->proxy_cond);
    while (l->op != PROXY_DONE) pthread_cond_wait(&l->proxy_cond, &l->proxy_lock);
    l->op = PROXY_IDLE;
}

/* dsr's lock callbacks, on dsr's threads (plain C: no Win32). */
static void link_lock_queue(void *user_data) {
    struct gpu_link *l = user_data;
    pthread_mutex_lock(&l->proxy_lock);
    while (l->held) pthread_cond_wait(&l->proxy_cond, &l->proxy_lock);
    l->held = TRUE;
    proxy_do(l, PROXY_LOCK);
    pthread_mutex_unlock(&l->proxy_lock);
}

static void link_unlock_queue(void *user_data) {
    struct gpu_link *l = user_data;
    pthread_mutex_lock(&l->proxy_lock);
    proxy_do(l, PROXY_UNLOCK);
    l->held = FALSE;
    pthread_cond_broadcast(&l->proxy_cond);
    pthread_mutex_unlock(&l->proxy_lock);
}

/* Makes the link's runtime on the device's Vulkan device; sets `why` when it cannot. */
static void link_connect(struct gpu_link *l, const dsr_runtime_config *config) {
    ID3D12Device *device = l->device;
    if (FAILED(device->lpVtbl->QueryInterface(device, &IID_ID3D12DXVKInteropDevice, (void **)&l->interop))) {
        l->interop = NULL;
        l->why = "the D3D12 device has no ID3D12DXVKInteropDevice (not vkd3d-proton)";
        return;
    }
    ID3D12DXVKInteropDevice *interop = l->interop;
    if (FAILED(device->lpVtbl->QueryInterface(device, &IID_IUnknown, (void **)&l->identity))) {
        l->why = "the D3D12 device has no IUnknown";
        return;
    }
    l->identity->lpVtbl->Release(l->identity); /* the pointer only: the link holds the device */
    D3D12_COMMAND_QUEUE_DESC queue_desc = {D3D12_COMMAND_LIST_TYPE_COMPUTE, 0, 0, 0};
    void *instance = NULL, *physical = NULL, *vk_device = NULL, *vk_queue = NULL;
    UINT32 family = 0;
    if (FAILED(interop->lpVtbl->GetVulkanHandles(interop, &instance, &physical, &vk_device))) {
        l->why = "GetVulkanHandles failed";
        return;
    }
    if (FAILED(device->lpVtbl->CreateCommandQueue(device, &queue_desc, &IID_ID3D12CommandQueue,
                                                  (void **)&l->d3d12_queue))) {
        l->d3d12_queue = NULL;
        l->why = "CreateCommandQueue failed";
        return;
    }
    if (FAILED(interop->lpVtbl->GetVulkanQueueInfo(interop, l->d3d12_queue, &vk_queue, &family))) {
        l->why = "GetVulkanQueueInfo failed";
        return;
    }
    void *const client[VK_KINDS] = {instance, physical, vk_device, vk_queue};
    void *host[VK_KINDS];
    if (!host_handles_of(client, host)) {
        l->why = "winevulkan's host handles cannot be found (Proton's winevulkan or Wine 8.0 is needed)";
        return;
    }
    dsr_vulkan_device vk;
    memset(&vk, 0, sizeof vk);
    vk.struct_size = sizeof vk;
    vk.instance = host[VK_INSTANCE];
    vk.physical_device = host[VK_PHYSICAL_DEVICE];
    vk.device = host[VK_DEVICE];
    vk.transfer_queue = vk.compute_queue = host[VK_QUEUE];
    vk.transfer_family = vk.compute_family = family;
    vk.lock_queue = link_lock_queue;
    vk.unlock_queue = link_unlock_queue;
    vk.lock_user_data = l;
    if (!(l->proxy = CreateThread(NULL, 0, proxy_run, l, 0, NULL))) {
        l->why = "cannot start the queue lock's thread";
        return;
    }
    if (dsr_runtime_create_vulkan(config, &vk, &l->runtime) != DSR_OK) {
        l->runtime = 0;
        l->why = "libdsr cannot use the device (Vulkan 1.2 with timeline semaphores is needed)";
    }
}

/* Ends a link whose runtime is gone or never was: on a Wine thread (it calls COM). */
static void link_free(struct gpu_link *l) {
    BOOL ended = TRUE;
    if (l->proxy) {
        pthread_mutex_lock(&l->proxy_lock);
        l->op = PROXY_QUIT;
        pthread_cond_broadcast(&l->proxy_cond);
        pthread_mutex_unlock(&l->proxy_lock);
        /* Its exit takes the loader lock, which a Release from a DllMain holds: rather than
         * hang there, the link's memory is left to the thread (a few hundred bytes, at exit). */
        ended = WaitForSingleObject(l->proxy, 2000) == WAIT_OBJECT_0;
        CloseHandle(l->proxy);
    }
    if (l->d3d12_queue) l->d3d12_queue->lpVtbl->Release(l->d3d12_queue);
    if (l->interop) l->interop->lpVtbl->Release(l->interop);
    l->device->lpVtbl->Release(l->device);
    if (!ended) return;
    pthread_mutex_destroy(&l->proxy_lock);
    pthread_cond_destroy(&l->proxy_cond);
    free(l);
}

/* The link to `device` for a new queue (counted), made on first use; NULL when out of memory. */
static struct gpu_link *link_get(ID3D12Device *device, const dsr_runtime_config *config) {
    pthread_mutex_lock(&gpu_links.lock);
    struct gpu_link *l = gpu_links.links;
    while (l && l->device != device) l = l->next;
    if (!l && (l = calloc(1, sizeof *l))) {
        l->device = device;
        device->lpVtbl->AddRef(device);
        pthread_mutex_init(&l->proxy_lock, NULL);
        pthread_cond_init(&l->proxy_cond, NULL);
        link_connect(l, config);
        l->next = gpu_links.links;
        gpu_links.links = l;
    }
    if (l) l->queues++;
    pthread_mutex_unlock(&gpu_links.lock);
    return l;
}

/* A queue of the link is gone (its dsr queue destroyed): the last one ends the link, so the
 * game may destroy its device. On a Wine thread. */
static void link_put(struct gpu_link *l) {
    if (!l) return;
    pthread_mutex_lock(&gpu_links.lock);
    BOOL last = !--l->queues;
    if (last) {
        struct gpu_link **link = &gpu_links.links;
        while (*link != l) link = &(*link)->next;
        *link = l->next;
    }
    pthread_mutex_unlock(&gpu_links.lock);
    if (!last) return;
    /* A runtime that will not go (something of it still open) keeps the device it uses. */
    if (l->runtime && dsr_runtime_destroy(l->runtime) != DSR_OK) return;
    link_free(l);
}

/* ---- files ---------------------------------------------------------------------------------- */

/* A file's Windows path, shared by the file and its requests in flight (for error records):
 * counted with atomics and freed with free(), so dsr's workers may drop it. */
struct path_ref {
    LONG refs;
    WCHAR path[MAX_PATH];
};

static void path_release(struct path_ref *path) {
    if (path && !InterlockedDecrement(&path->refs)) free(path);
}

struct file {
    IDStorageFile iface;
    LONG refs;
    dsr_file handle;       /* 0 once closed */
    HANDLE win32;          /* for GetFileInformation, opened on its first call */
    struct path_ref *path;
};

static const IDStorageFileVtbl file_vtbl;

static struct file *file_of(IDStorageFile *iface) {
    return iface && iface->lpVtbl == &file_vtbl ? (struct file *)iface : NULL;
}

static HRESULT STDMETHODCALLTYPE file_QueryInterface(IDStorageFile *iface, REFIID riid, void **out) {
    static const GUID *const iids[] = {&IID_IDStorageFile};
    return query(iface, iids, ARRAY_SIZE(iids), riid, out);
}

static ULONG STDMETHODCALLTYPE file_AddRef(IDStorageFile *iface) {
    return InterlockedIncrement(&file_of(iface)->refs);
}

static void STDMETHODCALLTYPE file_Close(IDStorageFile *iface) {
    struct file *f = file_of(iface);
    /* Games close from any thread, maybe twice at once: each handle is taken once. */
    dsr_file handle = (dsr_file)__atomic_exchange_n(&f->handle, (dsr_file)0, __ATOMIC_SEQ_CST);
    if (handle) dsr_file_close(handle);
    HANDLE win32 = InterlockedExchangePointer(&f->win32, INVALID_HANDLE_VALUE);
    if (win32 != INVALID_HANDLE_VALUE) CloseHandle(win32);
}

static ULONG STDMETHODCALLTYPE file_Release(IDStorageFile *iface) {
    struct file *f = file_of(iface);
    ULONG refs = InterlockedDecrement(&f->refs);
    if (!refs) {
        file_Close(iface);
        path_release(f->path);
        free(f);
    }
    return refs;
}

static HRESULT STDMETHODCALLTYPE file_GetFileInformation(IDStorageFile *iface, BY_HANDLE_FILE_INFORMATION *info) {
    struct file *f = file_of(iface);
    if (!info) return E_POINTER;
    if (!f->handle) return E_DSTORAGE_FILE_NOT_OPEN;
    if (f->win32 == INVALID_HANDLE_VALUE && f->path) {
        /* A Win32 handle costs wineserver round trips: only files asked about get one. */
        HANDLE opened = CreateFileW(f->path->path, 0, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL,
                                    OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, NULL);
        if (opened != INVALID_HANDLE_VALUE &&
            InterlockedCompareExchangePointer(&f->win32, opened, INVALID_HANDLE_VALUE) != INVALID_HANDLE_VALUE)
            CloseHandle(opened); /* another thread's won */
    }
    return GetFileInformationByHandle(f->win32, info) ? S_OK : HRESULT_FROM_WIN32(GetLastError());
}

static const IDStorageFileVtbl file_vtbl = {
    file_QueryInterface, file_AddRef, file_Release, file_Close, file_GetFileInformation,
};

/* ---- paths: a Windows name to the Linux name libdsr opens ----------------------------------
 *
 * Wine's translation (wine_get_unix_file_name) looks up every component of a path with Windows
 * semantics (drive mappings, case-insensitive names, short names), about 5 µs a call: most of a
 * title's OpenFile loop, which runs before its Submit. Titles open many files in few folders, so
 * a folder's translation is remembered and a plain file name is appended to it. A name that is
 * not plain (see plain_name), or that does not open as written (another case, a short name),
 * goes through Wine's translation whole, so the answer is always Wine's. */

#define FOLDER_SLOTS 16

struct folder {
    WCHAR *dos;       /* the folder as the title wrote it, up to and with its last separator */
    size_t dos_len;   /* in WCHARs */
    char *linux_path; /* its Linux path, without a trailing slash (the root is "") */
};

static struct {
    pthread_mutex_t lock;
    struct folder slots[FOLDER_SLOTS];
    unsigned next; /* the slot the next new folder replaces */
} folders = {PTHREAD_MUTEX_INITIALIZER, {{0}}, 0};

static int is_separator(WCHAR c) {
    return c == '\\' || c == '/';
}

/* Whether `name` (`len` WCHARs, no separator) means the Linux name with the same ASCII bytes:
 * printable ASCII Windows allows in a name, no '~' (short names), not "." or "..", no trailing dot
 * or space (Windows drops them) and no device name (CON, NUL, COM1, ...: those are devices in
 * any folder). */
static int plain_name(const WCHAR *name, size_t len) {
    static const char *const devices[] = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"};
    if (!len || name[len - 1] == '.' || name[len - 1] == ' ') return 0;
    size_t base = 0; /* the length before the first dot */
    while (base < len && name[base] != '.') base++;
    for (size_t i = 0; i < len; i++) {
        WCHAR c = name[i];
        if (c < 0x20 || c > 0x7e || strchr("<>:\"|?*~", (char)c)) return 0;
    }
    char upper[8] = {0};
    if (base < sizeof upper) {
        for (size_t i = 0; i < base; i++) upper[i] = (char)(name[i] >= 'a' && name[i] <= 'z' ? name[i] - 32 : name[i]);
        for (size_t i = 0; i < ARRAY_SIZE(devices); i++)
            if (!strcmp(upper, devices[i])) return 0;
        if (base == 4 && (!memcmp(upper, "COM", 3) || !memcmp(upper, "LPT", 3)) && upper[3] >= '0' && upper[3] <= '9')
            return 0;
    }
    return 1;
}

/* The Linux path of folder `dos` (`len` WCHARs, ending in a separator), remembered, or NULL
 * where Wine does not make it an existing directory. The caller frees the copy returned. */
static char *folder_linux_path(const WCHAR *dos, size_t len) {
    pthread_mutex_lock(&folders.lock);
    for (unsigned i = 0; i < FOLDER_SLOTS; i++) {
        struct folder *s = &folders.slots[i];
        if (s->dos && s->dos_len == len && !memcmp(s->dos, dos, len * sizeof *dos)) {
            char *copy = strdup(s->linux_path);
            pthread_mutex_unlock(&folders.lock);
            return copy;
        }
    }
    pthread_mutex_unlock(&folders.lock);

    /* Wine's answer for the folder, its separator kept only for a drive's root ("C:\"). */
    WCHAR *name = malloc((len + 1) * sizeof *name);
    if (!name) return NULL;
    size_t keep = len > 3 ? len - 1 : len;
    memcpy(name, dos, keep * sizeof *name);
    name[keep] = 0;
    char *wine_name = wine_get_unix_file_name(name);
    free(name);
    if (!wine_name) return NULL;
    struct stat st;
    char *linux_path = NULL;
    if (!stat(wine_name, &st) && S_ISDIR(st.st_mode)) {
        size_t n = strlen(wine_name);
        while (n && wine_name[n - 1] == '/') n--;
        linux_path = strndup(wine_name, n);
    }
    HeapFree(GetProcessHeap(), 0, wine_name);
    if (!linux_path) return NULL;

    WCHAR *key = malloc(len * sizeof *key);
    char *kept = strdup(linux_path);
    if (!key || !kept) {
        free(key);
        free(kept);
        return linux_path;
    }
    memcpy(key, dos, len * sizeof *key);
    pthread_mutex_lock(&folders.lock);
    struct folder *s = &folders.slots[folders.next++ % FOLDER_SLOTS];
    free(s->dos);
    free(s->linux_path);
    *s = (struct folder){key, len, kept};
    pthread_mutex_unlock(&folders.lock);
    return linux_path;
}

/* Opens the file at Windows path `path` through libdsr. */
static dsr_result open_windows_path(dsr_runtime runtime, const WCHAR *path, dsr_file *out) {
    size_t len = lstrlenW(path);
    size_t slash = len;
    while (slash && !is_separator(path[slash - 1])) slash--;
    /* Drive-absolute ("C:\..."), with a plain name after the last separator. */
    int fast = len < MAX_PATH && len > 3 && path[1] == ':' && is_separator(path[2]) &&
               ((path[0] >= 'A' && path[0] <= 'Z') || (path[0] >= 'a' && path[0] <= 'z')) &&
               plain_name(path + slash, len - slash);
    if (fast) {
        char *dir = folder_linux_path(path, slash);
        if (dir) {
            size_t dir_len = strlen(dir), name_len = len - slash;
            char *linux_path = malloc(dir_len + name_len + 2);
            dsr_result result = DSR_E_OUT_OF_MEMORY;
            if (linux_path) {
                memcpy(linux_path, dir, dir_len);
                linux_path[dir_len] = '/';
                for (size_t i = 0; i < name_len; i++) linux_path[dir_len + 1 + i] = (char)path[slash + i];
                linux_path[dir_len + 1 + name_len] = 0;
                result = dsr_file_open(runtime, linux_path, out, NULL);
                free(linux_path);
            }
            free(dir);
            /* Not there as written: Wine's lookup decides (another case, a short name). */
            if (result == DSR_OK || result == DSR_E_OUT_OF_MEMORY) return result;
        }
    }
    char *linux_path = wine_get_unix_file_name(path);
    if (!linux_path) return DSR_E_NOT_FOUND;
    dsr_result result = dsr_file_open(runtime, linux_path, out, NULL);
    HeapFree(GetProcessHeap(), 0, linux_path);
    return result;
}

/* ---- status arrays -------------------------------------------------------------------------- */

struct status_array {
    IDStorageStatusArray iface;
    LONG refs;
    dsr_status_array handle;
    UINT32 capacity;
    HRESULT *override;     /* failures this DLL recorded for an entry (see the file's header) */
    LONG *held;            /* status entries for it held behind a fence: it is pending */
};

static const IDStorageStatusArrayVtbl status_vtbl;

static struct status_array *status_of(IDStorageStatusArray *iface) {
    return iface && iface->lpVtbl == &status_vtbl ? (struct status_array *)iface : NULL;
}

static HRESULT STDMETHODCALLTYPE status_QueryInterface(IDStorageStatusArray *iface, REFIID riid, void **out) {
    static const GUID *const iids[] = {&IID_IDStorageStatusArray};
    return query(iface, iids, ARRAY_SIZE(iids), riid, out);
}

static ULONG STDMETHODCALLTYPE status_AddRef(IDStorageStatusArray *iface) {
    return InterlockedIncrement(&status_of(iface)->refs);
}

static ULONG STDMETHODCALLTYPE status_Release(IDStorageStatusArray *iface) {
    struct status_array *s = status_of(iface);
    ULONG refs = InterlockedDecrement(&s->refs);
    if (!refs) {
        dsr_status_array_destroy(s->handle);
        free(s->override);
        free(s->held);
        free(s);
    }
    return refs;
}

static HRESULT STDMETHODCALLTYPE status_GetHResult(IDStorageStatusArray *iface, UINT32 index) {
    struct status_array *s = status_of(iface);
    dsr_result result;
    if (index >= s->capacity) return E_DSTORAGE_INDEX_BOUND;
    if (__atomic_load_n(&s->held[index], __ATOMIC_ACQUIRE) > 0) return E_PENDING;
    if (dsr_status_array_get(s->handle, index, &result) != DSR_OK) return E_UNEXPECTED;
    if (result == DSR_PENDING) return E_PENDING;
    if (result == DSR_OK && s->override[index] != S_OK) return s->override[index];
    return hresult_of(result);
}

static UINT8 STDMETHODCALLTYPE status_IsComplete(IDStorageStatusArray *iface, UINT32 index) {
    return status_GetHResult(iface, index) != E_PENDING;
}

static const IDStorageStatusArrayVtbl status_vtbl = {
    status_QueryInterface, status_AddRef, status_Release, status_IsComplete, status_GetHResult,
};

/* ---- queues --------------------------------------------------------------------------------- */

struct queue {
    IDStorageQueue iface;
    LONG refs;             /* the game's references */
    LONG memory_refs;      /* the game's (one for all) and each request's in flight: a request's
                            * callback may still run on a dsr worker after Close returns */
    dsr_queue handle;
    DSTORAGE_QUEUE_DESC desc;
    struct gpu_link *link; /* made with a D3D12 device: buffer destinations go through it */
    char name[DSTORAGE_REQUEST_MAX_NAME];
    HANDLE error_event;
    LONG closed;           /* games call a queue from several threads: atomics */
    pthread_mutex_t lock;  /* the error record and the pending failure */
    LONG64 next_seq;
    UINT32 failure_count;
    UINT64 first_seq;
    DSTORAGE_ERROR_FIRST_FAILURE first;
    HRESULT failed_since_status; /* a failure this DLL recorded, for the next status entry */
    /* Work held behind a D3D12 fence (EnqueueRequests with a fence), and everything enqueued
     * after it, in order, until the fence reaches its value (see `hold`). */
    pthread_mutex_t hold_lock;
    struct held *held;
    struct held **held_tail;
    HANDLE gate_event;     /* the gate thread's current wait: set by the fence, or by Close */
    LONG replay_active;    /* a replay is running (the fast path must then take the lock) */
    BOOL gate_waiting;     /* a gate thread runs */
    UINT32 held_blocking;  /* held entries other than custom decompressions */
};

enum held_kind { HELD_GATE, HELD_CUSTOM, HELD_REQUEST, HELD_STATUS, HELD_SIGNAL, HELD_SET_EVENT };

/* One call held behind a gate, with the references it keeps until it is replayed. */
struct held {
    struct held *next;
    enum held_kind kind;
    DSTORAGE_REQUEST request;             /* REQUEST: a copy (its file referenced) */
    char name[DSTORAGE_REQUEST_MAX_NAME];
    IDStorageStatusArray *array;          /* STATUS (referenced) */
    UINT32 index;
    ID3D12Fence *fence;                   /* GATE, SIGNAL (referenced) */
    UINT64 value;
    HANDLE event;                         /* SET_EVENT (the game's handle) */
    BOOL resolved;                        /* CUSTOM: the title reported its result */
    BOOL orphan;                          /* CUSTOM: dropped by Close; its request frees it */
};

/* What dsr carries for each request: its place in enqueue order, the game's request and its
 * file's path. */
struct pending {
    struct queue *queue;
    UINT64 seq;
    DSTORAGE_REQUEST request;
    char name[DSTORAGE_REQUEST_MAX_NAME];
    struct path_ref *path;
};

static const IDStorageQueueVtbl queue_vtbl;

static struct queue *queue_of(IDStorageQueue *iface) {
    return iface && iface->lpVtbl == &queue_vtbl ? (struct queue *)iface : NULL;
}

/* Records a failed request. Runs on dsr's workers too, which are not Wine threads: plain C
 * only, no Win32. */
static void record_failure(struct queue *q, UINT64 seq, HRESULT hr, const DSTORAGE_REQUEST *request,
                           const char *name, const struct path_ref *path) {
    pthread_mutex_lock(&q->lock);
    q->failure_count++;
    if (q->failure_count == 1 || seq < q->first_seq) {
        q->first_seq = seq;
        memset(&q->first, 0, sizeof q->first);
        q->first.HResult = hr;
        q->first.CommandType = DSTORAGE_COMMAND_TYPE_REQUEST;
        q->first.Request.Request = *request;
        q->first.Request.Request.Name = NULL;
        if (name) strncpy(q->first.Request.RequestName, name, DSTORAGE_REQUEST_MAX_NAME - 1);
        if (path) memcpy(q->first.Request.Filename, path->path, sizeof path->path);
    }
    pthread_mutex_unlock(&q->lock);
}

static void queue_unhold(struct queue *q);
static void drop_held(struct queue *q);
static void enqueue_custom(struct queue *q, const DSTORAGE_REQUEST *request);
static void drop_custom(struct queue *q);

/* A request dsr finished, on a dsr worker. */
static void on_request_done(void *user_data, dsr_result result) {
    struct pending *p = user_data;
    if (result != DSR_OK && result != DSR_E_CANCELLED) {
        record_failure(p->queue, p->seq, hresult_of(result), &p->request, p->name, p->path);
    }
    struct queue *q = p->queue;
    path_release(p->path);
    free(p);
    queue_unhold(q);
}

static HRESULT STDMETHODCALLTYPE queue_QueryInterface(IDStorageQueue *iface, REFIID riid, void **out) {
    static const GUID *const iids[] = {&IID_IDStorageQueue, &IID_IDStorageQueue1, &IID_IDStorageQueue2, &IID_IDStorageQueue3};
    return query(iface, iids, ARRAY_SIZE(iids), riid, out);
}

static ULONG STDMETHODCALLTYPE queue_AddRef(IDStorageQueue *iface) {
    return InterlockedIncrement(&queue_of(iface)->refs);
}

/* Drops a hold on the queue's memory; the last one frees it (plain C: any thread). A built-in
 * request whose callback dsr never calls (its queue closed first) keeps its hold: a small leak
 * rather than a callback into freed memory. (Custom requests whose reads were in flight end at
 * Close: `drop_custom`.) */
static void queue_unhold(struct queue *q) {
    if (!InterlockedDecrement(&q->memory_refs)) {
        pthread_mutex_destroy(&q->lock);
        pthread_mutex_destroy(&q->hold_lock);
        /* This may be a dsr worker (not a Wine thread): the dispatcher closes the handle. */
        close_later(q->error_event);
        free(q);
    }
}

static void STDMETHODCALLTYPE queue_Close(IDStorageQueue *iface) {
    struct queue *q = queue_of(iface);
    if (InterlockedExchange(&q->closed, TRUE)) return;
    /* Held work first (custom gates orphaned, so ending custom requests replays nothing), then
     * dsr's queue (no more reads land), then the custom requests not with the title. */
    drop_held(q);
    dsr_queue_close(q->handle);
    drop_custom(q);
    watch_remove_owner(q);
}

static ULONG STDMETHODCALLTYPE queue_Release(IDStorageQueue *iface) {
    struct queue *q = queue_of(iface);
    ULONG refs = InterlockedDecrement(&q->refs);
    if (!refs) {
        queue_Close(iface);
        dsr_queue_destroy(q->handle);
        link_put(q->link);
        queue_unhold(q);
    }
    return refs;
}

/* A request this DLL cannot pass to dsr: a failure in enqueue order, reported by the next status. */
static void refuse(struct queue *q, const DSTORAGE_REQUEST *request, HRESULT hr) {
    UINT64 seq = (UINT64)InterlockedIncrement64(&q->next_seq);
    if (the_factory.debug_flags & DSTORAGE_DEBUG_SHOW_ERRORS)
        fprintf(stderr, "dstorage: request %s refused: %#lx\n", request && request->Name ? request->Name : "",
                (unsigned long)hr);
    if (request) {
        struct file *f = request->Options.SourceType == DSTORAGE_REQUEST_SOURCE_FILE
                             ? file_of(request->Source.File.Source)
                             : NULL;
        record_failure(q, seq, hr, request, request->Name, f ? f->path : NULL);
    }
    pthread_mutex_lock(&q->lock);
    if (q->failed_since_status == S_OK) q->failed_since_status = hr;
    pthread_mutex_unlock(&q->lock);
    SetEvent(q->error_event);
}

#define REFUSE(...)              \
    do {                         \
        refuse(__VA_ARGS__);     \
        return;                  \
    } while (0)

/* A D3D12 buffer as dsr's destination: the resource's VkBuffer, imported for the request, and
 * the range in it (`destination_size` is the room the game gave). On a Wine thread (it calls
 * the resource and the interop). */
static HRESULT buffer_destination(struct gpu_link *l, const DSTORAGE_DESTINATION_BUFFER *destination,
                                  dsr_buffer *buffer, dsr_request *r) {
    ID3D12Resource *resource = destination->Resource;
    if (!resource) return E_INVALIDARG;
    D3D12_RESOURCE_DESC desc;
    memset(&desc, 0, sizeof desc);
    resource->lpVtbl->GetDesc(resource, &desc);
    if (desc.Dimension != D3D12_RESOURCE_DIMENSION_BUFFER) return E_DSTORAGE_INVALID_DESTINATION_TYPE;
    /* A resource of another device would give a VkBuffer of another VkDevice. */
    IUnknown *owner = NULL;
    if (FAILED(resource->lpVtbl->GetDevice(resource, &IID_IUnknown, (void **)&owner)) || !owner) return E_INVALIDARG;
    owner->lpVtbl->Release(owner);
    if (owner != l->identity) return E_INVALIDARG;
    if (destination->Offset > desc.Width || destination->Size > desc.Width - destination->Offset)
        return E_DSTORAGE_INVALID_DESTINATION_SIZE;
    UINT64 vk_buffer = 0, base = 0;
    if (FAILED(l->interop->lpVtbl->GetVulkanResourceInfo(l->interop, resource, &vk_buffer, &base)) || !vk_buffer ||
        base > UINT64_MAX - desc.Width)
        return E_INVALIDARG;
    /* vkd3d-proton places small buffers in a larger VkBuffer: the resource is its bytes
     * [base, base + Width), which is as far as dsr may write. */
    dsr_result result = dsr_buffer_import(l->runtime, vk_buffer, base + desc.Width, buffer);
    if (result != DSR_OK) return hresult_of(result);
    r->buffer = *buffer;
    r->buffer_offset = base + destination->Offset;
    r->destination = NULL;
    r->destination_size = destination->Size;
    return S_OK;
}

static void enqueue_request(struct queue *q, const DSTORAGE_REQUEST *request) {
    if (!request) REFUSE(q, NULL, E_INVALIDARG);
    if (q->closed) REFUSE(q, request, E_DSTORAGE_QUEUE_CLOSED);
    const DSTORAGE_REQUEST_OPTIONS *options = &request->Options;
    if (options->SourceType != q->desc.SourceType) REFUSE(q, request, E_DSTORAGE_INVALID_SOURCE_TYPE);
    if (options->Reserved || memcmp(options->Reserved1, "\0\0\0\0\0\0\0", 7))
        REFUSE(q, request, E_DSTORAGE_RESERVED_FIELDS);
    /* Buffers through the interop (textures, subresources and tiles are not implemented). */
    if (options->DestinationType != DSTORAGE_REQUEST_DESTINATION_MEMORY &&
        (options->DestinationType != DSTORAGE_REQUEST_DESTINATION_BUFFER || !q->link || !q->link->runtime)) {
        if ((the_factory.debug_flags & DSTORAGE_DEBUG_SHOW_ERRORS) && q->link && q->link->why)
            fprintf(stderr, "dstorage: no D3D12 destinations: %s\n", q->link->why);
        REFUSE(q, request, E_DSTORAGE_INVALID_DESTINATION_TYPE);
    }
    if (options->CompressionFormat >= DSTORAGE_CUSTOM_COMPRESSION_0) {
        /* The title decodes custom formats into memory it can write. */
        if (options->DestinationType != DSTORAGE_REQUEST_DESTINATION_MEMORY)
            REFUSE(q, request, E_DSTORAGE_INVALID_DESTINATION_TYPE);
        enqueue_custom(q, request);
        return;
    }
    if (options->CompressionFormat > DSTORAGE_COMPRESSION_FORMAT_GDEFLATE)
        REFUSE(q, request, E_INVALIDARG); /* neither built in nor custom */

    dsr_request r;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    if (options->SourceType == DSTORAGE_REQUEST_SOURCE_FILE) {
        struct file *f = file_of(request->Source.File.Source);
        if (!f || !f->handle) REFUSE(q, request, E_DSTORAGE_INVALID_FILE_HANDLE);
        r.kind = DSR_REQUEST_READ_FILE;
        r.file = f->handle;
        r.file_offset = request->Source.File.Offset;
        r.source_size = request->Source.File.Size;
    } else {
        r.kind = DSR_REQUEST_READ_MEMORY;
        r.source = request->Source.Memory.Source;
        r.source_size = request->Source.Memory.Size;
    }
    dsr_buffer buffer = 0;
    if (options->DestinationType == DSTORAGE_REQUEST_DESTINATION_BUFFER) {
        HRESULT hr = buffer_destination(q->link, &request->Destination.Buffer, &buffer, &r);
        if (FAILED(hr)) REFUSE(q, request, hr);
    } else {
        r.destination = request->Destination.Memory.Buffer;
        r.destination_size = request->Destination.Memory.Size;
    }
    UINT64 room = r.destination_size;
    if (options->CompressionFormat == DSTORAGE_COMPRESSION_FORMAT_GDEFLATE) {
        r.compression = DSR_COMPRESSION_GDEFLATE;
        r.destination_size = request->UncompressedSize;
    }
    if (options->CompressionFormat == DSTORAGE_COMPRESSION_FORMAT_GDEFLATE ? request->UncompressedSize > room
                                                                            : r.source_size != room) {
        dsr_buffer_release(buffer);
        REFUSE(q, request, E_DSTORAGE_INVALID_DESTINATION_SIZE);
    }
    r.tag = request->CancellationTag;
    r.name = request->Name;
    struct pending *p = malloc(sizeof *p);
    if (!p) {
        dsr_buffer_release(buffer);
        REFUSE(q, request, E_OUTOFMEMORY);
    }
    p->queue = q;
    InterlockedIncrement(&q->memory_refs);
    p->seq = (UINT64)InterlockedIncrement64(&q->next_seq);
    p->request = *request;
    p->request.Name = NULL; /* the game's string is not ours to keep: a copy */
    memset(p->name, 0, sizeof p->name);
    if (request->Name) strncpy(p->name, request->Name, sizeof p->name - 1);
    p->path = NULL;
    if (r.kind == DSR_REQUEST_READ_FILE) {
        p->path = file_of(request->Source.File.Source)->path;
        if (p->path) InterlockedIncrement(&p->path->refs);
    }
    r.callback = on_request_done;
    r.user_data = p;
    dsr_result result = dsr_queue_enqueue(q->handle, &r);
    dsr_buffer_release(buffer); /* the request keeps what it needs of it */
    if (result != DSR_OK) {
        path_release(p->path);
        free(p); /* its number stays unused: the refusal takes the next */
        InterlockedDecrement(&q->memory_refs); /* the game's hold remains */
        refuse(q, request, result == DSR_E_INVALID_ARGUMENT ? E_INVALIDARG : hresult_of(result));
    }
}

static void enqueue_status(struct queue *q, IDStorageStatusArray *array, UINT32 index) {
    struct status_array *s = status_of(array);
    if (!s || index >= s->capacity || q->closed) return;
    pthread_mutex_lock(&q->lock);
    s->override[index] = q->failed_since_status;
    q->failed_since_status = S_OK;
    pthread_mutex_unlock(&q->lock);
    dsr_queue_enqueue_status(q->handle, s->handle, index);
}

static void enqueue_signal(struct queue *q, ID3D12Fence *fence, UINT64 value) {
    struct watch *w;
    if (!fence || q->closed || !(w = calloc(1, sizeof *w))) return;
    if (dsr_fence_create(&w->dsr_fence) != DSR_OK || dsr_fence_eventfd(w->dsr_fence, &w->fd) != DSR_OK) {
        free(w);
        return;
    }
    w->kind = WATCH_FENCE;
    w->d3d12 = fence;
    w->value = value;
    w->owner = q;
    w->closed = &q->closed;
    fence->lpVtbl->AddRef(fence);
    if (dsr_queue_enqueue_signal(q->handle, w->dsr_fence, 1) != DSR_OK || !watch_add(w)) {
        fence->lpVtbl->Release(fence);
        dsr_fence_destroy(w->dsr_fence);
        free(w);
    }
}

static void enqueue_set_event(struct queue *q, HANDLE event) {
    struct watch *w;
    if (!event || q->closed || !(w = calloc(1, sizeof *w))) return;
    w->kind = WATCH_EVENT_ONCE;
    w->owner = q;
    w->closed = &q->closed;
    w->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (w->fd < 0 || !DuplicateHandle(GetCurrentProcess(), event, GetCurrentProcess(), &w->event, 0, FALSE,
                                      DUPLICATE_SAME_ACCESS)) {
        if (w->fd >= 0) close(w->fd);
        free(w);
        return;
    }
    /* dsr duplicates the descriptor it writes; ours is the one the dispatcher reads. */
    if (dsr_queue_enqueue_event(q->handle, w->fd) != DSR_OK || !watch_add(w)) {
        CloseHandle(w->event);
        close(w->fd);
        free(w);
    }
}

static void submit(struct queue *q) {
    if (!q->closed) dsr_queue_submit(q->handle);
}

/* ---- work held behind a D3D12 fence ------------------------------------------------------------
 *
 * EnqueueRequests with a fence: the requests may not start before the fence reaches its value.
 * dsr knows nothing of D3D12 fences, so this DLL holds them back, and with them everything the
 * game enqueues after them (requests, status entries, signals, events: their order is the
 * queue's contract), and replays the held calls in order once the fence is reached (and submits
 * them: the game's Submit went to what dsr held at the time). A gate
 * thread (a Wine thread: it calls the fence) asks the fence to set an event at the value, waits,
 * and replays up to the next gate not yet reached. Both flags (wait before GPU work, before
 * source access) are honoured by waiting before anything of the requests starts. */

/* The queue whose held calls this thread is replaying (under its `hold_lock`), if any. */
static __thread struct queue *replaying;

static void held_free(struct held *h) {
    if (h->kind == HELD_REQUEST && h->request.Options.SourceType == DSTORAGE_REQUEST_SOURCE_FILE &&
        file_of(h->request.Source.File.Source))
        file_Release(h->request.Source.File.Source);
    if (h->array) {
        InterlockedDecrement(&status_of(h->array)->held[h->index]);
        status_Release(h->array);
    }
    if (h->fence) h->fence->lpVtbl->Release(h->fence);
    if (h->event) CloseHandle(h->event);
    free(h);
}

/* Runs the held calls in order up to the first gate whose fence has not reached its value;
 * TRUE when nothing is held any more. Under `hold_lock`. */
static BOOL replay_steps(struct queue *q);

static BOOL replay_locked(struct queue *q) {
    /* Until this returns, calls on other threads wait for the lock rather than overtake what
     * is being replayed (see `holding`). */
    __atomic_store_n(&q->replay_active, 1, __ATOMIC_SEQ_CST);
    BOOL empty = replay_steps(q);
    __atomic_store_n(&q->replay_active, 0, __ATOMIC_SEQ_CST);
    return empty;
}

static BOOL replay_steps(struct queue *q) {
    while (q->held) {
        struct held *h = q->held;
        if (h->kind == HELD_GATE && h->fence->lpVtbl->GetCompletedValue(h->fence) < h->value) return FALSE;
        if (h->kind == HELD_CUSTOM && !h->resolved) return FALSE;
        __atomic_store_n(&q->held, h->next, __ATOMIC_SEQ_CST);
        if (!q->held) q->held_tail = &q->held;
        if (h->kind != HELD_CUSTOM) q->held_blocking--;
        switch (h->kind) {
        case HELD_GATE: break;
        case HELD_CUSTOM: break;
        case HELD_REQUEST:
            h->request.Name = h->name[0] ? h->name : NULL;
            replaying = q;
            enqueue_request(q, &h->request);
            replaying = NULL;
            break;
        case HELD_STATUS: enqueue_status(q, h->array, h->index); break;
        case HELD_SIGNAL: enqueue_signal(q, h->fence, h->value); break;
        case HELD_SET_EVENT: enqueue_set_event(q, h->event); break;
        }
        held_free(h);
    }
    return TRUE;
}

/* The gate thread: replays what it can, then waits on the first unreached gate's fence. */
static DWORD WINAPI gate_wait(void *arg) {
    struct queue *q = arg;
    for (;;) {
        pthread_mutex_lock(&q->hold_lock);
        BOOL done = q->closed || replay_locked(q);
        if (done) q->gate_waiting = FALSE;
        pthread_mutex_unlock(&q->hold_lock);
        /* What was replayed may follow the game's last Submit. */
        submit(q);
        if (done) break;
        pthread_mutex_lock(&q->hold_lock);
        /* Only a fence gate is this thread's to wait on; a custom one resumes on its result. */
        if (q->closed || !q->held || q->held->kind != HELD_GATE) {
            q->gate_waiting = FALSE;
            pthread_mutex_unlock(&q->hold_lock);
            break;
        }
        ID3D12Fence *fence = q->held->fence;
        fence->lpVtbl->AddRef(fence);
        UINT64 value = q->held->value;
        /* An event per wait: the fence keeps the registration until it reaches the value. */
        HANDLE event = CreateEventW(NULL, TRUE, FALSE, NULL);
        HRESULT hr = event ? fence->lpVtbl->SetEventOnCompletion(fence, value, event) : E_OUTOFMEMORY;
        q->gate_event = event;
        pthread_mutex_unlock(&q->hold_lock);
        /* A fence that cannot set the event is polled. */
        if (event) WaitForSingleObject(event, SUCCEEDED(hr) ? INFINITE : 1);
        else Sleep(1);
        pthread_mutex_lock(&q->hold_lock);
        q->gate_event = NULL;
        /* Close sets the event only after marking the queue closed, under this lock. */
        BOOL woken_by_close = q->closed;
        pthread_mutex_unlock(&q->hold_lock);
        /* An event the fence set is done with. One Close set may still be the fence's to set
         * (the fence may reach the value and read its registration an instant later: its
         * completed value cannot tell), so it is left open: one event per queue closed while
         * its gate waited. */
        if (event && (FAILED(hr) || !woken_by_close)) CloseHandle(event);
        fence->lpVtbl->Release(fence);
    }
    queue_unhold(q);
    return 0;
}

/* Starts the gate thread unless it runs. Under `hold_lock`. */
static void wait_for_gate(struct queue *q) {
    if (q->gate_waiting) return;
    InterlockedIncrement(&q->memory_refs);
    HANDLE thread = CreateThread(NULL, 0, gate_wait, q, 0, NULL);
    if (thread) {
        q->gate_waiting = TRUE;
        CloseHandle(thread);
    } else {
        InterlockedDecrement(&q->memory_refs);
    }
}

/* Whether `h` must wait behind what is held: a fence gate not yet reached, or anything while
 * something is held, except that requests and submits pass custom decompressions (only the
 * status entries, signals and events after those wait for their results). Under `hold_lock`. */
static BOOL must_wait(struct queue *q, struct held *h) {
    switch (h->kind) {
    case HELD_GATE: return q->held || h->fence->lpVtbl->GetCompletedValue(h->fence) < h->value;
    case HELD_CUSTOM: return TRUE;
    case HELD_REQUEST: return q->held_blocking > 0;
    default: return q->held != NULL;
    }
}

/* Appends `h` to what is held. Under `hold_lock`. */
static void hold_append(struct queue *q, struct held *h) {
    h->next = NULL;
    *q->held_tail = h;
    q->held_tail = &h->next;
    if (h->kind != HELD_CUSTOM) q->held_blocking++;
}

/* Holds `h` when it must wait (see `must_wait`), in order; FALSE when it may run now (then `h`
 * is the caller's still). */
static BOOL hold(struct queue *q, struct held *h) {
    pthread_mutex_lock(&q->hold_lock);
    BOOL gate = h->kind == HELD_GATE;
    if (!must_wait(q, h)) {
        pthread_mutex_unlock(&q->hold_lock);
        return FALSE;
    }
    hold_append(q, h);
    if (gate) wait_for_gate(q);
    pthread_mutex_unlock(&q->hold_lock);
    return TRUE;
}

/* Whether calls may have to be held (the fast path's check; `hold` decides under the lock). */
static BOOL holding(struct queue *q) {
    /* `held` first: a replay sets its flag before it unlinks anything. */
    return __atomic_load_n(&q->held, __ATOMIC_SEQ_CST) != NULL || __atomic_load_n(&q->replay_active, __ATOMIC_SEQ_CST);
}

/* A held call of `kind`, or NULL (out of memory: the call then runs now, unordered). */
static struct held *held_new(enum held_kind kind) {
    struct held *h = calloc(1, sizeof *h);
    if (h) h->kind = kind;
    return h;
}

/* Drops everything held (a closed queue's), releasing what it referenced. */
static void drop_held(struct queue *q) {
    pthread_mutex_lock(&q->hold_lock);
    while (q->held) {
        struct held *h = q->held;
        q->held = h->next;
        if (h->kind == HELD_CUSTOM && !h->resolved) h->orphan = TRUE; /* its request frees it */
        else held_free(h);
    }
    q->held_tail = &q->held;
    q->held_blocking = 0;
    if (q->gate_event) SetEvent(q->gate_event); /* Close runs on a Wine thread */
    pthread_mutex_unlock(&q->hold_lock);
}

/* ---- custom decompression --------------------------------------------------------------------
 *
 * A request in a custom format (DSTORAGE_CUSTOM_COMPRESSION_0 and up) is the title's to decode:
 * its compressed bytes (read by dsr into a buffer of this DLL's, or the game's memory) go into
 * the process's custom decompression queue, which the title reaches through the factory's
 * QueryInterface, takes requests from (GetRequests) and reports results to (SetRequestResults).
 * Its place in its queue is a custom gate in the held list: the status entries, signals and
 * events enqueued after it wait for its result (and a failure is reported by the first of
 * them, as for any request); requests and submits go on past it, so many custom requests can be
 * with the title at once. */

struct custom_entry {
    struct custom_entry *next;
    struct custom_entry *reading_next; /* in `custom.reading` while dsr reads its bytes */
    UINT64 id;
    struct queue *queue;   /* held (memory_refs) until the result */
    UINT64 seq;
    DSTORAGE_REQUEST request;
    char name[DSTORAGE_REQUEST_MAX_NAME];
    struct path_ref *path;
    struct held *gate;
    void *buffer;          /* the bytes read from a file (owned), else NULL */
    const void *src;
    UINT64 src_size;
    HRESULT read_result;
    BOOL cancelled;        /* its read was cancelled, or its queue closed: no failure */
};

static const IDStorageCustomDecompressionQueueVtbl custom_vtbl;

/* The process's custom decompression queue. */
static struct {
    IDStorageCustomDecompressionQueue iface;
    pthread_mutex_t lock;
    struct custom_entry *ready, *taken, *failed; /* for the title, with it, unreadable */
    struct custom_entry *reading; /* read by dsr now (linked by `reading_next`) */
    UINT64 next_id;
    HANDLE event;          /* manual reset: set while requests are ready */
    int fd;                /* written by dsr's workers; the dispatcher sets `event` */
    BOOL started;
} custom = {{&custom_vtbl}, PTHREAD_MUTEX_INITIALIZER, NULL, NULL, NULL, NULL, 0, NULL, -1, FALSE};

/* Makes the event and its eventfd watch the first time; FALSE if they cannot be made. */
static BOOL custom_start(void) {
    pthread_mutex_lock(&custom.lock);
    if (!custom.started) {
        struct watch *w = calloc(1, sizeof *w);
        custom.event = CreateEventW(NULL, TRUE, FALSE, NULL);
        custom.fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (w && custom.event && custom.fd >= 0) {
            w->kind = WATCH_ERROR_EVENT; /* sets the event each time the fd is written */
            w->fd = custom.fd;
            w->event = custom.event;
            w->owner = &custom;
            custom.started = watch_add(w);
        }
        if (!custom.started) {
            free(w);
            if (custom.event) CloseHandle(custom.event);
            if (custom.fd >= 0) close(custom.fd);
            custom.event = NULL;
            custom.fd = -1;
        }
    }
    BOOL started = custom.started;
    pthread_mutex_unlock(&custom.lock);
    return started;
}

static void custom_push(struct custom_entry **list, struct custom_entry *e) {
    e->next = NULL;
    while (*list) list = &(*list)->next;
    *list = e;
}

/* Takes `e` off the list of reads in flight. Under `custom.lock`. */
static void custom_unlink_reading(struct custom_entry *e) {
    for (struct custom_entry **link = &custom.reading; *link; link = &(*link)->reading_next) {
        if (*link == e) {
            *link = e->reading_next;
            break;
        }
    }
}

/* The entry's bytes were read (or not), on a dsr worker: plain C, no Win32. One finishing as
 * its queue closes ends quietly, by the failed list, never reaching the title. */
static void on_custom_read(void *user_data, dsr_result result) {
    struct custom_entry *e = user_data;
    uint64_t one = 1;
    /* A cancelled read ends the request quietly, as a cancelled built-in request does. */
    e->cancelled = result == DSR_E_CANCELLED || e->queue->closed;
    e->read_result = result == DSR_OK || e->cancelled ? S_OK : hresult_of(result);
    pthread_mutex_lock(&custom.lock);
    custom_unlink_reading(e);
    custom_push(SUCCEEDED(e->read_result) && !e->cancelled ? &custom.ready : &custom.failed, e);
    pthread_mutex_unlock(&custom.lock);
    (void)!write(custom.fd, &one, sizeof one);
}

/* The title's result for `e` (or its read's failure), on a Wine thread: a failure is recorded
 * as the request's, and what waited for it goes on. */
static void custom_resolve(struct custom_entry *e, HRESULT hr) {
    struct queue *q = e->queue;
    if (FAILED(hr) && !e->cancelled) {
        record_failure(q, e->seq, hr, &e->request, e->name, e->path);
        pthread_mutex_lock(&q->lock);
        if (q->failed_since_status == S_OK) q->failed_since_status = hr;
        pthread_mutex_unlock(&q->lock);
        SetEvent(q->error_event);
    }
    /* From inside a replay of this queue (its read refused at enqueue), the replay goes on
     * past the gate itself. */
    BOOL inside = replaying == q;
    if (!inside) pthread_mutex_lock(&q->hold_lock);
    if (e->gate->orphan) {
        held_free(e->gate);
    } else {
        e->gate->resolved = TRUE;
        /* Replayed up to a fence gate, the gate thread takes over. */
        if (!inside && !replay_locked(q) && q->held->kind == HELD_GATE) wait_for_gate(q);
    }
    if (!inside) {
        pthread_mutex_unlock(&q->hold_lock);
        /* What was replayed may follow the game's last Submit. */
        submit(q);
    }
    path_release(e->path);
    free(e->buffer);
    free(e);
    queue_unhold(q);
}

/* A custom-format request: its gate held, its bytes read (a file's) or taken as they are
 * (memory), then handed to the title. */
static void enqueue_custom(struct queue *q, const DSTORAGE_REQUEST *request) {
    UINT64 size = request->Options.SourceType == DSTORAGE_REQUEST_SOURCE_FILE ? request->Source.File.Size
                                                                                : request->Source.Memory.Size;
    struct file *f = request->Options.SourceType == DSTORAGE_REQUEST_SOURCE_FILE
                         ? file_of(request->Source.File.Source)
                         : NULL;
    if (request->Options.SourceType == DSTORAGE_REQUEST_SOURCE_FILE && (!f || !f->handle))
        REFUSE(q, request, E_DSTORAGE_INVALID_FILE_HANDLE);
    if (!size || !request->UncompressedSize) REFUSE(q, request, E_INVALIDARG);
    if (request->UncompressedSize > request->Destination.Memory.Size)
        REFUSE(q, request, E_DSTORAGE_INVALID_DESTINATION_SIZE);
    if (!custom_start()) REFUSE(q, request, E_OUTOFMEMORY);
    struct custom_entry *e = calloc(1, sizeof *e);
    struct held *gate = held_new(HELD_CUSTOM);
    void *buffer = f ? malloc(size) : NULL;
    if (!e || !gate || (f && !buffer)) {
        free(e);
        free(gate);
        free(buffer);
        REFUSE(q, request, E_OUTOFMEMORY);
    }
    InterlockedIncrement(&q->memory_refs);
    e->queue = q;
    e->seq = (UINT64)InterlockedIncrement64(&q->next_seq);
    e->request = *request;
    e->request.Name = NULL;
    if (request->Name) strncpy(e->name, request->Name, sizeof e->name - 1);
    e->gate = gate;
    e->buffer = buffer;
    e->src = f ? buffer : request->Source.Memory.Source;
    e->src_size = size;
    if (f && (e->path = f->path)) InterlockedIncrement(&e->path->refs);
    /* The gate: first among what is held when this request is being replayed from there. */
    if (replaying == q) {
        gate->next = q->held;
        q->held = gate;
        if (q->held_tail == &q->held) q->held_tail = &gate->next;
    } else {
        pthread_mutex_lock(&q->hold_lock);
        hold_append(q, gate);
        pthread_mutex_unlock(&q->hold_lock);
    }
    pthread_mutex_lock(&custom.lock);
    e->id = ++custom.next_id;
    if (!f) {
        custom_push(&custom.ready, e);
        SetEvent(custom.event);
    } else {
        /* Its callback may come before the enqueue returns, or (its queue closed) never. */
        e->reading_next = custom.reading;
        custom.reading = e;
    }
    pthread_mutex_unlock(&custom.lock);
    if (!f) return;
    dsr_request r;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    r.kind = DSR_REQUEST_READ_FILE;
    r.file = f->handle;
    r.file_offset = request->Source.File.Offset;
    r.source_size = size;
    r.destination = buffer;
    r.destination_size = size;
    r.tag = request->CancellationTag;
    r.name = request->Name;
    r.callback = on_custom_read;
    r.user_data = e;
    dsr_result result = dsr_queue_enqueue(q->handle, &r);
    if (result != DSR_OK) {
        pthread_mutex_lock(&custom.lock);
        custom_unlink_reading(e);
        pthread_mutex_unlock(&custom.lock);
        e->read_result = hresult_of(result);
        custom_resolve(e, e->read_result);
    }
}

/* A closed queue's custom requests that the title has not taken end now, quietly (a request
 * the title holds ends when it reports, its destination being the title's to write then). After
 * `dsr_queue_close`: reads still in flight then were cancelled without a callback (dsr calls none
 * after a close, and no longer touches their buffers), so they end here too. */
static void drop_custom(struct queue *q) {
    struct custom_entry *mine = NULL;
    pthread_mutex_lock(&custom.lock);
    for (struct custom_entry **link = &custom.reading; *link;) {
        struct custom_entry *e = *link;
        if (e->queue != q) {
            link = &e->reading_next;
            continue;
        }
        *link = e->reading_next;
        e->next = mine;
        mine = e;
    }
    struct custom_entry **lists[] = {&custom.ready, &custom.failed};
    for (size_t l = 0; l < ARRAY_SIZE(lists); l++) {
        for (struct custom_entry **link = lists[l]; *link;) {
            struct custom_entry *e = *link;
            if (e->queue != q) {
                link = &e->next;
                continue;
            }
            *link = e->next;
            e->next = mine;
            mine = e;
        }
    }
    if (!custom.ready && custom.event) ResetEvent(custom.event);
    pthread_mutex_unlock(&custom.lock);
    while (mine) {
        struct custom_entry *e = mine;
        mine = e->next;
        e->cancelled = TRUE;
        custom_resolve(e, S_OK);
    }
}

static HRESULT STDMETHODCALLTYPE custom_QueryInterface(IDStorageCustomDecompressionQueue *iface, REFIID riid,
                                                       void **out) {
    static const GUID *const iids[] = {&IID_IDStorageCustomDecompressionQueue, &IID_IDStorageCustomDecompressionQueue1};
    return query(iface, iids, ARRAY_SIZE(iids), riid, out);
}

/* The queue is the process's, as the factory is: references do not end it. */
static ULONG STDMETHODCALLTYPE custom_AddRef(IDStorageCustomDecompressionQueue *iface) {
    (void)iface;
    return 2;
}

static ULONG STDMETHODCALLTYPE custom_Release(IDStorageCustomDecompressionQueue *iface) {
    (void)iface;
    return 1;
}

static HANDLE STDMETHODCALLTYPE custom_GetEvent(IDStorageCustomDecompressionQueue *iface) {
    (void)iface;
    return custom_start() ? custom.event : NULL;
}

static HRESULT STDMETHODCALLTYPE custom_GetRequests1(IDStorageCustomDecompressionQueue *iface,
                                                     DSTORAGE_GET_REQUEST_FLAGS flags, UINT32 max,
                                                     DSTORAGE_CUSTOM_DECOMPRESSION_REQUEST *requests, UINT32 *num) {
    (void)iface;
    if (!num) return E_POINTER;
    *num = 0;
    if ((max && !requests) || (flags & ~DSTORAGE_GET_REQUEST_FLAG_SELECT_ALL)) return E_INVALIDARG;
    if (!custom_start()) return E_OUTOFMEMORY;
    /* Requests whose bytes could not be read fail now, here on the title's (Wine) thread. */
    pthread_mutex_lock(&custom.lock);
    struct custom_entry *failed = custom.failed;
    custom.failed = NULL;
    UINT32 n = 0;
    /* dsr decodes every built-in format itself: only custom ones come here. */
    while ((flags & DSTORAGE_GET_REQUEST_FLAG_SELECT_CUSTOM) && n < max && custom.ready) {
        struct custom_entry *e = custom.ready;
        custom.ready = e->next;
        custom_push(&custom.taken, e);
        DSTORAGE_CUSTOM_DECOMPRESSION_REQUEST *r = &requests[n++];
        memset(r, 0, sizeof *r);
        r->Id = e->id;
        r->CompressionFormat = e->request.Options.CompressionFormat;
        r->Flags = DSTORAGE_CUSTOM_DECOMPRESSION_FLAG_NONE;
        r->SrcSize = e->src_size;
        r->SrcBuffer = e->src;
        r->DstSize = e->request.UncompressedSize;
        r->DstBuffer = e->request.Destination.Memory.Buffer;
    }
    if (!custom.ready) ResetEvent(custom.event);
    pthread_mutex_unlock(&custom.lock);
    *num = n;
    while (failed) {
        struct custom_entry *e = failed;
        failed = e->next;
        custom_resolve(e, e->read_result);
    }
    return S_OK;
}

static HRESULT STDMETHODCALLTYPE custom_GetRequests(IDStorageCustomDecompressionQueue *iface, UINT32 max,
                                                    DSTORAGE_CUSTOM_DECOMPRESSION_REQUEST *requests, UINT32 *num) {
    return custom_GetRequests1(iface, DSTORAGE_GET_REQUEST_FLAG_SELECT_CUSTOM, max, requests, num);
}

static HRESULT STDMETHODCALLTYPE custom_SetRequestResults(IDStorageCustomDecompressionQueue *iface, UINT32 count,
                                                          DSTORAGE_CUSTOM_DECOMPRESSION_RESULT *results) {
    (void)iface;
    if (count && !results) return E_INVALIDARG;
    HRESULT hr = S_OK;
    for (UINT32 i = 0; i < count; i++) {
        pthread_mutex_lock(&custom.lock);
        struct custom_entry **link = &custom.taken;
        while (*link && (*link)->id != results[i].Id) link = &(*link)->next;
        struct custom_entry *e = *link;
        if (e) *link = e->next;
        pthread_mutex_unlock(&custom.lock);
        if (e) custom_resolve(e, results[i].Result);
        else hr = E_INVALIDARG; /* not a request the title holds */
    }
    return hr;
}

static const IDStorageCustomDecompressionQueueVtbl custom_vtbl = {
    custom_QueryInterface, custom_AddRef,          custom_Release,      custom_GetEvent,
    custom_GetRequests,    custom_SetRequestResults, custom_GetRequests1,
};

static void STDMETHODCALLTYPE queue_EnqueueRequest(IDStorageQueue *iface, const DSTORAGE_REQUEST *request) {
    struct queue *q = queue_of(iface);
    struct held *h;
    if (request && holding(q) && (h = held_new(HELD_REQUEST))) {
        h->request = *request;
        if (request->Name) strncpy(h->name, request->Name, sizeof h->name - 1);
        h->request.Name = NULL;
        struct file *f = request->Options.SourceType == DSTORAGE_REQUEST_SOURCE_FILE
                             ? file_of(request->Source.File.Source)
                             : NULL;
        if (f) file_AddRef(&f->iface);
        else if (request->Options.SourceType == DSTORAGE_REQUEST_SOURCE_FILE) h->request.Source.File.Source = NULL;
        if (hold(q, h)) return;
        held_free(h);
    }
    enqueue_request(q, request);
}

static void STDMETHODCALLTYPE queue_EnqueueStatus(IDStorageQueue *iface, IDStorageStatusArray *array, UINT32 index) {
    struct queue *q = queue_of(iface);
    struct held *h;
    if (status_of(array) && index < status_of(array)->capacity && holding(q) && (h = held_new(HELD_STATUS))) {
        /* The entry reads as pending from now, as DirectStorage's does once enqueued. */
        h->array = array;
        status_AddRef(array);
        h->index = index;
        InterlockedIncrement(&status_of(array)->held[index]);
        if (hold(q, h)) return;
        held_free(h);
    }
    enqueue_status(q, array, index);
}

static void STDMETHODCALLTYPE queue_EnqueueSignal(IDStorageQueue *iface, ID3D12Fence *fence, UINT64 value) {
    struct queue *q = queue_of(iface);
    struct held *h;
    if (fence && holding(q) && (h = held_new(HELD_SIGNAL))) {
        h->fence = fence;
        fence->lpVtbl->AddRef(fence);
        h->value = value;
        if (hold(q, h)) return;
        held_free(h);
    }
    enqueue_signal(q, fence, value);
}

static void STDMETHODCALLTYPE queue_EnqueueSetEvent(IDStorageQueue *iface, HANDLE event) {
    struct queue *q = queue_of(iface);
    struct held *h;
    if (event && holding(q) && (h = held_new(HELD_SET_EVENT))) {
        if (DuplicateHandle(GetCurrentProcess(), event, GetCurrentProcess(), &h->event, 0, FALSE,
                            DUPLICATE_SAME_ACCESS) &&
            hold(q, h))
            return;
        held_free(h);
    }
    enqueue_set_event(q, event);
}

/* Submits what dsr holds now; calls held behind a gate are submitted as they are replayed. */
static void STDMETHODCALLTYPE queue_Submit(IDStorageQueue *iface) {
    submit(queue_of(iface));
}

static void STDMETHODCALLTYPE queue_CancelRequestsWithTag(IDStorageQueue *iface, UINT64 mask, UINT64 value) {
    struct queue *q = queue_of(iface);
    if (!q->closed) dsr_queue_cancel(q->handle, mask, value);
}

static HANDLE STDMETHODCALLTYPE queue_GetErrorEvent(IDStorageQueue *iface) {
    return queue_of(iface)->error_event;
}

static void STDMETHODCALLTYPE queue_RetrieveErrorRecord(IDStorageQueue *iface, DSTORAGE_ERROR_RECORD *record) {
    struct queue *q = queue_of(iface);
    if (!record) return;
    memset(record, 0, sizeof *record);
    /* Reset before reading: a failure recorded meanwhile sets the event again (at worst a
     * spurious wake), where resetting after would wipe its signal. */
    ResetEvent(q->error_event);
    pthread_mutex_lock(&q->lock);
    record->FailureCount = q->failure_count;
    if (q->failure_count) record->FirstFailure = q->first;
    else record->FirstFailure.CommandType = DSTORAGE_COMMAND_TYPE_NONE;
    q->failure_count = 0;
    pthread_mutex_unlock(&q->lock);
}

static void STDMETHODCALLTYPE queue_Query(IDStorageQueue *iface, DSTORAGE_QUEUE_INFO *info) {
    struct queue *q = queue_of(iface);
    dsr_queue_info dsr_info;
    if (!info) return;
    memset(info, 0, sizeof *info);
    info->Desc = q->desc;
    memset(&dsr_info, 0, sizeof dsr_info);
    dsr_info.struct_size = sizeof dsr_info;
    if (dsr_queue_query(q->handle, &dsr_info) == DSR_OK) {
        info->EmptySlotCount = (UINT16)dsr_info.empty_slots;
        info->RequestCountUntilAutoSubmit = (UINT16)dsr_info.until_auto_submit;
    }
}

static DSTORAGE_COMPRESSION_SUPPORT STDMETHODCALLTYPE queue_GetCompressionSupport(IDStorageQueue *iface,
                                                                                  DSTORAGE_COMPRESSION_FORMAT format) {
    (void)iface;
    /* dsr decodes GDeflate on the CPU; the GPU decoder is its next step. */
    return (format & 0xff) == DSTORAGE_COMPRESSION_FORMAT_GDEFLATE ? DSTORAGE_COMPRESSION_SUPPORT_CPU_FALLBACK
                                                                   : DSTORAGE_COMPRESSION_SUPPORT_NONE;
}

static void STDMETHODCALLTYPE queue_EnqueueRequests(IDStorageQueue *iface, const DSTORAGE_REQUEST *requests,
                                                    UINT count, ID3D12Fence *fence, UINT64 value,
                                                    DSTORAGE_ENQUEUE_REQUEST_FLAGS flags) {
    struct queue *q = queue_of(iface);
    if (!requests) {
        if (count) refuse(q, NULL, E_INVALIDARG);
        return;
    }
    const DSTORAGE_ENQUEUE_REQUEST_FLAGS known = DSTORAGE_ENQUEUE_REQUEST_FLAG_FENCE_WAIT_BEFORE_GPU_WORK |
                                                 DSTORAGE_ENQUEUE_REQUEST_FLAG_FENCE_WAIT_BEFORE_SOURCE_ACCESS;
    if (flags & ~known) {
        for (UINT i = 0; i < count; i++) refuse(q, &requests[i], E_INVALIDARG);
        return;
    }
    struct held *gate;
    if (fence && !q->closed && (gate = held_new(HELD_GATE))) {
        gate->fence = fence;
        fence->lpVtbl->AddRef(fence);
        gate->value = value;
        /* A fence reached already (and nothing held) gates nothing. */
        if (!hold(q, gate)) held_free(gate);
    }
    for (UINT i = 0; i < count; i++) queue_EnqueueRequest(iface, &requests[i]);
}

static const IDStorageQueueVtbl queue_vtbl = {
    queue_QueryInterface,   queue_AddRef,        queue_Release,
    queue_EnqueueRequest,   queue_EnqueueStatus, queue_EnqueueSignal,
    queue_Submit,           queue_CancelRequestsWithTag, queue_Close,
    queue_GetErrorEvent,    queue_RetrieveErrorRecord,   queue_Query,
    queue_EnqueueSetEvent,  queue_GetCompressionSupport, queue_EnqueueRequests,
};

/* ---- the factory's methods ------------------------------------------------------------------ */

static HRESULT STDMETHODCALLTYPE factory_QueryInterface(IDStorageFactory *iface, REFIID riid, void **out) {
    static const GUID *const iids[] = {&IID_IDStorageFactory};
    /* The custom decompression queue is reached through the factory. */
    if (out && riid && (IsEqualGUID(riid, &IID_IDStorageCustomDecompressionQueue) ||
                        IsEqualGUID(riid, &IID_IDStorageCustomDecompressionQueue1)))
        return custom_QueryInterface(&custom.iface, riid, out);
    return query(iface, iids, ARRAY_SIZE(iids), riid, out);
}

static ULONG STDMETHODCALLTYPE factory_AddRef(IDStorageFactory *iface) {
    return InterlockedIncrement(&((struct factory *)iface)->refs);
}

static ULONG STDMETHODCALLTYPE factory_Release(IDStorageFactory *iface) {
    /* The factory is a process singleton, as DirectStorage's is: it stays. */
    LONG refs = InterlockedDecrement(&((struct factory *)iface)->refs);
    return refs > 0 ? (ULONG)refs : 0;
}

static HRESULT STDMETHODCALLTYPE factory_CreateQueue(IDStorageFactory *iface, const DSTORAGE_QUEUE_DESC *desc,
                                                     REFIID riid, void **out) {
    struct factory *f = (struct factory *)iface;
    if (!out) return E_POINTER;
    *out = NULL;
    if (!desc || !riid) return E_INVALIDARG;
    if (desc->SourceType > DSTORAGE_REQUEST_SOURCE_MEMORY) return E_INVALIDARG;
    if (desc->Capacity < DSTORAGE_MIN_QUEUE_CAPACITY || desc->Capacity > DSTORAGE_MAX_QUEUE_CAPACITY)
        return E_DSTORAGE_INVALID_QUEUE_CAPACITY;
    if (desc->Priority < DSTORAGE_PRIORITY_LOW || desc->Priority > DSTORAGE_PRIORITY_REALTIME)
        return E_DSTORAGE_INVALID_QUEUE_PRIORITY;
    dsr_runtime runtime = factory_runtime(f);
    if (!runtime) return E_FAIL;
    struct queue *q = calloc(1, sizeof *q);
    if (!q) return E_OUTOFMEMORY;
    if (desc->Device) {
        pthread_mutex_lock(&f->lock);
        dsr_runtime_config config = f->config;
        pthread_mutex_unlock(&f->lock);
        if (!(q->link = link_get(desc->Device, &config))) {
            free(q);
            return E_OUTOFMEMORY;
        }
        if (q->link->runtime) runtime = q->link->runtime;
    }
    q->iface.lpVtbl = &queue_vtbl;
    q->refs = 1;
    q->memory_refs = 1;
    q->desc = *desc;
    if (desc->Name) lstrcpynA(q->name, desc->Name, sizeof q->name);
    q->desc.Name = q->name;
    pthread_mutex_init(&q->lock, NULL);
    pthread_mutex_init(&q->hold_lock, NULL);
    q->held_tail = &q->held;
    q->error_event = CreateEventW(NULL, TRUE, FALSE, NULL);
    dsr_queue_desc d;
    memset(&d, 0, sizeof d);
    d.struct_size = sizeof d;
    d.source_type = desc->SourceType == DSTORAGE_REQUEST_SOURCE_FILE ? DSR_SOURCE_FILE : DSR_SOURCE_MEMORY;
    d.capacity = desc->Capacity;
    d.priority = desc->Priority;
    d.name = q->name;
    dsr_result result = dsr_queue_create(runtime, &d, &q->handle);
    struct watch *w = calloc(1, sizeof *w);
    if (result == DSR_OK && w && dsr_queue_error_event(q->handle, &w->fd) == DSR_OK) {
        w->kind = WATCH_ERROR_EVENT;
        w->event = q->error_event;
        w->owner = q;
        if (!watch_add(w)) result = DSR_E_INTERNAL;
    } else if (result == DSR_OK) {
        result = DSR_E_OUT_OF_MEMORY;
    }
    if (result != DSR_OK) {
        free(w);
        if (q->handle) dsr_queue_destroy(q->handle);
        link_put(q->link);
        CloseHandle(q->error_event);
        pthread_mutex_destroy(&q->lock);
        pthread_mutex_destroy(&q->hold_lock);
        free(q);
        return hresult_of(result);
    }
    HRESULT hr = queue_QueryInterface(&q->iface, riid, out);
    queue_Release(&q->iface);
    return hr;
}

static HRESULT STDMETHODCALLTYPE factory_OpenFile(IDStorageFactory *iface, const WCHAR *path, REFIID riid,
                                                  void **out) {
    struct factory *f = (struct factory *)iface;
    if (!out) return E_POINTER;
    *out = NULL;
    if (!path || !riid) return E_INVALIDARG;
    dsr_runtime runtime = factory_runtime(f);
    struct file *file = calloc(1, sizeof *file);
    dsr_result result = !runtime ? DSR_E_INTERNAL : !file ? DSR_E_OUT_OF_MEMORY
                        : open_windows_path(runtime, path, &file->handle);
    if (result != DSR_OK) {
        free(file);
        if (result == DSR_E_NOT_FOUND || result == DSR_E_PERMISSION || result == DSR_E_IO) {
            /* Win32's own error for the path (a missing directory is not a missing file). */
            HANDLE probe = CreateFileW(path, GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                                       NULL, OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, NULL);
            if (probe == INVALID_HANDLE_VALUE) return HRESULT_FROM_WIN32(GetLastError());
            CloseHandle(probe);
        }
        return hresult_of(result);
    }
    file->iface.lpVtbl = &file_vtbl;
    file->refs = 1;
    file->win32 = INVALID_HANDLE_VALUE;
    if ((file->path = calloc(1, sizeof *file->path))) {
        file->path->refs = 1;
        lstrcpynW(file->path->path, path, MAX_PATH);
    }
    HRESULT hr = file_QueryInterface(&file->iface, riid, out);
    file_Release(&file->iface);
    return hr;
}

static HRESULT STDMETHODCALLTYPE factory_CreateStatusArray(IDStorageFactory *iface, UINT32 capacity,
                                                           const CHAR *name, REFIID riid, void **out) {
    (void)iface;
    (void)name;
    if (!out) return E_POINTER;
    *out = NULL;
    if (!riid || !capacity) return E_INVALIDARG;
    struct status_array *s = calloc(1, sizeof *s);
    if (!s || !(s->override = calloc(capacity, sizeof *s->override)) || !(s->held = calloc(capacity, sizeof *s->held))) {
        if (s) free(s->override);
        free(s);
        return E_OUTOFMEMORY;
    }
    dsr_result result = dsr_status_array_create(capacity, &s->handle);
    if (result != DSR_OK) {
        free(s->override);
        free(s->held);
        free(s);
        return hresult_of(result);
    }
    s->iface.lpVtbl = &status_vtbl;
    s->refs = 1;
    s->capacity = capacity;
    HRESULT hr = status_QueryInterface(&s->iface, riid, out);
    status_Release(&s->iface);
    return hr;
}

static void STDMETHODCALLTYPE factory_SetDebugFlags(IDStorageFactory *iface, UINT32 flags) {
    ((struct factory *)iface)->debug_flags = flags;
}

static HRESULT STDMETHODCALLTYPE factory_SetStagingBufferSize(IDStorageFactory *iface, UINT32 size) {
    struct factory *f = (struct factory *)iface;
    dsr_runtime runtime = factory_runtime(f);
    if (!runtime) return E_FAIL;
    pthread_mutex_lock(&f->lock);
    dsr_runtime_config config = f->config;
    config.staging_bytes = size ? size : DSTORAGE_STAGING_BUFFER_SIZE_32MB;
    dsr_result result = dsr_runtime_set_config(runtime, &config);
    if (result == DSR_OK) f->config = config;
    pthread_mutex_unlock(&f->lock);
    return hresult_of(result);
}

static const IDStorageFactoryVtbl factory_vtbl = {
    factory_QueryInterface, factory_AddRef,       factory_Release,      factory_CreateQueue,
    factory_OpenFile,       factory_CreateStatusArray, factory_SetDebugFlags, factory_SetStagingBufferSize,
};

static struct factory the_factory = {{&factory_vtbl}, 0, PTHREAD_MUTEX_INITIALIZER, 0, {0}, 0};

/* ---- exports -------------------------------------------------------------------------------- */

HRESULT WINAPI DStorageGetFactory(REFIID riid, void **out) {
    if (!out) return E_POINTER;
    *out = NULL;
    if (!riid) return E_INVALIDARG;
    return factory_QueryInterface(&the_factory.iface, riid, out);
}

HRESULT WINAPI DStorageSetConfiguration1(const DSTORAGE_CONFIGURATION1 *config) {
    if (!config) return E_INVALIDARG;
    pthread_mutex_lock(&the_factory.lock);
    BOOL started = the_factory.runtime != 0;
    if (!started) configuration = *config;
    pthread_mutex_unlock(&the_factory.lock);
    return started ? E_DSTORAGE_STAGING_BUFFER_LOCKED : S_OK;
}

HRESULT WINAPI DStorageSetConfiguration(const DSTORAGE_CONFIGURATION *config) {
    DSTORAGE_CONFIGURATION1 config1;
    if (!config) return E_INVALIDARG;
    memset(&config1, 0, sizeof config1);
    memcpy(&config1, config, sizeof *config);
    return DStorageSetConfiguration1(&config1);
}

/* ---- the GDeflate codec: dsr's encoder and decoder, on the calling thread ------------------- */

struct codec {
    IDStorageCompressionCodec iface;
    LONG refs;
};

static const IDStorageCompressionCodecVtbl codec_vtbl;

static HRESULT STDMETHODCALLTYPE codec_QueryInterface(IDStorageCompressionCodec *iface, REFIID riid, void **out) {
    static const GUID *const iids[] = {&IID_IDStorageCompressionCodec};
    return query(iface, iids, ARRAY_SIZE(iids), riid, out);
}

static ULONG STDMETHODCALLTYPE codec_AddRef(IDStorageCompressionCodec *iface) {
    return InterlockedIncrement(&((struct codec *)iface)->refs);
}

static ULONG STDMETHODCALLTYPE codec_Release(IDStorageCompressionCodec *iface) {
    struct codec *c = (struct codec *)iface;
    ULONG refs = InterlockedDecrement(&c->refs);
    if (!refs) free(c);
    return refs;
}

/* The size-and-code convention both directions share: too small a buffer is Win32's
 * insufficient-buffer error, with the size needed written. */
static HRESULT codec_result(dsr_result result, uint64_t size, size_t *written) {
    if (written) *written = (size_t)size;
    if (result == DSR_E_DESTINATION_TOO_SMALL) return HRESULT_FROM_WIN32(ERROR_INSUFFICIENT_BUFFER);
    if (result == DSR_E_CORRUPT) return E_DSTORAGE_DECOMPRESSION_ERROR;
    return hresult_of(result);
}

static HRESULT STDMETHODCALLTYPE codec_CompressBuffer(IDStorageCompressionCodec *iface, const void *source,
                                                      size_t source_size, DSTORAGE_COMPRESSION level,
                                                      void *destination, size_t destination_size, size_t *written) {
    (void)iface;
    uint32_t dsr_level;
    switch (level) {
    case DSTORAGE_COMPRESSION_FASTEST: dsr_level = DSR_GDEFLATE_LEVEL_FASTEST; break;
    case DSTORAGE_COMPRESSION_DEFAULT: dsr_level = DSR_GDEFLATE_LEVEL_DEFAULT; break;
    case DSTORAGE_COMPRESSION_BEST_RATIO: dsr_level = DSR_GDEFLATE_LEVEL_BEST; break;
    default: return E_INVALIDARG;
    }
    if (!written) return E_POINTER;
    uint64_t size = 0;
    dsr_result result = dsr_gdeflate_compress(source, source_size, dsr_level, destination, destination_size, &size);
    return codec_result(result, size, written);
}

static HRESULT STDMETHODCALLTYPE codec_DecompressBuffer(IDStorageCompressionCodec *iface, const void *source,
                                                        size_t source_size, void *destination,
                                                        size_t destination_size, size_t *written) {
    (void)iface;
    if (!written) return E_POINTER;
    uint64_t size = 0;
    dsr_result result = dsr_gdeflate_decompress(source, source_size, destination, destination_size, &size);
    return codec_result(result, size, written);
}

static size_t STDMETHODCALLTYPE codec_CompressBufferBound(IDStorageCompressionCodec *iface, size_t size) {
    uint64_t bound = 0;
    (void)iface;
    return dsr_gdeflate_compress_bound(size, &bound) == DSR_OK ? (size_t)bound : 0;
}

static const IDStorageCompressionCodecVtbl codec_vtbl = {
    codec_QueryInterface, codec_AddRef, codec_Release, codec_CompressBuffer, codec_DecompressBuffer,
    codec_CompressBufferBound,
};

/* `threads` is accepted and unused: each call encodes or decodes on the caller's thread. */
HRESULT WINAPI DStorageCreateCompressionCodec(DSTORAGE_COMPRESSION_FORMAT format, UINT32 threads, REFIID riid,
                                              void **out) {
    (void)threads;
    if (!out) return E_POINTER;
    *out = NULL;
    if (!riid || format != DSTORAGE_COMPRESSION_FORMAT_GDEFLATE) return E_INVALIDARG;
    struct codec *c = calloc(1, sizeof *c);
    if (!c) return E_OUTOFMEMORY;
    c->iface.lpVtbl = &codec_vtbl;
    c->refs = 1;
    HRESULT hr = codec_QueryInterface(&c->iface, riid, out);
    codec_Release(&c->iface);
    return hr;
}
