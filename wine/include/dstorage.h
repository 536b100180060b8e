/*
 * dstorage.h: dsr's own DirectStorage 1.3-compatible declarations, in C, for the Wine
 * dstorage.dll (wine/dstorage/) and the Windows programs that test it. Written for this project
 * from the ABI facts of DirectStorage's public headers and documentation (interface IDs, vtable
 * order, struct layouts, result codes); wine/tests/layout.c checks the sizes and offsets.
 * Builds with mingw-w64 and with winegcc.
 */
#ifndef DSR_DSTORAGE_H
#define DSR_DSTORAGE_H

#include <windows.h>
#include <unknwn.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DSTORAGE_SDK_VERSION 300
#define DSTORAGE_MIN_QUEUE_CAPACITY 0x80
#define DSTORAGE_MAX_QUEUE_CAPACITY 0x2000
#define DSTORAGE_REQUEST_MAX_NAME 64
#define DSTORAGE_DISABLE_BUILTIN_CPU_DECOMPRESSION (-1)

/* Result codes: facility 0x924 (FACILITY_GAME), severity error. */
#define DSR_DSTORAGE_HRESULT(code) ((HRESULT)(0x89240000u | (code)))
#define E_DSTORAGE_ALREADY_RUNNING DSR_DSTORAGE_HRESULT(0x01)
#define E_DSTORAGE_NOT_RUNNING DSR_DSTORAGE_HRESULT(0x02)
#define E_DSTORAGE_INVALID_QUEUE_CAPACITY DSR_DSTORAGE_HRESULT(0x03)
#define E_DSTORAGE_XVD_DEVICE_NOT_SUPPORTED DSR_DSTORAGE_HRESULT(0x04)
#define E_DSTORAGE_UNSUPPORTED_VOLUME DSR_DSTORAGE_HRESULT(0x05)
#define E_DSTORAGE_END_OF_FILE DSR_DSTORAGE_HRESULT(0x07)
#define E_DSTORAGE_REQUEST_TOO_LARGE DSR_DSTORAGE_HRESULT(0x08)
#define E_DSTORAGE_ACCESS_VIOLATION DSR_DSTORAGE_HRESULT(0x09)
#define E_DSTORAGE_UNSUPPORTED_FILE DSR_DSTORAGE_HRESULT(0x0A)
#define E_DSTORAGE_FILE_NOT_OPEN DSR_DSTORAGE_HRESULT(0x0B)
#define E_DSTORAGE_RESERVED_FIELDS DSR_DSTORAGE_HRESULT(0x0C)
#define E_DSTORAGE_INVALID_BCPACK_MODE DSR_DSTORAGE_HRESULT(0x0D)
#define E_DSTORAGE_INVALID_SWIZZLE_MODE DSR_DSTORAGE_HRESULT(0x0E)
#define E_DSTORAGE_INVALID_DESTINATION_SIZE DSR_DSTORAGE_HRESULT(0x0F)
#define E_DSTORAGE_QUEUE_CLOSED DSR_DSTORAGE_HRESULT(0x10)
#define E_DSTORAGE_INVALID_CLUSTER_SIZE DSR_DSTORAGE_HRESULT(0x11)
#define E_DSTORAGE_TOO_MANY_QUEUES DSR_DSTORAGE_HRESULT(0x12)
#define E_DSTORAGE_INVALID_QUEUE_PRIORITY DSR_DSTORAGE_HRESULT(0x13)
#define E_DSTORAGE_TOO_MANY_FILES DSR_DSTORAGE_HRESULT(0x14)
#define E_DSTORAGE_INDEX_BOUND DSR_DSTORAGE_HRESULT(0x15)
#define E_DSTORAGE_IO_TIMEOUT DSR_DSTORAGE_HRESULT(0x16)
#define E_DSTORAGE_INVALID_FILE_HANDLE DSR_DSTORAGE_HRESULT(0x17)
#define E_DSTORAGE_DEPRECATED_PREVIEW_GDK DSR_DSTORAGE_HRESULT(0x18)
#define E_DSTORAGE_XVD_NOT_REGISTERED DSR_DSTORAGE_HRESULT(0x19)
#define E_DSTORAGE_INVALID_FILE_OFFSET DSR_DSTORAGE_HRESULT(0x1A)
#define E_DSTORAGE_INVALID_SOURCE_TYPE DSR_DSTORAGE_HRESULT(0x1B)
#define E_DSTORAGE_INVALID_INTERMEDIATE_SIZE DSR_DSTORAGE_HRESULT(0x1C)
#define E_DSTORAGE_SYSTEM_NOT_SUPPORTED DSR_DSTORAGE_HRESULT(0x1D)
#define E_DSTORAGE_STAGING_BUFFER_LOCKED DSR_DSTORAGE_HRESULT(0x1F)
#define E_DSTORAGE_INVALID_STAGING_BUFFER_SIZE DSR_DSTORAGE_HRESULT(0x20)
#define E_DSTORAGE_STAGING_BUFFER_TOO_SMALL DSR_DSTORAGE_HRESULT(0x21)
#define E_DSTORAGE_INVALID_FENCE DSR_DSTORAGE_HRESULT(0x22)
#define E_DSTORAGE_INVALID_STATUS_ARRAY DSR_DSTORAGE_HRESULT(0x23)
#define E_DSTORAGE_INVALID_MEMORY_QUEUE_PRIORITY DSR_DSTORAGE_HRESULT(0x24)
#define E_DSTORAGE_DECOMPRESSION_ERROR DSR_DSTORAGE_HRESULT(0x30)
#define E_DSTORAGE_ZLIB_BAD_HEADER DSR_DSTORAGE_HRESULT(0x31)
#define E_DSTORAGE_ZLIB_BAD_DATA DSR_DSTORAGE_HRESULT(0x32)
#define E_DSTORAGE_ZLIB_PARITY_FAIL DSR_DSTORAGE_HRESULT(0x33)
#define E_DSTORAGE_BCPACK_BAD_HEADER DSR_DSTORAGE_HRESULT(0x34)
#define E_DSTORAGE_BCPACK_BAD_DATA DSR_DSTORAGE_HRESULT(0x35)
#define E_DSTORAGE_DECRYPTION_ERROR DSR_DSTORAGE_HRESULT(0x36)
#define E_DSTORAGE_PASSTHROUGH_ERROR DSR_DSTORAGE_HRESULT(0x37)
#define E_DSTORAGE_FILE_TOO_FRAGMENTED DSR_DSTORAGE_HRESULT(0x38)
#define E_DSTORAGE_COMPRESSED_DATA_TOO_LARGE DSR_DSTORAGE_HRESULT(0x39)
#define E_DSTORAGE_INVALID_DESTINATION_TYPE DSR_DSTORAGE_HRESULT(0x40)
#define E_DSTORAGE_FILEBUFFERING_REQUIRES_DISABLED_BYPASSIO DSR_DSTORAGE_HRESULT(0x41)

