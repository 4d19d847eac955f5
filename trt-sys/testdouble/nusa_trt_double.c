/*
 * Test double of nusa_trt.h: the same C ABI as the shim, with "device" memory
 * in host memory and a plan format of its own, so the Rust side (loading,
 * IO listing, dtype/shape mapping, buffer checks, error mapping, drop order)
 * runs for real on machines without a GPU or TensorRT.
 *
 * The same library also exports stand-ins for the TensorRT and CUDA entry
 * points (getInferLibVersion, cudaMalloc, ...), so the tests load it as
 * libnvinfer and libcudart too and the entry points travel through
 * nusa_trt_open exactly as the real ones do; the double's functions then call
 * through those pointers.
 *
 * Two plan formats (text headers):
 *   NUSAPLAN1
 *   input <name> <FLOAT|HALF|INT8|INT32|BOOL|UINT8|INT64> <d0> <d1> ...
 *   output <name> <dtype> <d0> ...
 *   profile <min batch> <opt batch> <max batch>
 * is a hand-written plan whose output i is computed from input i: FLOAT
 * elements as y = 2x + 1, other types copied byte for byte, with input i's
 * shape (for dtype and shape mapping tests).
 *   NUSAPLAN2
 *   (input, output and profile lines as above)
 *   onnx <length>
 *   <the ONNX model's bytes>
 * is what the double's builder makes from an ONNX file: execution runs that
 * model with ONNX Runtime on the "device" buffers (ort_backend.c), outputs
 * take the model's shapes with the batch dimension of the first input.
 *
 * The builder mimics TensorRT's where the gateway can tell: it logs through
 * the logger, takes and returns a timing cache ("NUSATIMING <builds>"), and
 * takes NUSA_TRT_DOUBLE_BUILD_MS milliseconds if that is set, so a build
 * can be seen running while the CPU engine serves.
 */
/* strtok_r */
#define _POSIX_C_SOURCE 200809L

#include "nusa_trt.h"
#include "ort_backend.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_IO 16
#define NAME_LEN 64

static atomic_long violations;

/* ---- stand-ins for the TensorRT and CUDA entry points ---------------- */

int32_t getInferLibVersion(void) { return 101600; }
int getNvOnnxParserVersion(void) { return 101600; }
static int fake_runtime_token, fake_builder_token, fake_parser_token;
void *createInferRuntime_INTERNAL(void *logger, int32_t version) {
  (void)logger;
  return version / 10000 == 10 ? &fake_runtime_token : NULL;
}
void *createInferBuilder_INTERNAL(void *logger, int32_t version) {
  (void)logger;
  (void)version;
  return &fake_builder_token;
}
void *createNvOnnxParser_INTERNAL(void *network, void *logger, int version) {
  (void)network;
  (void)logger;
  (void)version;
  return &fake_parser_token;
}

enum { CUDA_SUCCESS = 0, CUDA_ERR_INVALID_VALUE = 1, CUDA_ERR_MEMORY_ALLOCATION = 2 };
/* Larger requests fail as cudaErrorMemoryAllocation, to test error mapping. */
#define FAKE_DEVICE_BYTES ((size_t)1 << 32)

int cudaMalloc(void **ptr, size_t size) {
  if (ptr == NULL) return CUDA_ERR_INVALID_VALUE;
  if (size > FAKE_DEVICE_BYTES) return CUDA_ERR_MEMORY_ALLOCATION;
  *ptr = malloc(size == 0 ? 1 : size);
  return *ptr == NULL ? CUDA_ERR_MEMORY_ALLOCATION : CUDA_SUCCESS;
}
int cudaFree(void *ptr) {
  free(ptr);
  return CUDA_SUCCESS;
}
int cudaMemcpyAsync(void *dst, const void *src, size_t count, int kind, void *stream) {
  (void)stream;
  if (kind != 1 && kind != 2) return CUDA_ERR_INVALID_VALUE;
  if (count > 0 && (dst == NULL || src == NULL)) return CUDA_ERR_INVALID_VALUE;
  if (count > 0) memcpy(dst, src, count);
  return CUDA_SUCCESS;
}
static int fake_stream_token;
int cudaStreamCreate(void **stream) {
  if (stream == NULL) return CUDA_ERR_INVALID_VALUE;
  *stream = &fake_stream_token;
  return CUDA_SUCCESS;
}
int cudaStreamSynchronize(void *stream) { return stream == &fake_stream_token ? CUDA_SUCCESS : CUDA_ERR_INVALID_VALUE; }
int cudaStreamDestroy(void *stream) { return stream == &fake_stream_token ? CUDA_SUCCESS : CUDA_ERR_INVALID_VALUE; }
int cudaDeviceGetAttribute(int *value, int attr, int device) {
  if (value == NULL || device != 0) return CUDA_ERR_INVALID_VALUE;
  if (attr == 75) *value = 8;
  else if (attr == 76) *value = 7;
  else return CUDA_ERR_INVALID_VALUE;
  return CUDA_SUCCESS;
}
int cudaRuntimeGetVersion(int *version) {
  *version = 12080;
  return CUDA_SUCCESS;
}
/* cudaDeviceProp starts with char name[256]. */
int cudaGetDeviceProperties_v2(void *prop, int device) {
  if (prop == NULL || device != 0) return CUDA_ERR_INVALID_VALUE;
  snprintf(prop, 256, "%s", "Nusa test double (host memory)");
  return CUDA_SUCCESS;
}
const char *cudaGetErrorString(int error) {
  switch (error) {
  case CUDA_SUCCESS: return "no error";
  case CUDA_ERR_INVALID_VALUE: return "invalid argument";
  case CUDA_ERR_MEMORY_ALLOCATION: return "out of memory";
  default: return "unrecognized error code";
  }
}

