/*
 * The test double's "GPU": ONNX Runtime's C API, opened with dlopen, runs the
 * ONNX model a NUSAPLAN2 plan carries, so the double answers with the same
 * numbers TensorRT would (within FP16 tolerance) and the tests can compare
 * with golden outputs.
 */
#ifndef NUSA_TRT_DOUBLE_ORT_BACKEND_H
#define NUSA_TRT_DOUBLE_ORT_BACKEND_H

#include "nusa_trt.h"

#define OB_NAME_LEN 64
#define OB_MAX_IO 16

typedef struct ob_session ob_session;

typedef struct ob_io {
  char name[OB_NAME_LEN];
  /* nusa_trt_data_type */
  int32_t dtype;
  /* -1 for a symbolic dimension */
  nusa_trt_dims shape;
} ob_io;

/* Creates a session over the ONNX bytes (copied by ONNX Runtime). NULL on
 * failure, with the reason in msg. ONNX Runtime is found through
 * NUSA_TRT_DOUBLE_ONNXRUNTIME, then ORT_DYLIB_PATH, then an already loaded
 * libonnxruntime.so.1. */
ob_session *ob_open(const void *onnx, size_t len, char *msg, size_t msg_len);
void ob_close(ob_session *s);

/* The model's inputs (outputs != 0: outputs); returns the count or -1. */
int ob_io_list(const ob_session *s, int outputs, ob_io *out, int max, char *msg, size_t msg_len);

/* One run over caller-owned buffers, outputs written in place. */
typedef struct ob_tensor {
  const char *name;
  int32_t dtype;
  const nusa_trt_dims *shape;
  void *data;
} ob_tensor;
int ob_run(ob_session *s, const ob_tensor *inputs, int n_in, const ob_tensor *outputs, int n_out, char *msg,
           size_t msg_len);

size_t ob_dtype_size(int32_t dtype);

#endif
