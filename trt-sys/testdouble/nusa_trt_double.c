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
 * Plan format (text):
 *   NUSAPLAN1
 *   input <name> <FLOAT|HALF|INT8|INT32|BOOL|UINT8|INT64> <d0> <d1> ...
 *   output <name> <dtype> <d0> ...
 *   profile <min batch> <opt batch> <max batch>
 * Output i is computed from input i: FLOAT elements as y = 2x + 1, other
 * types copied byte for byte; its shape is input i's.
 *
 * What it does not do: run a real ONNX model (that would need ONNX Runtime's
 * headers, which no registry package here ships).
 */
/* strtok_r */
#define _POSIX_C_SOURCE 200809L

#include "nusa_trt.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int32_t nusa_trt_engine_deserialize(nusa_trt_runtime *rt, const void *plan, size_t plan_len,
                                    nusa_trt_engine **out, nusa_trt_error *err) {
  if (rt == NULL || plan == NULL || out == NULL)
    return fail(err, NUSA_TRT_ERR_INVALID_ARGUMENT, "%s", "nusa_trt_engine_deserialize: null argument");
  static const char magic[] = "NUSAPLAN1\n";
  if (plan_len < sizeof magic - 1 || memcmp(plan, magic, sizeof magic - 1) != 0) {
    log_msg(rt->lib, NUSA_TRT_SEVERITY_ERROR, "test double: plan has no NUSAPLAN1 header");
    return fail(err, NUSA_TRT_ERR_TENSORRT, "%s", "deserializeCudaEngine failed: test double: plan has no NUSAPLAN1 header");
  }
  nusa_trt_engine *e = calloc(1, sizeof *e);
  char *text = malloc(plan_len + 1);
  if (e == NULL || text == NULL) {
    free(e);
    free(text);
    return fail(err, NUSA_TRT_ERR_OUT_OF_MEMORY, "%s", "out of host memory");
  }
  memcpy(text, plan, plan_len);
  text[plan_len] = '\0';
  e->profile[0] = 1;
  e->profile[1] = 1;
  e->profile[2] = 1;
  char *save = NULL;
  int bad = 0;
  strtok_r(text, "\n", &save); /* magic */
  for (char *line; (line = strtok_r(NULL, "\n", &save)) != NULL;) bad |= parse_line(line, e);
  free(text);
  if (bad) {
    free(e);
    return fail(err, NUSA_TRT_ERR_TENSORRT, "%s", "deserializeCudaEngine failed: test double: bad plan line");
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

int32_t nusa_trt_build_from_onnx(nusa_trt_lib *lib, const nusa_trt_build_options *options,
                                 nusa_trt_host_memory **out, nusa_trt_error *err) {
  if (lib == NULL || options == NULL || options->onnx_path == NULL || out == NULL)
    return fail(err, NUSA_TRT_ERR_INVALID_ARGUMENT, "%s", "nusa_trt_build_from_onnx: null argument");
  if (lib->entry.create_infer_builder == NULL)
    return fail(err, NUSA_TRT_ERR_UNAVAILABLE, "%s", "entry point create_infer_builder was not loaded");
  if (lib->entry.create_onnx_parser == NULL)
    return fail(err, NUSA_TRT_ERR_UNAVAILABLE, "%s", "entry point create_onnx_parser was not loaded");
  FILE *f = fopen(options->onnx_path, "rb");
  if (f == NULL) return fail(err, NUSA_TRT_ERR_TENSORRT, "parsing %s: cannot open file", options->onnx_path);
  fclose(f);
  /* The double's "build": one FLOAT input per profile entry, echoed to an
   * output named <input>_out, with the profile's batch range. */
  char buf[4096];
  int at = snprintf(buf, sizeof buf, "NUSAPLAN1\n");
  int64_t pmin = 1, popt = 1, pmax = 1;
  for (size_t p = 0; p < options->profile_len; ++p) {
    const nusa_trt_profile_dims *pd = &options->profile[p];
    pmin = pd->min.d[0];
    popt = pd->opt.d[0];
    pmax = pd->max.d[0];
    for (int pass = 0; pass < 2; ++pass) {
      at += snprintf(buf + at, sizeof buf - at, "%s %s%s FLOAT -1", pass == 0 ? "input" : "output", pd->input_name,
                     pass == 0 ? "" : "_out");
      for (int d = 1; d < pd->max.nb_dims; ++d) at += snprintf(buf + at, sizeof buf - at, " %lld", (long long)pd->max.d[d]);
      at += snprintf(buf + at, sizeof buf - at, "\n");
    }
  }
  at += snprintf(buf + at, sizeof buf - at, "profile %lld %lld %lld\n", (long long)pmin, (long long)popt, (long long)pmax);
  nusa_trt_host_memory *m = malloc(sizeof *m + (size_t)at);
  if (m == NULL) return fail(err, NUSA_TRT_ERR_OUT_OF_MEMORY, "%s", "out of host memory");
  m->len = (size_t)at;
  memcpy(m->data, buf, (size_t)at);
  *out = m;
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
const char *nusa_cuda_error_string(const nusa_trt_lib *lib, int32_t code) {
  if (lib == NULL) return "unknown CUDA error";
  return lib->entry.cuda_get_error_string(code);
}
