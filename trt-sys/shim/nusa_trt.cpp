// The shim: implements nusa_trt.h by forwarding into TensorRT 10, and does
// nothing else. TensorRT's C++ methods are inline wrappers that call through
// vtables, so only the C entry points (createInferRuntime_INTERNAL, ...) would
// need libnvinfer; those arrive as function pointers in nusa_trt_open, so
// this file links no TensorRT or CUDA symbol (trt-sys checks that with nm).
//
// Every exported function is wrapped in `guard`, which turns any C++
// exception into NUSA_TRT_ERR_EXCEPTION: an exception must never unwind into
// Rust.

#include "nusa_trt.h"

#include <NvInfer.h>
#include <NvOnnxParser.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <string>

using namespace nvinfer1;

namespace {

int32_t fail(nusa_trt_error *err, int32_t status, const std::string &msg) {
  if (err != nullptr) {
    err->status = status;
    std::snprintf(err->message, sizeof err->message, "%s", msg.c_str());
  }
  return status;
}

template <typename F> int32_t guard(nusa_trt_error *err, F &&f) noexcept {
  try {
    return f();
  } catch (const std::bad_alloc &) {
    return fail(err, NUSA_TRT_ERR_OUT_OF_MEMORY, "out of host memory");
  } catch (const std::exception &e) {
    return fail(err, NUSA_TRT_ERR_EXCEPTION, std::string("C++ exception: ") + e.what());
  } catch (...) {
    return fail(err, NUSA_TRT_ERR_EXCEPTION, "unknown C++ exception");
  }
}

// Forwards TensorRT's messages to the caller and remembers the last error, so
// a null return from TensorRT can be reported with its reason.
class Logger final : public ILogger {
public:
  Logger(nusa_trt_log_fn fn, void *user) : fn_(fn), user_(user) {}
  void log(Severity severity, AsciiChar const *msg) noexcept override {
    if (severity <= Severity::kERROR) {
      std::lock_guard<std::mutex> lock(mu_);
      last_error_ = msg != nullptr ? msg : "";
    }
    if (fn_ != nullptr) {
      fn_(user_, static_cast<int32_t>(severity), msg != nullptr ? msg : "");
    }
  }
  std::string take_last_error() {
    std::lock_guard<std::mutex> lock(mu_);
    std::string s;
    s.swap(last_error_);
    return s.empty() ? std::string("no message from TensorRT") : s;
  }

private:
  nusa_trt_log_fn fn_;
  void *user_;
  std::mutex mu_;
  std::string last_error_;
};

Dims to_dims(const nusa_trt_dims &d) {
  Dims out{};
  out.nbDims = d.nb_dims;
  for (int i = 0; i < NUSA_TRT_MAX_DIMS; ++i) out.d[i] = d.d[i];
  return out;
}

void from_dims(const Dims &d, nusa_trt_dims *out) {
  std::memset(out, 0, sizeof *out);
  out->nb_dims = d.nbDims;
  for (int i = 0; i < NUSA_TRT_MAX_DIMS && i < d.nbDims; ++i) out->d[i] = d.d[i];
}

static_assert(sizeof(Dims::d) / sizeof(Dims::d[0]) == NUSA_TRT_MAX_DIMS, "Dims64 has 8 dims");
static_assert(static_cast<int>(DataType::kINT64) == NUSA_TRT_INT64, "DataType values moved");
static_assert(static_cast<int>(TensorIOMode::kOUTPUT) == NUSA_TRT_IO_OUTPUT, "TensorIOMode moved");

constexpr int kCudaMemcpyHostToDevice = 1;
constexpr int kCudaMemcpyDeviceToHost = 2;
constexpr int kCudaDevAttrComputeCapabilityMajor = 75;
constexpr int kCudaDevAttrComputeCapabilityMinor = 76;

} // namespace

struct nusa_trt_lib {
  nusa_trt_entry_points entry;
  Logger logger;
};
struct nusa_trt_runtime {
  nusa_trt_lib *lib;
  std::unique_ptr<IRuntime> runtime;
};
struct nusa_trt_engine {
  nusa_trt_lib *lib;
  std::unique_ptr<ICudaEngine> engine;
};
struct nusa_trt_context {
  nusa_trt_lib *lib;
  std::unique_ptr<IExecutionContext> context;
};
struct nusa_trt_host_memory {
  std::unique_ptr<IHostMemory> memory;
};

