/*
 * nusa_trt.h: the C ABI between trt-sys (Rust) and the shim that forwards into
 * TensorRT 10. We own this header; bindgen runs over it and nothing else, so
 * the Rust side never sees a C++ type.
 *
 * Rules every function follows:
 *  - returns an int32_t status (NUSA_TRT_OK or one of the codes below);
 *  - on failure writes a NUL-terminated message into *err when err is not
 *    NULL (err->status repeats the code), and leaves *out untouched;
 *  - never lets a C++ exception cross it.
 *
 * Nothing here links TensorRT or CUDA: the caller loads libnvinfer,
 * libnvonnxparser and libcudart at run time and hands their entry points to
 * nusa_trt_open. Object lifetimes follow TensorRT's: a lib outlives its
 * runtimes, a runtime outlives its engines, an engine outlives its contexts.
 */
#ifndef NUSA_TRT_H
#define NUSA_TRT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever a declaration below changes; the Rust side refuses a shim
 * whose nusa_trt_abi_version() differs. */
#define NUSA_TRT_ABI_VERSION 2
#define NUSA_TRT_MAX_DIMS 8
#define NUSA_TRT_ERROR_LEN 512
#define NUSA_TRT_DEVICE_NAME_LEN 256

typedef enum nusa_trt_status {
  NUSA_TRT_OK = 0,
  NUSA_TRT_ERR_INVALID_ARGUMENT = 1,
  /* An entry point this call needs was not provided (e.g. no ONNX parser). */
  NUSA_TRT_ERR_UNAVAILABLE = 2,
  /* TensorRT returned null/false; the message carries the logger's last error. */
  NUSA_TRT_ERR_TENSORRT = 3,
  /* A CUDA runtime call failed; the message carries cudaGetErrorString. */
  NUSA_TRT_ERR_CUDA = 4,
  /* A C++ exception was caught at the boundary. */
  NUSA_TRT_ERR_EXCEPTION = 5,
  NUSA_TRT_ERR_OUT_OF_MEMORY = 6
} nusa_trt_status;

typedef struct nusa_trt_error {
  int32_t status;
  char message[NUSA_TRT_ERROR_LEN];
} nusa_trt_error;

/* nvinfer1::ILogger::Severity values. */
typedef enum nusa_trt_severity {
  NUSA_TRT_SEVERITY_INTERNAL_ERROR = 0,
  NUSA_TRT_SEVERITY_ERROR = 1,
  NUSA_TRT_SEVERITY_WARNING = 2,
  NUSA_TRT_SEVERITY_INFO = 3,
  NUSA_TRT_SEVERITY_VERBOSE = 4
} nusa_trt_severity;

/* nvinfer1::TensorIOMode values. */
typedef enum nusa_trt_io_mode {
  NUSA_TRT_IO_NONE = 0,
  NUSA_TRT_IO_INPUT = 1,
  NUSA_TRT_IO_OUTPUT = 2
} nusa_trt_io_mode;

/* nvinfer1::DataType values in TensorRT 10 (they move between majors, which
 * is why the shim is compiled against one major). */
typedef enum nusa_trt_data_type {
  NUSA_TRT_FLOAT = 0,
  NUSA_TRT_HALF = 1,
  NUSA_TRT_INT8 = 2,
  NUSA_TRT_INT32 = 3,
  NUSA_TRT_BOOL = 4,
  NUSA_TRT_UINT8 = 5,
  NUSA_TRT_FP8 = 6,
  NUSA_TRT_BF16 = 7,
  NUSA_TRT_INT64 = 8,
  NUSA_TRT_INT4 = 9
} nusa_trt_data_type;

/* nvinfer1::OptProfileSelector values. */
typedef enum nusa_trt_profile_selector {
  NUSA_TRT_PROFILE_MIN = 0,
  NUSA_TRT_PROFILE_OPT = 1,
  NUSA_TRT_PROFILE_MAX = 2
} nusa_trt_profile_selector;

/* Same layout as nvinfer1::Dims64. */
typedef struct nusa_trt_dims {
  int32_t nb_dims;
  int64_t d[NUSA_TRT_MAX_DIMS];
} nusa_trt_dims;

typedef void (*nusa_trt_log_fn)(void *user, int32_t severity, const char *message);