/* ---- the ABI ---------------------------------------------------------- */

struct nusa_trt_lib {
  nusa_trt_entry_points entry;
  nusa_trt_log_fn log;
  void *log_user;
  atomic_long children;
};
struct nusa_trt_runtime {
  nusa_trt_lib *lib;
  atomic_long children;
};
typedef struct io {
  char name[NAME_LEN];
  int32_t mode;
  int32_t dtype;
  nusa_trt_dims shape;
} io;
struct nusa_trt_engine {
  nusa_trt_runtime *runtime;
  atomic_long children;
  int32_t n;
  io ios[MAX_IO];
  int64_t profile[3];
  /* NUSAPLAN2: the model ONNX Runtime runs; NULL for NUSAPLAN1. */
  ob_session *ort;
};
struct nusa_trt_context {
  nusa_trt_engine *engine;
  nusa_trt_dims shapes[MAX_IO];
  void *addresses[MAX_IO];
};
struct nusa_trt_host_memory {
  size_t len;
  char data[];
};

static int32_t fail(nusa_trt_error *err, int32_t status, const char *fmt, const char *arg) {
  if (err != NULL) {
    err->status = status;
    snprintf(err->message, sizeof err->message, fmt, arg);
  }
  return status;
}

static void log_msg(const nusa_trt_lib *lib, int32_t severity, const char *msg) {
  if (lib->log != NULL) lib->log(lib->log_user, severity, msg);
}

/* Destroying a parent before its children is the bug the Rust wrapper's
 * ownership must make impossible; the tests read this counter. */
static void release_parent(atomic_long *children) { atomic_fetch_sub(children, 1); }
static void check_no_children(atomic_long *children) {
  if (atomic_load(children) != 0) atomic_fetch_add(&violations, 1);
}

long nusa_double_order_violations(void) { return atomic_load(&violations); }
long nusa_double_live_children(const nusa_trt_lib *lib) { return atomic_load(&lib->children); }

int32_t nusa_trt_abi_version(void) { return NUSA_TRT_ABI_VERSION; }

int32_t nusa_trt_open(const nusa_trt_entry_points *entry, nusa_trt_log_fn log, void *log_user,
                      nusa_trt_lib **out, nusa_trt_error *err) {
  if (entry == NULL || out == NULL) return fail(err, NUSA_TRT_ERR_INVALID_ARGUMENT, "%s", "nusa_trt_open: null argument");
  if (entry->create_infer_runtime == NULL || entry->get_infer_lib_version == NULL || entry->cuda_malloc == NULL ||
      entry->cuda_free == NULL || entry->cuda_memcpy_async == NULL || entry->cuda_stream_create == NULL ||
      entry->cuda_stream_synchronize == NULL || entry->cuda_stream_destroy == NULL ||
      entry->cuda_device_get_attribute == NULL || entry->cuda_runtime_get_version == NULL ||
      entry->cuda_get_error_string == NULL)
    return fail(err, NUSA_TRT_ERR_INVALID_ARGUMENT, "%s", "nusa_trt_open: entry points missing");
  nusa_trt_lib *lib = calloc(1, sizeof *lib);
  if (lib == NULL) return fail(err, NUSA_TRT_ERR_OUT_OF_MEMORY, "%s", "out of host memory");
  lib->entry = *entry;
  lib->log = log;
  lib->log_user = log_user;
  *out = lib;
  return NUSA_TRT_OK;
}

void nusa_trt_close(nusa_trt_lib *lib) {
  if (lib == NULL) return;
  check_no_children(&lib->children);
  free(lib);
}

int32_t nusa_trt_version(const nusa_trt_lib *lib, nusa_trt_version_info *out, nusa_trt_error *err) {
  if (lib == NULL || out == NULL) return fail(err, NUSA_TRT_ERR_INVALID_ARGUMENT, "%s", "nusa_trt_version: null argument");
  out->abi = NUSA_TRT_ABI_VERSION;
  out->tensorrt_compiled = 101600;
  out->tensorrt_library = lib->entry.get_infer_lib_version();
  out->onnx_parser = lib->entry.get_onnx_parser_version != NULL ? lib->entry.get_onnx_parser_version() : 0;
  int v = 0;
  lib->entry.cuda_runtime_get_version(&v);
  out->cuda_runtime = v;
  return NUSA_TRT_OK;
}