/* Enumerations, with the widths the ABI gives them. */
typedef INT8 DSTORAGE_PRIORITY;
#define DSTORAGE_PRIORITY_LOW ((DSTORAGE_PRIORITY)-1)
#define DSTORAGE_PRIORITY_NORMAL ((DSTORAGE_PRIORITY)0)
#define DSTORAGE_PRIORITY_HIGH ((DSTORAGE_PRIORITY)1)
#define DSTORAGE_PRIORITY_REALTIME ((DSTORAGE_PRIORITY)2)

typedef UINT64 DSTORAGE_REQUEST_SOURCE_TYPE;
#define DSTORAGE_REQUEST_SOURCE_FILE 0
#define DSTORAGE_REQUEST_SOURCE_MEMORY 1

typedef UINT64 DSTORAGE_REQUEST_DESTINATION_TYPE;
#define DSTORAGE_REQUEST_DESTINATION_MEMORY 0
#define DSTORAGE_REQUEST_DESTINATION_BUFFER 1
#define DSTORAGE_REQUEST_DESTINATION_TEXTURE_REGION 2
#define DSTORAGE_REQUEST_DESTINATION_MULTIPLE_SUBRESOURCES 3
#define DSTORAGE_REQUEST_DESTINATION_TILES 4
#define DSTORAGE_REQUEST_DESTINATION_MULTIPLE_SUBRESOURCES_RANGE 5

