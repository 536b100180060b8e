/* The C ABI on the caller's own Vulkan device: a game makes its VkInstance, VkDevice, a buffer
 * and a timeline semaphore; dsr reads a raw and a GDeflate file into the buffer and signals the
 * semaphore; a memory queue fills another range, and writes it back to a file from the GPU.
 * Then every hostile GPU call gets its error code. Run with the Khronos validation layer: any
 * message fails the test.
 * Usage: vulkan ASSET_FILE COMPRESSED_FILE SIZE OUT_FILE
 * Exits 77 when there is no Vulkan device (the harness decides whether that may skip). */
#include <pthread.h>
#include <stddef.h>
#include <vulkan/vulkan.h>

#include "common.h"

#define VK_OK(call)                                                                     \
    do {                                                                                \
        VkResult vr_ = (call);                                                          \
        if (vr_ != VK_SUCCESS) {                                                        \
            fprintf(stderr, "%s:%d: %s returned VkResult %d\n", __FILE__, __LINE__, #call, \
                    (int)vr_);                                                          \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

static int messages;

static VKAPI_ATTR VkBool32 VKAPI_CALL on_message(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                                 VkDebugUtilsMessageTypeFlagsEXT types,
                                                 const VkDebugUtilsMessengerCallbackDataEXT *data,
                                                 void *user_data) {
    (void)types;
    (void)user_data;
    if (severity >= VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT) {
        messages++;
        fprintf(stderr, "validation: %s\n", data->pMessage);
    }
    return VK_FALSE;
}

/* The game's queue lock: dsr takes it around its own submissions. */
static pthread_mutex_t queue_mutex = PTHREAD_MUTEX_INITIALIZER;
static int lock_calls;
static void lock_queue(void *user_data) {
    pthread_mutex_lock(&queue_mutex);
    (*(int *)user_data)++;
}
static void unlock_queue(void *user_data) {
    (void)user_data;
    pthread_mutex_unlock(&queue_mutex);
}

struct game {
    VkInstance instance;
    VkDebugUtilsMessengerEXT messenger;
    VkPhysicalDevice physical;
    VkDevice device;
    uint32_t family;
    VkBuffer buffer;
    VkDeviceMemory memory;
    unsigned char *mapped;
    VkSemaphore timeline;
};

static int has_layer(const char *name) {
    uint32_t count = 0;
    vkEnumerateInstanceLayerProperties(&count, NULL);
    VkLayerProperties *layers = calloc(count ? count : 1, sizeof *layers);
    CHECK(layers != NULL);
    vkEnumerateInstanceLayerProperties(&count, layers);
    int found = 0;
    for (uint32_t i = 0; i < count; i++) found |= strcmp(layers[i].layerName, name) == 0;
    free(layers);
    return found;
}

/* Makes the game's instance and device; returns 0 when there is no Vulkan device. */
static int game_create(struct game *g, VkDeviceSize buffer_size) {
    memset(g, 0, sizeof *g);
    const char *layer = "VK_LAYER_KHRONOS_validation";
    int validate = has_layer(layer);
    if (!validate && getenv("DSR_REQUIRE_VULKAN") && strcmp(getenv("DSR_REQUIRE_VULKAN"), "1") == 0) {
        fprintf(stderr, "the Khronos validation layer is not installed\n");
        exit(1);
    }
    VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                             .pApplicationName = "dsr C test",
                             .apiVersion = VK_API_VERSION_1_2};
    VkDebugUtilsMessengerCreateInfoEXT messenger = {
        .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
        .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                           VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
        .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
        .pfnUserCallback = on_message};
    const char *extension = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
    VkInstanceCreateInfo info = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                                 .pNext = validate ? &messenger : NULL,
                                 .pApplicationInfo = &app,
                                 .enabledLayerCount = validate ? 1 : 0,
                                 .ppEnabledLayerNames = &layer,
                                 .enabledExtensionCount = validate ? 1 : 0,
                                 .ppEnabledExtensionNames = &extension};
    if (vkCreateInstance(&info, NULL, &g->instance) != VK_SUCCESS) return 0;
    printf("validation layer: %s\n", validate ? "on" : "off");
    if (validate) {
        PFN_vkCreateDebugUtilsMessengerEXT create = (PFN_vkCreateDebugUtilsMessengerEXT)vkGetInstanceProcAddr(
            g->instance, "vkCreateDebugUtilsMessengerEXT");
        CHECK(create != NULL);
        VK_OK(create(g->instance, &messenger, NULL, &g->messenger));
    }
    uint32_t count = 1;
    VkResult listed = vkEnumeratePhysicalDevices(g->instance, &count, &g->physical);
    if ((listed != VK_SUCCESS && listed != VK_INCOMPLETE) || count == 0) return 0;
    VkPhysicalDeviceProperties properties;
    vkGetPhysicalDeviceProperties(g->physical, &properties);
    if (properties.apiVersion < VK_API_VERSION_1_2) return 0;

    /* One queue of a family with graphics or compute (both imply transfer). */
    uint32_t families = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(g->physical, &families, NULL);
    VkQueueFamilyProperties *family = calloc(families, sizeof *family);
    CHECK(family != NULL);
    vkGetPhysicalDeviceQueueFamilyProperties(g->physical, &families, family);
    g->family = UINT32_MAX;
    for (uint32_t i = 0; i < families && g->family == UINT32_MAX; i++)
        if (family[i].queueFlags & (VK_QUEUE_GRAPHICS_BIT | VK_QUEUE_COMPUTE_BIT)) g->family = i;
    free(family);
    CHECK(g->family != UINT32_MAX);
    float priority = 1.0f;
    VkDeviceQueueCreateInfo queue = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                     .queueFamilyIndex = g->family,
                                     .queueCount = 1,
                                     .pQueuePriorities = &priority};
    VkPhysicalDeviceVulkan12Features features12 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES, .timelineSemaphore = VK_TRUE};
    VkDeviceCreateInfo device = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                                 .pNext = &features12,
                                 .queueCreateInfoCount = 1,
                                 .pQueueCreateInfos = &queue};
    VK_OK(vkCreateDevice(g->physical, &device, NULL, &g->device));

    /* The game's buffer, in host-visible memory so the test can look at it. */
    VkBufferCreateInfo buffer = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                                 .size = buffer_size,
                                 .usage = VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                                 .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
    VK_OK(vkCreateBuffer(g->device, &buffer, NULL, &g->buffer));
    VkMemoryRequirements needs;
    vkGetBufferMemoryRequirements(g->device, g->buffer, &needs);
    VkPhysicalDeviceMemoryProperties memory;
    vkGetPhysicalDeviceMemoryProperties(g->physical, &memory);
    VkMemoryPropertyFlags want = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    uint32_t type = UINT32_MAX;
    for (uint32_t i = 0; i < memory.memoryTypeCount && type == UINT32_MAX; i++)
        if ((needs.memoryTypeBits & (1u << i)) && (memory.memoryTypes[i].propertyFlags & want) == want) type = i;
    CHECK(type != UINT32_MAX);
    VkMemoryAllocateInfo allocate = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                                     .allocationSize = needs.size,
                                     .memoryTypeIndex = type};
    VK_OK(vkAllocateMemory(g->device, &allocate, NULL, &g->memory));
    VK_OK(vkBindBufferMemory(g->device, g->buffer, g->memory, 0));
    VK_OK(vkMapMemory(g->device, g->memory, 0, VK_WHOLE_SIZE, 0, (void **)&g->mapped));
    memset(g->mapped, 0xee, buffer_size);

    VkSemaphoreTypeCreateInfo timeline = {.sType = VK_STRUCTURE_TYPE_SEMAPHORE_TYPE_CREATE_INFO,
                                          .semaphoreType = VK_SEMAPHORE_TYPE_TIMELINE};
    VkSemaphoreCreateInfo semaphore = {.sType = VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO, .pNext = &timeline};
    VK_OK(vkCreateSemaphore(g->device, &semaphore, NULL, &g->timeline));
    return 1;
}