int32_t nusa_trt_runtime_create(nusa_trt_lib *lib, nusa_trt_runtime **out, nusa_trt_error *err) {
  if (lib == NULL || out == NULL) return fail(err, NUSA_TRT_ERR_INVALID_ARGUMENT, "%s", "nusa_trt_runtime_create: null argument");
  if (lib->entry.create_infer_runtime(NULL, 101600) == NULL)
    return fail(err, NUSA_TRT_ERR_TENSORRT, "%s", "createInferRuntime failed");
  nusa_trt_runtime *rt = calloc(1, sizeof *rt);
  if (rt == NULL) return fail(err, NUSA_TRT_ERR_OUT_OF_MEMORY, "%s", "out of host memory");
  rt->lib = lib;
  atomic_fetch_add(&lib->children, 1);
  log_msg(lib, NUSA_TRT_SEVERITY_INFO, "test double: runtime created");
  *out = rt;
  return NUSA_TRT_OK;
}

void nusa_trt_runtime_destroy(nusa_trt_runtime *rt) {
  if (rt == NULL) return;
  check_no_children(&rt->children);
  release_parent(&rt->lib->children);
  free(rt);
}

static int32_t parse_dtype(const char *s) {
  static const char *names[] = {"FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "FP8", "BF16", "INT64"};
  for (int32_t i = 0; i < (int32_t)(sizeof names / sizeof names[0]); ++i)
    if (strcmp(s, names[i]) == 0) return i;
  return -1;
}

/* Parses one plan line into e; returns 0 on success. */
static int parse_line(char *line, nusa_trt_engine *e) {
  char *save = NULL;
  char *kind = strtok_r(line, " \t", &save);
  if (kind == NULL) return 0;
  if (strcmp(kind, "profile") == 0) {
    for (int i = 0; i < 3; ++i) {
      char *t = strtok_r(NULL, " \t", &save);
      if (t == NULL) return -1;
      e->profile[i] = strtoll(t, NULL, 10);
    }
    return 0;
  }
  int32_t mode = strcmp(kind, "input") == 0 ? NUSA_TRT_IO_INPUT : strcmp(kind, "output") == 0 ? NUSA_TRT_IO_OUTPUT : -1;
  if (mode < 0 || e->n >= MAX_IO) return -1;
  io *t = &e->ios[e->n];
  char *name = strtok_r(NULL, " \t", &save);
  char *dt = strtok_r(NULL, " \t", &save);
  if (name == NULL || dt == NULL || strlen(name) >= NAME_LEN) return -1;
  strcpy(t->name, name);
  t->mode = mode;
  t->dtype = parse_dtype(dt);
  if (t->dtype < 0) return -1;
  char *d;
  while ((d = strtok_r(NULL, " \t", &save)) != NULL) {
    if (t->shape.nb_dims >= NUSA_TRT_MAX_DIMS) return -1;
    t->shape.d[t->shape.nb_dims++] = strtoll(d, NULL, 10);
  }
  e->n++;
  return 0;
}

static nusa_trt_engine *new_engine(void) {
  nusa_trt_engine *e = calloc(1, sizeof *e);
  if (e != NULL) e->profile[0] = e->profile[1] = e->profile[2] = 1;
  return e;
}

/* NUSAPLAN1: every line after the magic. */
static int parse_v1(const void *plan, size_t plan_len, nusa_trt_engine *e) {
  char *text = malloc(plan_len + 1);
  if (text == NULL) return -1;
  memcpy(text, plan, plan_len);
  text[plan_len] = '\0';
  char *save = NULL;
  int bad = 0;
  strtok_r(text, "\n", &save); /* magic */
  for (char *line; (line = strtok_r(NULL, "\n", &save)) != NULL;) bad |= parse_line(line, e);
  free(text);
  return bad;
}

/* NUSAPLAN2: header lines up to "onnx <len>", then exactly len bytes. */
static int parse_v2(const char *plan, size_t plan_len, size_t off, nusa_trt_engine *e, char *msg, size_t msg_len) {
  for (;;) {
    const char *nl = memchr(plan + off, '\n', plan_len - off);
    size_t len = nl == NULL ? 0 : (size_t)(nl - (plan + off));
    char line[512];
    if (nl == NULL || len >= sizeof line) {
      snprintf(msg, msg_len, "test double: truncated NUSAPLAN2 header");
      return -1;
    }
    memcpy(line, plan + off, len);
    line[len] = '\0';
    off += len + 1;
    if (strncmp(line, "onnx ", 5) == 0) {
      char *end = NULL;
      unsigned long long n = strtoull(line + 5, &end, 10);
      if (end == line + 5 || *end != '\0' || n != plan_len - off) {
        snprintf(msg, msg_len, "test double: NUSAPLAN2 says %.32s bytes of ONNX, %zu follow", line + 5, plan_len - off);
        return -1;
      }
      e->ort = ob_open(plan + off, (size_t)n, msg, msg_len);
      return e->ort == NULL ? -1 : 0;
    }
    if (parse_line(line, e) != 0) {
      snprintf(msg, msg_len, "test double: bad plan line");
      return -1;
    }
  }
}

int32_t nusa_trt_engine_deserialize(nusa_trt_runtime *rt, const void *plan, size_t plan_len,
                                    nusa_trt_engine **out, nusa_trt_error *err) {
  if (rt == NULL || plan == NULL || out == NULL)
    return fail(err, NUSA_TRT_ERR_INVALID_ARGUMENT, "%s", "nusa_trt_engine_deserialize: null argument");
  static const char magic1[] = "NUSAPLAN1\n", magic2[] = "NUSAPLAN2\n";
  int v1 = plan_len >= sizeof magic1 - 1 && memcmp(plan, magic1, sizeof magic1 - 1) == 0;
  int v2 = plan_len >= sizeof magic2 - 1 && memcmp(plan, magic2, sizeof magic2 - 1) == 0;
  if (!v1 && !v2) {
    log_msg(rt->lib, NUSA_TRT_SEVERITY_ERROR, "test double: plan has no NUSAPLAN header");
    return fail(err, NUSA_TRT_ERR_TENSORRT, "%s", "deserializeCudaEngine failed: test double: plan has no NUSAPLAN header");
  }
  nusa_trt_engine *e = new_engine();
  if (e == NULL) return fail(err, NUSA_TRT_ERR_OUT_OF_MEMORY, "%s", "out of host memory");
  char msg[NUSA_TRT_ERROR_LEN] = "test double: bad plan line";
  int bad = v1 ? parse_v1(plan, plan_len, e) : parse_v2(plan, plan_len, sizeof magic2 - 1, e, msg, sizeof msg);
  if (bad) {
    ob_close(e->ort);
    free(e);
    log_msg(rt->lib, NUSA_TRT_SEVERITY_ERROR, msg);
    return fail(err, NUSA_TRT_ERR_TENSORRT, "deserializeCudaEngine failed: %s", msg);
  }
  e->runtime = rt;
  atomic_fetch_add(&rt->children, 1);
  *out = e;
  return NUSA_TRT_OK;
}

void nusa_trt_engine_destroy(nusa_trt_engine *e) {
  if (e == NULL) return;
  check_no_children(&e->children);
  release_parent(&e->runtime->children);
  ob_close(e->ort);
  free(e);
}

int32_t nusa_trt_engine_io_count(const nusa_trt_engine *e, int32_t *out, nusa_trt_error *err) {
  if (e == NULL || out == NULL) return fail(err, NUSA_TRT_ERR_INVALID_ARGUMENT, "%s", "nusa_trt_engine_io_count: null argument");
  *out = e->n;
  return NUSA_TRT_OK;
}

int32_t nusa_trt_engine_io_tensor(const nusa_trt_engine *e, int32_t index, nusa_trt_tensor_info *out,
                                  nusa_trt_error *err) {
  if (e == NULL || out == NULL) return fail(err, NUSA_TRT_ERR_INVALID_ARGUMENT, "%s", "nusa_trt_engine_io_tensor: null argument");
  if (index < 0 || index >= e->n) return fail(err, NUSA_TRT_ERR_INVALID_ARGUMENT, "%s", "nusa_trt_engine_io_tensor: index out of range");
  out->name = e->ios[index].name;
  out->mode = e->ios[index].mode;
  out->data_type = e->ios[index].dtype;
  out->shape = e->ios[index].shape;
  return NUSA_TRT_OK;
}

static int find_io(const nusa_trt_engine *e, const char *name) {
  for (int i = 0; i < e->n; ++i)
    if (strcmp(e->ios[i].name, name) == 0) return i;
  return -1;
}

int32_t nusa_trt_engine_profile_shape(const nusa_trt_engine *e, const char *name, int32_t profile,
                                      int32_t selector, nusa_trt_dims *out, nusa_trt_error *err) {
  if (e == NULL || name == NULL || out == NULL) return fail(err, NUSA_TRT_ERR_INVALID_ARGUMENT, "%s", "nusa_trt_engine_profile_shape: null argument");
  int i = find_io(e, name);
  if (i < 0 || e->ios[i].mode != NUSA_TRT_IO_INPUT || profile != 0 || selector < 0 || selector > 2)
    return fail(err, NUSA_TRT_ERR_TENSORRT, "no profile shape for input %s", name);
  *out = e->ios[i].shape;
  for (int d = 0; d < out->nb_dims; ++d)
    if (out->d[d] < 0) out->d[d] = e->profile[selector];
  return NUSA_TRT_OK;
}

int32_t nusa_trt_context_create(nusa_trt_engine *e, nusa_trt_context **out, nusa_trt_error *err) {
  if (e == NULL || out == NULL) return fail(err, NUSA_TRT_ERR_INVALID_ARGUMENT, "%s", "nusa_trt_context_create: null argument");
  nusa_trt_context *c = calloc(1, sizeof *c);
  if (c == NULL) return fail(err, NUSA_TRT_ERR_OUT_OF_MEMORY, "%s", "out of host memory");
  c->engine = e;
  for (int i = 0; i < e->n; ++i) c->shapes[i] = e->ios[i].shape;
  atomic_fetch_add(&e->children, 1);
  *out = c;
  return NUSA_TRT_OK;
}

void nusa_trt_context_destroy(nusa_trt_context *c) {
  if (c == NULL) return;
  release_parent(&c->engine->children);
  free(c);
}

int32_t nusa_trt_context_set_input_shape(nusa_trt_context *c, const char *name, const nusa_trt_dims *shape,
                                         nusa_trt_error *err) {
  if (c == NULL || name == NULL || shape == NULL) return fail(err, NUSA_TRT_ERR_INVALID_ARGUMENT, "%s", "nusa_trt_context_set_input_shape: null argument");
  const nusa_trt_engine *e = c->engine;
  int i = find_io(e, name);
  if (i < 0 || e->ios[i].mode != NUSA_TRT_IO_INPUT)
    return fail(err, NUSA_TRT_ERR_TENSORRT, "setInputShape(%s) failed: no such input", name);
  const io *t = &e->ios[i];
  if (shape->nb_dims != t->shape.nb_dims) return fail(err, NUSA_TRT_ERR_TENSORRT, "setInputShape(%s) failed: wrong rank", name);
  for (int d = 0; d < shape->nb_dims; ++d) {
    int64_t want = t->shape.d[d];
    int64_t have = shape->d[d];
    if (want >= 0 ? have != want : (have < e->profile[0] || have > e->profile[2]))
      return fail(err, NUSA_TRT_ERR_TENSORRT, "setInputShape(%s) failed: outside the optimization profile", name);
  }
  c->shapes[i] = *shape;
  if (e->ort != NULL) {
    /* The model's outputs: their batch dimension is the inputs'. */
    for (int j = 0; j < e->n; ++j) {
      if (e->ios[j].mode != NUSA_TRT_IO_OUTPUT) continue;
      c->shapes[j] = e->ios[j].shape;
      if (c->shapes[j].nb_dims > 0 && c->shapes[j].d[0] < 0 && shape->nb_dims > 0) c->shapes[j].d[0] = shape->d[0];
    }
    return NUSA_TRT_OK;
  }
  /* Output i has input i's shape (see the plan format). */
  int k = 0;
  for (int j = 0; j < e->n; ++j) {
    if (e->ios[j].mode != NUSA_TRT_IO_INPUT) continue;
    if (j == i) break;
    ++k;
  }
  for (int j = 0, m = 0; j < e->n; ++j) {
    if (e->ios[j].mode != NUSA_TRT_IO_OUTPUT) continue;
    if (m++ == k) c->shapes[j] = *shape;
  }
  return NUSA_TRT_OK;
}

int32_t nusa_trt_context_tensor_shape(const nusa_trt_context *c, const char *name, nusa_trt_dims *out,
                                      nusa_trt_error *err) {
  if (c == NULL || name == NULL || out == NULL) return fail(err, NUSA_TRT_ERR_INVALID_ARGUMENT, "%s", "nusa_trt_context_tensor_shape: null argument");
  int i = find_io(c->engine, name);
  if (i < 0) return fail(err, NUSA_TRT_ERR_TENSORRT, "no shape for tensor %s", name);
  *out = c->shapes[i];
  return NUSA_TRT_OK;
}

int32_t nusa_trt_context_set_tensor_address(nusa_trt_context *c, const char *name, void *address,
                                            nusa_trt_error *err) {
  if (c == NULL || name == NULL) return fail(err, NUSA_TRT_ERR_INVALID_ARGUMENT, "%s", "nusa_trt_context_set_tensor_address: null argument");
  int i = find_io(c->engine, name);
  if (i < 0) return fail(err, NUSA_TRT_ERR_TENSORRT, "setTensorAddress(%s) failed: no such tensor", name);
  c->addresses[i] = address;
  return NUSA_TRT_OK;
}

static size_t dtype_size(int32_t dt) {
  switch (dt) {
  case NUSA_TRT_FLOAT: case NUSA_TRT_INT32: return 4;
  case NUSA_TRT_HALF: case NUSA_TRT_BF16: return 2;
  case NUSA_TRT_INT64: return 8;
  default: return 1;
  }
}

int32_t nusa_trt_context_enqueue(nusa_trt_context *c, nusa_cuda_stream *stream, nusa_trt_error *err) {
  if (c == NULL) return fail(err, NUSA_TRT_ERR_INVALID_ARGUMENT, "%s", "nusa_trt_context_enqueue: null argument");
  (void)stream;
  const nusa_trt_engine *e = c->engine;
  for (int i = 0; i < e->n; ++i) {
    if (c->addresses[i] == NULL) return fail(err, NUSA_TRT_ERR_TENSORRT, "enqueueV3 failed: address of tensor %s not set", e->ios[i].name);
    for (int d = 0; d < c->shapes[i].nb_dims; ++d)
      if (c->shapes[i].d[d] < 0) return fail(err, NUSA_TRT_ERR_TENSORRT, "enqueueV3 failed: shape of tensor %s not set", e->ios[i].name);
  }
  if (e->ort != NULL) {
    ob_tensor in[MAX_IO], outs[MAX_IO];
    int ni = 0, no = 0;
    for (int i = 0; i < e->n; ++i) {
      ob_tensor t = {e->ios[i].name, e->ios[i].dtype, &c->shapes[i], c->addresses[i]};
      if (e->ios[i].mode == NUSA_TRT_IO_INPUT) in[ni++] = t;
      else outs[no++] = t;
    }
    char msg[NUSA_TRT_ERROR_LEN];
    if (ob_run(e->ort, in, ni, outs, no, msg, sizeof msg) != 0)
      return fail(err, NUSA_TRT_ERR_TENSORRT, "enqueueV3 failed: test double: %s", msg);
    return NUSA_TRT_OK;
  }
  int in_idx[MAX_IO], out_idx[MAX_IO], ni = 0, no = 0;
  for (int i = 0; i < e->n; ++i) {
    if (e->ios[i].mode == NUSA_TRT_IO_INPUT) in_idx[ni++] = i;
    else out_idx[no++] = i;
  }
  for (int k = 0; k < no && k < ni; ++k) {
    int i = in_idx[k], o = out_idx[k];
    size_t count = 1;
    for (int d = 0; d < c->shapes[i].nb_dims; ++d) count *= (size_t)c->shapes[i].d[d];
    if (e->ios[i].dtype == NUSA_TRT_FLOAT && e->ios[o].dtype == NUSA_TRT_FLOAT) {
      const float *x = c->addresses[i];
      float *y = c->addresses[o];
      for (size_t n = 0; n < count; ++n) y[n] = 2.0f * x[n] + 1.0f;
    } else {
      memcpy(c->addresses[o], c->addresses[i], count * dtype_size(e->ios[i].dtype));
    }
  }
  return NUSA_TRT_OK;
}

static const char *dtype_name(int32_t dt) {
  static const char *names[] = {"FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "FP8", "BF16", "INT64"};
  return dt >= 0 && dt < (int32_t)(sizeof names / sizeof names[0]) ? names[dt] : "?";
}

static nusa_trt_host_memory *memory_from(const char *header, size_t header_len, const void *tail, size_t tail_len) {
  nusa_trt_host_memory *m = malloc(sizeof *m + header_len + tail_len);
  if (m == NULL) return NULL;
  m->len = header_len + tail_len;
  memcpy(m->data, header, header_len);
  if (tail_len > 0) memcpy(m->data + header_len, tail, tail_len);
  return m;
}

/* Reads the whole file; NULL with errno-free message on failure. */
static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) return NULL;
  char *buf = NULL;
  size_t cap = 0, n = 0;
  for (;;) {
    if (n == cap) {
      cap = cap == 0 ? 65536 : cap * 2;
      char *grown = realloc(buf, cap);
      if (grown == NULL) break;
      buf = grown;
    }
    size_t r = fread(buf + n, 1, cap - n, f);
    n += r;
    if (r == 0) {
      fclose(f);
      *len = n;
      return buf;
    }
  }
  fclose(f);
  free(buf);
  return NULL;
}