typedef UINT8 DSTORAGE_COMPRESSION_FORMAT;
#define DSTORAGE_COMPRESSION_FORMAT_NONE 0
#define DSTORAGE_COMPRESSION_FORMAT_GDEFLATE 1
#define DSTORAGE_CUSTOM_COMPRESSION_0 0x80

typedef INT32 DSTORAGE_COMPRESSION;
#define DSTORAGE_COMPRESSION_FASTEST (-1)
#define DSTORAGE_COMPRESSION_DEFAULT 0
#define DSTORAGE_COMPRESSION_BEST_RATIO 1

typedef UINT32 DSTORAGE_COMPRESSION_SUPPORT;
#define DSTORAGE_COMPRESSION_SUPPORT_NONE 0x0
#define DSTORAGE_COMPRESSION_SUPPORT_GPU_OPTIMIZED 0x1
#define DSTORAGE_COMPRESSION_SUPPORT_GPU_FALLBACK 0x2
#define DSTORAGE_COMPRESSION_SUPPORT_CPU_FALLBACK 0x4
#define DSTORAGE_COMPRESSION_SUPPORT_USES_COMPUTE_QUEUE 0x8
#define DSTORAGE_COMPRESSION_SUPPORT_USES_COPY_QUEUE 0x10

typedef enum DSTORAGE_DEBUG {
    DSTORAGE_DEBUG_NONE = 0x0,
    DSTORAGE_DEBUG_SHOW_ERRORS = 0x1,
    DSTORAGE_DEBUG_BREAK_ON_ERROR = 0x2,
    DSTORAGE_DEBUG_RECORD_OBJECT_NAMES = 0x4
} DSTORAGE_DEBUG;

typedef enum DSTORAGE_COMMAND_TYPE {
    DSTORAGE_COMMAND_TYPE_NONE = -1,
    DSTORAGE_COMMAND_TYPE_REQUEST = 0,
    DSTORAGE_COMMAND_TYPE_STATUS = 1,
    DSTORAGE_COMMAND_TYPE_SIGNAL = 2,
    DSTORAGE_COMMAND_TYPE_EVENT = 3
} DSTORAGE_COMMAND_TYPE;

typedef UINT32 DSTORAGE_STAGING_BUFFER_SIZE;
#define DSTORAGE_STAGING_BUFFER_SIZE_0 0
#define DSTORAGE_STAGING_BUFFER_SIZE_32MB (32 * 1024 * 1024)

typedef UINT32 DSTORAGE_ENQUEUE_REQUEST_FLAGS;
#define DSTORAGE_ENQUEUE_REQUEST_FLAG_NONE 0
#define DSTORAGE_ENQUEUE_REQUEST_FLAG_FENCE_WAIT_BEFORE_GPU_WORK 1
#define DSTORAGE_ENQUEUE_REQUEST_FLAG_FENCE_WAIT_BEFORE_SOURCE_ACCESS 2

/* Interfaces this header names but does not define (D3D12's). */
typedef struct ID3D12Device ID3D12Device;
typedef struct ID3D12Fence ID3D12Fence;
typedef struct ID3D12Resource ID3D12Resource;

typedef struct IDStorageFile IDStorageFile;
typedef struct IDStorageStatusArray IDStorageStatusArray;
typedef struct IDStorageQueue IDStorageQueue;
typedef struct IDStorageFactory IDStorageFactory;

typedef struct DSTORAGE_QUEUE_DESC {
    DSTORAGE_REQUEST_SOURCE_TYPE SourceType;
    UINT16 Capacity;
    DSTORAGE_PRIORITY Priority;
    const CHAR *Name;
    ID3D12Device *Device;
} DSTORAGE_QUEUE_DESC;