/* Entry points the caller resolved from the libraries it loaded. The
 * signatures are those of the exported C functions (cudaError_t and
 * cudaMemcpyKind are int-sized enums, cudaStream_t is a pointer). Builder and
 * parser entries may be NULL on a runtime-only install (lean runtime). */
typedef struct nusa_trt_entry_points {
  void *(*create_infer_runtime)(void *logger, int32_t version);
  int32_t (*get_infer_lib_version)(void);
  void *(*create_infer_builder)(void *logger, int32_t version);
  void *(*create_onnx_parser)(void *network, void *logger, int version);
  int (*get_onnx_parser_version)(void);
  int (*cuda_malloc)(void **ptr, size_t size);
  int (*cuda_free)(void *ptr);
  int (*cuda_memcpy_async)(void *dst, const void *src, size_t count, int kind, void *stream);
  int (*cuda_stream_create)(void **stream);
  int (*cuda_stream_synchronize)(void *stream);
  int (*cuda_stream_destroy)(void *stream);
  int (*cuda_device_get_attribute)(int *value, int attr, int device);
  int (*cuda_runtime_get_version)(int *version);
  const char *(*cuda_get_error_string)(int error);
  /* cudaGetDeviceProperties_v2 (CUDA 12+) or cudaGetDeviceProperties: only
   * the first member, `char name[256]`, is read, and the caller's buffer is
   * larger than any release's cudaDeviceProp. May be NULL (no device name). */
  int (*cuda_get_device_properties)(void *prop, int device);
} nusa_trt_entry_points;

typedef struct nusa_trt_version_info {
  int32_t abi;
  /* NV_TENSORRT_VERSION the shim was compiled against. */
  int32_t tensorrt_compiled;
  /* getInferLibVersion() of the loaded library. */
  int32_t tensorrt_library;
  /* getNvOnnxParserVersion(), 0 when no parser was loaded. */
  int32_t onnx_parser;
  /* cudaRuntimeGetVersion(). */
  int32_t cuda_runtime;
} nusa_trt_version_info;

typedef struct nusa_trt_tensor_info {
  /* Owned by the engine; valid while the engine lives. */
  const char *name;
  int32_t mode;
  int32_t data_type;
  /* -1 for every dimension set per context (dynamic). */
  nusa_trt_dims shape;
} nusa_trt_tensor_info;

typedef struct nusa_trt_profile_dims {
  const char *input_name;
  nusa_trt_dims min;
  nusa_trt_dims opt;
  nusa_trt_dims max;
} nusa_trt_profile_dims;

typedef struct nusa_trt_build_options {
  const char *onnx_path;
  /* One entry per input with a dynamic dimension, all in one profile. When
   * profile_len is 0, every network input whose first dimension is dynamic
   * (and whose other dimensions are static) gets the batch range below. */
  const nusa_trt_profile_dims *profile;
  size_t profile_len;
  int64_t batch_min;
  int64_t batch_opt;
  int64_t batch_max;
  uint64_t workspace_bytes;
  /* Non-zero: allow FP16 kernels where the GPU has fast FP16. */
  int32_t fp16;
  /* A serialized timing cache from an earlier build (NULL/0: start empty);
   * a cache from another TensorRT or GPU is ignored by TensorRT. */
  const void *timing_cache;
  size_t timing_cache_len;
} nusa_trt_build_options;

typedef struct nusa_trt_host_memory nusa_trt_host_memory;

typedef struct nusa_trt_build_result {
  nusa_trt_host_memory *plan;
  /* The timing cache after the build, to keep for the next one; NULL when
   * the builder has none. */
  nusa_trt_host_memory *timing_cache;
} nusa_trt_build_result;

typedef struct nusa_trt_lib nusa_trt_lib;
typedef struct nusa_trt_runtime nusa_trt_runtime;
typedef struct nusa_trt_engine nusa_trt_engine;
typedef struct nusa_trt_context nusa_trt_context;
/* A cudaStream_t. */
typedef struct nusa_cuda_stream nusa_cuda_stream;

int32_t nusa_trt_abi_version(void);

/* The logger callback may be called from any thread TensorRT uses, for as
 * long as the lib is open. */
int32_t nusa_trt_open(const nusa_trt_entry_points *entry, nusa_trt_log_fn log, void *log_user,
                      nusa_trt_lib **out, nusa_trt_error *err);
