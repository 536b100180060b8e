/* The header's layouts against DirectStorage's (x64): sizes and the offsets that matter.
 * Built with mingw-w64 (the game's side) and with winegcc (the DLL's side); exits non-zero on
 * the first difference. */
#include <stddef.h>
#include <stdio.h>

#define INITGUID
#include "d3d12_interop.h"

static int failures;

#define EXPECT(expr, want)                                                          \
    do {                                                                            \
        size_t got_ = (expr);                                                       \
        if (got_ != (size_t)(want)) {                                               \
            printf("%s is %zu, DirectStorage's is %zu\n", #expr, got_, (size_t)(want)); \
            failures++;                                                             \
        }                                                                           \
    } while (0)

int main(void) {
    EXPECT(sizeof(DSTORAGE_QUEUE_DESC), 32);
    EXPECT(offsetof(DSTORAGE_QUEUE_DESC, Capacity), 8);
    EXPECT(offsetof(DSTORAGE_QUEUE_DESC, Priority), 10);
    EXPECT(offsetof(DSTORAGE_QUEUE_DESC, Name), 16);
    EXPECT(offsetof(DSTORAGE_QUEUE_DESC, Device), 24);
    EXPECT(sizeof(DSTORAGE_QUEUE_INFO), 40);
    EXPECT(offsetof(DSTORAGE_QUEUE_INFO, EmptySlotCount), 32);
    EXPECT(offsetof(DSTORAGE_QUEUE_INFO, RequestCountUntilAutoSubmit), 34);
    EXPECT(sizeof(DSTORAGE_REQUEST_OPTIONS), 16);
    EXPECT(sizeof(DSTORAGE_SOURCE), 24);
    EXPECT(sizeof(DSTORAGE_DESTINATION), 40);
    EXPECT(sizeof(DSTORAGE_DESTINATION_TEXTURE_REGION), 40);
    EXPECT(sizeof(DSTORAGE_DESTINATION_TILES), 40);
    EXPECT(sizeof(DSTORAGE_REQUEST), 104);
    /* D3D12's, as far as the DLL uses them, and the interop's vtable (13 methods). */
    EXPECT(sizeof(D3D12_COMMAND_QUEUE_DESC), 16);
    EXPECT(sizeof(D3D12_RESOURCE_DESC), 56);
    EXPECT(offsetof(D3D12_RESOURCE_DESC, Width), 16);
    EXPECT(offsetof(D3D12_RESOURCE_DESC, Format), 32);
    EXPECT(offsetof(D3D12_RESOURCE_DESC, Flags), 48);
    EXPECT(offsetof(ID3D12DeviceVtbl, CreateCommandQueue), 8 * sizeof(void *));
    EXPECT(offsetof(ID3D12ResourceVtbl, GetDesc), 10 * sizeof(void *));
    EXPECT(offsetof(ID3D12DXVKInteropDeviceVtbl, GetVulkanHandles), 7 * sizeof(void *));
    EXPECT(offsetof(ID3D12DXVKInteropDeviceVtbl, GetVulkanResourceInfo), 10 * sizeof(void *));
    EXPECT(sizeof(ID3D12DXVKInteropDeviceVtbl), 13 * sizeof(void *));
    EXPECT(offsetof(DSTORAGE_REQUEST, Source), 16);
    EXPECT(offsetof(DSTORAGE_REQUEST, Destination), 40);
    EXPECT(offsetof(DSTORAGE_REQUEST, UncompressedSize), 80);
    EXPECT(offsetof(DSTORAGE_REQUEST, CancellationTag), 88);
    EXPECT(offsetof(DSTORAGE_REQUEST, Name), 96);
    EXPECT(sizeof(DSTORAGE_ERROR_PARAMETERS_REQUEST), 688);
    EXPECT(offsetof(DSTORAGE_ERROR_PARAMETERS_REQUEST, RequestName), 520);
    EXPECT(offsetof(DSTORAGE_ERROR_PARAMETERS_REQUEST, Request), 584);
    EXPECT(sizeof(DSTORAGE_ERROR_FIRST_FAILURE), 696);
    EXPECT(offsetof(DSTORAGE_ERROR_FIRST_FAILURE, CommandType), 4);
    EXPECT(offsetof(DSTORAGE_ERROR_FIRST_FAILURE, Request), 8);
    EXPECT(sizeof(DSTORAGE_ERROR_RECORD), 704);
    EXPECT(offsetof(DSTORAGE_ERROR_RECORD, FirstFailure), 8);
    EXPECT(sizeof(DSTORAGE_CONFIGURATION), 28);
    EXPECT(sizeof(DSTORAGE_CONFIGURATION1), 32);
    EXPECT(sizeof(BY_HANDLE_FILE_INFORMATION), 52);
    EXPECT(sizeof(DSTORAGE_CUSTOM_DECOMPRESSION_REQUEST), 48);
    EXPECT(offsetof(DSTORAGE_CUSTOM_DECOMPRESSION_REQUEST, CompressionFormat), 8);
    EXPECT(offsetof(DSTORAGE_CUSTOM_DECOMPRESSION_REQUEST, Flags), 12);
    EXPECT(offsetof(DSTORAGE_CUSTOM_DECOMPRESSION_REQUEST, SrcSize), 16);
    EXPECT(offsetof(DSTORAGE_CUSTOM_DECOMPRESSION_REQUEST, DstBuffer), 40);
    EXPECT(sizeof(DSTORAGE_CUSTOM_DECOMPRESSION_RESULT), 16);
    EXPECT(offsetof(DSTORAGE_CUSTOM_DECOMPRESSION_RESULT, Result), 8);
    /* The options' bitfields: format in byte 0; source type bit 0 and destination type bits 1-7
     * of the second 64-bit unit. */
    DSTORAGE_REQUEST_OPTIONS options;
    memset(&options, 0, sizeof options);
    options.CompressionFormat = 0xAB;
    options.SourceType = 1;
    options.DestinationType = 5;
    unsigned char bytes[16];
    memcpy(bytes, &options, sizeof bytes);
    EXPECT(bytes[0], 0xAB);
    EXPECT(bytes[8], 0x0B);
    printf("%s\n", failures ? "layout differs" : "layout matches DirectStorage's");
    return failures != 0;
}