typedef struct DSTORAGE_QUEUE_INFO {
    DSTORAGE_QUEUE_DESC Desc;
    UINT16 EmptySlotCount;
    UINT16 RequestCountUntilAutoSubmit;
} DSTORAGE_QUEUE_INFO;

/* 16 bytes: the format in byte 0, then one 64-bit unit of bitfields (MSVC and mingw agree). */
typedef struct DSTORAGE_REQUEST_OPTIONS {
    DSTORAGE_COMPRESSION_FORMAT CompressionFormat;
    UINT8 Reserved1[7];
    UINT64 SourceType : 1;
    UINT64 DestinationType : 7;
    UINT64 Reserved : 48;
} DSTORAGE_REQUEST_OPTIONS;

typedef struct DSTORAGE_SOURCE_FILE {
    IDStorageFile *Source;
    UINT64 Offset;
    UINT32 Size;
} DSTORAGE_SOURCE_FILE;

typedef struct DSTORAGE_SOURCE_MEMORY {
    const void *Source;
    UINT32 Size;
} DSTORAGE_SOURCE_MEMORY;

typedef union DSTORAGE_SOURCE {
    DSTORAGE_SOURCE_MEMORY Memory;
    DSTORAGE_SOURCE_FILE File;
} DSTORAGE_SOURCE;

typedef struct DSTORAGE_DESTINATION_MEMORY {
    void *Buffer;
    UINT32 Size;
} DSTORAGE_DESTINATION_MEMORY;

typedef struct DSTORAGE_DESTINATION_BUFFER {
    ID3D12Resource *Resource;
    UINT64 Offset;
    UINT32 Size;
} DSTORAGE_DESTINATION_BUFFER;

typedef struct DSR_D3D12_BOX {
    UINT left, top, front, right, bottom, back;
} DSR_D3D12_BOX;

typedef struct DSTORAGE_DESTINATION_TEXTURE_REGION {
    ID3D12Resource *Resource;
    UINT SubresourceIndex;
    DSR_D3D12_BOX Region;
} DSTORAGE_DESTINATION_TEXTURE_REGION;

typedef struct DSTORAGE_DESTINATION_MULTIPLE_SUBRESOURCES {
    ID3D12Resource *Resource;
    UINT FirstSubresource;
} DSTORAGE_DESTINATION_MULTIPLE_SUBRESOURCES;

typedef struct DSTORAGE_DESTINATION_MULTIPLE_SUBRESOURCES_RANGE {
    ID3D12Resource *Resource;
    UINT FirstSubresource;
    UINT NumSubresources;
} DSTORAGE_DESTINATION_MULTIPLE_SUBRESOURCES_RANGE;

typedef struct DSR_D3D12_TILED_RESOURCE_COORDINATE {
    UINT X, Y, Z, Subresource;
} DSR_D3D12_TILED_RESOURCE_COORDINATE;

typedef struct DSR_D3D12_TILE_REGION_SIZE {
    UINT NumTiles;
    BOOL UseBox;
    UINT Width;
    UINT16 Height;
    UINT16 Depth;
} DSR_D3D12_TILE_REGION_SIZE;

typedef struct DSTORAGE_DESTINATION_TILES {
    ID3D12Resource *Resource;
    DSR_D3D12_TILED_RESOURCE_COORDINATE TiledRegionStartCoordinate;
    DSR_D3D12_TILE_REGION_SIZE TileRegionSize;
} DSTORAGE_DESTINATION_TILES;

typedef union DSTORAGE_DESTINATION {
    DSTORAGE_DESTINATION_MEMORY Memory;
    DSTORAGE_DESTINATION_BUFFER Buffer;
    DSTORAGE_DESTINATION_TEXTURE_REGION Texture;
    DSTORAGE_DESTINATION_MULTIPLE_SUBRESOURCES MultipleSubresources;
    DSTORAGE_DESTINATION_TILES Tiles;
    DSTORAGE_DESTINATION_MULTIPLE_SUBRESOURCES_RANGE MultipleSubresourcesRange;
} DSTORAGE_DESTINATION;

