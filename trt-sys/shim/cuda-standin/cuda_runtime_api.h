/* Stand-in for CUDA's header, placed after the real include paths so a real
 * CUDA install wins. TensorRT's headers need only these types; the shim calls
 * CUDA through entry points it is handed, never through this header. */
#pragma once
typedef struct CUstream_st *cudaStream_t;
typedef struct CUevent_st *cudaEvent_t;
