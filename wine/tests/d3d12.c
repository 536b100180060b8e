/* A Windows program loading into D3D12 buffers through dsr's dstorage.dll, under Wine, with a
 * stand-in for vkd3d-proton: its own Vulkan device made through Wine's vulkan-1.dll (winevulkan
 * over the host's driver), a D3D12 device that answers ID3D12DXVKInteropDevice with that
 * device's handles, command queues, and buffer resources placed at offsets in one VkBuffer (as
 * vkd3d-proton places small buffers). It submits to the same VkQueue as dstorage.dll, under the
 * queue lock the interop hands out, while dstorage.dll works.
 * Checks: plain and GDeflate reads from files and memory land in the resources' bytes and
 * nowhere else; memory destinations still work on such a queue; bad buffer destinations get
 * their HRESULTs in enqueue order; a device without the interop, or a queue without a device,
 * refuses buffer destinations with E_DSTORAGE_INVALID_DESTINATION_TYPE; the queue lock is taken
 * and released in pairs on one Wine thread; every reference is given back.
 * Usage: d3d12.exe ASSET_PATH PACKED_PATH SIZE [--provoke-validation]  (exit 77: no Vulkan device)
 * With --provoke-validation it only makes an invalid buffer and exits: the harness checks that
 * the validation layer (loaded by the host's loader beneath winevulkan) reported it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INITGUID
#include "d3d12_interop.h"
#include "check.h"
#define VK_NO_PROTOTYPES
#include <vulkan/vulkan_core.h>

#define VK_OK(call) CHECK((call) == VK_SUCCESS)

static int is_asset(const unsigned char *bytes, size_t size) {
    for (size_t i = 0; i < size; i++)
        if (bytes[i] != asset_byte(i)) return 0;
    return 1;
}

static int is_filler(const unsigned char *bytes, size_t size) {
    for (size_t i = 0; i < size; i++)
        if (bytes[i] != 0xee) return 0;
    return 1;
}

/* ---- the game's Vulkan device, through winevulkan ------------------------------------------ */

static PFN_vkGetInstanceProcAddr get_proc;
#define VK_FN(instance, name) ((PFN_##name)get_proc((instance), #name))

struct vk {
    VkInstance instance;
    VkPhysicalDevice physical;
    VkDevice device;
    VkQueue queue;
    uint32_t family;
    VkBuffer buffer;
    VkDeviceMemory memory;
    VkDeviceSize size;
    unsigned char *mapped;
};