static void game_destroy(struct game *g) {
    VK_OK(vkDeviceWaitIdle(g->device));
    vkDestroySemaphore(g->device, g->timeline, NULL);
    vkUnmapMemory(g->device, g->memory);
    vkDestroyBuffer(g->device, g->buffer, NULL);
    vkFreeMemory(g->device, g->memory, NULL);
    vkDestroyDevice(g->device, NULL);
    if (g->messenger != VK_NULL_HANDLE) {
        PFN_vkDestroyDebugUtilsMessengerEXT destroy = (PFN_vkDestroyDebugUtilsMessengerEXT)vkGetInstanceProcAddr(
            g->instance, "vkDestroyDebugUtilsMessengerEXT");
        destroy(g->instance, g->messenger, NULL);
    }
    vkDestroyInstance(g->instance, NULL);
}

/* Waits (10 s at most) for the game's timeline semaphore to reach `value`. */
static void wait_timeline(struct game *g, uint64_t value) {
    VkSemaphoreWaitInfo wait = {.sType = VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO,
                                .semaphoreCount = 1,
                                .pSemaphores = &g->timeline,
                                .pValues = &value};
    VK_OK(vkWaitSemaphores(g->device, &wait, 10ull * 1000 * 1000 * 1000));
}

static dsr_vulkan_device describe(struct game *g) {
    dsr_vulkan_device device;
    memset(&device, 0, sizeof device);
    device.struct_size = sizeof device;
    device.instance = g->instance;
    device.physical_device = g->physical;
    device.device = g->device;
    device.get_instance_proc_addr = (dsr_vk_get_instance_proc_addr)vkGetInstanceProcAddr;
    device.transfer_family = device.compute_family = g->family;
    device.lock_queue = lock_queue;
    device.unlock_queue = unlock_queue;
    device.lock_user_data = &lock_calls;
    return device;
}

