/*
 * d3d12_interop.h: the little of D3D12 that dsr's dstorage.dll calls for buffer destinations,
 * and vkd3d-proton's Vulkan interop interface, in C. Written for this project from the ABI
 * facts of the public D3D12 and vkd3d-proton interface definitions (interface IDs, vtable order,
 * struct layouts). Vulkan handles are spelled as the 64-bit ABI has them: dispatchable ones
 * `void *`, the others UINT64; no Vulkan header is needed.
 */
#ifndef DSR_D3D12_INTEROP_H
#define DSR_D3D12_INTEROP_H

#include "dstorage.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ID3D12CommandQueue ID3D12CommandQueue;
typedef struct ID3D12DXVKInteropDevice ID3D12DXVKInteropDevice;

typedef enum D3D12_COMMAND_LIST_TYPE {
    D3D12_COMMAND_LIST_TYPE_DIRECT = 0,
    D3D12_COMMAND_LIST_TYPE_BUNDLE = 1,
    D3D12_COMMAND_LIST_TYPE_COMPUTE = 2,
    D3D12_COMMAND_LIST_TYPE_COPY = 3,
} D3D12_COMMAND_LIST_TYPE;

typedef struct D3D12_COMMAND_QUEUE_DESC {
    D3D12_COMMAND_LIST_TYPE Type;
    INT Priority;
    UINT Flags;
    UINT NodeMask;
} D3D12_COMMAND_QUEUE_DESC;

typedef enum D3D12_RESOURCE_DIMENSION {
    D3D12_RESOURCE_DIMENSION_UNKNOWN = 0,
    D3D12_RESOURCE_DIMENSION_BUFFER = 1,
    D3D12_RESOURCE_DIMENSION_TEXTURE1D = 2,
    D3D12_RESOURCE_DIMENSION_TEXTURE2D = 3,
    D3D12_RESOURCE_DIMENSION_TEXTURE3D = 4,
} D3D12_RESOURCE_DIMENSION;

typedef struct D3D12_RESOURCE_DESC {
    D3D12_RESOURCE_DIMENSION Dimension;
    UINT64 Alignment;
    UINT64 Width;
    UINT Height;
    UINT16 DepthOrArraySize;
    UINT16 MipLevels;
    UINT Format;            /* DXGI_FORMAT */
    UINT SampleCount;       /* DXGI_SAMPLE_DESC */
    UINT SampleQuality;
    UINT Layout;            /* D3D12_TEXTURE_LAYOUT */
    UINT Flags;             /* D3D12_RESOURCE_FLAGS */
} D3D12_RESOURCE_DESC;

/* ID3D12Device as far as CreateCommandQueue (slot 8: IUnknown 3, ID3D12Object 4, GetNodeCount). */
typedef struct ID3D12DeviceVtbl {
    HRESULT(STDMETHODCALLTYPE *QueryInterface)(ID3D12Device *This, REFIID riid, void **out);
    ULONG(STDMETHODCALLTYPE *AddRef)(ID3D12Device *This);
    ULONG(STDMETHODCALLTYPE *Release)(ID3D12Device *This);
    void *object_methods[4];
    UINT(STDMETHODCALLTYPE *GetNodeCount)(ID3D12Device *This);
    HRESULT(STDMETHODCALLTYPE *CreateCommandQueue)(ID3D12Device *This, const D3D12_COMMAND_QUEUE_DESC *desc,
                                                   REFIID riid, void **queue);
} ID3D12DeviceVtbl;
struct ID3D12Device {
    const ID3D12DeviceVtbl *lpVtbl;
};

/* ID3D12CommandQueue: only IUnknown is called; the rest is the D3D12 runtime's. */
typedef struct ID3D12CommandQueueVtbl {
    HRESULT(STDMETHODCALLTYPE *QueryInterface)(ID3D12CommandQueue *This, REFIID riid, void **out);
    ULONG(STDMETHODCALLTYPE *AddRef)(ID3D12CommandQueue *This);
    ULONG(STDMETHODCALLTYPE *Release)(ID3D12CommandQueue *This);
} ID3D12CommandQueueVtbl;
struct ID3D12CommandQueue {
    const ID3D12CommandQueueVtbl *lpVtbl;
};

/* ID3D12Resource as far as GetDesc (slot 10: IUnknown 3, ID3D12Object 4, GetDevice (slot 7),
 * Map, Unmap). GetDesc returns a struct: in the COM ABI the caller passes where it goes, after This,
 * and gets that pointer back. */