/* 0 when there is no Vulkan 1.2 device with timeline semaphores. */
static int vk_create(struct vk *vk, VkDeviceSize size) {
    memset(vk, 0, sizeof *vk);
    HMODULE loader = LoadLibraryA("vulkan-1.dll");
    if (!loader || !(get_proc = (PFN_vkGetInstanceProcAddr)(void *)GetProcAddress(loader, "vkGetInstanceProcAddr")))
        return 0;
    VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO, .apiVersion = VK_API_VERSION_1_2};
    VkInstanceCreateInfo instance = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO, .pApplicationInfo = &app};
    if (VK_FN(NULL, vkCreateInstance)(&instance, NULL, &vk->instance) != VK_SUCCESS) return 0;
    uint32_t count = 1;
    VkResult listed = VK_FN(vk->instance, vkEnumeratePhysicalDevices)(vk->instance, &count, &vk->physical);
    if ((listed != VK_SUCCESS && listed != VK_INCOMPLETE) || count == 0) return 0;
    VkPhysicalDeviceVulkan12Features v12 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
    VkPhysicalDeviceFeatures2 features = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &v12};
    VK_FN(vk->instance, vkGetPhysicalDeviceFeatures2)(vk->physical, &features);
    if (!v12.timelineSemaphore) return 0;
    uint32_t families = 0;
    VK_FN(vk->instance, vkGetPhysicalDeviceQueueFamilyProperties)(vk->physical, &families, NULL);
    VkQueueFamilyProperties props[16];
    families = families > 16 ? 16 : families;
    VK_FN(vk->instance, vkGetPhysicalDeviceQueueFamilyProperties)(vk->physical, &families, props);
    for (vk->family = 0; vk->family < families && !(props[vk->family].queueFlags & VK_QUEUE_COMPUTE_BIT);)
        vk->family++;
    CHECK(vk->family < families);
    float priority = 1.0f;
    VkDeviceQueueCreateInfo queue = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                     .queueFamilyIndex = vk->family,
                                     .queueCount = 1,
                                     .pQueuePriorities = &priority};
    VkPhysicalDeviceVulkan12Features enable12 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
                                                 .timelineSemaphore = VK_TRUE};
    VkDeviceCreateInfo device = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                                 .pNext = &enable12,
                                 .queueCreateInfoCount = 1,
                                 .pQueueCreateInfos = &queue};
    VK_OK(VK_FN(vk->instance, vkCreateDevice)(vk->physical, &device, NULL, &vk->device));
    VK_FN(vk->instance, vkGetDeviceQueue)(vk->device, vk->family, 0, &vk->queue);

    /* One buffer holding every resource, in host-visible memory so the test can read it. */
    vk->size = size;
    VkBufferCreateInfo buffer = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                                 .size = size,
                                 .usage = VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                                 .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
    VK_OK(VK_FN(vk->instance, vkCreateBuffer)(vk->device, &buffer, NULL, &vk->buffer));
    VkMemoryRequirements needs;
    VK_FN(vk->instance, vkGetBufferMemoryRequirements)(vk->device, vk->buffer, &needs);
    VkPhysicalDeviceMemoryProperties memory;
    VK_FN(vk->instance, vkGetPhysicalDeviceMemoryProperties)(vk->physical, &memory);
    const VkMemoryPropertyFlags want = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    uint32_t type = 0;
    while (type < memory.memoryTypeCount &&
           (!(needs.memoryTypeBits & (1u << type)) || (memory.memoryTypes[type].propertyFlags & want) != want))
        type++;
    CHECK(type < memory.memoryTypeCount);
    VkMemoryAllocateInfo allocate = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                                     .allocationSize = needs.size,
                                     .memoryTypeIndex = type};
    VK_OK(VK_FN(vk->instance, vkAllocateMemory)(vk->device, &allocate, NULL, &vk->memory));
    VK_OK(VK_FN(vk->instance, vkBindBufferMemory)(vk->device, vk->buffer, vk->memory, 0));
    VK_OK(VK_FN(vk->instance, vkMapMemory)(vk->device, vk->memory, 0, VK_WHOLE_SIZE, 0, (void **)&vk->mapped));
    memset(vk->mapped, 0xee, size);
    return 1;
}

static void vk_destroy(struct vk *vk) {
    VK_FN(vk->instance, vkDeviceWaitIdle)(vk->device);
    VK_FN(vk->instance, vkUnmapMemory)(vk->device, vk->memory);
    VK_FN(vk->instance, vkDestroyBuffer)(vk->device, vk->buffer, NULL);
    VK_FN(vk->instance, vkFreeMemory)(vk->device, vk->memory, NULL);
    VK_FN(vk->instance, vkDestroyDevice)(vk->device, NULL);
    VK_FN(vk->instance, vkDestroyInstance)(vk->instance, NULL);
}

/* ---- the stand-in D3D12 device, its queues and buffers -------------------------------------- */

struct resource {
    ID3D12Resource iface;
    LONG refs;
    D3D12_RESOURCE_DESC desc;
    UINT64 vk_buffer;     /* 0: the interop does not know it */
    UINT64 base;          /* where it starts in vk_buffer */
    ID3D12Device *owner;  /* its device */
};