int32_t nusa_trt_build_from_onnx(nusa_trt_lib *lib, const nusa_trt_build_options *options,
                                 nusa_trt_build_result *out, nusa_trt_error *err) {
  if (lib == NULL || options == NULL || options->onnx_path == NULL || out == NULL)
    return fail(err, NUSA_TRT_ERR_INVALID_ARGUMENT, "%s", "nusa_trt_build_from_onnx: null argument");
  if (lib->entry.create_infer_builder == NULL)
    return fail(err, NUSA_TRT_ERR_UNAVAILABLE, "%s", "entry point create_infer_builder was not loaded");
  if (lib->entry.create_onnx_parser == NULL)
    return fail(err, NUSA_TRT_ERR_UNAVAILABLE, "%s", "entry point create_onnx_parser was not loaded");
  int64_t pmin = options->batch_min, popt = options->batch_opt, pmax = options->batch_max;
  if (options->profile_len > 0) {
    pmin = options->profile[0].min.d[0];
    popt = options->profile[0].opt.d[0];
    pmax = options->profile[0].max.d[0];
  }
  if (!(pmin >= 1 && pmin <= popt && popt <= pmax))
    return fail(err, NUSA_TRT_ERR_INVALID_ARGUMENT, "%s",
                "nusa_trt_build_from_onnx: batch range must satisfy 1 <= min <= opt <= max");
  char msg[NUSA_TRT_ERROR_LEN];
  snprintf(msg, sizeof msg, "test double: building a plan from %s", options->onnx_path);
  log_msg(lib, NUSA_TRT_SEVERITY_INFO, msg);
  size_t onnx_len = 0;
  char *onnx = read_file(options->onnx_path, &onnx_len);
  if (onnx == NULL) return fail(err, NUSA_TRT_ERR_TENSORRT, "parsing %s: cannot read file", options->onnx_path);
  ob_session *session = ob_open(onnx, onnx_len, msg, sizeof msg);
  if (session == NULL) {
    free(onnx);
    return fail(err, NUSA_TRT_ERR_TENSORRT, "parsing the ONNX model: %s", msg);
  }
  ob_io ins[MAX_IO], outs[MAX_IO];
  int ni = ob_io_list(session, 0, ins, MAX_IO, msg, sizeof msg);
  int no = ni < 0 ? -1 : ob_io_list(session, 1, outs, MAX_IO, msg, sizeof msg);
  ob_close(session);
  if (ni < 0 || no < 0 || ni + no > MAX_IO) {
    free(onnx);
    return fail(err, NUSA_TRT_ERR_TENSORRT, "parsing the ONNX model: %s", ni + no > MAX_IO ? "too many tensors" : msg);
  }
  char header[8192];
  int at = snprintf(header, sizeof header, "NUSAPLAN2\n");
  for (int k = 0; k < ni + no; ++k) {
    const ob_io *t = k < ni ? &ins[k] : &outs[k - ni];
    at += snprintf(header + at, sizeof header - at, "%s %s %s", k < ni ? "input" : "output", t->name, dtype_name(t->dtype));
    for (int d = 0; d < t->shape.nb_dims; ++d) at += snprintf(header + at, sizeof header - at, " %lld", (long long)t->shape.d[d]);
    at += snprintf(header + at, sizeof header - at, "\n");
  }
  at += snprintf(header + at, sizeof header - at, "profile %lld %lld %lld\nonnx %zu\n", (long long)pmin,
                 (long long)popt, (long long)pmax, onnx_len);
  /* Building takes time on a real device: optionally here too. */
  const char *ms = getenv("NUSA_TRT_DOUBLE_BUILD_MS");
  if (ms != NULL) {
    long v = strtol(ms, NULL, 10);
    struct timespec ts = {v / 1000, (v % 1000) * 1000000L};
    nanosleep(&ts, NULL);
  }
  /* The timing cache counts the builds that fed it; an unreadable one is
   * ignored with a warning, as TensorRT does. */
  long builds = 0;
  if (options->timing_cache != NULL && options->timing_cache_len > 0) {
    char tc[64] = {0};
    memcpy(tc, options->timing_cache, options->timing_cache_len < sizeof tc - 1 ? options->timing_cache_len : sizeof tc - 1);
    if (sscanf(tc, "NUSATIMING %ld", &builds) != 1) {
      builds = 0;
      log_msg(lib, NUSA_TRT_SEVERITY_WARNING, "test double: timing cache unreadable, starting empty");
    } else {
      snprintf(msg, sizeof msg, "test double: timing cache reused from %ld earlier builds", builds);
      log_msg(lib, NUSA_TRT_SEVERITY_INFO, msg);
    }
  }
  char tc[64];
  int tc_len = snprintf(tc, sizeof tc, "NUSATIMING %ld\n", builds + 1);
  nusa_trt_host_memory *plan = memory_from(header, (size_t)at, onnx, onnx_len);
  nusa_trt_host_memory *timing = memory_from(tc, (size_t)tc_len, NULL, 0);
  free(onnx);
  if (plan == NULL || timing == NULL) {
    free(plan);
    free(timing);
    return fail(err, NUSA_TRT_ERR_OUT_OF_MEMORY, "%s", "out of host memory");
  }
  out->plan = plan;
  out->timing_cache = timing;
  return NUSA_TRT_OK;
}