typedef struct DSTORAGE_REQUEST {
    DSTORAGE_REQUEST_OPTIONS Options;
    DSTORAGE_SOURCE Source;
    DSTORAGE_DESTINATION Destination;
    UINT32 UncompressedSize;
    UINT64 CancellationTag;
    const CHAR *Name;
} DSTORAGE_REQUEST;

typedef struct DSTORAGE_ERROR_PARAMETERS_REQUEST {
    WCHAR Filename[MAX_PATH];
    CHAR RequestName[DSTORAGE_REQUEST_MAX_NAME];
    DSTORAGE_REQUEST Request;
} DSTORAGE_ERROR_PARAMETERS_REQUEST;

typedef struct DSTORAGE_ERROR_PARAMETERS_STATUS {
    IDStorageStatusArray *StatusArray;
    UINT32 Index;
} DSTORAGE_ERROR_PARAMETERS_STATUS;

typedef struct DSTORAGE_ERROR_PARAMETERS_SIGNAL {
    ID3D12Fence *Fence;
    UINT64 Value;
} DSTORAGE_ERROR_PARAMETERS_SIGNAL;

typedef struct DSTORAGE_ERROR_PARAMETERS_EVENT {
    HANDLE Handle;
} DSTORAGE_ERROR_PARAMETERS_EVENT;

typedef struct DSTORAGE_ERROR_FIRST_FAILURE {
    HRESULT HResult;
    DSTORAGE_COMMAND_TYPE CommandType;
    union {
        DSTORAGE_ERROR_PARAMETERS_REQUEST Request;
        DSTORAGE_ERROR_PARAMETERS_STATUS Status;
        DSTORAGE_ERROR_PARAMETERS_SIGNAL Signal;
        DSTORAGE_ERROR_PARAMETERS_EVENT Event;
    };
} DSTORAGE_ERROR_FIRST_FAILURE;

typedef struct DSTORAGE_ERROR_RECORD {
    UINT32 FailureCount;
    DSTORAGE_ERROR_FIRST_FAILURE FirstFailure;
} DSTORAGE_ERROR_RECORD;

typedef struct DSTORAGE_CONFIGURATION {
    UINT32 NumSubmitThreads;
    INT32 NumBuiltInCpuDecompressionThreads;
    BOOL ForceMappingLayer;
    BOOL DisableBypassIO;
    BOOL DisableTelemetry;
    BOOL DisableGpuDecompressionMetacommand;
    BOOL DisableGpuDecompression;
} DSTORAGE_CONFIGURATION;

typedef struct DSTORAGE_CONFIGURATION1 {
    UINT32 NumSubmitThreads;
    INT32 NumBuiltInCpuDecompressionThreads;
    BOOL ForceMappingLayer;
    BOOL DisableBypassIO;
    BOOL DisableTelemetry;
    BOOL DisableGpuDecompressionMetacommand;
    BOOL DisableGpuDecompression;
    BOOL ForceFileBuffering;
} DSTORAGE_CONFIGURATION1;

/* Interface IDs. */
DEFINE_GUID(IID_IDStorageFile, 0x5de95e7b, 0x955a, 0x4868, 0xa7, 0x3c, 0x24, 0x3b, 0x29, 0xf4, 0xb8, 0xda);
DEFINE_GUID(IID_IDStorageCustomDecompressionQueue, 0x97179b2f, 0x2c21, 0x49ca, 0x82, 0x91, 0x4e, 0x1b, 0xf4, 0xa1,
            0x60, 0xdf);
DEFINE_GUID(IID_IDStorageCustomDecompressionQueue1, 0x0d47c6c9, 0xe61a, 0x4706, 0x93, 0xb4, 0x68, 0xbf, 0xe3, 0xf4,
            0xaa, 0x4a);