static HRESULT STDMETHODCALLTYPE resource_qi(ID3D12Resource *r, REFIID riid, void **out) {
    (void)r, (void)riid, *out = NULL;
    return E_NOINTERFACE;
}
static ULONG STDMETHODCALLTYPE resource_addref(ID3D12Resource *r) {
    return InterlockedIncrement(&((struct resource *)r)->refs);
}
static ULONG STDMETHODCALLTYPE resource_release(ID3D12Resource *r) {
    return InterlockedDecrement(&((struct resource *)r)->refs);
}
static D3D12_RESOURCE_DESC *STDMETHODCALLTYPE resource_desc(ID3D12Resource *r, D3D12_RESOURCE_DESC *out) {
    *out = ((struct resource *)r)->desc;
    return out;
}
static HRESULT STDMETHODCALLTYPE resource_device(ID3D12Resource *r, REFIID riid, void **out) {
    ID3D12Device *owner = ((struct resource *)r)->owner;
    return owner->lpVtbl->QueryInterface(owner, riid, out);
}
static const ID3D12ResourceVtbl resource_vtbl = {resource_qi, resource_addref, resource_release, {0},
                                                 resource_device, NULL, NULL, resource_desc};

static struct resource make_buffer(const struct vk *vk, ID3D12Device *owner, UINT64 base, UINT64 width) {
    struct resource r;
    memset(&r, 0, sizeof r);
    r.iface.lpVtbl = &resource_vtbl;
    r.refs = 1;
    r.desc.Dimension = D3D12_RESOURCE_DIMENSION_BUFFER;
    r.desc.Width = width;
    r.desc.Height = 1;
    r.desc.DepthOrArraySize = 1;
    r.desc.MipLevels = 1;
    r.desc.SampleCount = 1;
    r.desc.Layout = 1; /* D3D12_TEXTURE_LAYOUT_ROW_MAJOR */
    r.vk_buffer = vk ? (UINT64)vk->buffer : 0;
    r.base = base;
    r.owner = owner;
    return r;
}

struct device {
    ID3D12Device iface;
    ID3D12DXVKInteropDevice interop;
    LONG refs;
    BOOL has_interop;
    struct vk *vk;
    CRITICAL_SECTION queue_lock; /* vkd3d-proton's lock on its VkQueue */
    LONG locks, unlocks, queues_made;
    DWORD lock_thread;           /* the thread that took the lock first */
    BOOL other_lock_thread;      /* another thread took it too */
};

struct command_queue {
    ID3D12CommandQueue iface;
    LONG refs;
    struct device *device;
    D3D12_COMMAND_LIST_TYPE type;
};

static HRESULT STDMETHODCALLTYPE cq_qi(ID3D12CommandQueue *q, REFIID riid, void **out) {
    (void)q, (void)riid, *out = NULL;
    return E_NOINTERFACE;
}
static ULONG STDMETHODCALLTYPE cq_addref(ID3D12CommandQueue *q) {
    return InterlockedIncrement(&((struct command_queue *)q)->refs);
}
static ULONG STDMETHODCALLTYPE cq_release(ID3D12CommandQueue *q) {
    return InterlockedDecrement(&((struct command_queue *)q)->refs);
}
static const ID3D12CommandQueueVtbl cq_vtbl = {cq_qi, cq_addref, cq_release};
static struct command_queue made_queue; /* the one queue the interop device makes */

static struct device *device_of(ID3D12Device *d) { return (struct device *)d; }
static struct device *interop_device(ID3D12DXVKInteropDevice *i) {
    return (struct device *)((char *)i - offsetof(struct device, interop));
}

