/*
 * ONNX Runtime behind the test double, through its C API opened with dlopen.
 *
 * No ONNX Runtime header ships in any package these machines can install,
 * so the few functions used are called through the OrtApi table by index.
 * The table is append-only across releases (ONNX Runtime's ABI promise);
 * the indices below are the field positions in `struct OrtApi` of
 * onnxruntime_c_api.h, as ort-sys 2.0.0-rc.15's bindings list them (on
 * non-wasm targets), and the signatures are the header's.
 */
#define _POSIX_C_SOURCE 200809L

#include "ort_backend.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void OrtStatus;
typedef void OrtEnv;
typedef void OrtSession;
typedef void OrtSessionOptions;
typedef void OrtValue;
typedef void OrtMemoryInfo;
typedef void OrtTypeInfo;
typedef void OrtTensorTypeAndShapeInfo;
typedef void OrtAllocator;

enum {
  API_GET_ERROR_MESSAGE = 2,
  API_CREATE_ENV = 3,
  API_CREATE_SESSION_FROM_ARRAY = 8,
  API_RUN = 9,
  API_CREATE_SESSION_OPTIONS = 10,
  API_SET_INTRA_OP_NUM_THREADS = 24,
  API_SESSION_GET_INPUT_COUNT = 30,
  API_SESSION_GET_OUTPUT_COUNT = 31,
  API_SESSION_GET_INPUT_TYPE_INFO = 33,
  API_SESSION_GET_OUTPUT_TYPE_INFO = 34,
  API_SESSION_GET_INPUT_NAME = 36,
  API_SESSION_GET_OUTPUT_NAME = 37,
  API_CREATE_TENSOR_WITH_DATA_AS_ORT_VALUE = 49,
  API_CAST_TYPE_INFO_TO_TENSOR_INFO = 55,
  API_GET_TENSOR_ELEMENT_TYPE = 60,
  API_GET_DIMENSIONS_COUNT = 61,
  API_GET_DIMENSIONS = 62,
  API_CREATE_CPU_MEMORY_INFO = 69,
  API_ALLOCATOR_FREE = 76,
  API_GET_ALLOCATOR_WITH_DEFAULT_OPTIONS = 78,
  API_RELEASE_ENV = 92,
  API_RELEASE_STATUS = 93,
  API_RELEASE_MEMORY_INFO = 94,
  API_RELEASE_SESSION = 95,
  API_RELEASE_VALUE = 96,
  API_RELEASE_TYPE_INFO = 98,
  API_RELEASE_SESSION_OPTIONS = 100,
};
/* Every function above exists from API version 1. */
#define ORT_API_VERSION_USED 11

typedef struct {
  void *(*get_api)(uint32_t version);
  const char *(*get_version_string)(void);
} OrtApiBase;

static void **api;
static OrtEnv *env;
static OrtMemoryInfo *cpu;
static char init_error[256];
static pthread_once_t once = PTHREAD_ONCE_INIT;

#define FN(index, type) ((type)api[index])

static void *open_library(void) {
  const char *candidates[] = {getenv("NUSA_TRT_DOUBLE_ONNXRUNTIME"), getenv("ORT_DYLIB_PATH")};
  for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; ++i) {
    if (candidates[i] != NULL && candidates[i][0] != '\0') {
      void *h = dlopen(candidates[i], RTLD_NOW | RTLD_LOCAL);
      if (h != NULL) return h;
    }
  }
  /* The gateway itself has ONNX Runtime loaded already. */
  void *h = dlopen("libonnxruntime.so.1", RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
  return h != NULL ? h : dlopen("libonnxruntime.so.1", RTLD_NOW | RTLD_LOCAL);
}

static void init(void) {
  void *lib = open_library();
  if (lib == NULL) {
    snprintf(init_error, sizeof init_error,
             "test double: ONNX Runtime not found (set NUSA_TRT_DOUBLE_ONNXRUNTIME): %s", dlerror());
    return;
  }
  const OrtApiBase *(*get_base)(void) = (const OrtApiBase *(*)(void))dlsym(lib, "OrtGetApiBase");
  if (get_base == NULL) {
    snprintf(init_error, sizeof init_error, "test double: OrtGetApiBase missing from ONNX Runtime");
    return;
  }
  void **table = get_base()->get_api(ORT_API_VERSION_USED);
  if (table == NULL) {
    snprintf(init_error, sizeof init_error, "test double: ONNX Runtime lacks API version %d", ORT_API_VERSION_USED);
    return;
  }
  api = table;
  /* Logging level 3: errors only. */
  OrtStatus *st = FN(API_CREATE_ENV, OrtStatus * (*)(int, const char *, OrtEnv **))(3, "nusa-trt-double", &env);
  if (st == NULL) st = FN(API_CREATE_CPU_MEMORY_INFO, OrtStatus * (*)(int, int, OrtMemoryInfo **))(0, 0, &cpu);
  if (st != NULL) {
    snprintf(init_error, sizeof init_error, "test double: ONNX Runtime: %s",
             FN(API_GET_ERROR_MESSAGE, const char *(*)(const OrtStatus *))(st));
    FN(API_RELEASE_STATUS, void (*)(OrtStatus *))(st);
    api = NULL;
  }
}