DEFINE_GUID(IID_IDStorageFactory, 0x6924ea0c, 0xc3cd, 0x4826, 0xb1, 0x0a, 0xf6, 0x4f, 0x4e, 0xd9, 0x27, 0xc1);
DEFINE_GUID(IID_IDStorageStatusArray, 0x82397587, 0x7cd5, 0x453b, 0xa0, 0x2e, 0x31, 0x37, 0x9b, 0xd6, 0x46, 0x56);
DEFINE_GUID(IID_IDStorageQueue, 0xcfdbd83f, 0x9e06, 0x4fda, 0x8e, 0xa5, 0x69, 0x04, 0x21, 0x37, 0xf4, 0x9b);
DEFINE_GUID(IID_IDStorageQueue1, 0xdd2f482c, 0x5eff, 0x41e8, 0x9c, 0x9e, 0xd2, 0x37, 0x4b, 0x27, 0x81, 0x28);
DEFINE_GUID(IID_IDStorageQueue2, 0xb1c9d643, 0x3a49, 0x44a2, 0xb4, 0x6f, 0x65, 0x36, 0x49, 0x47, 0x0d, 0x18);
DEFINE_GUID(IID_IDStorageQueue3, 0xdeb54c52, 0xeca8, 0x46b3, 0x82, 0xa7, 0x03, 0x1b, 0x72, 0x26, 0x26, 0x53);
DEFINE_GUID(IID_IDStorageCompressionCodec, 0x84ef5121, 0x9b43, 0x4d03, 0xb5, 0xc1, 0xcc, 0x34, 0x60, 0x6b, 0x26,
            0x2d);

/* The vtables, base methods first. */
typedef struct IDStorageFileVtbl {
    HRESULT(STDMETHODCALLTYPE *QueryInterface)(IDStorageFile *This, REFIID riid, void **object);
    ULONG(STDMETHODCALLTYPE *AddRef)(IDStorageFile *This);
    ULONG(STDMETHODCALLTYPE *Release)(IDStorageFile *This);
    void(STDMETHODCALLTYPE *Close)(IDStorageFile *This);
    HRESULT(STDMETHODCALLTYPE *GetFileInformation)(IDStorageFile *This, BY_HANDLE_FILE_INFORMATION *info);
} IDStorageFileVtbl;
struct IDStorageFile {
    const IDStorageFileVtbl *lpVtbl;
};

typedef struct IDStorageStatusArrayVtbl {
    HRESULT(STDMETHODCALLTYPE *QueryInterface)(IDStorageStatusArray *This, REFIID riid, void **object);
    ULONG(STDMETHODCALLTYPE *AddRef)(IDStorageStatusArray *This);
    ULONG(STDMETHODCALLTYPE *Release)(IDStorageStatusArray *This);
    /* A C++ `bool`: one byte. */
    UINT8(STDMETHODCALLTYPE *IsComplete)(IDStorageStatusArray *This, UINT32 index);
    HRESULT(STDMETHODCALLTYPE *GetHResult)(IDStorageStatusArray *This, UINT32 index);
} IDStorageStatusArrayVtbl;
struct IDStorageStatusArray {
    const IDStorageStatusArrayVtbl *lpVtbl;
};

/* IDStorageQueue, then Queue1 (EnqueueSetEvent), Queue2 (GetCompressionSupport) and Queue3
 * (EnqueueRequests): one object answers all four. */