static HRESULT STDMETHODCALLTYPE device_qi(ID3D12Device *d, REFIID riid, void **out) {
    struct device *dev = device_of(d);
    if (IsEqualGUID(riid, &IID_IUnknown) || IsEqualGUID(riid, &IID_ID3D12Device)) {
        *out = &dev->iface;
    } else if (dev->has_interop && IsEqualGUID(riid, &IID_ID3D12DXVKInteropDevice)) {
        *out = &dev->interop;
    } else {
        *out = NULL;
        return E_NOINTERFACE;
    }
    InterlockedIncrement(&dev->refs);
    return S_OK;
}
static ULONG STDMETHODCALLTYPE device_addref(ID3D12Device *d) { return InterlockedIncrement(&device_of(d)->refs); }
static ULONG STDMETHODCALLTYPE device_release(ID3D12Device *d) { return InterlockedDecrement(&device_of(d)->refs); }
static UINT STDMETHODCALLTYPE device_nodes(ID3D12Device *d) {
    (void)d;
    return 1;
}
static HRESULT STDMETHODCALLTYPE device_create_queue(ID3D12Device *d, const D3D12_COMMAND_QUEUE_DESC *desc,
                                                     REFIID riid, void **out) {
    struct device *dev = device_of(d);
    CHECK(IsEqualGUID(riid, &IID_ID3D12CommandQueue));
    CHECK(InterlockedIncrement(&dev->queues_made) == 1); /* one per device, shared by its queues */
    made_queue.iface.lpVtbl = &cq_vtbl;
    made_queue.refs = 1;
    made_queue.device = dev;
    made_queue.type = desc->Type;
    *out = &made_queue.iface;
    return S_OK;
}
static const ID3D12DeviceVtbl device_vtbl = {device_qi, device_addref, device_release, {0}, device_nodes,
                                             device_create_queue};

static HRESULT STDMETHODCALLTYPE interop_qi(ID3D12DXVKInteropDevice *i, REFIID riid, void **out) {
    return device_qi(&interop_device(i)->iface, riid, out);
}
static ULONG STDMETHODCALLTYPE interop_addref(ID3D12DXVKInteropDevice *i) {
    return InterlockedIncrement(&interop_device(i)->refs);
}
static ULONG STDMETHODCALLTYPE interop_release(ID3D12DXVKInteropDevice *i) {
    return InterlockedDecrement(&interop_device(i)->refs);
}
static HRESULT STDMETHODCALLTYPE interop_handles(ID3D12DXVKInteropDevice *i, void **instance, void **physical,
                                                 void **device) {
    struct vk *vk = interop_device(i)->vk;
    *instance = vk->instance;
    *physical = vk->physical;
    *device = vk->device;
    return S_OK;
}
static HRESULT STDMETHODCALLTYPE interop_queue(ID3D12DXVKInteropDevice *i, ID3D12CommandQueue *queue,
                                               void **vk_queue, UINT32 *family) {
    if (!queue || queue->lpVtbl != &cq_vtbl) return E_INVALIDARG;
    *vk_queue = interop_device(i)->vk->queue;
    *family = interop_device(i)->vk->family;
    return S_OK;
}
static HRESULT STDMETHODCALLTYPE interop_resource(ID3D12DXVKInteropDevice *i, ID3D12Resource *resource,
                                                  UINT64 *vk_handle, UINT64 *offset) {
    (void)i;
    struct resource *r = (struct resource *)resource;
    if (!r || r->iface.lpVtbl != &resource_vtbl || !r->vk_buffer) return E_INVALIDARG;
    *vk_handle = r->vk_buffer;
    *offset = r->base;
    return S_OK;
}
static HRESULT STDMETHODCALLTYPE interop_lock(ID3D12DXVKInteropDevice *i, ID3D12CommandQueue *queue) {
    struct device *dev = interop_device(i);
    CHECK(queue == &made_queue.iface);
    EnterCriticalSection(&dev->queue_lock);
    if (!dev->lock_thread) dev->lock_thread = GetCurrentThreadId();
    else if (dev->lock_thread != GetCurrentThreadId()) dev->other_lock_thread = TRUE;
    InterlockedIncrement(&dev->locks);
    return S_OK;
}
static HRESULT STDMETHODCALLTYPE interop_unlock(ID3D12DXVKInteropDevice *i, ID3D12CommandQueue *queue) {
    struct device *dev = interop_device(i);
    CHECK(queue == &made_queue.iface);
    CHECK(dev->lock_thread == GetCurrentThreadId()); /* released by the thread that took it */
    InterlockedIncrement(&dev->unlocks);
    LeaveCriticalSection(&dev->queue_lock);
    return S_OK;
}
static const ID3D12DXVKInteropDeviceVtbl interop_vtbl = {
    interop_qi,     interop_addref, interop_release,  NULL, NULL, NULL, NULL, interop_handles,
    interop_queue,  NULL,           interop_resource, interop_lock, interop_unlock};