/* Consumes st; returns 0 when it was success. */
static int check(OrtStatus *st, const char *what, char *msg, size_t msg_len) {
  if (st == NULL) return 0;
  snprintf(msg, msg_len, "%s: %s", what, FN(API_GET_ERROR_MESSAGE, const char *(*)(const OrtStatus *))(st));
  FN(API_RELEASE_STATUS, void (*)(OrtStatus *))(st);
  return -1;
}

struct ob_session {
  OrtSession *session;
};

ob_session *ob_open(const void *onnx, size_t len, char *msg, size_t msg_len) {
  pthread_once(&once, init);
  if (api == NULL) {
    snprintf(msg, msg_len, "%s", init_error);
    return NULL;
  }
  OrtSessionOptions *opts = NULL;
  if (check(FN(API_CREATE_SESSION_OPTIONS, OrtStatus * (*)(OrtSessionOptions **))(&opts), "CreateSessionOptions",
            msg, msg_len) != 0)
    return NULL;
  OrtSession *session = NULL;
  int bad = check(FN(API_SET_INTRA_OP_NUM_THREADS, OrtStatus * (*)(OrtSessionOptions *, int))(opts, 1),
                  "SetIntraOpNumThreads", msg, msg_len);
  if (!bad)
    bad = check(FN(API_CREATE_SESSION_FROM_ARRAY,
                   OrtStatus * (*)(const OrtEnv *, const void *, size_t, const OrtSessionOptions *, OrtSession **))(
                    env, onnx, len, opts, &session),
                "parsing the ONNX model", msg, msg_len);
  FN(API_RELEASE_SESSION_OPTIONS, void (*)(OrtSessionOptions *))(opts);
  if (bad) return NULL;
  ob_session *s = calloc(1, sizeof *s);
  if (s == NULL) {
    FN(API_RELEASE_SESSION, void (*)(OrtSession *))(session);
    snprintf(msg, msg_len, "out of host memory");
    return NULL;
  }
  s->session = session;
  return s;
}

void ob_close(ob_session *s) {
  if (s == NULL) return;
  FN(API_RELEASE_SESSION, void (*)(OrtSession *))(s->session);
  free(s);
}

/* ONNX TensorProto element types -> TensorRT DataType; -1: none. */
static int32_t from_onnx(int t) {
  switch (t) {
  case 1: return NUSA_TRT_FLOAT;
  case 2: return NUSA_TRT_UINT8;
  case 3: return NUSA_TRT_INT8;
  case 6: return NUSA_TRT_INT32;
  case 7: return NUSA_TRT_INT64;
  case 9: return NUSA_TRT_BOOL;
  case 10: return NUSA_TRT_HALF;
  case 16: return NUSA_TRT_BF16;
  default: return -1;
  }
}

static int to_onnx(int32_t t) {
  for (int o = 1; o <= 16; ++o)
    if (from_onnx(o) == t) return o;
  return -1;
}

size_t ob_dtype_size(int32_t dt) {
  switch (dt) {
  case NUSA_TRT_FLOAT: case NUSA_TRT_INT32: return 4;
  case NUSA_TRT_HALF: case NUSA_TRT_BF16: return 2;
  case NUSA_TRT_INT64: return 8;
  default: return 1;
  }
}