typedef struct IDStorageQueueVtbl {
    HRESULT(STDMETHODCALLTYPE *QueryInterface)(IDStorageQueue *This, REFIID riid, void **object);
    ULONG(STDMETHODCALLTYPE *AddRef)(IDStorageQueue *This);
    ULONG(STDMETHODCALLTYPE *Release)(IDStorageQueue *This);
    void(STDMETHODCALLTYPE *EnqueueRequest)(IDStorageQueue *This, const DSTORAGE_REQUEST *request);
    void(STDMETHODCALLTYPE *EnqueueStatus)(IDStorageQueue *This, IDStorageStatusArray *array, UINT32 index);
    void(STDMETHODCALLTYPE *EnqueueSignal)(IDStorageQueue *This, ID3D12Fence *fence, UINT64 value);
    void(STDMETHODCALLTYPE *Submit)(IDStorageQueue *This);
    void(STDMETHODCALLTYPE *CancelRequestsWithTag)(IDStorageQueue *This, UINT64 mask, UINT64 value);
    void(STDMETHODCALLTYPE *Close)(IDStorageQueue *This);
    HANDLE(STDMETHODCALLTYPE *GetErrorEvent)(IDStorageQueue *This);
    void(STDMETHODCALLTYPE *RetrieveErrorRecord)(IDStorageQueue *This, DSTORAGE_ERROR_RECORD *record);
    void(STDMETHODCALLTYPE *Query)(IDStorageQueue *This, DSTORAGE_QUEUE_INFO *info);
    void(STDMETHODCALLTYPE *EnqueueSetEvent)(IDStorageQueue *This, HANDLE event);
    DSTORAGE_COMPRESSION_SUPPORT(STDMETHODCALLTYPE *GetCompressionSupport)(IDStorageQueue *This,
                                                                          DSTORAGE_COMPRESSION_FORMAT format);
    void(STDMETHODCALLTYPE *EnqueueRequests)(IDStorageQueue *This, const DSTORAGE_REQUEST *requests,
                                             UINT count, ID3D12Fence *fence, UINT64 value,
                                             DSTORAGE_ENQUEUE_REQUEST_FLAGS flags);
} IDStorageQueueVtbl;
struct IDStorageQueue {
    const IDStorageQueueVtbl *lpVtbl;
};

/* Custom decompression: requests whose CompressionFormat is DSTORAGE_CUSTOM_COMPRESSION_0 or
 * above are handed to the title through IDStorageCustomDecompressionQueue (the factory answers
 * QueryInterface for it). */
typedef UINT32 DSTORAGE_CUSTOM_DECOMPRESSION_FLAGS;
#define DSTORAGE_CUSTOM_DECOMPRESSION_FLAG_NONE 0
#define DSTORAGE_CUSTOM_DECOMPRESSION_FLAG_DEST_IN_UPLOAD_HEAP 1

typedef UINT32 DSTORAGE_GET_REQUEST_FLAGS;
#define DSTORAGE_GET_REQUEST_FLAG_NONE 0
#define DSTORAGE_GET_REQUEST_FLAG_SELECT_CUSTOM 1
#define DSTORAGE_GET_REQUEST_FLAG_SELECT_BUILTIN 2
#define DSTORAGE_GET_REQUEST_FLAG_SELECT_ALL 3

typedef struct DSTORAGE_CUSTOM_DECOMPRESSION_REQUEST {
    UINT64 Id;
    DSTORAGE_COMPRESSION_FORMAT CompressionFormat;
    UINT8 Reserved[3];
    DSTORAGE_CUSTOM_DECOMPRESSION_FLAGS Flags;
    UINT64 SrcSize;
    const void *SrcBuffer;
    UINT64 DstSize;
    void *DstBuffer;
} DSTORAGE_CUSTOM_DECOMPRESSION_REQUEST;

typedef struct DSTORAGE_CUSTOM_DECOMPRESSION_RESULT {
    UINT64 Id;
    HRESULT Result;
} DSTORAGE_CUSTOM_DECOMPRESSION_RESULT;

typedef struct IDStorageCustomDecompressionQueue IDStorageCustomDecompressionQueue;
/* IDStorageCustomDecompressionQueue, then Queue1 (GetRequests1): one object answers both. */
typedef struct IDStorageCustomDecompressionQueueVtbl {
    HRESULT(STDMETHODCALLTYPE *QueryInterface)(IDStorageCustomDecompressionQueue *This, REFIID riid, void **object);
    ULONG(STDMETHODCALLTYPE *AddRef)(IDStorageCustomDecompressionQueue *This);
    ULONG(STDMETHODCALLTYPE *Release)(IDStorageCustomDecompressionQueue *This);
    HANDLE(STDMETHODCALLTYPE *GetEvent)(IDStorageCustomDecompressionQueue *This);
    HRESULT(STDMETHODCALLTYPE *GetRequests)(IDStorageCustomDecompressionQueue *This, UINT32 max_requests,
                                            DSTORAGE_CUSTOM_DECOMPRESSION_REQUEST *requests, UINT32 *num_requests);
    HRESULT(STDMETHODCALLTYPE *SetRequestResults)(IDStorageCustomDecompressionQueue *This, UINT32 num_results,
                                                  DSTORAGE_CUSTOM_DECOMPRESSION_RESULT *results);
    HRESULT(STDMETHODCALLTYPE *GetRequests1)(IDStorageCustomDecompressionQueue *This, DSTORAGE_GET_REQUEST_FLAGS flags,
                                             UINT32 max_requests, DSTORAGE_CUSTOM_DECOMPRESSION_REQUEST *requests,
                                             UINT32 *num_requests);
} IDStorageCustomDecompressionQueueVtbl;
struct IDStorageCustomDecompressionQueue {
    const IDStorageCustomDecompressionQueueVtbl *lpVtbl;
};