static void device_init(struct device *dev, struct vk *vk, BOOL has_interop) {
    memset(dev, 0, sizeof *dev);
    dev->iface.lpVtbl = &device_vtbl;
    dev->interop.lpVtbl = &interop_vtbl;
    dev->refs = 1;
    dev->has_interop = has_interop;
    dev->vk = vk;
    InitializeCriticalSection(&dev->queue_lock);
}

/* The game's own submissions to the shared VkQueue while dstorage.dll works: the validation
 * layer reports a queue used by two threads at once, which the lock prevents. */
static volatile LONG stop_submitting;
static LONG game_submissions;
static DWORD WINAPI game_submits(void *arg) {
    struct device *dev = arg;
    PFN_vkQueueSubmit submit = VK_FN(dev->vk->instance, vkQueueSubmit);
    while (!stop_submitting) {
        EnterCriticalSection(&dev->queue_lock);
        VK_OK(submit(dev->vk->queue, 0, NULL, VK_NULL_HANDLE));
        LeaveCriticalSection(&dev->queue_lock);
        InterlockedIncrement(&game_submissions);
        Sleep(0);
    }
    return 0;
}

/* ---- requests ------------------------------------------------------------------------------- */

static DSTORAGE_REQUEST to_buffer(struct resource *r, UINT64 offset, UINT32 size) {
    DSTORAGE_REQUEST q;
    memset(&q, 0, sizeof q);
    q.Options.DestinationType = DSTORAGE_REQUEST_DESTINATION_BUFFER;
    q.Destination.Buffer.Resource = r ? &r->iface : NULL;
    q.Destination.Buffer.Offset = offset;
    q.Destination.Buffer.Size = size;
    q.UncompressedSize = size;
    return q;
}

static DSTORAGE_REQUEST from_file(DSTORAGE_REQUEST q, IDStorageFile *file, UINT32 size) {
    q.Options.SourceType = DSTORAGE_REQUEST_SOURCE_FILE;
    q.Source.File.Source = file;
    q.Source.File.Size = size;
    return q;
}

/* Runs what was enqueued and waits for it (30 s at most). */
static void finish(IDStorageQueue *queue) {
    HANDLE done = CreateEventW(NULL, FALSE, FALSE, NULL);
    queue->lpVtbl->EnqueueSetEvent(queue, done);
    queue->lpVtbl->Submit(queue);
    CHECK(WaitForSingleObject(done, 30000) == WAIT_OBJECT_0);
    CloseHandle(done);
}