typedef struct ID3D12ResourceVtbl {
    HRESULT(STDMETHODCALLTYPE *QueryInterface)(ID3D12Resource *This, REFIID riid, void **out);
    ULONG(STDMETHODCALLTYPE *AddRef)(ID3D12Resource *This);
    ULONG(STDMETHODCALLTYPE *Release)(ID3D12Resource *This);
    void *object_methods[4];
    HRESULT(STDMETHODCALLTYPE *GetDevice)(ID3D12Resource *This, REFIID riid, void **device);
    void *Map;
    void *Unmap;
    D3D12_RESOURCE_DESC *(STDMETHODCALLTYPE *GetDesc)(ID3D12Resource *This, D3D12_RESOURCE_DESC *out);
} ID3D12ResourceVtbl;
struct ID3D12Resource {
    const ID3D12ResourceVtbl *lpVtbl;
};

/* vkd3d-proton's interop interface, reached by QueryInterface on its ID3D12Device. */
typedef struct ID3D12DXVKInteropDeviceVtbl {
    HRESULT(STDMETHODCALLTYPE *QueryInterface)(ID3D12DXVKInteropDevice *This, REFIID riid, void **out);
    ULONG(STDMETHODCALLTYPE *AddRef)(ID3D12DXVKInteropDevice *This);
    ULONG(STDMETHODCALLTYPE *Release)(ID3D12DXVKInteropDevice *This);
    HRESULT(STDMETHODCALLTYPE *GetDXGIAdapter)(ID3D12DXVKInteropDevice *This, REFIID riid, void **out);
    HRESULT(STDMETHODCALLTYPE *GetInstanceExtensions)(ID3D12DXVKInteropDevice *This, UINT *count,
                                                      const char **extensions);
    HRESULT(STDMETHODCALLTYPE *GetDeviceExtensions)(ID3D12DXVKInteropDevice *This, UINT *count,
                                                    const char **extensions);
    HRESULT(STDMETHODCALLTYPE *GetDeviceFeatures)(ID3D12DXVKInteropDevice *This, const void **features2);
    HRESULT(STDMETHODCALLTYPE *GetVulkanHandles)(ID3D12DXVKInteropDevice *This, void **instance,
                                                 void **physical_device, void **device);
    HRESULT(STDMETHODCALLTYPE *GetVulkanQueueInfo)(ID3D12DXVKInteropDevice *This, ID3D12CommandQueue *queue,
                                                   void **vk_queue, UINT32 *family);
    void(STDMETHODCALLTYPE *GetVulkanImageLayout)(ID3D12DXVKInteropDevice *This, ID3D12Resource *resource,
                                                  UINT state, UINT *layout);
    HRESULT(STDMETHODCALLTYPE *GetVulkanResourceInfo)(ID3D12DXVKInteropDevice *This, ID3D12Resource *resource,
                                                      UINT64 *vk_handle, UINT64 *buffer_offset);
    HRESULT(STDMETHODCALLTYPE *LockCommandQueue)(ID3D12DXVKInteropDevice *This, ID3D12CommandQueue *queue);
    HRESULT(STDMETHODCALLTYPE *UnlockCommandQueue)(ID3D12DXVKInteropDevice *This, ID3D12CommandQueue *queue);
} ID3D12DXVKInteropDeviceVtbl;
struct ID3D12DXVKInteropDevice {
    const ID3D12DXVKInteropDeviceVtbl *lpVtbl;
};

DEFINE_GUID(IID_ID3D12Device, 0x189819f1, 0x1db6, 0x4b57, 0xbe, 0x54, 0x18, 0x21, 0x33, 0x9b, 0x85, 0xf7);
DEFINE_GUID(IID_ID3D12CommandQueue, 0x0ec870a6, 0x5d7e, 0x4c22, 0x8c, 0xfc, 0x5b, 0xaa, 0xe0, 0x76, 0x16, 0xed);
DEFINE_GUID(IID_ID3D12Resource, 0x696442be, 0xa72e, 0x4059, 0xbc, 0x79, 0x5b, 0x5c, 0x98, 0x04, 0x0f, 0xad);
DEFINE_GUID(IID_ID3D12DXVKInteropDevice, 0x39da4e09, 0xbd1c, 0x4198, 0x9f, 0xae, 0x86, 0xbb, 0xe3, 0xbe, 0x41,
            0xfd);

#ifdef __cplusplus
}
#endif

#endif