typedef struct IDStorageFactoryVtbl {
    HRESULT(STDMETHODCALLTYPE *QueryInterface)(IDStorageFactory *This, REFIID riid, void **object);
    ULONG(STDMETHODCALLTYPE *AddRef)(IDStorageFactory *This);
    ULONG(STDMETHODCALLTYPE *Release)(IDStorageFactory *This);
    HRESULT(STDMETHODCALLTYPE *CreateQueue)(IDStorageFactory *This, const DSTORAGE_QUEUE_DESC *desc, REFIID riid,
                                            void **object);
    HRESULT(STDMETHODCALLTYPE *OpenFile)(IDStorageFactory *This, const WCHAR *path, REFIID riid, void **object);
    HRESULT(STDMETHODCALLTYPE *CreateStatusArray)(IDStorageFactory *This, UINT32 capacity, const CHAR *name,
                                                  REFIID riid, void **object);
    void(STDMETHODCALLTYPE *SetDebugFlags)(IDStorageFactory *This, UINT32 flags);
    HRESULT(STDMETHODCALLTYPE *SetStagingBufferSize)(IDStorageFactory *This, UINT32 size);
} IDStorageFactoryVtbl;
struct IDStorageFactory {
    const IDStorageFactoryVtbl *lpVtbl;
};

typedef struct IDStorageCompressionCodec IDStorageCompressionCodec;
typedef struct IDStorageCompressionCodecVtbl {
    HRESULT(STDMETHODCALLTYPE *QueryInterface)(IDStorageCompressionCodec *This, REFIID riid, void **object);
    ULONG(STDMETHODCALLTYPE *AddRef)(IDStorageCompressionCodec *This);
    ULONG(STDMETHODCALLTYPE *Release)(IDStorageCompressionCodec *This);
    HRESULT(STDMETHODCALLTYPE *CompressBuffer)(IDStorageCompressionCodec *This, const void *source, size_t source_size,
                                               DSTORAGE_COMPRESSION level, void *destination,
                                               size_t destination_size, size_t *written);
    HRESULT(STDMETHODCALLTYPE *DecompressBuffer)(IDStorageCompressionCodec *This, const void *source,
                                                 size_t source_size, void *destination, size_t destination_size,
                                                 size_t *written);
    size_t(STDMETHODCALLTYPE *CompressBufferBound)(IDStorageCompressionCodec *This, size_t uncompressed_size);
} IDStorageCompressionCodecVtbl;
struct IDStorageCompressionCodec {
    const IDStorageCompressionCodecVtbl *lpVtbl;
};

/* dstorage.dll's exports. */
HRESULT WINAPI DStorageGetFactory(REFIID riid, void **object);
HRESULT WINAPI DStorageSetConfiguration(const DSTORAGE_CONFIGURATION *configuration);
HRESULT WINAPI DStorageSetConfiguration1(const DSTORAGE_CONFIGURATION1 *configuration);
HRESULT WINAPI DStorageCreateCompressionCodec(DSTORAGE_COMPRESSION_FORMAT format, UINT32 threads, REFIID riid,
                                              void **object);

#ifdef __cplusplus
}
#endif

#endif /* DSR_DSTORAGE_H */