int main(int argc, char **argv) {
    CHECK(argc == 4 || (argc == 5 && !strcmp(argv[4], "--provoke-validation")));
    const size_t size = (size_t)strtoull(argv[3], NULL, 10);
    const UINT64 a_base = 65536, a_width = size + 8192, b_base = a_base + a_width + 256, c_base = b_base + size + 256;
    struct vk vk;
    if (!vk_create(&vk, c_base + size + 4096)) {
        printf("skip: no Vulkan 1.2 device through winevulkan\n");
        return 77;
    }
    if (argc == 5) {
        VkBufferCreateInfo empty = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                                    .size = 0, /* invalid: size must be greater than 0 */
                                    .usage = VK_BUFFER_USAGE_TRANSFER_DST_BIT};
        VkBuffer buffer = VK_NULL_HANDLE;
        VK_FN(vk.instance, vkCreateBuffer)(vk.device, &empty, NULL, &buffer);
        if (buffer) VK_FN(vk.instance, vkDestroyBuffer)(vk.device, buffer, NULL);
        vk_destroy(&vk);
        printf("an invalid buffer was made\n");
        return 0;
    }
    IDStorageFactory *factory = NULL;
    EXPECT_HR(DStorageGetFactory(&IID_IDStorageFactory, (void **)&factory), S_OK);
    factory->lpVtbl->SetDebugFlags(factory, DSTORAGE_DEBUG_SHOW_ERRORS); /* why, on stderr */
    IDStorageFile *asset = NULL, *packed = NULL;
    EXPECT_HR(factory->lpVtbl->OpenFile(factory, wide(argv[1]), &IID_IDStorageFile, (void **)&asset), S_OK);
    EXPECT_HR(factory->lpVtbl->OpenFile(factory, wide(argv[2]), &IID_IDStorageFile, (void **)&packed), S_OK);
    BY_HANDLE_FILE_INFORMATION info;
    EXPECT_HR(packed->lpVtbl->GetFileInformation(packed, &info), S_OK);
    const UINT32 packed_size = info.nFileSizeLow;
    unsigned char *stream = malloc(packed_size);
    HANDLE h = CreateFileW(wide(argv[2]), GENERIC_READ, FILE_SHARE_READ, NULL, OPEN_EXISTING, 0, NULL);
    DWORD got = 0;
    CHECK(h != INVALID_HANDLE_VALUE && ReadFile(h, stream, packed_size, &got, NULL) && got == packed_size);
    CloseHandle(h);

    /* The device, and one without the interop (not vkd3d-proton). */
    struct device device, plain;
    device_init(&device, &vk, TRUE);
    device_init(&plain, &vk, FALSE);
    ID3D12Device *d = &device.iface;
    struct resource a = make_buffer(&vk, d, a_base, a_width), b = make_buffer(&vk, d, b_base, size),
                    c = make_buffer(&vk, d, c_base, size), texture = make_buffer(&vk, d, 0, size),
                    unknown = make_buffer(NULL, d, 0, size), stranger = make_buffer(&vk, &plain.iface, 0, size);
    texture.desc.Dimension = D3D12_RESOURCE_DIMENSION_TEXTURE2D;

    IDStorageQueue *files = make_queue(factory, DSTORAGE_REQUEST_SOURCE_FILE, &device.iface);
    IDStorageQueue *memory = make_queue(factory, DSTORAGE_REQUEST_SOURCE_MEMORY, &device.iface);
    CHECK(device.queues_made == 1 && made_queue.type == D3D12_COMMAND_LIST_TYPE_COMPUTE);
    HANDLE game = CreateThread(NULL, 0, game_submits, &device, 0, NULL);
    CHECK(game != NULL);

    IDStorageStatusArray *status = NULL;
    EXPECT_HR(factory->lpVtbl->CreateStatusArray(factory, 16, "d3d12", &IID_IDStorageStatusArray, (void **)&status),
              S_OK);
    /* Into buffer A at 4096, plain; into B, GDeflate; then refusals, each with its status entry. */
    DSTORAGE_REQUEST r = from_file(to_buffer(&a, 4096, (UINT32)size), asset, (UINT32)size);
    files->lpVtbl->EnqueueRequest(files, &r);
    files->lpVtbl->EnqueueStatus(files, status, 0);
    r = from_file(to_buffer(&b, 0, (UINT32)size), packed, packed_size);
    r.Options.CompressionFormat = DSTORAGE_COMPRESSION_FORMAT_GDEFLATE;
    files->lpVtbl->EnqueueRequest(files, &r);
    files->lpVtbl->EnqueueStatus(files, status, 1);
    r = from_file(to_buffer(&a, a_width - 10, (UINT32)size), asset, (UINT32)size); /* past the resource */
    r.Name = "past the resource";
    files->lpVtbl->EnqueueRequest(files, &r);
    files->lpVtbl->EnqueueStatus(files, status, 2);
    r = from_file(to_buffer(&texture, 0, (UINT32)size), asset, (UINT32)size);
    files->lpVtbl->EnqueueRequest(files, &r);
    files->lpVtbl->EnqueueStatus(files, status, 3);
    r = from_file(to_buffer(&stranger, 0, (UINT32)size), asset, (UINT32)size); /* another device's */
    files->lpVtbl->EnqueueRequest(files, &r);
    files->lpVtbl->EnqueueStatus(files, status, 4);
    r = from_file(to_buffer(&unknown, 0, (UINT32)size), asset, (UINT32)size); /* the interop fails */
    files->lpVtbl->EnqueueRequest(files, &r);
    files->lpVtbl->EnqueueStatus(files, status, 15);
    r = from_file(to_buffer(NULL, 0, (UINT32)size), asset, (UINT32)size);
    files->lpVtbl->EnqueueRequest(files, &r);
    files->lpVtbl->EnqueueStatus(files, status, 5);
    r = from_file(to_buffer(&a, 0, (UINT32)size), asset, (UINT32)size);
    r.Options.DestinationType = DSTORAGE_REQUEST_DESTINATION_TEXTURE_REGION;
    files->lpVtbl->EnqueueRequest(files, &r);
    files->lpVtbl->EnqueueStatus(files, status, 6);
    r = from_file(to_buffer(&a, 0, (UINT32)size - 1), asset, (UINT32)size); /* no room */
    files->lpVtbl->EnqueueRequest(files, &r);
    files->lpVtbl->EnqueueStatus(files, status, 7);
    r = from_file(to_buffer(&a, 0, (UINT32)size), asset, (UINT32)size); /* custom: memory only */
    r.Options.CompressionFormat = DSTORAGE_CUSTOM_COMPRESSION_0;
    files->lpVtbl->EnqueueRequest(files, &r);
    files->lpVtbl->EnqueueStatus(files, status, 14);
    /* A memory destination on the same queue. */
    unsigned char *host = malloc(size);
    memset(host, 0, size);
    r = from_file(to_buffer(NULL, 0, 0), asset, (UINT32)size);
    r.Options.DestinationType = DSTORAGE_REQUEST_DESTINATION_MEMORY;
    r.Destination.Memory.Buffer = host;
    r.Destination.Memory.Size = (UINT32)size;
    files->lpVtbl->EnqueueRequest(files, &r);
    files->lpVtbl->EnqueueStatus(files, status, 8);
    finish(files);
    EXPECT_HR(status->lpVtbl->GetHResult(status, 0), S_OK);
    EXPECT_HR(status->lpVtbl->GetHResult(status, 1), S_OK);
    EXPECT_HR(status->lpVtbl->GetHResult(status, 2), E_DSTORAGE_INVALID_DESTINATION_SIZE);
    EXPECT_HR(status->lpVtbl->GetHResult(status, 3), E_DSTORAGE_INVALID_DESTINATION_TYPE);
    EXPECT_HR(status->lpVtbl->GetHResult(status, 4), E_INVALIDARG);
    EXPECT_HR(status->lpVtbl->GetHResult(status, 15), E_INVALIDARG);
    EXPECT_HR(status->lpVtbl->GetHResult(status, 5), E_INVALIDARG);
    EXPECT_HR(status->lpVtbl->GetHResult(status, 6), E_DSTORAGE_INVALID_DESTINATION_TYPE);
    EXPECT_HR(status->lpVtbl->GetHResult(status, 7), E_DSTORAGE_INVALID_DESTINATION_SIZE);
    EXPECT_HR(status->lpVtbl->GetHResult(status, 14), E_DSTORAGE_INVALID_DESTINATION_TYPE);
    EXPECT_HR(status->lpVtbl->GetHResult(status, 8), S_OK);
    DSTORAGE_ERROR_RECORD record;
    files->lpVtbl->RetrieveErrorRecord(files, &record);
    CHECK(record.FailureCount == 8);
    EXPECT_HR(record.FirstFailure.HResult, E_DSTORAGE_INVALID_DESTINATION_SIZE);
    CHECK(strcmp(record.FirstFailure.Request.RequestName, "past the resource") == 0);
    CHECK(record.FirstFailure.Request.Request.Options.DestinationType == DSTORAGE_REQUEST_DESTINATION_BUFFER);

    /* The bytes: A's range at its offset, B whole, nothing else in the VkBuffer touched. */
    CHECK(is_filler(vk.mapped, a_base + 4096));
    CHECK(is_asset(vk.mapped + a_base + 4096, size));
    CHECK(is_filler(vk.mapped + a_base + 4096 + size, b_base - (a_base + 4096 + size)));
    CHECK(is_asset(vk.mapped + b_base, size));
    CHECK(is_filler(vk.mapped + b_base + size, vk.size - (b_base + size)));
    CHECK(is_asset(host, size));
    printf("file queue: plain and GDeflate reads in their buffers' ranges, refusals in order\n");

    /* GDeflate from memory into C. */
    DSTORAGE_REQUEST m = to_buffer(&c, 0, (UINT32)size);
    m.Options.SourceType = DSTORAGE_REQUEST_SOURCE_MEMORY;
    m.Options.CompressionFormat = DSTORAGE_COMPRESSION_FORMAT_GDEFLATE;
    m.Source.Memory.Source = stream;
    m.Source.Memory.Size = packed_size;
    memory->lpVtbl->EnqueueRequest(memory, &m);
    memory->lpVtbl->EnqueueStatus(memory, status, 9);
    finish(memory);
    EXPECT_HR(status->lpVtbl->GetHResult(status, 9), S_OK);
    CHECK(is_asset(vk.mapped + c_base, size));
    CHECK(is_filler(vk.mapped + c_base + size, vk.size - (c_base + size)));
    printf("memory queue: GDeflate from memory into a buffer\n");

    /* The device without the interop, and a queue without a device: memory destinations
     * work, buffer destinations are refused. */
    IDStorageQueue *queues[2] = {make_queue(factory, DSTORAGE_REQUEST_SOURCE_FILE, &plain.iface),
                                 make_queue(factory, DSTORAGE_REQUEST_SOURCE_FILE, NULL)};
    CHECK(plain.queues_made == 0);
    for (int i = 0; i < 2; i++) {
        r = from_file(to_buffer(&a, 0, (UINT32)size), asset, (UINT32)size);
        queues[i]->lpVtbl->EnqueueRequest(queues[i], &r);
        queues[i]->lpVtbl->EnqueueStatus(queues[i], status, 10 + 2 * i);
        memset(host, 0, size);
        r = from_file(to_buffer(NULL, 0, 0), asset, (UINT32)size);
        r.Options.DestinationType = DSTORAGE_REQUEST_DESTINATION_MEMORY;
        r.Destination.Memory.Buffer = host;
        r.Destination.Memory.Size = (UINT32)size;
        queues[i]->lpVtbl->EnqueueRequest(queues[i], &r);
        queues[i]->lpVtbl->EnqueueStatus(queues[i], status, 11 + 2 * i);
        finish(queues[i]);
        EXPECT_HR(status->lpVtbl->GetHResult(status, 10 + 2 * i), E_DSTORAGE_INVALID_DESTINATION_TYPE);
        EXPECT_HR(status->lpVtbl->GetHResult(status, 11 + 2 * i), S_OK);
        CHECK(is_asset(host, size));
        queues[i]->lpVtbl->Release(queues[i]);
    }
    CHECK(plain.refs == 1);
    printf("without the interop: buffer destinations refused, memory destinations served\n");

    /* Every reference back once the queues are gone: the game may destroy its device. The
     * game goes on submitting while dstorage.dll tears its runtime down (it waits for its
     * queue under the lock, not for the whole device). */
    files->lpVtbl->Release(files);
    CHECK(device.refs > 1 && made_queue.refs == 1);
    memory->lpVtbl->Release(memory);
    CHECK(device.refs == 1 && made_queue.refs == 0);
    stop_submitting = 1;
    CHECK(WaitForSingleObject(game, 10000) == WAIT_OBJECT_0);
    CHECK(device.locks > 0 && device.locks == device.unlocks);
    CHECK(!device.other_lock_thread && device.lock_thread != GetCurrentThreadId());
    printf("queue lock: %ld pairs on one thread of dstorage.dll's; the game submitted %ld times meanwhile\n",
           (long)device.locks, (long)game_submissions);
    status->lpVtbl->Release(status);
    asset->lpVtbl->Release(asset);
    packed->lpVtbl->Release(packed);
    factory->lpVtbl->Release(factory);
    vk_destroy(&vk);
    printf("every check passed\n");
    return 0;
}