int ob_io_list(const ob_session *s, int outputs, ob_io *out, int max, char *msg, size_t msg_len) {
  size_t n = 0;
  if (check(FN(outputs ? API_SESSION_GET_OUTPUT_COUNT : API_SESSION_GET_INPUT_COUNT,
               OrtStatus * (*)(const OrtSession *, size_t *))(s->session, &n),
            "SessionGetInputCount", msg, msg_len) != 0)
    return -1;
  if (n > (size_t)max) {
    snprintf(msg, msg_len, "the model has %zu %s, the double takes %d", n, outputs ? "outputs" : "inputs", max);
    return -1;
  }
  OrtAllocator *alloc = NULL;
  if (check(FN(API_GET_ALLOCATOR_WITH_DEFAULT_OPTIONS, OrtStatus * (*)(OrtAllocator **))(&alloc),
            "GetAllocatorWithDefaultOptions", msg, msg_len) != 0)
    return -1;
  for (size_t i = 0; i < n; ++i) {
    char *name = NULL;
    if (check(FN(outputs ? API_SESSION_GET_OUTPUT_NAME : API_SESSION_GET_INPUT_NAME,
                 OrtStatus * (*)(const OrtSession *, size_t, OrtAllocator *, char **))(s->session, i, alloc, &name),
              "SessionGetInputName", msg, msg_len) != 0)
      return -1;
    int too_long = strlen(name) >= OB_NAME_LEN;
    snprintf(out[i].name, OB_NAME_LEN, "%s", name);
    FN(API_ALLOCATOR_FREE, OrtStatus * (*)(OrtAllocator *, void *))(alloc, name);
    if (too_long) {
      snprintf(msg, msg_len, "tensor name %s... is longer than the double takes", out[i].name);
      return -1;
    }
    OrtTypeInfo *info = NULL;
    if (check(FN(outputs ? API_SESSION_GET_OUTPUT_TYPE_INFO : API_SESSION_GET_INPUT_TYPE_INFO,
                 OrtStatus * (*)(const OrtSession *, size_t, OrtTypeInfo **))(s->session, i, &info),
              "SessionGetTypeInfo", msg, msg_len) != 0)
      return -1;
    const OrtTensorTypeAndShapeInfo *t = NULL;
    int elem = 0;
    size_t rank = 0;
    int bad = check(FN(API_CAST_TYPE_INFO_TO_TENSOR_INFO,
                       OrtStatus * (*)(const OrtTypeInfo *, const OrtTensorTypeAndShapeInfo **))(info, &t),
                    "CastTypeInfoToTensorInfo", msg, msg_len);
    if (!bad && t == NULL) {
      snprintf(msg, msg_len, "tensor %s is not a tensor", out[i].name);
      bad = 1;
    }
    if (!bad)
      bad = check(FN(API_GET_TENSOR_ELEMENT_TYPE, OrtStatus * (*)(const OrtTensorTypeAndShapeInfo *, int *))(t, &elem),
                  "GetTensorElementType", msg, msg_len);
    if (!bad)
      bad = check(FN(API_GET_DIMENSIONS_COUNT, OrtStatus * (*)(const OrtTensorTypeAndShapeInfo *, size_t *))(t, &rank),
                  "GetDimensionsCount", msg, msg_len);
    if (!bad && rank > NUSA_TRT_MAX_DIMS) {
      snprintf(msg, msg_len, "tensor %s has rank %zu", out[i].name, rank);
      bad = 1;
    }
    if (!bad) {
      memset(&out[i].shape, 0, sizeof out[i].shape);
      out[i].shape.nb_dims = (int32_t)rank;
      bad = check(FN(API_GET_DIMENSIONS, OrtStatus * (*)(const OrtTensorTypeAndShapeInfo *, int64_t *, size_t))(
                      t, out[i].shape.d, rank),
                  "GetDimensions", msg, msg_len);
    }
    FN(API_RELEASE_TYPE_INFO, void (*)(OrtTypeInfo *))(info);
    if (bad) return -1;
    out[i].dtype = from_onnx(elem);
    if (out[i].dtype < 0) {
      snprintf(msg, msg_len, "tensor %s has ONNX element type %d, which TensorRT does not take", out[i].name, elem);
      return -1;
    }
    for (size_t d = 0; d < rank; ++d)
      if (out[i].shape.d[d] < 0) out[i].shape.d[d] = -1;
  }
  return (int)n;
}

static OrtValue *value_of(const ob_tensor *t, char *msg, size_t msg_len) {
  size_t bytes = ob_dtype_size(t->dtype);
  for (int d = 0; d < t->shape->nb_dims; ++d) bytes *= (size_t)t->shape->d[d];
  OrtValue *v = NULL;
  if (check(FN(API_CREATE_TENSOR_WITH_DATA_AS_ORT_VALUE,
               OrtStatus * (*)(const OrtMemoryInfo *, void *, size_t, const int64_t *, size_t, int, OrtValue **))(
                cpu, t->data, bytes, t->shape->d, (size_t)t->shape->nb_dims, to_onnx(t->dtype), &v),
            t->name, msg, msg_len) != 0)
    return NULL;
  return v;
}

int ob_run(ob_session *s, const ob_tensor *inputs, int n_in, const ob_tensor *outputs, int n_out, char *msg,
           size_t msg_len) {
  OrtValue *in[OB_MAX_IO] = {0}, *out[OB_MAX_IO] = {0};
  const char *in_names[OB_MAX_IO], *out_names[OB_MAX_IO];
  int rc = 0;
  if (n_in > OB_MAX_IO || n_out > OB_MAX_IO) {
    snprintf(msg, msg_len, "too many tensors");
    return -1;
  }
  for (int i = 0; i < n_in && rc == 0; ++i) {
    in_names[i] = inputs[i].name;
    if ((in[i] = value_of(&inputs[i], msg, msg_len)) == NULL) rc = -1;
  }
  for (int i = 0; i < n_out && rc == 0; ++i) {
    out_names[i] = outputs[i].name;
    if ((out[i] = value_of(&outputs[i], msg, msg_len)) == NULL) rc = -1;
  }
  /* Pre-allocated outputs: ONNX Runtime writes into the "device" buffers. */
  if (rc == 0)
    rc = check(FN(API_RUN, OrtStatus * (*)(OrtSession *, const void *, const char *const *, const OrtValue *const *,
                                           size_t, const char *const *, size_t, OrtValue **))(
                   s->session, NULL, in_names, (const OrtValue *const *)in, (size_t)n_in, out_names, (size_t)n_out, out),
               "Run", msg, msg_len);
  for (int i = 0; i < OB_MAX_IO; ++i) {
    if (in[i] != NULL) FN(API_RELEASE_VALUE, void (*)(OrtValue *))(in[i]);
    if (out[i] != NULL) FN(API_RELEASE_VALUE, void (*)(OrtValue *))(out[i]);
  }
  return rc;
}