int32_t nusa_trt_host_memory_data(const nusa_trt_host_memory *m, const void **data, size_t *len, nusa_trt_error *err) {
  if (m == NULL || data == NULL || len == NULL) return fail(err, NUSA_TRT_ERR_INVALID_ARGUMENT, "%s", "nusa_trt_host_memory_data: null argument");
  *data = m->data;
  *len = m->len;
  return NUSA_TRT_OK;
}

void nusa_trt_host_memory_destroy(nusa_trt_host_memory *m) { free(m); }

static int32_t cuda_fail(const nusa_trt_lib *lib, nusa_trt_error *err, const char *what, int code) {
  if (err != NULL) {
    err->status = NUSA_TRT_ERR_CUDA;
    snprintf(err->message, sizeof err->message, "%s failed: %s (%d)", what, lib->entry.cuda_get_error_string(code), code);
  }
  return NUSA_TRT_ERR_CUDA;
}

int32_t nusa_cuda_malloc(const nusa_trt_lib *lib, size_t size, void **out, nusa_trt_error *err) {
  if (lib == NULL || out == NULL) return fail(err, NUSA_TRT_ERR_INVALID_ARGUMENT, "%s", "nusa_cuda_malloc: null argument");
  int rc = lib->entry.cuda_malloc(out, size);
  return rc == 0 ? NUSA_TRT_OK : cuda_fail(lib, err, "cudaMalloc", rc);
}
int32_t nusa_cuda_free(const nusa_trt_lib *lib, void *ptr, nusa_trt_error *err) {
  if (lib == NULL) return fail(err, NUSA_TRT_ERR_INVALID_ARGUMENT, "%s", "nusa_cuda_free: null argument");
  int rc = lib->entry.cuda_free(ptr);
  return rc == 0 ? NUSA_TRT_OK : cuda_fail(lib, err, "cudaFree", rc);
}
int32_t nusa_cuda_memcpy_h2d_async(const nusa_trt_lib *lib, void *dst, const void *src, size_t len,
                                   nusa_cuda_stream *stream, nusa_trt_error *err) {
  if (lib == NULL) return fail(err, NUSA_TRT_ERR_INVALID_ARGUMENT, "%s", "nusa_cuda_memcpy_h2d_async: null argument");
  int rc = lib->entry.cuda_memcpy_async(dst, src, len, 1, stream);
  return rc == 0 ? NUSA_TRT_OK : cuda_fail(lib, err, "cudaMemcpyAsync(H2D)", rc);
}
int32_t nusa_cuda_memcpy_d2h_async(const nusa_trt_lib *lib, void *dst, const void *src, size_t len,
                                   nusa_cuda_stream *stream, nusa_trt_error *err) {
  if (lib == NULL) return fail(err, NUSA_TRT_ERR_INVALID_ARGUMENT, "%s", "nusa_cuda_memcpy_d2h_async: null argument");
  int rc = lib->entry.cuda_memcpy_async(dst, src, len, 2, stream);
  return rc == 0 ? NUSA_TRT_OK : cuda_fail(lib, err, "cudaMemcpyAsync(D2H)", rc);
}
int32_t nusa_cuda_stream_create(const nusa_trt_lib *lib, nusa_cuda_stream **out, nusa_trt_error *err) {
  if (lib == NULL || out == NULL) return fail(err, NUSA_TRT_ERR_INVALID_ARGUMENT, "%s", "nusa_cuda_stream_create: null argument");
  void *s = NULL;
  int rc = lib->entry.cuda_stream_create(&s);
  if (rc != 0) return cuda_fail(lib, err, "cudaStreamCreate", rc);
  *out = s;
  return NUSA_TRT_OK;
}
int32_t nusa_cuda_stream_synchronize(const nusa_trt_lib *lib, nusa_cuda_stream *stream, nusa_trt_error *err) {
  if (lib == NULL) return fail(err, NUSA_TRT_ERR_INVALID_ARGUMENT, "%s", "nusa_cuda_stream_synchronize: null argument");
  int rc = lib->entry.cuda_stream_synchronize(stream);
  return rc == 0 ? NUSA_TRT_OK : cuda_fail(lib, err, "cudaStreamSynchronize", rc);
}
int32_t nusa_cuda_stream_destroy(const nusa_trt_lib *lib, nusa_cuda_stream *stream, nusa_trt_error *err) {
  if (lib == NULL) return fail(err, NUSA_TRT_ERR_INVALID_ARGUMENT, "%s", "nusa_cuda_stream_destroy: null argument");
  int rc = lib->entry.cuda_stream_destroy(stream);
  return rc == 0 ? NUSA_TRT_OK : cuda_fail(lib, err, "cudaStreamDestroy", rc);
}
int32_t nusa_cuda_compute_capability(const nusa_trt_lib *lib, int32_t device, int32_t *major, int32_t *minor,
                                     nusa_trt_error *err) {
  if (lib == NULL || major == NULL || minor == NULL) return fail(err, NUSA_TRT_ERR_INVALID_ARGUMENT, "%s", "nusa_cuda_compute_capability: null argument");
  int ma = 0, mi = 0;
  int rc = lib->entry.cuda_device_get_attribute(&ma, 75, device);
  if (rc != 0) return cuda_fail(lib, err, "cudaDeviceGetAttribute(major)", rc);
  rc = lib->entry.cuda_device_get_attribute(&mi, 76, device);
  if (rc != 0) return cuda_fail(lib, err, "cudaDeviceGetAttribute(minor)", rc);
  *major = ma;
  *minor = mi;
  return NUSA_TRT_OK;
}
int32_t nusa_cuda_device_name(const nusa_trt_lib *lib, int32_t device, char *out, size_t out_len,
                              nusa_trt_error *err) {
  if (lib == NULL || out == NULL || out_len == 0)
    return fail(err, NUSA_TRT_ERR_INVALID_ARGUMENT, "%s", "nusa_cuda_device_name: null argument");
  if (lib->entry.cuda_get_device_properties == NULL)
    return fail(err, NUSA_TRT_ERR_UNAVAILABLE, "%s", "entry point cuda_get_device_properties was not loaded");
  char *prop = calloc(1, 8192);
  if (prop == NULL) return fail(err, NUSA_TRT_ERR_OUT_OF_MEMORY, "%s", "out of host memory");
  int rc = lib->entry.cuda_get_device_properties(prop, device);
  if (rc == 0) snprintf(out, out_len, "%.*s", NUSA_TRT_DEVICE_NAME_LEN - 1, prop);
  free(prop);
  return rc == 0 ? NUSA_TRT_OK : cuda_fail(lib, err, "cudaGetDeviceProperties", rc);
}
const char *nusa_cuda_error_string(const nusa_trt_lib *lib, int32_t code) {
  if (lib == NULL) return "unknown CUDA error";
  return lib->entry.cuda_get_error_string(code);
}