void nusa_trt_close(nusa_trt_lib *lib);
int32_t nusa_trt_version(const nusa_trt_lib *lib, nusa_trt_version_info *out, nusa_trt_error *err);

int32_t nusa_trt_runtime_create(nusa_trt_lib *lib, nusa_trt_runtime **out, nusa_trt_error *err);
void nusa_trt_runtime_destroy(nusa_trt_runtime *runtime);

int32_t nusa_trt_engine_deserialize(nusa_trt_runtime *runtime, const void *plan, size_t plan_len,
                                    nusa_trt_engine **out, nusa_trt_error *err);
void nusa_trt_engine_destroy(nusa_trt_engine *engine);
int32_t nusa_trt_engine_io_count(const nusa_trt_engine *engine, int32_t *out, nusa_trt_error *err);
int32_t nusa_trt_engine_io_tensor(const nusa_trt_engine *engine, int32_t index,
                                  nusa_trt_tensor_info *out, nusa_trt_error *err);
int32_t nusa_trt_engine_profile_shape(const nusa_trt_engine *engine, const char *input_name,
                                      int32_t profile, int32_t selector, nusa_trt_dims *out,
                                      nusa_trt_error *err);

int32_t nusa_trt_context_create(nusa_trt_engine *engine, nusa_trt_context **out, nusa_trt_error *err);
void nusa_trt_context_destroy(nusa_trt_context *context);
int32_t nusa_trt_context_set_input_shape(nusa_trt_context *context, const char *name,
                                         const nusa_trt_dims *shape, nusa_trt_error *err);
int32_t nusa_trt_context_tensor_shape(const nusa_trt_context *context, const char *name,
                                      nusa_trt_dims *out, nusa_trt_error *err);
int32_t nusa_trt_context_set_tensor_address(nusa_trt_context *context, const char *name,
                                            void *address, nusa_trt_error *err);
int32_t nusa_trt_context_enqueue(nusa_trt_context *context, nusa_cuda_stream *stream,
                                 nusa_trt_error *err);

/* On success both host memories in *out belong to the caller. */
int32_t nusa_trt_build_from_onnx(nusa_trt_lib *lib, const nusa_trt_build_options *options,
                                 nusa_trt_build_result *out, nusa_trt_error *err);
int32_t nusa_trt_host_memory_data(const nusa_trt_host_memory *memory, const void **data,
                                  size_t *len, nusa_trt_error *err);
void nusa_trt_host_memory_destroy(nusa_trt_host_memory *memory);

int32_t nusa_cuda_malloc(const nusa_trt_lib *lib, size_t size, void **out, nusa_trt_error *err);
int32_t nusa_cuda_free(const nusa_trt_lib *lib, void *ptr, nusa_trt_error *err);
int32_t nusa_cuda_memcpy_h2d_async(const nusa_trt_lib *lib, void *dst, const void *src, size_t len,
                                   nusa_cuda_stream *stream, nusa_trt_error *err);
int32_t nusa_cuda_memcpy_d2h_async(const nusa_trt_lib *lib, void *dst, const void *src, size_t len,
                                   nusa_cuda_stream *stream, nusa_trt_error *err);
int32_t nusa_cuda_stream_create(const nusa_trt_lib *lib, nusa_cuda_stream **out, nusa_trt_error *err);
int32_t nusa_cuda_stream_synchronize(const nusa_trt_lib *lib, nusa_cuda_stream *stream,
                                     nusa_trt_error *err);
int32_t nusa_cuda_stream_destroy(const nusa_trt_lib *lib, nusa_cuda_stream *stream,
                                 nusa_trt_error *err);
int32_t nusa_cuda_compute_capability(const nusa_trt_lib *lib, int32_t device, int32_t *major,
                                     int32_t *minor, nusa_trt_error *err);
/* The GPU's name, NUL-terminated, cut to out_len - 1 bytes; UNAVAILABLE
 * when no cudaGetDeviceProperties entry point was loaded. */
int32_t nusa_cuda_device_name(const nusa_trt_lib *lib, int32_t device, char *out, size_t out_len,
                              nusa_trt_error *err);
/* cudaGetErrorString; never NULL. */
const char *nusa_cuda_error_string(const nusa_trt_lib *lib, int32_t code);

#ifdef __cplusplus
}
#endif
#endif