int main(int argc, char **argv) {
    CHECK(argc == 5);
    size_t size = (size_t)strtoull(argv[3], NULL, 10);
    const size_t extra = 4096; /* the memory queue's range, after the two reads */
    const VkDeviceSize buffer_size = 2 * size + extra;
    struct game g;
    if (!game_create(&g, buffer_size)) {
        printf("skip: no Vulkan 1.2 device\n");
        return 77;
    }
    dsr_runtime_config config = test_config();
    dsr_vulkan_device device = describe(&g);
    dsr_runtime runtime;
    OK(dsr_runtime_create_vulkan(&config, &device, &runtime));
    dsr_buffer buffer;
    OK(dsr_buffer_import(runtime, (uint64_t)g.buffer, buffer_size, &buffer));

    /* A raw and a compressed file straight into the game's buffer, then a timeline signal. */
    dsr_file raw, packed, out;
    uint64_t raw_size = 0, packed_size = 0;
    OK(dsr_file_open(runtime, argv[1], &raw, &raw_size));
    OK(dsr_file_open(runtime, argv[2], &packed, &packed_size));
    OK(dsr_file_open(runtime, argv[4], &out, NULL));
    CHECK(raw_size == size);
    dsr_queue_desc file_desc = test_queue(DSR_SOURCE_FILE, 256);
    dsr_queue files;
    OK(dsr_queue_create(runtime, &file_desc, &files));
    dsr_request read = blank_request(DSR_REQUEST_READ_FILE);
    read.file = raw;
    read.source_size = size;
    read.destination_size = size;
    read.buffer = buffer;
    read.buffer_offset = 0;
    read.name = "raw into the game's buffer";
    OK(dsr_queue_enqueue(files, &read));
    read.file = packed;
    read.source_size = packed_size;
    read.compression = DSR_COMPRESSION_GDEFLATE;
    read.buffer_offset = size;
    read.name = "compressed into the game's buffer";
    OK(dsr_queue_enqueue(files, &read));
    OK(dsr_queue_enqueue_vulkan_signal(files, (uint64_t)g.timeline, 1));
    OK(dsr_queue_submit(files));
    wait_timeline(&g, 1);
    for (size_t i = 0; i < size; i++) {
        CHECK(g.mapped[i] == asset_byte(i));
        CHECK(g.mapped[size + i] == asset_byte(i));
    }
    CHECK(g.mapped[2 * size] == 0xee);
    printf("file -> VkBuffer: raw and compressed reads landed, timeline signalled\n");

    /* A signal must raise the semaphore: 1 is reached. */
    EXPECT(dsr_queue_enqueue_vulkan_signal(files, (uint64_t)g.timeline, 1), DSR_E_INVALID_ARGUMENT);
    EXPECT(dsr_queue_enqueue_vulkan_signal(files, 0, 2), DSR_E_INVALID_ARGUMENT);

    /* Memory into the buffer, then the buffer back to a file (ordered by the timeline wait). */
    unsigned char *bytes = malloc(extra);
    CHECK(bytes != NULL);
    for (size_t i = 0; i < extra; i++) bytes[i] = (unsigned char)(i * 7 + 3);
    dsr_queue_desc memory_desc = test_queue(DSR_SOURCE_MEMORY, 128);
    dsr_queue memory;
    OK(dsr_queue_create(runtime, &memory_desc, &memory));
    dsr_request upload = blank_request(DSR_REQUEST_READ_MEMORY);
    upload.source = bytes;
    upload.source_size = extra;
    upload.destination_size = extra;
    upload.buffer = buffer;
    upload.buffer_offset = 2 * size;
    OK(dsr_queue_enqueue(memory, &upload));
    OK(dsr_queue_enqueue_vulkan_signal(memory, (uint64_t)g.timeline, 2));
    OK(dsr_queue_submit(memory));
    wait_timeline(&g, 2);
    CHECK(memcmp(g.mapped + 2 * size, bytes, extra) == 0);
    dsr_request write = blank_request(DSR_REQUEST_WRITE_FILE);
    write.file = out;
    write.file_offset = 0;
    write.source_size = size + extra; /* the decoded asset and the upload */
    write.buffer = buffer;
    write.buffer_offset = size;
    write.options = DSR_OPTION_SYNC;
    OK(dsr_queue_enqueue(memory, &write));
    drain(memory);
    printf("memory -> VkBuffer -> file: done\n");

    /* Hostile calls on the GPU paths: each an error code, and nothing lands. */
    dsr_request bad = blank_request(DSR_REQUEST_READ_MEMORY);
    bad.source = bytes;
    bad.source_size = extra;
    bad.destination_size = extra;
    bad.buffer = buffer;
    bad.buffer_offset = buffer_size - 10; /* runs past the end of the buffer */
    EXPECT(dsr_queue_enqueue(memory, &bad), DSR_E_DESTINATION_TOO_SMALL);
    bad.buffer_offset = UINT64_MAX - 5; /* overflows */
    EXPECT(dsr_queue_enqueue(memory, &bad), DSR_E_DESTINATION_TOO_SMALL);
    bad.buffer_offset = 0;
    bad.destination = bytes; /* a host destination and a buffer at once */
    EXPECT(dsr_queue_enqueue(memory, &bad), DSR_E_INVALID_ARGUMENT);
    bad.destination = NULL;
    bad.destination_size = extra - 1; /* the bytes do not fit what the caller said lands */
    EXPECT(dsr_queue_enqueue(memory, &bad), DSR_E_DESTINATION_TOO_SMALL);
    bad.destination_size = extra;
    bad.buffer = buffer ^ 0x100000000ull; /* forged */
    EXPECT(dsr_queue_enqueue(memory, &bad), DSR_E_INVALID_HANDLE);
    bad.buffer = 0;
    bad.buffer_offset = 64; /* an offset without a buffer */
    EXPECT(dsr_queue_enqueue(memory, &bad), DSR_E_INVALID_ARGUMENT);
    dsr_request bad_write = write;
    bad_write.source = bytes; /* a host source and a buffer at once */
    EXPECT(dsr_queue_enqueue(memory, &bad_write), DSR_E_INVALID_ARGUMENT);
    bad_write.source = NULL;
    bad_write.buffer_offset = buffer_size; /* past the end */
    EXPECT(dsr_queue_enqueue(memory, &bad_write), DSR_E_INVALID_ARGUMENT);
    EXPECT(dsr_buffer_import(runtime, 0, 16, &(dsr_buffer){0}), DSR_E_INVALID_ARGUMENT);
    EXPECT(dsr_buffer_import(runtime, (uint64_t)g.buffer, 0, &(dsr_buffer){0}), DSR_E_INVALID_ARGUMENT);
    EXPECT(dsr_buffer_import(runtime, (uint64_t)g.buffer, 16, NULL), DSR_E_INVALID_ARGUMENT);

    /* A runtime without a device takes no buffers and no Vulkan signals. */
    dsr_runtime host;
    OK(dsr_runtime_create(&config, &host));
    EXPECT(dsr_buffer_import(host, (uint64_t)g.buffer, 16, &(dsr_buffer){0}), DSR_E_UNSUPPORTED);
    dsr_queue host_queue;
    OK(dsr_queue_create(host, &memory_desc, &host_queue));
    EXPECT(dsr_queue_enqueue_vulkan_signal(host_queue, (uint64_t)g.timeline, 9), DSR_E_UNSUPPORTED);
    EXPECT(dsr_queue_enqueue(host_queue, &upload), DSR_E_UNSUPPORTED);

    /* A buffer belongs to its runtime: another runtime on the same device refuses it. */
    /* This one names its queue by handle, as a D3D12 translation layer does. */
    dsr_runtime other;
    dsr_vulkan_device by_handle = device;
    vkGetDeviceQueue(g.device, g.family, 0, (VkQueue *)&by_handle.transfer_queue);
    by_handle.compute_queue = by_handle.transfer_queue;
    by_handle.transfer_index = by_handle.compute_index = 99; /* not read when the handle is given */
    OK(dsr_runtime_create_vulkan(&config, &by_handle, &other));
    dsr_queue other_queue;
    OK(dsr_queue_create(other, &memory_desc, &other_queue));
    EXPECT(dsr_queue_enqueue(other_queue, &upload), DSR_E_INVALID_ARGUMENT);
    /* A Vulkan runtime outlives nothing of its own: destroying it while a queue is open is
     * refused, so the device cannot be destroyed under dsr. */
    EXPECT(dsr_runtime_destroy(other), DSR_E_BUSY);
    OK(dsr_queue_destroy(other_queue));
    OK(dsr_runtime_destroy(other));

    /* Bad device descriptions. */
    dsr_vulkan_device wrong = device;
    wrong.struct_size = 8;
    EXPECT(dsr_runtime_create_vulkan(&config, &wrong, &other), DSR_E_INVALID_ARGUMENT);
    /* A caller built against the first header, which ended at lock_user_data: accepted. */
    wrong = device;
    wrong.struct_size = offsetof(dsr_vulkan_device, transfer_queue);
    OK(dsr_runtime_create_vulkan(&config, &wrong, &other));
    OK(dsr_runtime_destroy(other));
    wrong.struct_size = sizeof wrong + 8;
    EXPECT(dsr_runtime_create_vulkan(&config, &wrong, &other), DSR_E_INVALID_ARGUMENT);
    wrong = device;
    wrong.device = NULL;
    EXPECT(dsr_runtime_create_vulkan(&config, &wrong, &other), DSR_E_INVALID_ARGUMENT);
    wrong = device;
    wrong.unlock_queue = NULL; /* a lock without its unlock */
    EXPECT(dsr_runtime_create_vulkan(&config, &wrong, &other), DSR_E_INVALID_ARGUMENT);
    wrong = device;
    wrong.transfer_family = 999;
    EXPECT(dsr_runtime_create_vulkan(&config, &wrong, &other), DSR_E_INVALID_ARGUMENT);
    wrong = device;
    wrong.reserved = 1;
    EXPECT(dsr_runtime_create_vulkan(&config, &wrong, &other), DSR_E_INVALID_ARGUMENT);
    EXPECT(dsr_runtime_create_vulkan(&config, NULL, &other), DSR_E_INVALID_ARGUMENT);
    EXPECT(dsr_runtime_create_vulkan(&config, &device, NULL), DSR_E_INVALID_ARGUMENT);
    printf("every hostile GPU call got an error code\n");

    /* Nothing hostile landed: the buffer's third range still holds the upload. */
    CHECK(memcmp(g.mapped + 2 * size, bytes, extra) == 0);

    OK(dsr_queue_destroy(host_queue));
    OK(dsr_runtime_destroy(host));
    OK(dsr_queue_destroy(files));
    OK(dsr_queue_destroy(memory));
    EXPECT(dsr_runtime_destroy(runtime), DSR_E_BUSY); /* the buffer is still imported */
    OK(dsr_buffer_release(buffer));
    EXPECT(dsr_buffer_release(buffer), DSR_E_INVALID_HANDLE);
    OK(dsr_file_close(raw));
    OK(dsr_file_close(packed));
    OK(dsr_file_close(out));
    OK(dsr_runtime_destroy(runtime));
    /* dsr has let go of the device: the game tears it down, and the layer saw nothing wrong. */
    CHECK(lock_calls > 0);
    game_destroy(&g);
    free(bytes);
    printf("queue lock taken %d times; validation messages: %d\n", lock_calls, messages);
    CHECK(messages == 0);
    return 0;
}