namespace {

int32_t cuda_fail(const nusa_trt_lib *lib, nusa_trt_error *err, const char *what, int code) {
  const char *s = lib->entry.cuda_get_error_string != nullptr ? lib->entry.cuda_get_error_string(code)
                                                              : nullptr;
  return fail(err, NUSA_TRT_ERR_CUDA,
              std::string(what) + " failed: " + (s != nullptr ? s : "unknown CUDA error") + " (" +
                  std::to_string(code) + ")");
}

#define NUSA_REQUIRE(cond, msg)                                                                    \
  do {                                                                                             \
    if (!(cond)) return fail(err, NUSA_TRT_ERR_INVALID_ARGUMENT, msg);                             \
  } while (0)
#define NUSA_REQUIRE_ENTRY(lib, name)                                                              \
  do {                                                                                             \
    if ((lib)->entry.name == nullptr)                                                              \
      return fail(err, NUSA_TRT_ERR_UNAVAILABLE, "entry point " #name " was not loaded");          \
  } while (0)

} // namespace

extern "C" {

int32_t nusa_trt_abi_version(void) { return NUSA_TRT_ABI_VERSION; }

int32_t nusa_trt_open(const nusa_trt_entry_points *entry, nusa_trt_log_fn log, void *log_user,
                      nusa_trt_lib **out, nusa_trt_error *err) {
  return guard(err, [&] {
    NUSA_REQUIRE(entry != nullptr && out != nullptr, "nusa_trt_open: null argument");
    NUSA_REQUIRE(entry->create_infer_runtime != nullptr && entry->get_infer_lib_version != nullptr,
                 "nusa_trt_open: TensorRT runtime entry points missing");
    NUSA_REQUIRE(entry->cuda_malloc != nullptr && entry->cuda_free != nullptr &&
                     entry->cuda_memcpy_async != nullptr && entry->cuda_stream_create != nullptr &&
                     entry->cuda_stream_synchronize != nullptr && entry->cuda_stream_destroy != nullptr &&
                     entry->cuda_device_get_attribute != nullptr &&
                     entry->cuda_runtime_get_version != nullptr &&
                     entry->cuda_get_error_string != nullptr,
                 "nusa_trt_open: CUDA runtime entry points missing");
    // A library of another major has other vtables: refuse it here rather
    // than crash in the first virtual call.
    int32_t v = entry->get_infer_lib_version();
    if (v / 10000 != NV_TENSORRT_MAJOR) {
      return fail(err, NUSA_TRT_ERR_UNAVAILABLE,
                  "TensorRT library version " + std::to_string(v) + " is not major " +
                      std::to_string(NV_TENSORRT_MAJOR) + " as the shim was compiled for");
    }
    *out = new nusa_trt_lib{*entry, Logger(log, log_user)};
    return static_cast<int32_t>(NUSA_TRT_OK);
  });
}

void nusa_trt_close(nusa_trt_lib *lib) { delete lib; }

int32_t nusa_trt_version(const nusa_trt_lib *lib, nusa_trt_version_info *out, nusa_trt_error *err) {
  return guard(err, [&] {
    NUSA_REQUIRE(lib != nullptr && out != nullptr, "nusa_trt_version: null argument");
    out->abi = NUSA_TRT_ABI_VERSION;
    out->tensorrt_compiled = NV_TENSORRT_VERSION;
    out->tensorrt_library = lib->entry.get_infer_lib_version();
    out->onnx_parser =
        lib->entry.get_onnx_parser_version != nullptr ? lib->entry.get_onnx_parser_version() : 0;
    int cuda = 0;
    int rc = lib->entry.cuda_runtime_get_version(&cuda);
    if (rc != 0) return cuda_fail(lib, err, "cudaRuntimeGetVersion", rc);
    out->cuda_runtime = cuda;
    return static_cast<int32_t>(NUSA_TRT_OK);
  });
}

int32_t nusa_trt_runtime_create(nusa_trt_lib *lib, nusa_trt_runtime **out, nusa_trt_error *err) {
  return guard(err, [&] {
    NUSA_REQUIRE(lib != nullptr && out != nullptr, "nusa_trt_runtime_create: null argument");
    auto *rt = static_cast<IRuntime *>(
        lib->entry.create_infer_runtime(static_cast<ILogger *>(&lib->logger), NV_TENSORRT_VERSION));
    if (rt == nullptr) {
      return fail(err, NUSA_TRT_ERR_TENSORRT,
                  "createInferRuntime failed: " + lib->logger.take_last_error());
    }
    *out = new nusa_trt_runtime{lib, std::unique_ptr<IRuntime>(rt)};
    return static_cast<int32_t>(NUSA_TRT_OK);
  });
}

void nusa_trt_runtime_destroy(nusa_trt_runtime *runtime) { delete runtime; }

int32_t nusa_trt_engine_deserialize(nusa_trt_runtime *runtime, const void *plan, size_t plan_len,
                                    nusa_trt_engine **out, nusa_trt_error *err) {
  return guard(err, [&] {
    NUSA_REQUIRE(runtime != nullptr && plan != nullptr && out != nullptr,
                 "nusa_trt_engine_deserialize: null argument");
    ICudaEngine *e = runtime->runtime->deserializeCudaEngine(plan, plan_len);
    if (e == nullptr) {
      return fail(err, NUSA_TRT_ERR_TENSORRT,
                  "deserializeCudaEngine failed: " + runtime->lib->logger.take_last_error());
    }
    *out = new nusa_trt_engine{runtime->lib, std::unique_ptr<ICudaEngine>(e)};
    return static_cast<int32_t>(NUSA_TRT_OK);
  });
}

void nusa_trt_engine_destroy(nusa_trt_engine *engine) { delete engine; }

int32_t nusa_trt_engine_io_count(const nusa_trt_engine *engine, int32_t *out, nusa_trt_error *err) {
  return guard(err, [&] {
    NUSA_REQUIRE(engine != nullptr && out != nullptr, "nusa_trt_engine_io_count: null argument");
    *out = engine->engine->getNbIOTensors();
    return static_cast<int32_t>(NUSA_TRT_OK);
  });
}

int32_t nusa_trt_engine_io_tensor(const nusa_trt_engine *engine, int32_t index,
                                  nusa_trt_tensor_info *out, nusa_trt_error *err) {
  return guard(err, [&] {
    NUSA_REQUIRE(engine != nullptr && out != nullptr, "nusa_trt_engine_io_tensor: null argument");
    const ICudaEngine &e = *engine->engine;
    NUSA_REQUIRE(index >= 0 && index < e.getNbIOTensors(), "nusa_trt_engine_io_tensor: index out of range");
    const char *name = e.getIOTensorName(index);
    if (name == nullptr) return fail(err, NUSA_TRT_ERR_TENSORRT, "getIOTensorName returned null");
    out->name = name;
    out->mode = static_cast<int32_t>(e.getTensorIOMode(name));
    out->data_type = static_cast<int32_t>(e.getTensorDataType(name));
    from_dims(e.getTensorShape(name), &out->shape);
    return static_cast<int32_t>(NUSA_TRT_OK);
  });
}

int32_t nusa_trt_engine_profile_shape(const nusa_trt_engine *engine, const char *input_name,
                                      int32_t profile, int32_t selector, nusa_trt_dims *out,
                                      nusa_trt_error *err) {
  return guard(err, [&] {
    NUSA_REQUIRE(engine != nullptr && input_name != nullptr && out != nullptr,
                 "nusa_trt_engine_profile_shape: null argument");
    NUSA_REQUIRE(selector >= NUSA_TRT_PROFILE_MIN && selector <= NUSA_TRT_PROFILE_MAX,
                 "nusa_trt_engine_profile_shape: bad selector");
    Dims d = engine->engine->getProfileShape(input_name, profile,
                                             static_cast<OptProfileSelector>(selector));
    if (d.nbDims < 0) {
      return fail(err, NUSA_TRT_ERR_TENSORRT,
                  std::string("no profile shape for input ") + input_name);
    }
    from_dims(d, out);
    return static_cast<int32_t>(NUSA_TRT_OK);
  });
}

int32_t nusa_trt_context_create(nusa_trt_engine *engine, nusa_trt_context **out, nusa_trt_error *err) {
  return guard(err, [&] {
    NUSA_REQUIRE(engine != nullptr && out != nullptr, "nusa_trt_context_create: null argument");
    IExecutionContext *c = engine->engine->createExecutionContext();
    if (c == nullptr) {
      return fail(err, NUSA_TRT_ERR_TENSORRT,
                  "createExecutionContext failed: " + engine->lib->logger.take_last_error());
    }
    *out = new nusa_trt_context{engine->lib, std::unique_ptr<IExecutionContext>(c)};
    return static_cast<int32_t>(NUSA_TRT_OK);
  });
}

void nusa_trt_context_destroy(nusa_trt_context *context) { delete context; }

int32_t nusa_trt_context_set_input_shape(nusa_trt_context *context, const char *name,
                                         const nusa_trt_dims *shape, nusa_trt_error *err) {
  return guard(err, [&] {
    NUSA_REQUIRE(context != nullptr && name != nullptr && shape != nullptr,
                 "nusa_trt_context_set_input_shape: null argument");
    NUSA_REQUIRE(shape->nb_dims >= 0 && shape->nb_dims <= NUSA_TRT_MAX_DIMS,
                 "nusa_trt_context_set_input_shape: too many dimensions");
    if (!context->context->setInputShape(name, to_dims(*shape))) {
      return fail(err, NUSA_TRT_ERR_TENSORRT,
                  std::string("setInputShape(") + name + ") failed: " +
                      context->lib->logger.take_last_error());
    }
    return static_cast<int32_t>(NUSA_TRT_OK);
  });
}

int32_t nusa_trt_context_tensor_shape(const nusa_trt_context *context, const char *name,
                                      nusa_trt_dims *out, nusa_trt_error *err) {
  return guard(err, [&] {
    NUSA_REQUIRE(context != nullptr && name != nullptr && out != nullptr,
                 "nusa_trt_context_tensor_shape: null argument");
    Dims d = context->context->getTensorShape(name);
    if (d.nbDims < 0) {
      return fail(err, NUSA_TRT_ERR_TENSORRT, std::string("no shape for tensor ") + name);
    }
    from_dims(d, out);
    return static_cast<int32_t>(NUSA_TRT_OK);
  });
}

int32_t nusa_trt_context_set_tensor_address(nusa_trt_context *context, const char *name,
                                            void *address, nusa_trt_error *err) {
  return guard(err, [&] {
    NUSA_REQUIRE(context != nullptr && name != nullptr, "nusa_trt_context_set_tensor_address: null argument");
    if (!context->context->setTensorAddress(name, address)) {
      return fail(err, NUSA_TRT_ERR_TENSORRT,
                  std::string("setTensorAddress(") + name + ") failed: " +
                      context->lib->logger.take_last_error());
    }
    return static_cast<int32_t>(NUSA_TRT_OK);
  });
}

int32_t nusa_trt_context_enqueue(nusa_trt_context *context, nusa_cuda_stream *stream,
                                 nusa_trt_error *err) {
  return guard(err, [&] {
    NUSA_REQUIRE(context != nullptr, "nusa_trt_context_enqueue: null argument");
    if (!context->context->enqueueV3(reinterpret_cast<cudaStream_t>(stream))) {
      return fail(err, NUSA_TRT_ERR_TENSORRT,
                  "enqueueV3 failed: " + context->lib->logger.take_last_error());
    }
    return static_cast<int32_t>(NUSA_TRT_OK);
  });
}

int32_t nusa_trt_build_from_onnx(nusa_trt_lib *lib, const nusa_trt_build_options *options,
                                 nusa_trt_build_result *out, nusa_trt_error *err) {
  return guard(err, [&] {
    NUSA_REQUIRE(lib != nullptr && options != nullptr && options->onnx_path != nullptr && out != nullptr,
                 "nusa_trt_build_from_onnx: null argument");
    NUSA_REQUIRE_ENTRY(lib, create_infer_builder);
    NUSA_REQUIRE_ENTRY(lib, create_onnx_parser);
    std::unique_ptr<IBuilder> builder(static_cast<IBuilder *>(
        lib->entry.create_infer_builder(static_cast<ILogger *>(&lib->logger), NV_TENSORRT_VERSION)));
    if (!builder) return fail(err, NUSA_TRT_ERR_TENSORRT, "createInferBuilder failed: " + lib->logger.take_last_error());
    std::unique_ptr<INetworkDefinition> network(builder->createNetworkV2(0));
    if (!network) return fail(err, NUSA_TRT_ERR_TENSORRT, "createNetworkV2 failed: " + lib->logger.take_last_error());
    std::unique_ptr<nvonnxparser::IParser> parser(static_cast<nvonnxparser::IParser *>(
        lib->entry.create_onnx_parser(network.get(), static_cast<ILogger *>(&lib->logger),
                                      NV_ONNX_PARSER_VERSION)));
    if (!parser) return fail(err, NUSA_TRT_ERR_TENSORRT, "createNvOnnxParser failed: " + lib->logger.take_last_error());
    if (!parser->parseFromFile(options->onnx_path, static_cast<int>(ILogger::Severity::kWARNING))) {
      std::string msg = std::string("parsing ") + options->onnx_path + ":";
      for (int32_t i = 0; i < parser->getNbErrors(); ++i) msg += std::string(" ") + parser->getError(i)->desc();
      return fail(err, NUSA_TRT_ERR_TENSORRT, msg);
    }
    std::unique_ptr<IBuilderConfig> config(builder->createBuilderConfig());
    if (!config) return fail(err, NUSA_TRT_ERR_TENSORRT, "createBuilderConfig failed");
    if (options->workspace_bytes > 0) {
      config->setMemoryPoolLimit(MemoryPoolType::kWORKSPACE, options->workspace_bytes);
    }
    // kFP16 is deprecated from 10.12 (strong typing supersedes it) but still
    // honoured in 10.x; the shim is pinned to major 10.
    if (options->fp16 != 0 && builder->platformHasFastFp16()) config->setFlag(BuilderFlag::kFP16);
    // The timing cache lives as long as the config; TensorRT ignores (with a
    // warning) a cache recorded for another version or device.
    std::unique_ptr<ITimingCache> timing(
        config->createTimingCache(options->timing_cache, options->timing_cache != nullptr ? options->timing_cache_len : 0));
    if (!timing || !config->setTimingCache(*timing, false)) {
      return fail(err, NUSA_TRT_ERR_TENSORRT, "timing cache: " + lib->logger.take_last_error());
    }
    if (options->profile_len == 0) {
      // Derive the profile: a dynamic first dimension takes the batch range.
      NUSA_REQUIRE(options->batch_min >= 1 && options->batch_min <= options->batch_opt &&
                       options->batch_opt <= options->batch_max,
                   "nusa_trt_build_from_onnx: batch range must satisfy 1 <= min <= opt <= max");
      IOptimizationProfile *profile = nullptr;
      for (int32_t i = 0; i < network->getNbInputs(); ++i) {
        ITensor *input = network->getInput(i);
        Dims d = input->getDimensions();
        if (d.nbDims == 0 || d.d[0] != -1) continue;
        for (int32_t k = 1; k < d.nbDims; ++k) {
          if (d.d[k] < 0) {
            return fail(err, NUSA_TRT_ERR_INVALID_ARGUMENT,
                        std::string("input ") + input->getName() + " has a dynamic dimension " +
                            std::to_string(k) + " beyond the batch: give an explicit profile");
          }
        }
        if (profile == nullptr) profile = builder->createOptimizationProfile();  // owned by builder
        Dims lo = d, mid = d, hi = d;
        lo.d[0] = options->batch_min;
        mid.d[0] = options->batch_opt;
        hi.d[0] = options->batch_max;
        if (!profile->setDimensions(input->getName(), OptProfileSelector::kMIN, lo) ||
            !profile->setDimensions(input->getName(), OptProfileSelector::kOPT, mid) ||
            !profile->setDimensions(input->getName(), OptProfileSelector::kMAX, hi)) {
          return fail(err, NUSA_TRT_ERR_TENSORRT,
                      std::string("optimization profile for ") + input->getName() + ": " +
                          lib->logger.take_last_error());
        }
      }
      if (profile != nullptr && config->addOptimizationProfile(profile) < 0) {
        return fail(err, NUSA_TRT_ERR_TENSORRT, "addOptimizationProfile failed: " + lib->logger.take_last_error());
      }
    } else {
      NUSA_REQUIRE(options->profile != nullptr, "nusa_trt_build_from_onnx: null profile");
      IOptimizationProfile *profile = builder->createOptimizationProfile();  // owned by builder
      for (size_t i = 0; i < options->profile_len; ++i) {
        const nusa_trt_profile_dims &p = options->profile[i];
        NUSA_REQUIRE(p.input_name != nullptr, "nusa_trt_build_from_onnx: profile entry without a name");
        if (!profile->setDimensions(p.input_name, OptProfileSelector::kMIN, to_dims(p.min)) ||
            !profile->setDimensions(p.input_name, OptProfileSelector::kOPT, to_dims(p.opt)) ||
            !profile->setDimensions(p.input_name, OptProfileSelector::kMAX, to_dims(p.max))) {
          return fail(err, NUSA_TRT_ERR_TENSORRT,
                      std::string("optimization profile for ") + p.input_name + ": " +
                          lib->logger.take_last_error());
        }
      }
      if (config->addOptimizationProfile(profile) < 0) {
        return fail(err, NUSA_TRT_ERR_TENSORRT, "addOptimizationProfile failed: " + lib->logger.take_last_error());
      }
    }
    std::unique_ptr<IHostMemory> plan(builder->buildSerializedNetwork(*network, *config));
    if (!plan) return fail(err, NUSA_TRT_ERR_TENSORRT, "buildSerializedNetwork failed: " + lib->logger.take_last_error());
    const ITimingCache *used = config->getTimingCache();
    std::unique_ptr<IHostMemory> timing_out(used != nullptr ? used->serialize() : nullptr);
    auto *plan_mem = new nusa_trt_host_memory{std::move(plan)};
    out->plan = plan_mem;
    out->timing_cache = timing_out ? new nusa_trt_host_memory{std::move(timing_out)} : nullptr;
    return static_cast<int32_t>(NUSA_TRT_OK);
  });
}

int32_t nusa_trt_host_memory_data(const nusa_trt_host_memory *memory, const void **data, size_t *len,
                                  nusa_trt_error *err) {
  return guard(err, [&] {
    NUSA_REQUIRE(memory != nullptr && data != nullptr && len != nullptr,
                 "nusa_trt_host_memory_data: null argument");
    *data = memory->memory->data();
    *len = memory->memory->size();
    return static_cast<int32_t>(NUSA_TRT_OK);
  });
}

void nusa_trt_host_memory_destroy(nusa_trt_host_memory *memory) { delete memory; }

int32_t nusa_cuda_malloc(const nusa_trt_lib *lib, size_t size, void **out, nusa_trt_error *err) {
  return guard(err, [&] {
    NUSA_REQUIRE(lib != nullptr && out != nullptr, "nusa_cuda_malloc: null argument");
    int rc = lib->entry.cuda_malloc(out, size);
    return rc == 0 ? static_cast<int32_t>(NUSA_TRT_OK) : cuda_fail(lib, err, "cudaMalloc", rc);
  });
}

int32_t nusa_cuda_free(const nusa_trt_lib *lib, void *ptr, nusa_trt_error *err) {
  return guard(err, [&] {
    NUSA_REQUIRE(lib != nullptr, "nusa_cuda_free: null argument");
    int rc = lib->entry.cuda_free(ptr);
    return rc == 0 ? static_cast<int32_t>(NUSA_TRT_OK) : cuda_fail(lib, err, "cudaFree", rc);
  });
}

int32_t nusa_cuda_memcpy_h2d_async(const nusa_trt_lib *lib, void *dst, const void *src, size_t len,
                                   nusa_cuda_stream *stream, nusa_trt_error *err) {
  return guard(err, [&] {
    NUSA_REQUIRE(lib != nullptr, "nusa_cuda_memcpy_h2d_async: null argument");
    int rc = lib->entry.cuda_memcpy_async(dst, src, len, kCudaMemcpyHostToDevice, stream);
    return rc == 0 ? static_cast<int32_t>(NUSA_TRT_OK) : cuda_fail(lib, err, "cudaMemcpyAsync(H2D)", rc);
  });
}

int32_t nusa_cuda_memcpy_d2h_async(const nusa_trt_lib *lib, void *dst, const void *src, size_t len,
                                   nusa_cuda_stream *stream, nusa_trt_error *err) {
  return guard(err, [&] {
    NUSA_REQUIRE(lib != nullptr, "nusa_cuda_memcpy_d2h_async: null argument");
    int rc = lib->entry.cuda_memcpy_async(dst, src, len, kCudaMemcpyDeviceToHost, stream);
    return rc == 0 ? static_cast<int32_t>(NUSA_TRT_OK) : cuda_fail(lib, err, "cudaMemcpyAsync(D2H)", rc);
  });
}

int32_t nusa_cuda_stream_create(const nusa_trt_lib *lib, nusa_cuda_stream **out, nusa_trt_error *err) {
  return guard(err, [&] {
    NUSA_REQUIRE(lib != nullptr && out != nullptr, "nusa_cuda_stream_create: null argument");
    void *s = nullptr;
    int rc = lib->entry.cuda_stream_create(&s);
    if (rc != 0) return cuda_fail(lib, err, "cudaStreamCreate", rc);
    *out = static_cast<nusa_cuda_stream *>(s);
    return static_cast<int32_t>(NUSA_TRT_OK);
  });
}

int32_t nusa_cuda_stream_synchronize(const nusa_trt_lib *lib, nusa_cuda_stream *stream,
                                     nusa_trt_error *err) {
  return guard(err, [&] {
    NUSA_REQUIRE(lib != nullptr, "nusa_cuda_stream_synchronize: null argument");
    int rc = lib->entry.cuda_stream_synchronize(stream);
    return rc == 0 ? static_cast<int32_t>(NUSA_TRT_OK) : cuda_fail(lib, err, "cudaStreamSynchronize", rc);
  });
}

int32_t nusa_cuda_stream_destroy(const nusa_trt_lib *lib, nusa_cuda_stream *stream,
                                 nusa_trt_error *err) {
  return guard(err, [&] {
    NUSA_REQUIRE(lib != nullptr, "nusa_cuda_stream_destroy: null argument");
    int rc = lib->entry.cuda_stream_destroy(stream);
    return rc == 0 ? static_cast<int32_t>(NUSA_TRT_OK) : cuda_fail(lib, err, "cudaStreamDestroy", rc);
  });
}

int32_t nusa_cuda_compute_capability(const nusa_trt_lib *lib, int32_t device, int32_t *major,
                                     int32_t *minor, nusa_trt_error *err) {
  return guard(err, [&] {
    NUSA_REQUIRE(lib != nullptr && major != nullptr && minor != nullptr,
                 "nusa_cuda_compute_capability: null argument");
    int ma = 0, mi = 0;
    int rc = lib->entry.cuda_device_get_attribute(&ma, kCudaDevAttrComputeCapabilityMajor, device);
    if (rc != 0) return cuda_fail(lib, err, "cudaDeviceGetAttribute(major)", rc);
    rc = lib->entry.cuda_device_get_attribute(&mi, kCudaDevAttrComputeCapabilityMinor, device);
    if (rc != 0) return cuda_fail(lib, err, "cudaDeviceGetAttribute(minor)", rc);
    *major = ma;
    *minor = mi;
    return static_cast<int32_t>(NUSA_TRT_OK);
  });
}

int32_t nusa_cuda_device_name(const nusa_trt_lib *lib, int32_t device, char *out, size_t out_len,
                              nusa_trt_error *err) {
  return guard(err, [&] {
    NUSA_REQUIRE(lib != nullptr && out != nullptr && out_len > 0, "nusa_cuda_device_name: null argument");
    NUSA_REQUIRE_ENTRY(lib, cuda_get_device_properties);
    // cudaDeviceProp is about 1 KB in CUDA 12 and 13 and starts with
    // `char name[256]`; 8 KB leaves room for any later growth.
    std::unique_ptr<unsigned char[]> prop(new unsigned char[8192]());
    int rc = lib->entry.cuda_get_device_properties(prop.get(), device);
    if (rc != 0) return cuda_fail(lib, err, "cudaGetDeviceProperties", rc);
    std::snprintf(out, out_len, "%.*s", NUSA_TRT_DEVICE_NAME_LEN - 1, reinterpret_cast<const char *>(prop.get()));
    return static_cast<int32_t>(NUSA_TRT_OK);
  });
}

const char *nusa_cuda_error_string(const nusa_trt_lib *lib, int32_t code) {
  if (lib == nullptr || lib->entry.cuda_get_error_string == nullptr) return "unknown CUDA error";
  const char *s = lib->entry.cuda_get_error_string(code);
  return s != nullptr ? s : "unknown CUDA error";
}

} // extern "C"
